"""Debian base images: the live suites, bootstrapped from the Debian mirror (or a snapshot).

mmdebstrap verifies the suites with the host's own apt trust (Debian's
``debian-archive-keyring``). Archived suites (stretch) have left the mirror:
their images come from the engine or a registry.
"""

from __future__ import annotations

from releng.distro import BOOTSTRAPPABLE_SUITES, Distro
from releng.images.bootstrap import CannotBootstrap, Recipe
from releng.project import Project


def mirror(project: Project) -> str:
    images = project.config.images
    if images.snapshot:
        return f"{images.snapshot_mirror.rstrip('/')}/{images.snapshot}"
    return images.debian_mirror


def recipe(project: Project, distro: Distro) -> Recipe:
    if distro.distribution not in BOOTSTRAPPABLE_SUITES:
        raise CannotBootstrap(
            f"debian {distro.distribution or ''} is not a Debian suite mmdebstrap can make from "
            f"the mirror: it makes {', '.join(sorted(BOOTSTRAPPABLE_SUITES))}".replace("  ", " ")
        )
    options = []
    if project.config.images.snapshot:
        options.append('--aptopt=Acquire::Check-Valid-Until "false"')
    url = mirror(project)
    return Recipe(suite=distro.codename, mirror=url, mirror_args=(url,), options=tuple(options))
