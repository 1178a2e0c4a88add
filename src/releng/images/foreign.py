"""Base images of another architecture than the host's (``arm64v8/debian:bookworm``).

Named as the registries name per-architecture images (see :func:`releng.arch.image_for`):
the engine's copy, else pulled with that architecture's platform, else, for Debian
suites, bootstrapped with ``mmdebstrap --architectures=ARCH`` (its second stage runs
through qemu-user-static) and loaded as an image archive whose config says that
architecture. (``docker import`` cannot: Docker 20.10 records the engine's own
architecture whatever ``--platform`` says, and a build or ``docker run`` would then
take the image for an amd64 one.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

from releng.arch import ARCHITECTURES, ArchInfo, check_emulation, image_for
from releng.digest import file_sha256
from releng.distro import Distro
from releng.engine import Engine
from releng.errors import EngineError, ImageError
from releng.images import bootstrap
from releng.images.base import LABEL_PREFIX, bootstrap_recipe, log_dir
from releng.project import Project

log = logging.getLogger(__name__)

ROOTFS_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_architecture(engine: Engine, reference: str) -> str | None:
    """The architecture an image's config records (OCI names: amd64, arm64), or None."""
    return engine.image_architecture(reference)


def ensure_foreign_base_image(
    engine: Engine,
    project: Project,
    distro: Distro,
    arch: str,
    *,
    env: Mapping[str, str],
    bootstrap: bool = False,
    pull: bool = True,
) -> str:
    """The id of ``distro``'s base image for ``arch``: the engine's, else pulled, else
    bootstrapped. An engine image of that name with another architecture is refused."""
    info = ARCHITECTURES[arch]
    reference = image_for(distro.docker_base, arch)
    tried: list[str] = []
    if not bootstrap:
        found = image_architecture(engine, reference)
        if found == info.oci_arch:
            image_id = engine.image_id(reference)
            assert image_id is not None
            return image_id
        if found is not None:
            raise ImageError(
                f"{reference} in the engine is a {found} image, not {info.oci_arch}; remove it "
                f"(docker rmi {reference}) and run: invoke make-base-image {distro.id} --arch {arch}"
            )
        tried.append("not in the engine")
        if pull:
            try:
                return _pull(engine, reference, info)
            except ImageError as exc:
                tried.append(f"pull failed ({exc})")
    if distro.bootstrappable and distro.family == "ubuntu":
        # Its other architectures are on ports, which may be out of reach: said with the rest.
        check_emulation(arch, env)
        try:
            return bootstrap_foreign_image(engine, project, distro, arch)
        except ImageError as exc:
            tried.append(f"bootstrap failed ({str(exc).removeprefix(f'{distro.id}: ')})")
    elif distro.bootstrappable:
        check_emulation(arch, env)  # mmdebstrap's second stage runs arm64 programs
        return bootstrap_foreign_image(engine, project, distro, arch)
    else:
        tried.append(f"bootstrap not possible ({distro.id} is not a Debian suite mmdebstrap makes)")
    raise ImageError(
        f"no base image {reference} for {distro.id} on {arch}: {'; '.join(tried)}; load it "
        f"(`docker load -i FILE`, or `docker pull --platform {info.platform} {reference}` where a "
        "registry is reachable)"
    )


def _pull(engine: Engine, reference: str, info: ArchInfo) -> str:
    log.info("pulling %s for %s", reference, info.platform)
    try:
        return engine.pull(reference, platform=info.platform)
    except EngineError as exc:
        raise ImageError(str(exc)) from None


def foreign_recipe(project: Project, distro: Distro, arch: str) -> bootstrap.Recipe:
    """How mmdebstrap makes ``distro``'s base image for ``arch``: as for the host's, but an
    Ubuntu release's other architectures than amd64 and i386 come from its ports archive."""
    if distro.family == "ubuntu":
        from releng.images import ubuntu

        if (
            not project.config.images.ubuntu_ports_mirror
            and arch not in ubuntu.ARCHIVE_ARCHITECTURES
        ):
            raise ImageError(
                f"{distro.id}: cannot bootstrap {image_for(distro.docker_base, arch)}: Ubuntu's "
                f"{arch} packages are on its ports archive and [images] ubuntu_ports_mirror is empty"
            )
        return ubuntu.recipe(project, distro, arch=arch)
    return bootstrap_recipe(project, distro)


