"""The smoke test: the built packages installed in a fresh base-image container, early
when the builder hands them over before it has finished, and the smoke command run.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import NamedTuple

from releng.arch import image_for
from releng.build.background import Background
from releng.build.output import last_error
from releng.build.plan import BuildFailed, BuildPlan
from releng.build.spec import OUT_MOUNT, smoke_command, smoke_spec
from releng.digest import file_sha256
from releng.engine import Engine, RunResult

BINARIES_READY = ">>> binaries ready:"  # packaging/binaries-ready's hand-over line


class _SmokeRun(NamedTuple):
    debs: list[str]
    digests: dict[str, str]  # sha256 of each installed package, as it was installed
    result: RunResult


class SmokeTest:
    """Install the build's packages in a fresh base container and run the smoke command.

    The container is created and started while the build runs (:meth:`begin`, called once
    the build container runs: two concurrent creations slow each other) and waits idle.
    When the builder hands its packages over before it has finished (a ``>>> binaries
    ready:`` line, see ``packaging/binaries-ready``), they are installed at once, while
    dpkg-buildpackage still makes the ``.buildinfo`` and ``.changes``, and the container
    is removed. :meth:`finish` accepts that early run only for exactly the packages in the
    final output, byte for byte; otherwise (or with no hand-over) it installs them then,
    in another fresh container. Containers are removed on the way out, whatever happened.
    """

    def __init__(
        self,
        engine: Engine,
        plan: BuildPlan,
        out_tmp: Path,
        *,
        record: Callable[[str], None],
        log_path: Path,
    ) -> None:
        self.engine = engine
        self.plan = plan
        self.out_tmp = out_tmp
        self.record = record
        self.log_path = log_path
        self._box = Background(engine, smoke_spec(plan, out_tmp), "releng-smoke")
        self._early: Future[_SmokeRun | None] | None = None

    def __enter__(self) -> SmokeTest:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._early is not None:
                self._early.exception()  # wait for it: its container is removed next
        finally:
            self._box.__exit__()

    def begin(self) -> None:
        """Begin creating and starting the idle smoke container (in the background)."""
        if self.plan.smoke_test:
            self._box.begin()

    def watch(self, line: str) -> None:
        """Called with each line of the build's output: starts the early run on a hand-over."""
        if not self.plan.smoke_test:
            return
        if self._early is None and line.startswith(BINARIES_READY):
            debs = sorted(n for n in line[len(BINARIES_READY) :].split() if n.endswith(".deb"))
            if debs and all(_plain_name(n) for n in debs):
                self.begin()
                self._early = self._box.submit(lambda: self._install_early(debs))

    def _install(self, debs: list[str]) -> _SmokeRun | None:
        """Install ``debs`` and run the smoke command; None when a package is not there."""
        container = self._box.wait_started()
        try:
            digests = {name: file_sha256(self.out_tmp / name) for name in debs}
        except OSError:
            return None  # a hand-over line naming what is not there: install at the end
        return _SmokeRun(debs, digests, container.exec(smoke_command(self.plan, debs)))

    def _install_early(self, debs: list[str]) -> _SmokeRun | None:
        """The early run; its container is removed right after (another is made if needed)."""
        try:
            return self._install(debs)
        finally:
            self._box.container.remove()

    def finish(self) -> tuple[list[str], dict[str, str]]:
        """After a successful build: its files and their sha256, once the smoke test passed."""
        distro_id, version = self.plan.distro.id, self.plan.version
        files = sorted(p.name for p in self.out_tmp.iterdir() if p.is_file())
        debs = [f for f in files if f.endswith(".deb")]
        if not debs or not any(f.endswith(".changes") for f in files):
            raise BuildFailed(
                f"build of {distro_id} {version} made no .deb or no .changes in {OUT_MOUNT}; "
                f"full log: {self.log_path}",
                self.log_path,
            )
        digests = {f: file_sha256(self.out_tmp / f) for f in files}
        if not self.plan.smoke_test:
            self.record("releng: smoke test skipped (--no-smoke): the packages were not installed")
            return files, digests
        run = self._early.result() if self._early is not None else None
        arch = self.plan.target.arch
        where = f"a fresh {image_for(self.plan.distro.docker_base, arch)} container"
        if run is not None and run.debs == debs and all(run.digests[d] == digests[d] for d in debs):
            self.record(f"releng: installed {', '.join(debs)} in {where} as they were built")
        else:
            if self._early is not None:
                self.record("releng: the packages changed after they were handed over; again:")
                self._box.__exit__()
                self._box = Background(self.engine, self._box.container.spec, "releng-smoke")
            self.record(f"releng: installing {', '.join(debs)} in {where}")
            run = self._install(debs)
            assert run is not None  # every file of ``debs`` was just listed
        for line in run.result.output.splitlines():
            self.record(line)
        code = run.result.exit_code
        if code != 0:
            what = "do not install" if code == 100 else f"fail the smoke command (exit {code})"
            raise BuildFailed(
                f"the {distro_id} packages {what}: {last_error(self.log_path)}; "
                f"full log: {self.log_path}",
                self.log_path,
            )
        smoke = " ".join(self.plan.project.config.product.smoke_command)
        self.record(f"releng: smoke command passed: {smoke}")
        self._box.remove_soon()  # done already after an early run
        return files, digests


def _plain_name(name: str) -> bool:
    """A file name with no directory part (a hand-over line names files in ``/var/out``)."""
    return bool(name) and "/" not in name and name not in (".", "..")
