"""make-package: one distro's .debs, built in a throwaway container of its builder image.

Plan, act, verify:

1. :func:`plan_build` makes sure the source tarball, base image and builder image
   exist and gathers the build's inputs (tarball sha256, distro directory and
   ``packaging/`` content hashes, builder image id). When ``build.json`` of an
   earlier build in ``out/<version>/<distro>/`` records the same inputs, the
   build is up to date.
2. :func:`make_package` runs the distro's ``make-package`` (or
   ``packaging/make-debianish-package``) with no network, as an unprivileged
   user, writing into a temporary directory beside the output directory.
3. The built ``.deb``s are installed in a fresh container of the base image and
   the product's smoke command runs; only then is the temporary directory
   renamed into place. Anything else leaves nothing in ``out/``.

The signing key, GNUPGHOME and AWS credentials never reach the container: its
environment is built from scratch and ``.releng/`` (the development key) is
hidden behind an empty tmpfs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.utils
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NamedTuple, TypeVar

from releng.compiler_cache import LOG_PREFIX, CompilerCache, S3Sync, ensure_volume, plan_cache
from releng.distro import Distro
from releng.engine import Container, ContainerSpec, Engine, Mount, RunResult
from releng.errors import BuildError, RelengError
from releng.images import BuilderImage, ensure_base_image, ensure_builder_image
from releng.project import Project
from releng.source import SourceTarball
from releng.version import Version

log = logging.getLogger(__name__)

DEFAULT_BUILDER = "packaging/make-debianish-package"
OUT_MOUNT = "/var/out"
BUILD_DIR = "/build"
SMOKE_MOUNT = "/var/debs"  # the build's output, read-only, in the smoke container
BUILD_JSON = "build.json"
BUILD_LOG = "build.log"
LOGS_DIR = "logs"  # under the state dir: logs of failed builds survive there
FAILED_REPOSITORY = "releng-failed-{name}"
FALLBACK_BUILD_UID = 1000  # the build user when the invoking user is root
LABEL_PROJECT = "org.releng.project"
LABEL_DISTRO = "org.releng.distro"
LABEL_RUN = "org.releng.run"
LABEL_SMOKE = "org.releng.smoke-of"  # the idle smoke-test container of a project
BINARIES_READY = ">>> binaries ready:"  # packaging/binaries-ready's hand-over line
GATE_FILE = ".releng-go"  # in /var/out: the source's dates, which open a gated build
# A gated build container waits for GATE_FILE, reads it, removes it, then runs the builder.
_GATE = (
    f'while [ ! -e "$OUT/{GATE_FILE}" ]; do sleep 0.01; done; '
    f'. "$OUT/{GATE_FILE}" && rm -f "$OUT/{GATE_FILE}" && exec "$@"'
)
_T = TypeVar("_T")
RUN_ID = uuid.uuid4().hex  # this process's containers (make-all-packages removes them on Ctrl-C)


# -- inputs ------------------------------------------------------------------------------


def tree_hash(path: Path) -> str:
    """sha256 over a directory's names, modes, symlink targets and file contents."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        base = Path(root)
        for name in sorted([*dirs, *files]):
            p = base / name
            rel = p.relative_to(path).as_posix()
            if p.is_symlink():
                digest.update(f"L {rel} {p.readlink()}\n".encode())
            elif p.is_file():
                mode = "x" if os.access(p, os.X_OK) else "-"
                digest.update(
                    f"F {rel} {mode} {hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode()
                )
            elif p.is_dir():
                digest.update(f"D {rel}\n".encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tarball_mtime(tarball: Path) -> int:
    """The source date of a tarball: its newest member's mtime (the source sets them all alike)."""
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            return max((int(m.mtime) for m in tf.getmembers()), default=0)
    except (OSError, tarfile.TarError) as exc:
        raise BuildError(
            f"cannot read the source tarball {tarball}: {exc}; remake it with --force"
        ) from None


@dataclass(frozen=True, kw_only=True)
class Owner:
    """Who the output files belong to, and the uid:gid that builds in the container."""

    uid: int
    gid: int

    @classmethod
    def for_project(cls, project: Project, env: Mapping[str, str]) -> Owner:
        if os.getuid() != 0:
            return cls(uid=os.getuid(), gid=os.getgid())
        if env.get("SUDO_UID", "").isdigit() and env.get("SUDO_GID", "").isdigit():
            return cls(uid=int(env["SUDO_UID"]), gid=int(env["SUDO_GID"]))
        st = project.root.stat()
        return cls(uid=st.st_uid, gid=st.st_gid)

    @property
    def build_user(self) -> str:
        uid = self.uid or FALLBACK_BUILD_UID
        gid = self.gid if self.uid else FALLBACK_BUILD_UID
        return f"{uid}:{gid}"


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    project: Project
    distro: Distro
    version: Version
    tarball: Path
    base_image_id: str
    builder: BuilderImage
    inputs: dict[str, str]
    out_dir: Path
    up_to_date: bool
    compiler_cache: CompilerCache = field(
        default_factory=lambda: CompilerCache(mode="off", reason="not planned")
    )


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    distro_id: str
    version: str
    out_dir: Path
    up_to_date: bool
    files: list[str] = field(default_factory=list)
    log_path: Path | None = None
    seconds: float = 0.0


class BuildFailed(BuildError):
    """A build (or its smoke test) failed; ``log_path`` holds the whole log."""

    def __init__(self, message: str, log_path: Path | None) -> None:
        super().__init__(message)
        self.log_path = log_path


def _read_build_json(out_dir: Path) -> dict[str, object] | None:
    try:
        data = json.loads((out_dir / BUILD_JSON).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def plan_build(
    engine: Engine,
    project: Project,
    distro: Distro,
    version: Version,
    *,
    env: Mapping[str, str],
    force: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> BuildPlan:
    """Ensure the tarball and images exist, gather the inputs, decide whether to build."""
    from releng.source import ensure_source_tarball

    _check_buildable(distro)
    check_writable(project.out_dir)
    source = ensure_source_tarball(project, version, env=env)
    target = _target(engine, project, distro, version, on_line=on_line)
    return _decide(target, source, force=force)


def _check_buildable(distro: Distro) -> None:
    if not distro.is_debianish and distro.make_package is None:
        raise BuildError(f"{distro.id} has neither debian/ nor its own make-package; add one")


def _target(
    engine: Engine,
    project: Project,
    distro: Distro,
    version: Version,
    *,
    on_line: Callable[[str], None] | None,
    no_cache: bool = False,
) -> BuildPlan:
    """What is built in which images, before the source tarball is known (no inputs yet)."""
    base_id = ensure_base_image(engine, project, distro)
    builder = ensure_builder_image(engine, project, distro, base_id=base_id, on_line=on_line)
    return BuildPlan(
        project=project,
        distro=distro,
        version=version,
        tarball=project.tarball_path(version),
        base_image_id=base_id,
        builder=builder,
        inputs={},
        out_dir=project.build_dir(version, distro.id),
        up_to_date=False,
        compiler_cache=plan_cache(project, distro, no_cache=no_cache),
    )


def _decide(target: BuildPlan, source: SourceTarball, *, force: bool) -> BuildPlan:
    """``target`` with its inputs, up to date when the last successful build had the same."""
    inputs = {
        "tarball_sha256": source.sha256,
        "distro_dir": tree_hash(target.distro.path),
        "packaging": tree_hash(target.project.root / "packaging"),
        "builder_image": target.builder.id,
    }
    previous = _read_build_json(target.out_dir)
    up_to_date = (
        not force
        and previous is not None
        and previous.get("inputs") == inputs
        and all((target.out_dir / str(f)).is_file() for f in list(previous.get("files") or []))  # type: ignore[call-overload]
    )
    return dataclasses.replace(target, tarball=source.tarball, inputs=inputs, up_to_date=up_to_date)


def check_writable(out_dir: Path) -> None:
    """Fail early, before any container runs, when ``out/`` cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(dir=out_dir, prefix=".write-probe-")
        Path(probe).rmdir()
    except OSError as exc:
        raise BuildError(
            f"cannot write to {out_dir}: {exc.strerror}; make it writable by this user "
            f"(or remove it) and run again"
        ) from None


# -- the container ------------------------------------------------------------------------


def in_container(project: Project, host_path: Path) -> str:
    """Where a path under the repository is seen inside the build container."""
    try:
        rel = host_path.resolve().relative_to(project.root)
    except ValueError:
        raise BuildError(
            f"{host_path} is outside the repository {project.root}; keep it inside"
        ) from None
    return f"{project.packaging_mount}/{rel.as_posix()}" if rel.parts else project.packaging_mount


def secret_masks(project: Project) -> list[str]:
    """Paths inside the read-only repository mount hidden from the build (keys, GNUPGHOME)."""
    hidden = [project.state_dir]
    if project.config.signing.gnupghome:
        hidden.append((project.root / project.config.signing.gnupghome).expanduser())
    masks = []
    for path in hidden:
        resolved = path.resolve()
        if resolved.is_dir() and resolved.is_relative_to(project.root) and resolved != project.root:
            masks.append(in_container(project, resolved))
    return sorted(set(masks))


def build_environment(plan: BuildPlan, *, cpus: int) -> dict[str, str]:
    """The build container's whole environment: built from scratch, no host variables."""
    return {**_fixed_environment(plan, cpus=cpus), **source_dates(plan.tarball)}


def source_dates(tarball: Path) -> dict[str, str]:
    """``SOURCE_DATE_EPOCH`` and ``CHANGELOG_DATE``: the source tarball's date."""
    epoch = tarball_mtime(tarball)
    return {
        "SOURCE_DATE_EPOCH": str(epoch),
        "CHANGELOG_DATE": email.utils.format_datetime(dt.datetime.fromtimestamp(epoch, dt.UTC)),
    }


def _fixed_environment(plan: BuildPlan, *, cpus: int) -> dict[str, str]:
    """Everything of the environment but the source's dates (known before the tarball is)."""
    project, distro, version = plan.project, plan.distro, plan.version
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "DEBIAN_FRONTEND": "noninteractive",
        "NAME": project.name,
        "PACKAGE": project.config.package_name(version),
        "VERSION": version.text,
        "IS_NIGHTLY": "1" if version.is_nightly else "",
        "TARBALL": in_container(project, plan.tarball),
        "OUT": OUT_MOUNT,
        "WORK": BUILD_DIR,
        "MAINTAINER": project.config.product.maintainer,
        "DEB_BUILD_OPTIONS": f"parallel={cpus}",
    }
    if distro.debian_dir is not None:
        env["DEBIAN_DIR"] = in_container(project, distro.debian_dir)
        env["DISTRIBUTION"] = distro.codename
        env["PKGVER"] = distro.pkgver or ""
    if distro.prebuild_hook is not None:
        env["PREBUILD_HOOK"] = f"{project.distro_mount}/{distro.prebuild_hook.name}"
    return env


def build_command(plan: BuildPlan) -> list[str]:
    if plan.distro.make_package is not None:
        return [f"{plan.project.distro_mount}/make-package"]
    return ["sh", f"{plan.project.packaging_mount}/{DEFAULT_BUILDER}"]


def build_mounts(project: Project, distro: Distro, out: Path) -> list[Mount]:
    """The repository and the distro directory read-only, ``out`` read-write at /var/out."""
    return [
        Mount(project.root, project.packaging_mount),
        Mount(distro.path.resolve(), project.distro_mount),
        Mount(out, OUT_MOUNT, read_only=False),
    ]


def build_spec(
    plan: BuildPlan, out_tmp: Path, *, owner: Owner, cpus: int, gated: bool = False
) -> ContainerSpec:
    """The build container. ``gated``: it starts before the source tarball is made and waits
    for :func:`_open_gate` to hand it the source's dates (the one part of the environment
    that depends on the tarball); ``plan`` then needs no inputs yet.
    """
    project = plan.project
    cache = plan.compiler_cache
    command = cache.command(build_command(plan), project.packaging_mount)
    environment = (
        _fixed_environment(plan, cpus=cpus) if gated else build_environment(plan, cpus=cpus)
    )
    return ContainerSpec(
        image=plan.builder.id,
        command=["sh", "-c", _GATE, "releng-gate", *command] if gated else command,
        mounts=build_mounts(project, plan.distro, out_tmp),
        volumes=cache.volumes(),
        masks=secret_masks(project),
        environment={**environment, **cache.environment()},
        network="none",
        user=owner.build_user,
        workdir=BUILD_DIR,
        labels={
            LABEL_PROJECT: str(project.root),
            LABEL_DISTRO: plan.distro.id,
            LABEL_RUN: RUN_ID,
        },
    )


def smoke_spec(plan: BuildPlan, debs_dir: Path) -> ContainerSpec:
    """A fresh base-image container, idle until the build's .debs exist (``debs_dir``, read-only).

    It is created and started while the build runs; :func:`smoke_command` then runs in it.
    """
    return ContainerSpec(
        image=plan.base_image_id,
        command=["sleep", "infinity"],
        mounts=[Mount(debs_dir, SMOKE_MOUNT)],
        environment={"DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"},
        network="none",
        # Not LABEL_PROJECT: while the build runs, the project's one container is the build's.
        labels={
            LABEL_SMOKE: str(plan.project.root),
            LABEL_DISTRO: plan.distro.id,
            LABEL_RUN: RUN_ID,
        },
    )


def smoke_command(plan: BuildPlan, debs: list[str]) -> list[str]:
    """Install the .debs (``dpkg -i``; apt-get resolves what dpkg cannot), run the smoke command."""
    install = shlex.join(f"{SMOKE_MOUNT}/{name}" for name in debs)
    script = (
        f"dpkg -i {install} >/tmp/dpkg.log 2>&1 "
        f"|| apt-get install -y -q --no-install-recommends {install} >/tmp/install.log 2>&1 "
        '|| { cat /tmp/install.log; echo "releng: the packages do not install"; exit 100; }; '
        'exec "$@"'
    )
    return ["sh", "-c", script, "smoke", *plan.project.config.product.smoke_command]


def failed_image(project: Project, distro_id: str) -> str:
    return f"{FAILED_REPOSITORY.format(name=project.name)}:{distro_id}"


# -- make-package ----------------------------------------------------------------------


def _chown_tree(path: Path, owner: Owner) -> None:
    if os.getuid() != 0:
        return
    os.chown(path, owner.uid, owner.gid)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(Path(root) / name, owner.uid, owner.gid, follow_symlinks=False)


def _new_log(project: Project, distro_id: str, version: Version) -> Path:
    logs = project.state_dir / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return logs / f"{distro_id}-{version.text}-{stamp}-{os.getpid()}.log"


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
    on_line: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build ``distro_id``'s packages of ``version`` into ``out/<version>/<distro>/``.

    Up to date (same inputs as the last successful build): nothing runs unless
    ``force``. A failure raises :class:`BuildFailed` naming the log; ``keep``
    first commits the failed container to ``releng-failed-<name>:<distro>``.
    ``no_cache``: this build runs without the compiler cache (releng.compiler_cache).

    When the source tarball must be made, the build container starts meanwhile and
    waits for it (see :func:`build_spec`'s ``gated``).
    """
    from releng.gpg import signer_for
    from releng.source import current_source_tarball, make_source_tarball

    started = time.monotonic()
    distro = project.distro(distro_id)
    _check_buildable(distro)
    check_writable(project.out_dir)
    source = current_source_tarball(project, version)
    # A signing problem fails now, not after the images are made.
    signer = None if source else signer_for(project, env, release=version.is_release)
    target = _target(engine, project, distro, version, on_line=on_line, no_cache=no_cache)
    ready = None if source is None else _decide(target, source, force=force)
    if ready is not None and ready.up_to_date:
        return _up_to_date(ready, started)

    def make_source() -> BuildPlan:
        made = make_source_tarball(project, version, env=env, signer=signer)
        return _decide(target, made, force=force)

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
    log_path = _new_log(project, distro_id, version)
    target.out_dir.parent.mkdir(parents=True, exist_ok=True)
    with (
        _failed_log_kept(log_path, owner),
        tempfile.TemporaryDirectory(dir=target.out_dir.parent, prefix=f".tmp-{distro_id}-") as tmp,
        log_path.open("w", encoding="utf-8") as log_file,
    ):
        work = Path(tmp)
        out_tmp = work / "out"
        out_tmp.mkdir()
        if os.getuid() == 0:
            uid, gid = (int(x) for x in owner.build_user.split(":"))
            os.chown(out_tmp, uid, gid)

        def record(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()
            if on_line is not None:
                on_line(line)

        cache_run = _start_cache(engine, target, owner=owner, env=env, record=record)
        spec = build_spec(target, out_tmp, owner=owner, cpus=cpus, gated=True)
        record(f"releng: {spec.describe()}")
        log.info("building %s %s in %s", distro_id, version, target.builder.reference)
        with _Background(engine, spec, "releng-build") as build:
            if isinstance(plan_or_make, BuildPlan):
                plan = plan_or_make
                _open_gate(out_tmp, plan, record=record)  # before the start: no wait at all
                build.begin()
            else:
                build.begin()  # the container starts while the tarball is made
                plan = plan_or_make()
                if plan.up_to_date:  # the new tarball is the same as the last build's
                    log_path.unlink()
                    return _up_to_date(plan, started)
                _open_gate(out_tmp, plan, record=record)
            with _SmokeTest(engine, plan, out_tmp, record=record, log_path=log_path) as smoke:

                def watch(line: str) -> None:
                    record(line)
                    smoke.watch(line)
                    cache_run.watch(line)

                build.wait_started()
                smoke.begin()
                _run_build(build.container, plan, record=watch, log_path=log_path, keep=keep)
                build.remove_soon()
                files, digests = smoke.finish()
                cache_run.end()  # the log ends with the cache's hit rate
                # The containers are being removed meanwhile.
                metadata = _metadata(plan, out_tmp, files, digests)
                log_file.flush()
                shutil.copyfile(log_path, out_tmp / BUILD_LOG)
                (out_tmp / BUILD_JSON).write_text(
                    json.dumps(metadata, indent=2, sort_keys=True) + "\n"
                )
                _chown_tree(out_tmp, owner)
                _replace_dir(out_tmp, plan.out_dir, work)
    log_path.unlink()  # it is out/<version>/<distro>/build.log now
    log.info("built %s %s into %s", distro_id, version, plan.out_dir)
    return BuildResult(
        distro_id=distro_id,
        version=version.text,
        out_dir=plan.out_dir,
        up_to_date=False,
        files=files,
        log_path=plan.out_dir / BUILD_LOG,
        seconds=time.monotonic() - started,
    )


def _start_cache(
    engine: Engine,
    target: BuildPlan,
    *,
    owner: Owner,
    env: Mapping[str, str],
    record: Callable[[str], None],
) -> _CacheRun:
    """The compiler cache's volume, filled from S3 in s3 mode, before the build."""
    cache = target.compiler_cache
    record(f"releng: compiler cache: {cache.describe()}")
    ensure_volume(engine, cache, target.distro.id)
    uid, gid = (int(x) for x in owner.build_user.split(":"))
    shared = S3Sync(engine, cache, target.distro.id, env, record, uid, gid)
    shared.pull()
    return _CacheRun(shared, record, f"releng: compiler cache: {cache.describe()}")


class _CacheRun:
    """Remembers the wrapper's last ``>>> compiler cache:`` line (the hit rate, or why the
    cache was off); :meth:`end` uploads new entries (s3 mode) and logs that line last."""

    def __init__(self, shared: S3Sync, record: Callable[[str], None], summary: str) -> None:
        self.shared = shared
        self.record = record
        self.summary = summary

    def watch(self, line: str) -> None:
        if line.startswith(LOG_PREFIX):
            self.summary = "releng: compiler cache:" + line[len(LOG_PREFIX) :]

    def end(self) -> None:
        self.shared.push()
        self.record(self.summary)


def _up_to_date(plan: BuildPlan, started: float) -> BuildResult:
    previous = _read_build_json(plan.out_dir) or {}
    log.info("%s %s is up to date in %s", plan.distro.id, plan.version, plan.out_dir)
    return BuildResult(
        distro_id=plan.distro.id,
        version=plan.version.text,
        out_dir=plan.out_dir,
        up_to_date=True,
        files=[str(f) for f in list(previous.get("files") or [])],  # type: ignore[call-overload]
        seconds=time.monotonic() - started,
    )


def _open_gate(out_tmp: Path, plan: BuildPlan, *, record: Callable[[str], None]) -> None:
    """Hand a gated build container the source's dates (through a rename: never half a file)."""
    dates = source_dates(plan.tarball)
    record(f"releng: source dates: {shlex.join(f'{k}={v}' for k, v in dates.items())}")
    tmp = out_tmp / f"{GATE_FILE}.tmp"
    tmp.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in dates.items()))
    tmp.replace(out_tmp / GATE_FILE)


class _Background:
    """A container created and started on a thread while the caller goes on.

    ``begin`` starts that; ``wait_started`` waits for it (raising what it raised);
    ``remove_soon`` begins the removal on the thread. On the way out, whatever happened,
    the thread's work is waited for and the container is removed.
    """

    def __init__(self, engine: Engine, spec: ContainerSpec, name: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.container = engine.container(spec)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._started: Future[None] | None = None
        self._removal: Future[None] | None = None

    def __enter__(self) -> _Background:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._started is not None:
                self._started.exception()  # a container still being created cannot be removed
            if self._removal is not None:
                self._removal.result()
            self.container.remove()
        finally:
            self._pool.shutdown()

    def begin(self) -> None:
        if self._started is None:
            self._started = self._pool.submit(self._create_and_start)

    def _create_and_start(self) -> None:
        self.container.__enter__()
        self.container.start()

    def wait_started(self) -> Container:
        self.begin()
        assert self._started is not None
        self._started.result()
        return self.container

    def submit(self, fn: Callable[[], _T]) -> Future[_T]:
        """Run ``fn`` on the container's thread (after its start)."""
        return self._pool.submit(fn)

    def remove_soon(self) -> None:
        if self._removal is None:
            self._removal = self._pool.submit(self.container.remove)


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
    raise BuildFailed(
        f"build of {distro_id} {version} failed (exit {code}): {_last(log_path)}; "
        f"full log: {log_path}{hint}",
        log_path,
    )


class _SmokeRun(NamedTuple):
    debs: list[str]
    digests: dict[str, str]  # sha256 of each installed package, as it was installed
    result: RunResult


class _SmokeTest:
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
        self._box = _Background(engine, smoke_spec(plan, out_tmp), "releng-smoke")
        self._early: Future[_SmokeRun | None] | None = None

    def __enter__(self) -> _SmokeTest:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._early is not None:
                self._early.exception()  # wait for it: its container is removed next
        finally:
            self._box.__exit__()

    def begin(self) -> None:
        """Begin creating and starting the idle smoke container (in the background)."""
        self._box.begin()

    def watch(self, line: str) -> None:
        """Called with each line of the build's output: starts the early run on a hand-over."""
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
        run = self._early.result() if self._early is not None else None
        where = f"a fresh {self.plan.distro.docker_base} container"
        if run is not None and run.debs == debs and all(run.digests[d] == digests[d] for d in debs):
            self.record(f"releng: installed {', '.join(debs)} in {where} as they were built")
        else:
            if self._early is not None:
                self.record("releng: the packages changed after they were handed over; again:")
                self._box.__exit__()
                self._box = _Background(self.engine, self._box.container.spec, "releng-smoke")
            self.record(f"releng: installing {', '.join(debs)} in {where}")
            run = self._install(debs)
            assert run is not None  # every file of ``debs`` was just listed
        for line in run.result.output.splitlines():
            self.record(line)
        code = run.result.exit_code
        if code != 0:
            what = "do not install" if code == 100 else f"fail the smoke command (exit {code})"
            raise BuildFailed(
                f"the {distro_id} packages {what}: {_last(self.log_path)}; "
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


def _metadata(
    plan: BuildPlan, out_tmp: Path, files: list[str], digests: Mapping[str, str]
) -> dict[str, object]:
    return {
        "distro": plan.distro.id,
        "version": plan.version.text,
        "package": plan.project.config.package_name(plan.version),
        "inputs": plan.inputs,
        "base_image": {"reference": plan.distro.docker_base, "id": plan.base_image_id},
        "builder_image": {"reference": plan.builder.reference, "id": plan.builder.id},
        "files": files,
        "sha256": {f: digests[f] for f in files},
        "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@contextlib.contextmanager
def _failed_log_kept(log_path: Path, owner: Owner) -> Iterator[None]:
    """A failed build's log stays under .releng/logs/, owned by the invoking user."""
    try:
        yield
    finally:
        if log_path.exists() and os.getuid() == 0:
            os.chown(log_path.parent, owner.uid, owner.gid)
            os.chown(log_path, owner.uid, owner.gid)


def _replace_dir(new: Path, dest: Path, scratch: Path) -> None:
    """Put ``new`` at ``dest``; an earlier ``dest`` goes into ``scratch`` (deleted with it)."""
    if dest.exists():
        dest.replace(scratch / "previous")
    new.replace(dest)


def _last(log_path: Path) -> str:
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


# -- SIGTERM as Ctrl-C --------------------------------------------------------------------


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, so containers and temp dirs go."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def remove_run_containers(engine: Engine) -> int:
    """Force-remove every container this process started (used after Ctrl-C)."""
    removed = 0
    for c in engine.client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={RUN_ID}"}):
        with contextlib.suppress(RelengError, Exception):
            c.remove(force=True, v=True)
            removed += 1
    return removed
