"""``[verify] rebuild``: whether a build may be published without a matching rebuild.

:func:`check_rebuild_policy` is what a publishing step calls before it includes a
build: "off" asks nothing; "report" returns one line per unverified package (to
show on the front page and in list-packages); "require" refuses the first unverified
build with one line naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from releng.digest import file_sha256
from releng.rebuild.attest import ATTESTATIONS_DIR, RESULT_REPRODUCED, SUFFIX
from releng.rebuild.buildinfo import RebuildError

BINARY_SUFFIXES = (".deb", ".udeb", ".ddeb")


class RebuildRequired(RebuildError):
    """[verify] rebuild = "require" and a build has no matching rebuild."""


def unverified(build_dir: Path) -> list[str]:
    """The packages in ``build_dir`` that no reproducing rebuild attested, as they are now
    (a package changed after its rebuild counts as unverified)."""
    debs = sorted(p for p in build_dir.glob("*") if p.name.endswith(BINARY_SUFFIXES))
    try:
        summary = json.loads((build_dir / "rebuild" / "rebuild.json").read_text())
    except (OSError, ValueError):
        summary = {}
    reproduced = summary.get("result") == RESULT_REPRODUCED
    packages = summary.get("packages") or {}
    missing = []
    for deb in debs:
        attested = packages.get(deb.name, {}).get("first") if reproduced else None
        statement = build_dir / "rebuild" / ATTESTATIONS_DIR / f"{deb.name}{SUFFIX}"
        if attested != file_sha256(deb) or not statement.is_file():
            missing.append(deb.name)
    return missing


def check_rebuild_policy(mode: str, build_dirs: Iterable[Path]) -> list[str]:
    """``mode`` is ``[verify] rebuild``. Returns "unverified: ..." lines ("report"); raises
    RebuildRequired for the first unverified build ("require"); "off": nothing."""
    if mode == "off":
        return []
    lines: list[str] = []
    for build_dir in build_dirs:
        names = unverified(build_dir)
        if not names:
            continue
        where = f"{build_dir.parent.name}/{build_dir.name}"
        if mode == "require":
            raise RebuildRequired(
                f"{where} has no matching rebuild ({', '.join(names)}); [verify] rebuild = "
                f'"require": run invoke verify-rebuild {build_dir.name} --version '
                f"{build_dir.parent.name} first"
            )
        lines.extend(f"unverified: {where}/{name}" for name in names)
    return lines
