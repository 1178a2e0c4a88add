"""Step records and ``invoke show-aws-status``.

Every step writes one small JSON record to the scratch bucket at
``status/<execution>/<version>/<distro>/<arch>/<step>.json`` (a build) or
``status/<execution>/<version>/all/<step>.json`` (the version's steps): prepare_task
writes ``skipped`` or ``queued``, the worker ``running`` then ``succeeded`` or
``failed`` with its instance, duration and log location. :func:`table` joins
them with the execution's own state.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def record_key(execution: str, version: str, distro: str, step: str, arch: str = "") -> str:
    part = f"{distro}/{arch}" if distro and arch else distro or "all"
    return f"status/{execution}/{version}/{part}/{step}.json"


def put_record(s3: Any, bucket: str, task: Mapping[str, Any], state: str, **extra: Any) -> None:
    distro, arch = task.get("distro") or "", task.get("arch") or ""
    key = record_key(task["execution"], task["version"], distro, task["step"], arch)
    body = {
        "step": task["step"],
        "version": task["version"],
        "distro": distro,
        "arch": arch,
        "state": state,
        "time": time.time(),
        **extra,
    }
    s3.put_object(
        Bucket=bucket, Key=key, Body=json.dumps(body).encode(), ContentType="application/json"
    )


@dataclass(frozen=True, kw_only=True)
class Row:
    version: str
    distro: str
    arch: str
    step: str
    state: str
    seconds: float | None
    instance: str
    detail: str


def rows(s3: Any, bucket: str, execution: str) -> list[Row]:
    out = []
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"status/{execution}/"
    )
    for page in pages:
        for obj in page.get("Contents", []):
            data = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            out.append(
                Row(
                    version=data["version"],
                    distro=data["distro"] or "-",
                    arch=data.get("arch") or "-",
                    step=data["step"],
                    state=data["state"],
                    seconds=data.get("seconds"),
                    instance=data.get("instance", ""),
                    detail=data.get("reason") or data.get("log") or "",
                )
            )
    from releng.apt.index import version_compare

    # versions in dpkg's order (1.9.0 before 1.10.0), then the steps in the order they run
    versions = sorted({r.version for r in out}, key=functools.cmp_to_key(version_compare))
    place = {v: i for i, v in enumerate(versions)}
    order = {"make-source-tarball": 0, "make-binary-package": 1, "publish-binary-packages": 2}
    return sorted(out, key=lambda r: (place[r.version], order.get(r.step, 3), r.distro, r.arch))


def table(execution: Mapping[str, Any], step_rows: list[Row]) -> list[str]:
    """The lines ``invoke show-aws-status`` prints."""
    lines = [f"{execution['name']}: {execution['status']}"]
    if execution.get("error") or execution.get("cause"):
        lines.append(f"  failed: {execution.get('error', '')}: {execution.get('cause', '')}")
    head = ("VERSION", "DISTRO", "ARCH", "STEP", "STATE", "TIME", "INSTANCE", "DETAIL")
    body = [
        (r.version, r.distro, r.arch, r.step, r.state, f"{r.seconds:.0f}s" if r.seconds is not None else "-",
         r.instance or "-", r.detail)
        for r in step_rows
    ]  # fmt: skip
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head) - 1)]
    for row in [head, *body]:
        lines.append(
            "  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )
    return lines
