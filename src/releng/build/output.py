"""Logs and output placing: a build's log, its most telling line, and the staged output
put into ``out/<version>/<distro>/`` whole, beside other architectures' builds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from releng.arch import image_for
from releng.build.plan import BuildPlan, Owner, Target, read_build_json
from releng.project import Project
from releng.version import Version

log = logging.getLogger(__name__)


LOGS_DIR = "logs"  # under the state dir: logs of failed builds survive there


def new_log(project: Project, distro_id: str, version: Version, target: Target) -> Path:
    logs = project.state_dir / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    arch = "" if target.primary else f"-{target.arch}"
    return logs / f"{distro_id}{arch}-{version.text}-{stamp}-{os.getpid()}.log"


@contextlib.contextmanager
def failed_log_kept(log_path: Path, owner: Owner) -> Iterator[None]:
    """A failed build's log stays under .releng/logs/, owned by the invoking user."""
    try:
        yield
    finally:
        if log_path.exists() and os.getuid() == 0:
            os.chown(log_path.parent, owner.uid, owner.gid)
            os.chown(log_path, owner.uid, owner.gid)


def last_error(log_path: Path) -> str:
    """The most telling line of a failed build's log: the first real error, else the last line."""
    lines = [
        ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    ]
    lines = [ln for ln in lines if ln and not ln.startswith("releng: docker run")]
    wrappers = ("make", "dpkg-buildpackage", "dh ", "dh:", "dh_", "debian/rules")
    errors = [
        ln
        for ln in lines
        if ("error:" in ln.lower() or ln.startswith("E: ")) and not ln.startswith(wrappers)
    ]
    if errors:
        return errors[0][:300]
    for ln in reversed(lines):
        if "error" in ln.lower():
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def _metadata(
    plan: BuildPlan, out_tmp: Path, files: list[str], digests: Mapping[str, str]
) -> dict[str, object]:
    return {
        "distro": plan.distro.id,
        "version": plan.version.text,
        "package": plan.project.config.package_name(plan.version),
        "inputs": plan.inputs,
        "architecture": plan.target.arch,
        "build_mode": plan.target.mode,
        "smoke_test": "passed" if plan.smoke_test else "skipped",
        "base_image": {
            "reference": image_for(plan.distro.docker_base, plan.target.arch),
            "id": plan.smoke_image_id,
        },
        "builder_image": {"reference": plan.builder.reference, "id": plan.builder.id},
        "files": files,
        "sha256": {f: digests[f] for f in files},
        "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _chown_tree(path: Path, owner: Owner) -> None:
    if os.getuid() != 0:
        return
    os.chown(path, owner.uid, owner.gid)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(Path(root) / name, owner.uid, owner.gid, follow_symlinks=False)


@contextlib.contextmanager
def _out_dir_lock(out_dir: Path) -> Iterator[None]:
    """Serialises the builds of several architectures putting their output into one directory."""
    import fcntl

    with (out_dir.parent / f".{out_dir.name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# What verify-rebuild leaves beside the builds (releng.rebuild.run.REBUILD_DIR): one directory
# for every architecture's rebuild, its entries per package.
REBUILD_DIR = "rebuild"


def _keep_other_architectures(plan: BuildPlan, out_tmp: Path) -> None:
    """Hard-link into ``out_tmp`` what other architectures' builds of the same source tarball
    left in the output directory (their stamp, log and files, and the rebuild results, which
    name each package by its digest, so this build's own stay verified only if its bytes are
    the same); builds of another source are dropped with the old directory."""
    if not plan.out_dir.is_dir():
        return
    kept = False
    for stamp in sorted(plan.out_dir.glob("build*.json")):
        if stamp.name == plan.stamp:
            continue
        data = read_build_json(plan.out_dir, stamp.name) or {}
        inputs = data.get("inputs")
        if not isinstance(inputs, dict) or inputs.get("tarball_sha256") != plan.inputs.get(
            "tarball_sha256"
        ):
            log.info("dropping %s: a build of another source", stamp)
            continue
        files = [str(f) for f in list(data.get("files") or [])]  # type: ignore[call-overload]
        for name in [stamp.name, f"{stamp.stem}.log", *files]:
            source = plan.out_dir / name
            if source.is_file() and not (out_tmp / name).exists():
                os.link(source, out_tmp / name)
        kept = True
    rebuild = plan.out_dir / REBUILD_DIR
    if kept and rebuild.is_dir() and not (out_tmp / REBUILD_DIR).exists():
        shutil.copytree(rebuild, out_tmp / REBUILD_DIR, copy_function=os.link)


def _replace_dir(new: Path, dest: Path, scratch: Path) -> None:
    """Put ``new`` at ``dest``; an earlier ``dest`` goes into ``scratch`` (deleted with it)."""
    if dest.exists():
        dest.replace(scratch / "previous")
    new.replace(dest)


def place_output(
    plan: BuildPlan,
    out_tmp: Path,
    files: list[str],
    digests: dict[str, str],
    *,
    log_path: Path,
    owner: Owner,
) -> None:
    """The log and the stamp into the staged output, then the output into
    ``out/<version>/<distro>/`` whole (keeping the other architectures' builds there)."""
    metadata = _metadata(plan, out_tmp, files, digests)
    shutil.copyfile(log_path, out_tmp / plan.log_name)
    (out_tmp / plan.stamp).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    _chown_tree(out_tmp, owner)
    with _out_dir_lock(plan.out_dir):
        _keep_other_architectures(plan, out_tmp)
        _replace_dir(out_tmp, plan.out_dir, out_tmp.parent)
