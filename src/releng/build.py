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
import re
import shlex
import shutil
import signal
import socket
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NamedTuple, TypeVar

from releng.arch import (
    BuildMode,
    check_architecture,
    check_emulation,
    host_architecture,
    image_for,
    runs_natively,
)
from releng.compiler_cache import LOG_PREFIX, CompilerCache, S3Sync, ensure_volume, plan_cache
from releng.distro import Distro, family_revision_warnings
from releng.engine import Container, ContainerSpec, Engine, Mount, RunResult
from releng.errors import BuildError, ImageError, RelengError
from releng.images import BuilderImage, ensure_base_image, ensure_builder_image
from releng.project import Project
from releng.source import SourceTarball, open_tarball
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
LABEL_OWNER = "org.releng.owner"  # host, pid and start time of the process that made it
BINARIES_READY = ">>> binaries ready:"  # packaging/binaries-ready's hand-over line
GATE_FILE = ".releng-go"  # in /var/out: the source's dates, which open a gated build
# A gated build container waits for GATE_FILE, reads it, removes it, then runs the builder.
_GATE = (
    f'while [ ! -e "$OUT/{GATE_FILE}" ]; do sleep 0.01; done; '
    f'. "$OUT/{GATE_FILE}" && rm -f "$OUT/{GATE_FILE}" && exec "$@"'
)
_T = TypeVar("_T")
RUN_ID = uuid.uuid4().hex  # this process's containers (make-all-packages removes them on Ctrl-C)


# -- what dead runs left ------------------------------------------------------------------


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


def _tmp_prefix(distro_id: str) -> str:
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
        found = engine.client.containers.list(
            all=True, filters={"label": f"{label}={project.root}"}
        )
        for c in found:
            owner = (c.labels or {}).get(LABEL_OWNER, "").split()
            if str(c.id) in seen or len(owner) != 3 or not owner[1].isdigit():
                continue  # made by an older releng: its owner cannot be told
            seen.add(str(c.id))
            if _dead(owner[0], int(owner[1]), owner[2]):
                with contextlib.suppress(Exception):  # removed meanwhile by another run
                    c.remove(force=True, v=True)
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
        with open_tarball(tarball) as tf:
            return max((int(m.mtime) for m in tf.getmembers()), default=0)
    except (OSError, tarfile.TarError, RelengError) as exc:
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
    target: Target
    smoke_image_id: str  # the base image of ``target.arch`` (cross builds: not the builder's)
    smoke_test: bool = True  # False: make-package --no-smoke (smoke_image_id may be "")
    # lintian after the build (None: not run), failing on these tags (see releng.lintian).
    lintian_fail_on: tuple[str, ...] | None = None
    compiler_cache: CompilerCache = field(
        default_factory=lambda: CompilerCache(mode="off", reason="not planned")
    )

    @property
    def stamp(self) -> str:
        return self.target.stamp

    @property
    def log_name(self) -> str:
        return self.target.log_name


@dataclass(frozen=True, kw_only=True)
class Target:
    """The architecture a build is for, and how it is built.

    The first of product.toml's ``[repositories] architectures`` is the primary one: its
    build makes the source package and the ``Architecture: all`` packages and writes
    ``build.json``. The others build only their architecture's packages
    (``dpkg-buildpackage -B``) into the same directory, each with its own
    ``build-<arch>.json`` and ``build-<arch>.log``.
    """

    arch: str
    mode: str  # "native", or a BuildMode value
    primary: bool

    @property
    def stamp(self) -> str:
        return BUILD_JSON if self.primary else f"build-{self.arch}.json"

    @property
    def log_name(self) -> str:
        return BUILD_LOG if self.primary else f"build-{self.arch}.log"

    @property
    def foreign(self) -> bool:
        """Built for another architecture than the host's."""
        return self.arch != host_architecture()

    def dpkg_buildpackage_args(self) -> str:
        args = [] if self.primary else ["-B"]  # Architecture: all comes with the primary
        if self.mode == BuildMode.CROSS.value:
            args += [f"--host-arch={self.arch}", "-Pcross,nocheck"]
        return " ".join(args or ["-sa"])