def foreign_bootstrap_command(
    project: Project, distro: Distro, arch: str, tarball: Path
) -> list[str]:
    """:func:`releng.images.base.bootstrap_command` for ``arch``."""
    return _command(foreign_recipe(project, distro, arch), arch, tarball)


def _command(recipe: bootstrap.Recipe, arch: str, tarball: Path) -> list[str]:
    cmd = bootstrap.command(recipe, tarball)
    return [cmd[0], f"--architectures={arch}", *cmd[1:]]


def bootstrap_foreign_image(engine: Engine, project: Project, distro: Distro, arch: str) -> str:
    """mmdebstrap ``distro``'s suite for ``arch`` and load it as an ``arch`` image."""
    info = ARCHITECTURES[arch]
    reference = image_for(distro.docker_base, arch)
    # The archive is asked first (Ubuntu: its Release verified): an unreachable one fails
    # in one line before mmdebstrap starts.
    recipe = foreign_recipe(project, distro, arch)
    bootstrap.check_archive(distro.id, recipe)
    with (
        tempfile.TemporaryDirectory(prefix="releng-bootstrap-") as tmp,
        bootstrap.readable_keyring(recipe) as readable,
    ):
        rootfs = Path(tmp) / "rootfs.tar"
        cmd = _command(readable, arch, rootfs)
        proc = bootstrap.run(
            cmd, distro_id=distro.id, reference=reference, log_dir=log_dir(project)
        )
        if proc.returncode != 0:
            hint = (
                "install arch-test (./scripts/setup-binfmt)"
                if "arch-test" in proc.output
                else "check the mirror in [images] of product.toml and ./scripts/setup-binfmt"
            )
            raise ImageError(
                f"{distro.id}: mmdebstrap of {distro.codename} for {arch} failed: "
                f"{proc.failure()}; {hint}"
            )
        labels = {
            f"{LABEL_PREFIX}.suite": distro.codename,
            f"{LABEL_PREFIX}.architecture": arch,
            f"{LABEL_PREFIX}.mirror": cmd[-1],
            f"{LABEL_PREFIX}.date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            f"{LABEL_PREFIX}.bootstrap": f"mmdebstrap --variant={bootstrap.VARIANT} --architectures={arch}",
        }
        archive = Path(tmp) / "image.tar"
        write_image_archive(archive, rootfs, reference=reference, info=info, labels=labels)
        log.info("docker load %s (%s)", reference, info.platform)
        engine.load_image(archive)  # streamed: the archive holds the whole root file system
    image_id = engine.image_id(reference)
    if image_id is None:
        raise ImageError(
            f"{distro.id}: docker load of {reference} left no image; see the engine's log"
        )
    return image_id


def write_image_archive(
    archive: Path, rootfs: Path, *, reference: str, info: ArchInfo, labels: Mapping[str, str]
) -> None:
    """A ``docker save``-format archive of one layer (``rootfs``, a tar) whose config says
    ``info``'s architecture, tagged ``reference``."""
    diff_id = file_sha256(rootfs)
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "architecture": info.oci_arch,
        **({"variant": info.oci_variant} if info.oci_variant else {}),
        "os": "linux",
        "created": created,
        "config": {"Env": [ROOTFS_PATH], "Cmd": ["bash"], "Labels": dict(labels)},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [
            {"created": created, "created_by": labels.get(f"{LABEL_PREFIX}.bootstrap", "")}
        ],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    manifest = [
        {"Config": config_name, "RepoTags": [reference], "Layers": [f"{diff_id}/layer.tar"]}
    ]
    with tarfile.open(archive, "w") as tar:
        _add_bytes(tar, config_name, config_bytes)
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
        tar.add(rootfs, arcname=f"{diff_id}/layer.tar")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))
