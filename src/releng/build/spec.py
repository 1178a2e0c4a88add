"""The build and smoke-test containers as plain data: mounts, the environment built from
scratch, the secrets masked, the labels; and the gate that hands a build started early
the source's dates.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path

from releng.arch import BuildMode
from releng.build.plan import BuildPlan, Owner, tarball_mtime
from releng.build.reaper import (
    LABEL_DISTRO,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_RUN,
    LABEL_SMOKE,
    RUN_ID,
    owner_label,
)
from releng.distro import Distro
from releng.engine import ContainerSpec, Mount
from releng.errors import BuildError
from releng.project import Project

DEFAULT_BUILDER = "packaging/make-debianish-package"


OUT_MOUNT = "/var/out"


BUILD_DIR = "/build"


SMOKE_MOUNT = "/var/debs"  # the build's output, read-only, in the smoke container


FAILED_REPOSITORY = "releng-failed-{name}"


GATE_FILE = ".releng-go"  # in /var/out: the source's dates, which open a gated build


# A gated build container waits for GATE_FILE, reads it, removes it, then runs the builder.
_GATE = (
    f'while [ ! -e "$OUT/{GATE_FILE}" ]; do sleep 0.01; done; '
    f'. "$OUT/{GATE_FILE}" && rm -f "$OUT/{GATE_FILE}" && exec "$@"'
)


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
    for :func:`open_gate` to hand it the source's dates (the one part of the environment
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


def open_gate(
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