def resolve_target(
    project: Project,
    distro: Distro,
    *,
    arch: str | None,
    mode: str | None,
    env: Mapping[str, str],
    smoke_test: bool = True,
) -> Target:
    """Check ``arch`` (default: the host's) and choose its build mode: ``mode``, else the
    distro's BUILD_MODE, else ``[images] build_mode``. A foreign architecture needs emulation
    here (its smoke test, and its build when emulated; not a cross build without
    ``smoke_test``)."""
    architectures = project.config.repositories.architectures
    arch = arch or host_architecture()
    where = str(project.config.path or "product.toml (absent: the built-in default)")
    check_architecture(arch, architectures, where=where)
    chosen = BuildMode.parse(
        mode or distro.build_mode or project.config.images.build_mode, where="--mode"
    )
    if runs_natively(arch):
        return Target(arch=arch, mode="native", primary=arch == architectures[0])
    if smoke_test or chosen == BuildMode.EMULATED:
        check_emulation(arch, env)
    return Target(arch=arch, mode=chosen.value, primary=arch == architectures[0])


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    distro_id: str
    version: str
    out_dir: Path
    up_to_date: bool
    files: list[str] = field(default_factory=list)
    log_path: Path | None = None
    seconds: float = 0.0
    arch: str = ""


class BuildFailed(BuildError):
    """A build (or its smoke test) failed; ``log_path`` holds the whole log."""

    def __init__(self, message: str, log_path: Path | None) -> None:
        super().__init__(message)
        self.log_path = log_path


def _read_build_json(out_dir: Path, stamp: str = BUILD_JSON) -> dict[str, object] | None:
    try:
        data = json.loads((out_dir / stamp).read_text())
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
    arch: str | None = None,
    mode: str | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuildPlan:
    """Ensure the tarball and images exist, gather the inputs, decide whether to build."""
    from releng.source import ensure_source_tarball

    _check_buildable(distro)
    wanted = resolve_target(project, distro, arch=arch, mode=mode, env=env)
    check_writable(project.out_dir)
    source = ensure_source_tarball(project, version, env=env)
    target = _target(engine, project, distro, version, wanted, env=env, on_line=on_line)
    return _decide(target, source, force=force)


def _check_buildable(distro: Distro) -> None:
    if not distro.is_debianish and distro.make_package is None:
        raise BuildError(f"{distro.id} has neither debian/ nor its own make-package; add one")


def _target(
    engine: Engine,
    project: Project,
    distro: Distro,
    version: Version,
    wanted: Target,
    *,
    env: Mapping[str, str],
    on_line: Callable[[str], None] | None,
    no_cache: bool = False,
    smoke_test: bool = True,
) -> BuildPlan:
    """What is built in which images, before the source tarball is known (no inputs yet).

    A foreign architecture's packages are smoke-tested in its own base image; a cross
    build runs in a builder of the host's base image, an emulated one in a builder of
    the architecture's base image. Without ``smoke_test`` a cross build needs no image
    of the architecture.
    """
    if not wanted.foreign:
        base_id = ensure_base_image(engine, project, distro)
        builder = ensure_builder_image(engine, project, distro, base_id=base_id, on_line=on_line)
        smoke_id = base_id
    else:
        cross = wanted.mode == BuildMode.CROSS.value
        smoke_id = (
            _foreign_base(engine, project, distro, wanted, env=env, cross=cross)
            if smoke_test or not cross
            else ""
        )
        base_id = ensure_base_image(engine, project, distro) if cross else smoke_id
        builder = ensure_builder_image(
            engine,
            project,
            distro,
            base_id=base_id,
            arch=wanted.arch,
            cross=cross,
            on_line=on_line,
        )
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
        target=wanted,
        smoke_image_id=smoke_id,
        smoke_test=smoke_test,
        compiler_cache=plan_cache(project, distro, no_cache=no_cache, arch=wanted.arch),
    )


def _foreign_base(
    engine: Engine,
    project: Project,
    distro: Distro,
    wanted: Target,
    *,
    env: Mapping[str, str],
    cross: bool,
) -> str:
    """The base image of ``wanted.arch``: an emulated build's, a cross build's smoke test's."""
    from releng.images.foreign import ensure_foreign_base_image

    try:
        return ensure_foreign_base_image(engine, project, distro, wanted.arch, env=env)
    except ImageError as exc:
        if not cross:
            raise
        raise ImageError(
            f"{exc}; it runs the smoke test: to cross-build without one, invoke make-package "
            f"{distro.id} --arch {wanted.arch} --no-smoke"
        ) from None


