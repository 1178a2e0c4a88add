"""Builder images: a base image after ``packaging/builder-setup`` ran in it.

A builder image's tag is a hash of everything that shapes it (base image id,
Build-Depends, APT_SOURCES, the setup script; for a cross builder also
``packaging/cross-setup`` and, on Ubuntu, the ports mirror it uses), so it is
reused until one of those changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from releng.digest import file_sha256
from releng.distro import Distro
from releng.engine import ContainerSpec, Engine, EngineRefused, Mount, image_ref_parts
from releng.errors import ImageError
from releng.images.base import LABEL_PREFIX, ensure_base_image
from releng.project import Project

log = logging.getLogger(__name__)

BUILDER_SETUP = "packaging/builder-setup"
CROSS_SETUP = "packaging/cross-setup"  # run by builder-setup in cross builders only
NO_PORTS = "releng: no ports:"  # cross-setup: the Build-Depends need Ubuntu's ports archive
SETUP_PARAMS = "/opt/releng-setup"  # builder-setup's parameters, mounted read-only
APT_CACHE = "/var/cache/releng-apt"  # the download cache volume (builder-setup copies in and out)
BUILDER_FORMAT = "2"  # bump when the way builder images are made changes outside builder-setup


def build_depends(debian_dir: Path) -> str:
    """Build-Depends, -Arch and -Indep of ``debian/control``'s source stanza, comma-joined."""
    from debian.deb822 import Deb822

    control = debian_dir / "control"
    with control.open(encoding="utf-8") as fh:
        source = next(iter(Deb822.iter_paragraphs(fh)), None)
    if source is None or "Source" not in source:
        raise ImageError(f"{control} has no source stanza; it must start with `Source: <name>`")
    fields = [
        source.get(name, "")
        for name in ("Build-Depends", "Build-Depends-Arch", "Build-Depends-Indep")
    ]
    relations = [r.strip() for f in fields for r in " ".join(f.split()).split(",") if r.strip()]
    return ", ".join(relations)


@dataclass(frozen=True, kw_only=True)
class BuilderImage:
    reference: str  # repository:tag
    id: str
    base_id: str
    inputs_hash: str
    created: bool  # made by this call (False: reused)


def builder_inputs(
    project: Project,
    distro: Distro,
    base_id: str,
    *,
    arch: str = "",
    cross: bool = False,
    ports_mirror: str = "",
) -> dict[str, str]:
    """Everything that shapes the builder image, as plain data. ``arch``: the architecture it
    builds for when that is not the host's: ``cross`` with the host's tools and a cross
    toolchain, else ``base_id`` is an image of ``arch`` that runs emulated. ``ports_mirror``:
    an Ubuntu cross builder's (:func:`releng.images.ubuntu.reachable_ports_mirror`)."""
    if distro.debian_dir is None:
        raise ImageError(f"{distro.id} has no debian/ directory: the default builder needs one")
    setup = project.root / BUILDER_SETUP
    if not setup.is_file():
        raise ImageError(f"{setup} is missing; it provisions builder images (restore it from git)")
    inputs = {
        "format": BUILDER_FORMAT,
        "base_image": base_id,
        "build_depends": build_depends(distro.debian_dir),
        "apt_sources": distro.apt_sources or "",
        "builder_setup": file_sha256(setup),
    }
    if arch:
        inputs["architecture"] = arch
        inputs["cross"] = "1" if cross else ""
    if arch and cross:
        cross_setup = project.root / CROSS_SETUP
        if not cross_setup.is_file():
            raise ImageError(
                f"{cross_setup} is missing; it provisions cross builders (restore it from git)"
            )
        inputs["cross_setup"] = file_sha256(cross_setup)
        if distro.family == "ubuntu":
            inputs["ports_mirror"] = ports_mirror
    return inputs


def builder_repository(project: Project, inputs: dict[str, str]) -> str:
    """``releng-builder-<name>``; ``-cross-<arch>`` or ``-<arch>`` (emulated) for another
    architecture than the host's. Each is pruned on its own."""
    arch = inputs.get("architecture", "")
    flavour = f"-cross-{arch}" if inputs.get("cross") else f"-{arch}" if arch else ""
    return f"releng-builder-{project.name}{flavour}"


