"""``rebuild.json``: what verify-rebuild found for one build directory, in one place.

verify-rebuild (:mod:`releng.rebuild.run`) writes it into ``<build dir>/rebuild/`` beside the
attestations; the publish policy (:mod:`releng.rebuild.policy`) and ``upload-build --rebuild``
read it; where a distro's architectures were rebuilt apart (each AWS rebuilder uploads its
own), :mod:`releng.publish.scratch` merges them as verify-rebuild keeps them locally.
Standard library only: the publishing side reads it without importing the rebuilder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REBUILD_JSON = "rebuild.json"
RESULT_REPRODUCED = "reproduced"
RESULT_DIFFERS = "differs"
RESULT_FAILED = "failed"  # the rebuild itself failed: nothing to compare


def read_summary(rebuild_dir: Path) -> dict[str, Any] | None:
    """The summary in ``rebuild_dir``, or None when there is none (or it is not one)."""
    try:
        data = json.loads((rebuild_dir / REBUILD_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_summary(rebuild_dir: Path, summary: Mapping[str, object]) -> None:
    (rebuild_dir / REBUILD_JSON).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def reproduced(summary: Mapping[str, object] | None) -> bool:
    return summary is not None and summary.get("result") == RESULT_REPRODUCED


def architectures(summary: Mapping[str, object]) -> list[str]:
    """The architectures a summary covers (one, before architectures were merged)."""
    named = summary.get("architectures")
    listed = named if isinstance(named, list) else [summary.get("architecture")]
    return sorted({str(a) for a in listed if a})


def merge_reproduced(
    earlier: Mapping[str, object], later: Mapping[str, object]
) -> dict[str, Any] | None:
    """One summary for two architectures' rebuilds: the reproduced ones' packages together
    (the later's entry wins); one that did not reproduce adds none, so its packages count as
    unverified. None when neither reproduced."""
    parts = [s for s in (earlier, later) if reproduced(s)]
    if not parts:
        return None
    packages: dict[str, object] = {}
    for part in parts:
        listed = part.get("packages")
        packages.update(listed if isinstance(listed, dict) else {})
    arches = sorted({a for part in parts for a in architectures(part)})
    return {**parts[-1], "packages": packages, "architectures": arches}
