"""What runs of this checkout leave behind, and removing it once they are dead.

Every container a build makes carries labels naming the project, the run and its owner
(host, pid and the pid's start time); a temporary output directory carries the same owner
in its name. A later run removes what a dead owner left (:func:`remove_dead_runs`);
Ctrl-C removes what this run started (:func:`remove_run_containers`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import uuid
from pathlib import Path

from releng.engine import Engine
from releng.project import Project

log = logging.getLogger(__name__)


LABEL_PROJECT = "org.releng.project"


LABEL_DISTRO = "org.releng.distro"


LABEL_RUN = "org.releng.run"


LABEL_SMOKE = "org.releng.smoke-of"  # the idle smoke-test container of a project


LABEL_OWNER = "org.releng.owner"  # host, pid and start time of the process that made it


RUN_ID = uuid.uuid4().hex  # this process's containers (make-all-packages removes them on Ctrl-C)


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot, /proc/PID/stat field 22); None when it
    is gone. With the pid it names one process: a pid reused later has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _owner() -> tuple[str, int, str]:
    return socket.gethostname(), os.getpid(), _start_time(os.getpid()) or "0"


def owner_label() -> str:
    """``HOST PID START``: the label that lets a later run tell whether this one is dead."""
    host, pid, start = _owner()
    return f"{host} {pid} {start}"


def _host_tag(host: str) -> str:
    return hashlib.sha256(host.encode()).hexdigest()[:8]


def tmp_prefix(distro_id: str) -> str:
    """``.tmp-<distro>-<pid>x<start>x<host hash>-``: a build's temporary output directory."""
    host, pid, start = _owner()
    return f".tmp-{distro_id}-{pid}x{start}x{_host_tag(host)}-"


_TMP_OWNER_RE = re.compile(r"\.tmp-.+-(\d+)x(\d+)x([0-9a-f]{8})-[^-]+")


def _dead(host: str, pid: int, start: str) -> bool:
    """Whether the process is certainly gone (another host's processes are never judged)."""
    return host == socket.gethostname() and _start_time(pid) != start


def remove_dead_runs(engine: Engine, project: Project) -> int:
    """Remove the containers and temporary output directories that runs of this checkout
    left when they were killed (SIGKILL, a double Ctrl-C): only those whose owner process,
    named by a label (containers) or the name (directories), is dead. Returns how many."""
    removed = 0
    seen: set[str] = set()
    for label in (LABEL_PROJECT, LABEL_SMOKE):
        for c in engine.containers(label, str(project.root)):
            owner = c.labels.get(LABEL_OWNER, "").split()
            if c.id in seen or len(owner) != 3 or not owner[1].isdigit():
                continue  # made by an older releng: its owner cannot be told
            seen.add(c.id)
            # Not removed: removed meanwhile by another run.
            if _dead(owner[0], int(owner[1]), owner[2]) and engine.remove_container(c.id):
                removed += 1
                log.info("removed container %s left by dead pid %s", c.short_id, owner[1])
    host = _host_tag(socket.gethostname())
    for tmp in _build_temps(project.out_dir):
        m = _TMP_OWNER_RE.fullmatch(tmp.name)
        if m and m[3] == host and _start_time(int(m[1])) != m[2]:
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
            log.info("removed %s, left by dead pid %s", tmp, m[1])
    return removed


def _build_temps(out_dir: Path) -> list[Path]:
    """``out/<version>/.tmp-*``: a concurrent build's short-lived entries in out/ (its
    write probe, a version directory made and renamed) may vanish while they are listed."""
    found: list[Path] = []
    try:
        with os.scandir(out_dir) as it:
            versions = [e.path for e in it if not e.name.startswith(".")]
    except FileNotFoundError:
        return found
    for version in versions:
        try:
            with os.scandir(version) as it:
                found += [Path(e.path) for e in it if e.name.startswith(".tmp-")]
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


def remove_run_containers(engine: Engine) -> int:
    """Force-remove every container this process started (used after Ctrl-C)."""
    return sum(engine.remove_container(c.id) for c in engine.containers(LABEL_RUN, RUN_ID))
