"""Base images (``DOCKER_BASE``): the engine's, else pulled, else bootstrapped.

A base image is used as the engine has it; else pulled; else bootstrapped with
mmdebstrap by its family's recipe (:mod:`.debian`: the live Debian suites from
the Debian mirror; :mod:`.ubuntu`: Ubuntu releases from the Ubuntu archive) and
``docker import``-ed under the ``DOCKER_BASE`` name with labels saying the
suite, mirror and date.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from releng.distro import Distro
from releng.engine import Engine
from releng.errors import EngineError, ImageError
from releng.images import bootstrap, debian, ubuntu
from releng.images.bootstrap import CannotBootstrap, Recipe
from releng.project import Project

log = logging.getLogger(__name__)

LABEL_PREFIX = "org.releng"

# The families mmdebstrap bootstraps, each with its own recipe module.
_RECIPES: dict[str, Callable[[Project, Distro], Recipe]] = {
    "debian": debian.recipe,
    "ubuntu": ubuntu.recipe,
}


def log_dir(project: Project) -> Path:
    """Where a failed bootstrap's log stays (beside failed builds' logs)."""
    return project.state_dir / "logs"


def bootstrap_recipe(project: Project, distro: Distro) -> Recipe:
    """How mmdebstrap makes ``distro``'s base image, or CannotBootstrap saying why not."""
    make = _RECIPES.get(distro.family)
    if make is None or distro.distribution is None:
        raise CannotBootstrap(
            f"{distro.family} is not a family mmdebstrap bootstraps "
            f"({', '.join(sorted(_RECIPES))} are)"
        )
    return make(project, distro)


def bootstrap_command(project: Project, distro: Distro, tarball: Path) -> list[str]:
    """The mmdebstrap command line that makes ``distro``'s base image as a tarball."""
    return bootstrap.command(bootstrap_recipe(project, distro), tarball)


def bootstrap_base_image(engine: Engine, project: Project, distro: Distro) -> str:
    """mmdebstrap ``distro``'s suite and import it under its DOCKER_BASE name; the image id."""
    recipe = bootstrap_recipe(project, distro)
    bootstrap.check_archive(distro.id, recipe)
    date = (
        project.config.images.snapshot
        if project.config.images.snapshot and distro.family == "debian"
        else dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    labels = {
        f"{LABEL_PREFIX}.suite": distro.codename,
        f"{LABEL_PREFIX}.mirror": recipe.mirror,
        f"{LABEL_PREFIX}.date": date,
        f"{LABEL_PREFIX}.bootstrap": f"mmdebstrap --variant={bootstrap.VARIANT}",
    }
    with (
        tempfile.TemporaryDirectory(prefix="releng-bootstrap-") as tmp,
        bootstrap.readable_keyring(recipe) as readable,
    ):
        tarball = Path(tmp) / f"{distro.codename}.tar"
        cmd = bootstrap.command(readable, tarball)
        proc = bootstrap.run(
            cmd, distro_id=distro.id, reference=distro.docker_base, log_dir=log_dir(project)
        )
        if proc.returncode != 0:
            raise ImageError(
                f"{distro.id}: mmdebstrap of {distro.codename} from {recipe.mirror} failed: "
                f"{proc.failure()}; check {recipe.settings_hint}"
            )
        changes = [f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()]
        changes.append('CMD ["bash"]')
        engine.import_image(tarball, distro.docker_base, changes=changes)
    image_id = engine.image_id(distro.docker_base)
    if image_id is None:
        raise ImageError(
            f"{distro.id}: docker import of {distro.docker_base} left no image; see the engine's log"
        )
    return image_id


def pull_base_image(engine: Engine, distro: Distro) -> str:
    """Pull DOCKER_BASE; the image id, or ImageError with the registry's reason."""
    log.info("pulling %s", distro.docker_base)
    try:
        return engine.pull(distro.docker_base)
    except EngineError as exc:
        raise ImageError(str(exc)) from None


def ensure_base_image(
    engine: Engine, project: Project, distro: Distro, *, bootstrap: bool = False, pull: bool = True
) -> str:
    """The id of ``distro``'s base image: the engine's, else pulled, else bootstrapped.

    ``bootstrap`` skips the engine's copy and the pull and bootstraps afresh
    (``invoke make-base-image DISTRO --bootstrap``); ``pull=False`` never asks a registry.
    """
    tried: list[str] = []
    if not bootstrap:
        existing = engine.image_id(distro.docker_base)
        if existing is not None:
            return existing
        tried.append("not in the engine")
        if pull:
            try:
                return pull_base_image(engine, distro)
            except ImageError as exc:
                tried.append(f"pull failed ({exc})")
    try:
        return bootstrap_base_image(engine, project, distro)
    except CannotBootstrap as exc:
        tried.append(f"bootstrap not possible ({exc})")
    raise ImageError(
        f"no base image {distro.docker_base} for {distro.id}: {'; '.join(tried)}; "
        f"load it into the engine (`docker load -i FILE` or `docker pull {distro.docker_base}` "
        "where a registry is reachable), or point DOCKER_BASE at an image the engine has"
    )
