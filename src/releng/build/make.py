"""make-package: the gated build in a throwaway container, its smoke test, lintian and
the output placed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from releng.arch import BuildMode
from releng.build.background import Background
from releng.build.cache import start_cache
from releng.build.lint import lint
from releng.build.output import failed_log_kept, last_error, new_log, place_output
from releng.build.plan import (
    BuildFailed,
    BuildPlan,
    BuildResult,
    Owner,
    check_buildable,
    check_writable,
    decide,
    plan_target,
    read_build_json,
    resolve_target,
)
from releng.build.reaper import remove_dead_runs, tmp_prefix
from releng.build.smoke import SmokeTest
from releng.build.spec import (
    BUILD_DIR,
    build_spec,
    failed_image,
    open_gate,
    source_dates,
    stages_debian,
)
from releng.distro import Distro, family_revision_warnings
from releng.engine import Container, Engine
from releng.gpg import Signer
from releng.project import Project
from releng.version import Version

log = logging.getLogger(__name__)


def make_package(
    engine: Engine,
    project: Project,
    distro_id: str,
    version: Version,
    *,
    env: Mapping[str, str],
    force: bool = False,
    keep: bool = False,
    no_cache: bool = False,
    cpus: int | None = None,
    arch: str | None = None,
    mode: str | None = None,
    on_line: Callable[[str], None] | None = None,
    lintian: bool = False,
    smoke_test: bool = True,
) -> BuildResult:
    """Build ``distro_id``'s packages of ``version`` into ``out/<version>/<distro>/``.

    ``lintian`` (or ``[lintian] run``): run lintian after the build, keep its report
    beside the build, fail on the tags ``[lintian] fail_on`` lists.
    ``arch`` (default: the host's) and ``mode``: see :func:`resolve_target`; other
    architectures' builds of the same source in that directory are kept.

    Up to date (same inputs as the last successful build): nothing runs unless
    ``force``. A failure raises :class:`BuildFailed` naming the log; ``keep``
    first commits the failed container to ``releng-failed-<name>:<distro>``.
    ``no_cache``: this build runs without the compiler cache (releng.compiler_cache).
    ``smoke_test=False``: the packages are not installed nor their smoke command run
    (make-package --no-smoke; the stamp says so).

    When the source tarball must be made, the build container starts meanwhile and
    waits for it (see :func:`build_spec`'s ``gated``).
    """
    from releng.gpg import signer_for
    from releng.source import current_source_tarball

    started = time.monotonic()
    distro = project.distro(distro_id)
    check_buildable(distro)
    for warning in family_revision_warnings(project.root, distro):
        log.warning("warning: %s", warning)
    wanted = resolve_target(project, distro, arch=arch, mode=mode, env=env, smoke_test=smoke_test)
    _check_output_writable(project, version, distro_id)
    remove_dead_runs(engine, project)
    source = current_source_tarball(project, version, env=env)
    # A signing problem fails now, not after the images are made.
    signer = None if source else signer_for(project, env, release=version.is_release)
    target = plan_target(
        engine,
        project,
        distro,
        version,
        wanted,
        env=env,
        on_line=on_line,
        no_cache=no_cache,
        smoke_test=smoke_test,
    )
    if lintian or project.config.lintian.run:
        target = dataclasses.replace(
            target, lintian_fail_on=tuple(sorted(project.config.lintian.fail_on))
        )
    ready = None if source is None else decide(target, source, force=force)
    if ready is not None and ready.up_to_date:
        return _up_to_date(ready, started)
    make_source = functools.partial(_with_new_source, target, env=env, signer=signer, force=force)
    return _build(
        engine,
        target,
        ready or make_source,
        owner=Owner.for_project(project, env),
        cpus=cpus or os.cpu_count() or 1,
        keep=keep,
        on_line=on_line,
        started=started,
        env=env,
    )


def _check_output_writable(project: Project, version: Version, distro_id: str) -> None:
    check_writable(project.out_dir)
    for directory in (project.out_dir / version.text, project.build_dir(version, distro_id)):
        if directory.is_dir():  # renamed into (or out of) place: it must be writable too
            check_writable(directory)


def _with_new_source(
    target: BuildPlan, *, env: Mapping[str, str], signer: Signer | None, force: bool
) -> BuildPlan:
    """``target``'s plan once its source tarball is made."""
    from releng.source import make_source_tarball

    made = make_source_tarball(target.project, target.version, env=env, signer=signer)
    return decide(target, made, force=force)


def _build(
    engine: Engine,
    target: BuildPlan,
    plan_or_make: BuildPlan | Callable[[], BuildPlan],
    *,
    owner: Owner,
    cpus: int,
    keep: bool,
    on_line: Callable[[str], None] | None,
    started: float,
    env: Mapping[str, str],
) -> BuildResult:
    """Run the build of ``plan_or_make``: the plan, or (when the source tarball must be made)
    the call that makes it and gives the plan, which runs while the gated container starts."""
    project, distro_id, version = target.project, target.distro.id, target.version
    log_path = new_log(project, distro_id, version, target.target)
    target.out_dir.parent.mkdir(parents=True, exist_ok=True)
    with (
        failed_log_kept(log_path, owner),
        tempfile.TemporaryDirectory(dir=target.out_dir.parent, prefix=tmp_prefix(distro_id)) as tmp,
        log_path.open("w", encoding="utf-8") as log_file,
    ):
        work = Path(tmp)
        out_tmp = _out_tmp(work, owner)

        def record(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()
            if on_line is not None:
                on_line(line)

        debian = _debian_stage(work, target.distro)
        cache_run = start_cache(engine, target, owner=owner, env=env, record=record)
        spec = build_spec(target, out_tmp, owner=owner, cpus=cpus, gated=True, debian=debian)
        record(f"releng: {spec.describe()}")
        log.info("building %s %s in %s", distro_id, version, target.builder.reference)
        with Background(engine, spec, "releng-build") as build:
            plan = _open(build, plan_or_make, out_tmp, record=record, debian=debian)
            if plan.up_to_date:  # the new tarball is the same as the last build's
                log_path.unlink()
                return _up_to_date(plan, started)
            with SmokeTest(engine, plan, out_tmp, record=record, log_path=log_path) as smoke:

                def watch(line: str) -> None:
                    record(line)
                    smoke.watch(line)
                    cache_run.watch(line)

                build.wait_started()
                smoke.begin()
                _run_build(build.container, plan, record=watch, log_path=log_path, keep=keep)
                build.remove_soon()
                files, digests = smoke.finish()
                files = lint(
                    engine,
                    plan,
                    out_tmp,
                    files,
                    digests,
                    owner=owner,
                    record=record,
                    log_path=log_path,
                )
                cache_run.end()  # the log ends with the cache's hit rate
                # The containers are being removed meanwhile.
                log_file.flush()
                place_output(plan, out_tmp, files, digests, log_path=log_path, owner=owner)
    log_path.unlink()  # it is out/<version>/<distro>/build.log now
    log.info("built %s %s into %s", distro_id, version, plan.out_dir)
    return BuildResult(
        distro_id=distro_id,
        version=version.text,
        out_dir=plan.out_dir,
        up_to_date=False,
        files=files,
        log_path=plan.out_dir / plan.log_name,
        seconds=time.monotonic() - started,
        arch=plan.target.arch,
    )


def _out_tmp(work: Path, owner: Owner) -> Path:
    """The directory the build container writes its output into, owned by the build user."""
    out_tmp = work / "out"
    out_tmp.mkdir()
    if os.getuid() == 0:
        uid, gid = (int(x) for x in owner.build_user.split(":"))
        os.chown(out_tmp, uid, gid)
    return out_tmp


def _open(
    build: Background,
    plan_or_make: BuildPlan | Callable[[], BuildPlan],
    out_tmp: Path,
    *,
    record: Callable[[str], None],
    debian: Path | None,
) -> BuildPlan:
    """Start the gated build container and open its gate: at once with a plan (no wait at
    all), else while the source tarball is made. The plan; its gate stays shut when it is
    up to date (the new tarball is the same as the last build's)."""
    if isinstance(plan_or_make, BuildPlan):
        open_gate(out_tmp, plan_or_make, record=record, debian=debian)
        build.begin()
        return plan_or_make
    build.begin()  # the container starts while the tarball is made
    plan = plan_or_make()
    if not plan.up_to_date:
        open_gate(out_tmp, plan, record=record, debian=debian)
    return plan


def _debian_stage(work: Path, distro: Distro) -> Path | None:
    """Where the build's prepared debian/ goes: empty until the gate opens (mounted now,
    filled then); None when the build gets none (see :func:`stages_debian`)."""
    if not stages_debian(distro):
        return None
    (work / "debian").mkdir()
    return work / "debian"


def _up_to_date(plan: BuildPlan, started: float) -> BuildResult:
    previous = read_build_json(plan.out_dir, plan.stamp) or {}
    log.info("%s %s is up to date in %s", plan.distro.id, plan.version, plan.out_dir)
    return BuildResult(
        distro_id=plan.distro.id,
        version=plan.version.text,
        out_dir=plan.out_dir,
        up_to_date=True,
        files=[str(f) for f in list(previous.get("files") or [])],  # type: ignore[call-overload]
        seconds=time.monotonic() - started,
        arch=plan.target.arch,
    )


def _run_build(
    container: Container,
    plan: BuildPlan,
    *,
    record: Callable[[str], None],
    log_path: Path,
    keep: bool,
) -> None:
    """Follow the running build container to its end; BuildFailed (after --keep's commit)
    unless it exits 0."""
    distro_id, version = plan.distro.id, plan.version
    container.stream(record)
    code = container.wait()
    if code == 0:
        return
    hint = ""
    if keep:
        repo, tag = failed_image(plan.project, distro_id).split(":")
        dates = [f"ENV {k}={json.dumps(v)}" for k, v in source_dates(plan.tarball).items()]
        container.commit(repo, tag, changes=['CMD ["bash", "-l"]', f"WORKDIR {BUILD_DIR}", *dates])
        hint = f"; the failed container is kept: invoke interactive {distro_id} --from-failed"
    target = plan.target
    what = f"build of {distro_id} {version}"
    if target.mode == BuildMode.CROSS.value:
        what = f"cross build of {distro_id} {version} for {target.arch}"
        hint += (
            f"; a package that builds natively may not cross-build: invoke make-package "
            f"{distro_id} --arch {target.arch} --mode emulated"
        )
    raise BuildFailed(
        f"{what} failed (exit {code}): {last_error(log_path)}; full log: {log_path}{hint}",
        log_path,
    )