def _decide(target: BuildPlan, source: SourceTarball, *, force: bool) -> BuildPlan:
    """``target`` with its inputs, up to date when the last successful build had the same."""
    inputs = {
        "tarball_sha256": source.sha256,
        "distro_dir": tree_hash(target.distro.path),
        "packaging": tree_hash(target.project.root / "packaging"),
        "builder_image": target.builder.id,
    }
    if target.lintian_fail_on is not None:
        inputs["lintian"] = " ".join(target.lintian_fail_on) or "report"
    if target.target.foreign:
        inputs["architecture"] = target.target.arch
        inputs["build_mode"] = target.target.mode
    if not target.smoke_test:
        inputs["smoke_test"] = "skipped"
    previous = _read_build_json(target.out_dir, target.stamp)
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
        "UPSTREAM_VERSION": project.config.source.upstream_version(version),
        "IS_NIGHTLY": "1" if version.is_nightly else "",
        "TARBALL": in_container(project, plan.tarball),
        "OUT": OUT_MOUNT,
        "WORK": BUILD_DIR,
        "MAINTAINER": project.config.product.maintainer,
        "DEB_BUILD_OPTIONS": f"parallel={cpus}",
        # The architecture built for, how, and dpkg-buildpackage's arguments for that.
        "HOST_ARCH": plan.target.arch,
        "BUILD_MODE": plan.target.mode,
        "DPKG_BUILDPACKAGE_ARGS": plan.target.dpkg_buildpackage_args(),
    }
    if plan.target.mode == BuildMode.CROSS.value:
        env["DEB_BUILD_OPTIONS"] += " nocheck"  # goes with the nocheck profile
    if distro.debian_dir is not None:
        env["DEBIAN_DIR"] = debian_mount(project)  # prepared by releng: see stage_debian
        env["DISTRO_DEBIAN_DIR"] = in_container(project, distro.debian_dir)  # as it is
        env["DISTRIBUTION"] = distro.codename
        env["PKGVER"] = distro.pkgver or ""
    upstream_signature = project.upstream_signature_path(version)
    if upstream_signature is not None:
        env["UPSTREAM_SIGNATURE"] = in_container(project, upstream_signature)
    if distro.prebuild_hook is not None:
        env["PREBUILD_HOOK"] = f"{project.distro_mount}/{distro.prebuild_hook.name}"
    return env


def build_command(plan: BuildPlan) -> list[str]:
    if plan.distro.make_package is not None:
        return [f"{plan.project.distro_mount}/make-package"]
    return ["sh", f"{plan.project.packaging_mount}/{DEFAULT_BUILDER}"]


def build_mounts(
    project: Project, distro: Distro, out: Path, *, debian: Path | None = None
) -> list[Mount]:
    """The repository and the distro directory read-only, ``out`` read-write at /var/out;
    ``debian``: the prepared debian/ tree (see :func:`stage_debian`), read-only."""
    mounts = [
        Mount(project.root, project.packaging_mount),
        Mount(distro.path.resolve(), project.distro_mount),
        Mount(out, OUT_MOUNT, read_only=False),
    ]
    if debian is not None:
        mounts.append(Mount(debian, debian_mount(project)))
    return mounts


def stages_debian(distro: Distro) -> bool:
    """Whether the build gets a debian/ prepared by releng (DEBIAN_DIR): every Debian-like
    distro's does; a distro's own make-package also finds it as it is in DISTRO_DEBIAN_DIR."""
    return distro.debian_dir is not None


def debian_mount(project: Project) -> str:
    """Where the build container sees the prepared debian/ tree (DEBIAN_DIR), read-only."""
    return f"/opt/{project.name}-debian"


