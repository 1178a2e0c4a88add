"""What a build is: its target architecture and mode, its images and inputs, and whether
the last successful build with the same inputs makes it up to date.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from releng.arch import (
    BuildMode,
    check_architecture,
    check_emulation,
    host_architecture,
    runs_natively,
)
from releng.compiler_cache import CompilerCache, plan_cache
from releng.digest import file_sha256
from releng.distro import Distro
from releng.engine import Engine
from releng.errors import BuildError, ImageError, RelengError
from releng.images import BuilderImage, ensure_base_image, ensure_builder_image
from releng.project import Project
from releng.source import SourceTarball, open_tarball
from releng.version import Version

BUILD_JSON = "build.json"


BUILD_LOG = "build.log"


FALLBACK_BUILD_UID = 1000  # the build user when the invoking user is root


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
                digest.update(f"F {rel} {mode} {file_sha256(p)}\n".encode())
            elif p.is_dir():
                digest.update(f"D {rel}\n".encode())
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


def read_build_json(out_dir: Path, stamp: str = BUILD_JSON) -> dict[str, object] | None:
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

    check_buildable(distro)
    wanted = resolve_target(project, distro, arch=arch, mode=mode, env=env)
    check_writable(project.out_dir)
    source = ensure_source_tarball(project, version, env=env)
    target = plan_target(engine, project, distro, version, wanted, env=env, on_line=on_line)
    return decide(target, source, force=force)


def check_buildable(distro: Distro) -> None:
    if not distro.is_debianish and distro.make_package is None:
        raise BuildError(f"{distro.id} has neither debian/ nor its own make-package; add one")


def plan_target(
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


def decide(target: BuildPlan, source: SourceTarball, *, force: bool) -> BuildPlan:
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
    previous = read_build_json(target.out_dir, target.stamp)
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
