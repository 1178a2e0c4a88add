"""make-all-packages: several distros at once, live prefixed logs, a summary at the end.

Each distro builds in its own thread through :func:`releng.build.make_package`
(the engine does the work; the threads only stream logs). One failed distro
does not stop the others. Output goes through one :class:`Reporter` so lines
from different builds never interleave mid-line.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from releng.build import BuildFailed, interrupts_deferred, make_package, remove_run_containers
from releng.build.reaper import LABEL_RUN, RUN_ID
from releng.engine import Engine
from releng.errors import RelengError
from releng.project import Project
from releng.version import Version

log = logging.getLogger(__name__)


class Status(enum.Enum):
    BUILT = "built"
    UP_TO_DATE = "up to date"
    FAILED = "FAILED"


@dataclass(frozen=True, kw_only=True)
class Outcome:
    distro_id: str
    status: Status
    seconds: float
    detail: str  # the output directory, or the error (with the log path)


class Reporter:
    """Thread-safe user output: prefixed log lines and progress lines."""

    def __init__(self, write: Callable[[str], None], *, total: int, quiet: bool = False) -> None:
        self._write = write
        self._lock = threading.Lock()
        self.total = total
        self.done = 0
        self.quiet = quiet
        self.width = 0

    def line(self, distro_id: str, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self._write(f"{distro_id.ljust(self.width)} | {text}")

    def finished(self, outcome: Outcome) -> None:
        with self._lock:
            self.done += 1
            self._write(
                f"[{self.done}/{self.total}] {outcome.distro_id}: {outcome.status.value} "
                f"in {outcome.seconds:.0f}s"
            )


def build_all(
    engine: Engine,
    project: Project,
    distro_ids: Sequence[str],
    version: Version,
    *,
    env: Mapping[str, str],
    jobs: int = 2,
    force: bool = False,
    reporter: Reporter,
    architectures: Sequence[str] = (),
    no_cache: bool = False,
) -> list[Outcome]:
    """Build every distro for each of ``architectures`` (default: the host's), ``jobs`` at a
    time; one Outcome per build, in the given order, named ``distro`` or ``distro/arch``.
    ``no_cache``: every build runs without the compiler cache (make-package --no-cache)."""
    archs: list[str | None] = list(architectures) or [None]
    builds = [(d, a) for d in distro_ids for a in archs]

    def name(distro_id: str, arch: str | None) -> str:
        return distro_id if len(archs) == 1 else f"{distro_id}/{arch}"

    reporter.width = max((len(name(d, a)) for d, a in builds), default=0)
    jobs = max(1, min(jobs, len(builds) or 1))
    # Share the CPUs between the concurrent builds (DEB_BUILD_OPTIONS=parallel=N).
    import os

    cpus = max(1, (os.cpu_count() or 1) // jobs)

    def one(distro_id: str, arch: str | None) -> Outcome:
        label = name(distro_id, arch)
        started = time.monotonic()
        try:
            result = make_package(
                engine,
                project,
                distro_id,
                version,
                env=env,
                force=force,
                cpus=cpus,
                arch=arch,
                no_cache=no_cache,
                on_line=lambda text: reporter.line(label, text),
            )
        except RelengError as exc:
            outcome = Outcome(
                distro_id=label,
                status=Status.FAILED,
                seconds=time.monotonic() - started,
                detail=str(exc) if isinstance(exc, BuildFailed) else f"{exc}",
            )
        else:
            outcome = Outcome(
                distro_id=label,
                status=Status.UP_TO_DATE if result.up_to_date else Status.BUILT,
                seconds=time.monotonic() - started,
                detail=str(result.out_dir),
            )
        reporter.finished(outcome)
        return outcome

    # The one source tarball, made (and signed) once before the builds share it.
    from releng.source import ensure_source_tarball

    ensure_source_tarball(project, version, env=env)
    return _run_all(engine, builds, one, jobs=jobs)


def _run_all(
    engine: Engine,
    builds: Sequence[tuple[str, str | None]],
    one: Callable[[str, str | None], Outcome],
    *,
    jobs: int,
) -> list[Outcome]:
    """``one`` for each build, ``jobs`` at a time; their outcomes in the given order."""
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="build")
    futures: list[Future[Outcome]] = [pool.submit(one, d, a) for d, a in builds]
    try:
        outcomes = [f.result() for f in futures]
    except BaseException:
        # Ctrl-C / SIGTERM: stop queued builds, remove running containers so the worker
        # threads fall out of their log streams and clean their temporary directories.
        # A second Ctrl-C waits for this clean-up (a third one does not).
        with interrupts_deferred():
            for f in futures:
                f.cancel()
            try:
                removed = remove_run_containers(engine)
            except Exception as exc:  # the interrupt is what this run reports, not this
                # The engine went away (or refused): the builds may still run, and waiting
                # for them would hold the interrupt until they end. Say so, and do not wait.
                log.warning(
                    "interrupted: could not remove the running build containers (%s); "
                    "look for them with: docker ps --filter label=%s=%s",
                    exc,
                    LABEL_RUN,
                    RUN_ID,
                )
                pool.shutdown(wait=False, cancel_futures=True)
            else:
                log.warning("interrupted: removed %d running build container(s)", removed)
                pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return outcomes


def summary_table(outcomes: Sequence[Outcome]) -> list[str]:
    rows = [("DISTRO", "STATUS", "TIME", "OUTPUT / ERROR")]
    rows += [(o.distro_id, o.status.value, f"{o.seconds:.0f}s", o.detail) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [
        "  ".join(v.ljust(w) for v, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        for r in rows
    ]