def stage_debian(plan: BuildPlan, dest: Path, *, dates: Mapping[str, str]) -> None:
    """Prepare the distro's debian/ in ``dest``: nightly rename, this build's changelog entry."""
    from releng.debian_tree import ChangelogEntry, stage_debian_dir

    project, distro, version = plan.project, plan.distro, plan.version
    assert distro.debian_dir is not None  # see stages_debian
    package = project.config.package_name(version)
    full = f"{project.config.source.upstream_version(version)}-{distro.pkgver}"
    entry = ChangelogEntry(
        package=package,
        version=full,
        distribution=distro.codename,
        maintainer=project.config.product.maintainer,
        date=dates["CHANGELOG_DATE"],
        text=f"Build of {package} {version} for {distro.codename}.",
    )
    stage_debian_dir(distro.debian_dir, dest, name=project.name, package=package, entry=entry)


def build_spec(
    plan: BuildPlan,
    out_tmp: Path,
    *,
    owner: Owner,
    cpus: int,
    gated: bool = False,
    debian: Path | None = None,
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
        mounts=build_mounts(project, plan.distro, out_tmp, debian=debian),
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
            LABEL_OWNER: owner_label(),
        },
    )


def smoke_spec(plan: BuildPlan, debs_dir: Path) -> ContainerSpec:
    """A fresh base-image container, idle until the build's .debs exist (``debs_dir``, read-only).

    It is created and started while the build runs; :func:`smoke_command` then runs in it.
    """
    return ContainerSpec(
        image=plan.smoke_image_id,
        command=["sleep", "infinity"],
        mounts=[Mount(debs_dir, SMOKE_MOUNT)],
        environment={"DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"},
        network="none",
        # Not LABEL_PROJECT: while the build runs, the project's one container is the build's.
        labels={
            LABEL_SMOKE: str(plan.project.root),
            LABEL_DISTRO: plan.distro.id,
            LABEL_RUN: RUN_ID,
            LABEL_OWNER: owner_label(),
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


def _new_log(project: Project, distro_id: str, version: Version, target: Target) -> Path:
    logs = project.state_dir / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    arch = "" if target.primary else f"-{target.arch}"
    return logs / f"{distro_id}{arch}-{version.text}-{stamp}-{os.getpid()}.log"


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
    from releng.source import current_source_tarball, make_source_tarball

    started = time.monotonic()
    distro = project.distro(distro_id)
    _check_buildable(distro)
    for warning in family_revision_warnings(project.root, distro):
        log.warning("warning: %s", warning)
    wanted = resolve_target(project, distro, arch=arch, mode=mode, env=env, smoke_test=smoke_test)
    check_writable(project.out_dir)
    for directory in (project.out_dir / version.text, project.build_dir(version, distro_id)):
        if directory.is_dir():  # renamed into (or out of) place: it must be writable too
            check_writable(directory)
    remove_dead_runs(engine, project)
    source = current_source_tarball(project, version)
    # A signing problem fails now, not after the images are made.
    signer = None if source else signer_for(project, env, release=version.is_release)
    target = _target(
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
    log_path = _new_log(project, distro_id, version, target.target)
    target.out_dir.parent.mkdir(parents=True, exist_ok=True)
    with (
        _failed_log_kept(log_path, owner),
        tempfile.TemporaryDirectory(
            dir=target.out_dir.parent, prefix=_tmp_prefix(distro_id)
        ) as tmp,
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

        debian = _debian_stage(work, target.distro)
        cache_run = _start_cache(engine, target, owner=owner, env=env, record=record)
        spec = build_spec(target, out_tmp, owner=owner, cpus=cpus, gated=True, debian=debian)
        record(f"releng: {spec.describe()}")
        log.info("building %s %s in %s", distro_id, version, target.builder.reference)
        with _Background(engine, spec, "releng-build") as build:
            if isinstance(plan_or_make, BuildPlan):
                plan = plan_or_make
                # Before the start: no wait at all.
                _open_gate(out_tmp, plan, record=record, debian=debian)
                build.begin()
            else:
                build.begin()  # the container starts while the tarball is made
                plan = plan_or_make()
                if plan.up_to_date:  # the new tarball is the same as the last build's
                    log_path.unlink()
                    return _up_to_date(plan, started)
                _open_gate(out_tmp, plan, record=record, debian=debian)
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
                files = _lint(
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
                _place_output(plan, out_tmp, files, digests, log_path=log_path, owner=owner)
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


def _place_output(
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


def _debian_stage(work: Path, distro: Distro) -> Path | None:
    """Where the build's prepared debian/ goes: empty until the gate opens (mounted now,
    filled then); None when the build gets none (see :func:`stages_debian`)."""
    if not stages_debian(distro):
        return None
    (work / "debian").mkdir()
    return work / "debian"


def _lint(
    engine: Engine,
    plan: BuildPlan,
    out_tmp: Path,
    files: list[str],
    digests: dict[str, str],
    *,
    owner: Owner,
    record: Callable[[str], None],
    log_path: Path,
) -> list[str]:
    """When the plan says so, lintian on the build's .changes; its report joins the output
    (``files`` and ``digests``)."""
    from releng.lintian import REPORT, ensure_lintian_image, run_lintian

    if plan.lintian_fail_on is None:
        return files
    changes = next(f for f in files if f.endswith(".changes"))  # smoke.finish checked
    record(f"releng: lintian {changes}")
    image = ensure_lintian_image(
        engine, name=plan.project.name, distro_id=plan.distro.id, builder_id=plan.builder.id
    )
    report = run_lintian(engine, image, out_tmp, changes, user=owner.build_user)
    (out_tmp / REPORT).write_text(report.text, encoding="utf-8")
    digests[REPORT] = file_sha256(out_tmp / REPORT)
    record(f"releng: {report.summary()}; report: {REPORT}")
    fatal = report.fatal(plan.lintian_fail_on)
    if fatal:
        for line in report.text.splitlines():
            record(line)
        raise BuildFailed(
            f"lintian found {', '.join(fatal)} in the {plan.distro.id} build, which "
            f"[lintian] fail_on lists; the report is in the full log: {log_path}",
            log_path,
        )
    return sorted([*files, REPORT])


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
    previous = _read_build_json(plan.out_dir, plan.stamp) or {}
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


def _open_gate(
    out_tmp: Path, plan: BuildPlan, *, record: Callable[[str], None], debian: Path | None
) -> None:
    """Hand a gated build container the source's dates (through a rename: never half a file),
    once its prepared debian/ is in ``debian``."""
    dates = source_dates(plan.tarball)
    record(f"releng: source dates: {shlex.join(f'{k}={v}' for k, v in dates.items())}")
    if debian is not None:
        stage_debian(plan, debian, dates=dates)
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
        # A second Ctrl-C right after the first must not cut the removal short: it would
        # leave the container behind (it waits for its creation to finish first).
        with interrupts_deferred():
            try:
                if self._started is not None:
                    self._started.exception()  # a container being created cannot be removed
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
    target = plan.target
    what = f"build of {distro_id} {version}"
    if target.mode == BuildMode.CROSS.value:
        what = f"cross build of {distro_id} {version} for {target.arch}"
        hint += (
            f"; a package that builds natively may not cross-build: invoke make-package "
            f"{distro_id} --arch {target.arch} --mode emulated"
        )
    raise BuildFailed(
        f"{what} failed (exit {code}): {_last(log_path)}; full log: {log_path}{hint}",
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


@contextlib.contextmanager
def _failed_log_kept(log_path: Path, owner: Owner) -> Iterator[None]:
    """A failed build's log stays under .releng/logs/, owned by the invoking user."""
    try:
        yield
    finally:
        if log_path.exists() and os.getuid() == 0:
            os.chown(log_path.parent, owner.uid, owner.gid)
            os.chown(log_path, owner.uid, owner.gid)


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


def _keep_other_architectures(plan: BuildPlan, out_tmp: Path) -> None:
    """Hard-link into ``out_tmp`` what other architectures' builds of the same source tarball
    left in the output directory (their stamp, log and files); builds of another source are
    dropped with the old directory."""
    if not plan.out_dir.is_dir():
        return
    for stamp in sorted(plan.out_dir.glob("build*.json")):
        if stamp.name == plan.stamp:
            continue
        data = _read_build_json(plan.out_dir, stamp.name) or {}
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


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block (a clean-up) has finished, then raise
    KeyboardInterrupt; a third one interrupts at once (the user insists)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) >= 2:
            raise KeyboardInterrupt

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if received:
        raise KeyboardInterrupt


def remove_run_containers(engine: Engine) -> int:
    """Force-remove every container this process started (used after Ctrl-C)."""
    removed = 0
    for c in engine.client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={RUN_ID}"}):
        with contextlib.suppress(RelengError, Exception):
            c.remove(force=True, v=True)
            removed += 1
    return removed
