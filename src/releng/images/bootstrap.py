"""Bootstrapping a base image with mmdebstrap: a family's recipe, its archive check, the command.

Each distro family that can be bootstrapped (:mod:`.debian`, :mod:`.ubuntu`)
turns a distro into a :class:`Recipe`: the suite, the apt sources, the keyring
that verifies them and the family's mmdebstrap options. Before mmdebstrap
runs, the ``InRelease`` of every source in a recipe with a keyring is fetched
and verified (:func:`releng.gpg.verify`) against that keyring, so that a codename the
archive does not carry, a mirror that does not answer and a keyring that does
not verify the archive are each one clear line, and nothing is imported.

apt inside mmdebstrap reads the keyring as the ``_apt`` user, which cannot
read a checkout under a private directory (``/root``): mmdebstrap gets a copy
in a directory everyone may read (:func:`readable_keyring`). apt retries a
transient archive failure (:data:`RETRIES`); when mmdebstrap fails all the same,
its output stays in a log whose path and last error lines the error names.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from releng.errors import ImageError
from releng.gpg import verify

log = logging.getLogger(__name__)

VARIANT = "minbase"
RELEASE_TIMEOUT = 60  # seconds for one InRelease download
RETRIES = 3  # apt's Acquire::Retries: a transient archive failure is tried again
ERROR_LINES = 3  # how many of mmdebstrap's last error lines an error repeats


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
    keyring = [f"--keyring={recipe.keyring}"] if recipe.keyring is not None else []
    return [
        "mmdebstrap",
        f"--variant={VARIANT}",
        # Not --quiet: it hides apt's own error lines, which say what went wrong (the
        # output goes to a log, not the terminal).
        f'--aptopt=Acquire::Retries "{RETRIES}"',
        *keyring,
        *recipe.options,
        "--",  # the suite, target and mirrors are never read as options
        recipe.suite,
        str(tarball),
        *recipe.mirror_args,
    ]


@contextlib.contextmanager
def readable_keyring(recipe: Recipe) -> Iterator[Recipe]:
    """``recipe`` with a copy of its keyring that apt's ``_apt`` user can read (in a new
    directory of mode 0755 under the temporary directory), removed on the way out."""
    if recipe.keyring is None:
        yield recipe
        return
    with tempfile.TemporaryDirectory(prefix="releng-keyring-") as tmp:
        Path(tmp).chmod(0o755)
        copy = Path(tmp) / recipe.keyring.name
        shutil.copyfile(recipe.keyring, copy)
        copy.chmod(0o644)
        yield replace(recipe, keyring=copy)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How an mmdebstrap run ended; its whole output is in ``log_path`` (kept on failure)."""

    returncode: int
    output: str
    log_path: Path

    def failure(self) -> str:
        """mmdebstrap's last error lines and where its log is, for a one-line error."""
        return f"{error_lines(self.output)}; full log: {self.log_path}"


def run(cmd: list[str], *, distro_id: str, reference: str, log_dir: Path) -> Outcome:
    """Run the mmdebstrap command ``cmd`` that makes ``reference`` (logged), its output into
    a log in ``log_dir`` that stays when it fails; one clear error when mmdebstrap is not
    installed. The caller judges the exit status."""
    log.info("bootstrapping %s: %s", reference, shlex.join(cmd))
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log_path = log_dir / f"bootstrap-{distro_id}-{stamp}-{os.getpid()}.log"
    try:
        with log_path.open("w", encoding="utf-8") as fh:
            fh.write(f"$ {shlex.join(cmd)}\n")
            fh.flush()
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    except FileNotFoundError:
        log_path.unlink(missing_ok=True)
        raise ImageError(
            f"{distro_id}: cannot bootstrap {reference}: mmdebstrap is not installed; "
            "run ./scripts/setup"
        ) from None
    output = log_path.read_text(encoding="utf-8", errors="replace")
    if proc.returncode == 0:
        log_path.unlink()
    return Outcome(returncode=proc.returncode, output=output, log_path=log_path)


def error_lines(output: str, *, count: int = ERROR_LINES) -> str:
    """The last ``count`` lines of mmdebstrap's output that report a problem (apt's and its
    own ``E:``/``W:`` lines, but not the closing "mmdebstrap failed to run"), joined; else
    its last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    problems = [
        ln
        for ln in lines
        if ln.startswith(("E:", "W:", "Err:")) and "mmdebstrap failed to run" not in ln
    ]
    chosen = list(dict.fromkeys(problems))[-count:] or lines[-1:] or ["no output"]
    return " / ".join(ln[:300] for ln in chosen)


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
