"""Bootstrapping a base image with mmdebstrap: a family's recipe, its archive check, the command.

Each distro family that can be bootstrapped (:mod:`.debian`, :mod:`.ubuntu`)
turns a distro into a :class:`Recipe`: the suite, the apt sources, the keyring
that verifies them and the family's mmdebstrap options. Before mmdebstrap
runs, the ``InRelease`` of every source in a recipe with a keyring is fetched
and verified (:func:`releng.gpg.verify`) against that keyring, so that a codename the
archive does not carry, a mirror that does not answer and a keyring that does
not verify the archive are each one clear line, and nothing is imported.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from releng.errors import ImageError
from releng.gpg import verify

log = logging.getLogger(__name__)

VARIANT = "minbase"
RELEASE_TIMEOUT = 60  # seconds for one InRelease download


class CannotBootstrap(ImageError):
    """This distro's base image cannot be bootstrapped here; the message says why."""


@dataclass(frozen=True, kw_only=True)
class AptSource:
    """One ``deb`` line: where a suite's packages come from."""

    uri: str
    suite: str
    components: tuple[str, ...]

    @property
    def line(self) -> str:
        return " ".join(["deb", self.uri, self.suite, *self.components])


def parse_sources(text: str) -> list[AptSource]:
    """The ``deb`` lines of a sources.list text (``APT_SOURCES``); comments and deb-src skipped."""
    sources = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options such as [arch=amd64]: not ours to keep
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            sources.append(AptSource(uri=words[0], suite=words[1], components=tuple(words[2:])))
    return sources


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How mmdebstrap makes one distro's base image."""

    suite: str
    mirror: str  # where it comes from, for the image's label and messages
    mirror_args: tuple[str, ...]  # mmdebstrap's trailing arguments: URLs or whole `deb` lines
    options: tuple[str, ...] = ()  # the family's own mmdebstrap options (hooks, includes, ...)
    keyring: Path | None = None  # verifies `verify`; None: the host's apt trust (Debian)
    verify: tuple[AptSource, ...] = field(default=())
    settings_hint: str = "the mirror in [images] of product.toml"  # where the user fixes it


def command(recipe: Recipe, tarball: Path) -> list[str]:
    """The mmdebstrap command line that writes ``recipe``'s chroot to ``tarball``."""
    return [
        "mmdebstrap",
        f"--variant={VARIANT}",
        "--quiet",
        *recipe.options,
        recipe.suite,
        str(tarball),
        *recipe.mirror_args,
    ]


def run(cmd: list[str], *, distro_id: str, reference: str) -> subprocess.CompletedProcess[str]:
    """Run the mmdebstrap command ``cmd`` that makes ``reference`` (logged, output captured);
    one clear error when mmdebstrap is not installed. The caller judges the exit status."""
    log.info("bootstrapping %s: %s", reference, shlex.join(cmd))
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ImageError(
            f"{distro_id}: cannot bootstrap {reference}: mmdebstrap is not installed; "
            "run ./scripts/setup"
        ) from None


def check_archive(distro_id: str, recipe: Recipe) -> None:
    """Fetch and verify the ``InRelease`` of each of ``recipe``'s sources, or one clear error.

    Refuses a codename the archive does not carry, a mirror that does not answer and a
    keyring that does not verify the archive's Release, before anything is downloaded.
    """
    if recipe.keyring is None:
        return
    keyring = recipe.keyring
    if not keyring.is_file():
        raise ImageError(
            f"{distro_id}: the keyring {keyring} does not exist; fix {recipe.settings_hint}"
        )
    for source in recipe.verify:
        url = f"{source.uri.rstrip('/')}/dists/{source.suite}/InRelease"
        try:
            with urllib.request.urlopen(url, timeout=RELEASE_TIMEOUT) as response:  # noqa: S310  (the configured http(s) mirror)
                data = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise CannotBootstrap(
                    f"{distro_id}: the archive at {source.uri} does not carry {source.suite} "
                    f"(no dists/{source.suite}/InRelease); check the codename in DISTRIBUTION "
                    f"or {recipe.settings_hint}"
                ) from None
            raise ImageError(
                f"{distro_id}: {url} answered {exc.code} {exc.reason}; check {recipe.settings_hint}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ImageError(
                f"{distro_id}: the archive at {source.uri} does not answer ({reason}); "
                f"check the network or {recipe.settings_hint}"
            ) from None
        # As apt does: one good signature suffices, others by keys not in the keyring are
        # ignored (xenial's Release is signed by the 2012 key and the retired 2004 one).
        problem = verify(keyring, data).reason
        log.info("%s: %s against %s: %s", distro_id, url, keyring, problem or "good signature")
        if problem:
            raise ImageError(
                f"{distro_id}: the keyring {keyring} does not verify the Release of "
                f"{source.suite} at {source.uri} ({problem}); nothing was imported: use the "
                f"archive's signing keys ({recipe.settings_hint})"
            )