def builder_reference(project: Project, distro: Distro, inputs: dict[str, str]) -> tuple[str, str]:
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return f"{builder_repository(project, inputs)}:{distro.id}-{digest[:16]}", digest


def apt_cache_volume(project: Project, distro: Distro) -> str:
    """The named volume that keeps apt downloads between rebuilds of one distro's builder."""
    return f"releng-apt-cache-{project.name}-{distro.id}"


def ensure_builder_image(
    engine: Engine,
    project: Project,
    distro: Distro,
    *,
    base_id: str | None = None,
    arch: str = "",
    cross: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> BuilderImage:
    """The builder image for ``distro``: reused when its inputs match, else made and committed.
    ``arch`` and ``cross``: see :func:`builder_inputs`."""
    if base_id is None:
        base_id = ensure_base_image(engine, project, distro)
    ports_mirror = ""
    if arch and cross and distro.family == "ubuntu":
        from releng.images.ubuntu import reachable_ports_mirror

        ports_mirror = reachable_ports_mirror(project, distro)
    inputs = builder_inputs(
        project, distro, base_id, arch=arch, cross=cross, ports_mirror=ports_mirror
    )
    reference, digest = builder_reference(project, distro, inputs)
    existing = engine.image_id(reference)
    if existing is not None:
        return BuilderImage(
            reference=reference, id=existing, base_id=base_id, inputs_hash=digest, created=False
        )
    with _host_lock(f"releng-builder-{digest[:16]}"):
        # Another process may have made it while this one waited.
        existing = engine.image_id(reference)
        if existing is not None:
            return BuilderImage(
                reference=reference, id=existing, base_id=base_id, inputs_hash=digest, created=False
            )
        made = _make_builder(
            engine,
            project,
            distro,
            inputs=inputs,
            reference=reference,
            digest=digest,
            on_line=on_line,
        )
    prune_builder_images(
        engine,
        project,
        distro,
        keep=project.config.images.keep_builders,
        repository=builder_repository(project, inputs),
    )
    return made


def prune_builder_images(
    engine: Engine, project: Project, distro: Distro, *, keep: int, repository: str = ""
) -> list[str]:
    """Remove all but the newest ``keep`` builder images of ``distro``; the removed references.

    An image a container still uses (another build, an interactive shell) is left alone.
    ``repository``: the builders of another architecture (:func:`builder_repository`).
    """
    repository = repository or f"releng-builder-{project.name}"
    prefix = f"{repository}:{distro.id}-"
    tagged: list[tuple[tuple[str, str], str]] = []  # (creation time, reference)
    for image in engine.images(repository):
        # RFC 3339 in UTC with trailing zeros of the nanoseconds cut: pad them to compare.
        seconds, _, fraction = image.created.rstrip("Z").partition(".")
        created = (seconds, fraction.ljust(9, "0"))
        tagged += [(created, tag) for tag in image.tags if tag.startswith(prefix)]
    tagged.sort(reverse=True)
    removed = []
    for _created, reference in tagged[keep:]:
        try:
            if not engine.remove_image(reference):
                continue
        except EngineRefused as exc:
            log.info("keeping builder image %s: %s", reference, exc.reason)
            continue
        log.info("removed the old builder image %s", reference)
        removed.append(reference)
    return removed


@contextlib.contextmanager
def _host_lock(name: str) -> Iterator[None]:
    """An exclusive lock shared by every releng process on this host (one engine)."""
    import fcntl

    path = Path(tempfile.gettempdir()) / f"{name}.lock"
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _make_builder(
    engine: Engine,
    project: Project,
    distro: Distro,
    *,
    inputs: dict[str, str],
    reference: str,
    digest: str,
    on_line: Callable[[str], None] | None,
) -> BuilderImage:
    base_id = inputs["base_image"]
    log.info("making builder image %s", reference)
    with tempfile.TemporaryDirectory(prefix="releng-setup-") as tmp:
        # Parameters travel as files, not environment: a commit would keep the variables.
        params = Path(tmp)
        params.chmod(0o755)
        (params / "build-depends").write_text(inputs["build_depends"] + "\n")
        (params / "apt-sources").write_text(inputs["apt_sources"])
        mounts = [_setup_mount(project, BUILDER_SETUP), Mount(params, SETUP_PARAMS)]
        if inputs.get("cross"):
            (params / "cross-arch").write_text(inputs["architecture"])
            (params / "ports-mirror").write_text(inputs.get("ports_mirror", ""))
            mounts.append(_setup_mount(project, CROSS_SETUP))
        spec = ContainerSpec(
            image=base_id,
            command=["sh", f"{project.packaging_mount}/{BUILDER_SETUP}", SETUP_PARAMS],
            mounts=mounts,
            volumes={apt_cache_volume(project, distro): APT_CACHE},
        )
        image_id = _run_setup(
            engine,
            spec,
            project=project,
            distro=distro,
            inputs=inputs,
            reference=reference,
            digest=digest,
            on_line=on_line,
        )
    return BuilderImage(
        reference=reference, id=image_id, base_id=base_id, inputs_hash=digest, created=True
    )


def _run_setup(
    engine: Engine,
    spec: ContainerSpec,
    *,
    project: Project,
    distro: Distro,
    inputs: dict[str, str],
    reference: str,
    digest: str,
    on_line: Callable[[str], None] | None,
) -> str:
    lines: list[str] = []

    def collect(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    repository, tag = image_ref_parts(reference)
    with engine.container(spec) as container:
        container.start()
        container.stream(collect)
        code = container.wait()
        if code != 0:
            raise ImageError(_setup_failure(project, distro, inputs, lines, code))
        changes = [
            f"LABEL {LABEL_PREFIX}.builder-for={json.dumps(distro.id)}",
            f"LABEL {LABEL_PREFIX}.base-image={json.dumps(inputs['base_image'])}",
            f"LABEL {LABEL_PREFIX}.inputs={json.dumps(digest)}",
            "WORKDIR /build",
            "ENV LANG=C.UTF-8",
            'CMD ["bash", "-l"]',
        ]
        return container.commit(repository, tag, changes=changes)


def _setup_mount(project: Project, script: str) -> Mount:
    return Mount(project.root / script, f"{project.packaging_mount}/{script}")


def _setup_failure(
    project: Project, distro: Distro, inputs: dict[str, str], lines: list[str], code: int
) -> str:
    depends = inputs["build_depends"]
    unsatisfiable = [
        ln.strip()
        for ln in lines
        if "Unable to locate package" in ln
        or "but it is not installable" in ln
        or "has no installation candidate" in ln
        or "Unsatisfied dependencies" in ln
        or ("Depends:" in ln and "but" in ln)
    ]
    if inputs.get("cross") and any(ln.startswith(NO_PORTS) for ln in lines):
        arch = inputs["architecture"]
        mirror = project.config.images.ubuntu_ports_mirror
        ports = f"{mirror} cannot be reached" if mirror else "is empty"
        return (
            f"{distro.id}: cannot cross-build for {arch}: the Build-Depends ({depends}) need "
            f"{arch} packages, which only Ubuntu's ports archive has, and [images] "
            f"ubuntu_ports_mirror {ports}"
            f"{': ' + unsatisfiable[-1] if unsatisfiable else ''}; set ubuntu_ports_mirror in "
            "product.toml to a reachable mirror of ubuntu-ports"
        )
    if unsatisfiable and inputs.get("cross"):
        arch = inputs["architecture"]
        return (
            f"{distro.id}: cannot cross-build for {arch}: the Build-Depends ({depends}) have no "
            f"{arch} candidate on {distro.codename} with the cross and nocheck profiles: "
            f"{unsatisfiable[-1]}; build it emulated: invoke make-package {distro.id} "
            f"--arch {arch} --mode emulated"
        )
    if unsatisfiable:
        return (
            f"{distro.id}: the Build-Depends ({depends}) cannot be installed on {distro.codename}: "
            f"{unsatisfiable[-1]}; fix Build-Depends in {distro.debian_dir}/control"
        )
    tail = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
    return (
        f"{distro.id}: making the builder image failed (exit {code}): {tail}; "
        f"check the distro's apt sources and {BUILDER_SETUP}"
    )
