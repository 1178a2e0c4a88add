"""Distro directories: ``distros/<DISTRO>-<NUMERIC_VERSION>[-<NAME>]/``.

A distro directory is data: ``DOCKER_BASE`` (the image to build in), and for
Debian-like distros ``DISTRIBUTION`` (codename), ``PKGVER`` (Debian revision
such as ``1~deb12u1``) and ``debian/`` (often a symlink to a shared tree).
Optional: an executable ``make-package`` that replaces the default builder, a
``make-package.prebuild`` hook and ``APT_SOURCES`` for archived releases.
``distros/TARGETS`` lists the distros built by default.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from releng.errors import DistroError

DISTROS_DIR = "distros"
TARGETS_FILE = "TARGETS"
DEBIANISH_FAMILIES = frozenset({"debian", "ubuntu"})

# Debian suites that mmdebstrap can bootstrap from the live Debian mirror.
BOOTSTRAPPABLE_SUITES = frozenset({"bullseye", "bookworm", "trixie", "forky", "sid"})

_DIR_RE = re.compile(
    r"^(?P<family>[a-z][a-z0-9]*)-(?P<number>[0-9]+(?:\.[0-9]+)*)(?:-(?P<name>[a-z][a-z0-9]*))?$"
)
# The grammar of docker/distribution's reference package, without digests' algorithm variety.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
_REFERENCE_RE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$"
)
_CODENAME_RE = re.compile(r"^[a-z][a-z0-9.-]*$")
_PKGVER_RE = re.compile(r"^[A-Za-z0-9.+~-]+$")


def validate_image_reference(ref: str, *, where: str) -> str:
    if not ref:
        raise DistroError(f"{where} is empty; put an image reference in it, e.g. debian:bookworm")
    if any(c.isspace() for c in ref) or not _REFERENCE_RE.match(ref) or len(ref) > 255:
        raise DistroError(
            f"{where}: {ref!r} is not a valid image reference; expected e.g. debian:bookworm "
            "or registry.example.org:5000/debian:bookworm"
        )
    return ref


BUILD_MODES = ("cross", "emulated")  # how foreign architectures build (releng.arch.BuildMode)


@dataclass(frozen=True, kw_only=True)
class Distro:
    """One validated distro directory."""

    id: str
    path: Path
    family: str
    number: str
    docker_base: str
    distribution: str | None
    pkgver: str | None
    debian_dir: Path | None  # resolved, inside the repository
    make_package: Path | None  # the distro's own builder, if any
    prebuild_hook: Path | None
    apt_sources: str | None
    build_mode: str | None = None  # BUILD_MODE: cross or emulated, for foreign architectures

    @property
    def is_debianish(self) -> bool:
        return self.debian_dir is not None

    @property
    def codename(self) -> str:
        if self.distribution is None:
            raise DistroError(f"{self.path}: has no DISTRIBUTION file (it is not Debian-like)")
        return self.distribution

    @property
    def bootstrappable(self) -> bool:
        """Whether mmdebstrap can make its base image: a live Debian suite from the Debian
        mirror, or an Ubuntu release from the Ubuntu archive (which says if it carries it)."""
        if self.family == "ubuntu":
            return self.distribution is not None
        return self.family == "debian" and self.distribution in BOOTSTRAPPABLE_SUITES

    def features(self) -> list[str]:
        out = []
        if self.debian_dir is not None:
            out.append("debian/")
        if self.make_package is not None:
            out.append("make-package")
        if self.prebuild_hook is not None:
            out.append("prebuild hook")
        if self.apt_sources is not None:
            out.append("APT_SOURCES")
        if self.build_mode is not None:
            out.append(f"BUILD_MODE={self.build_mode}")
        return out


def _read_one_line(path: Path, *, what: str) -> str:
    if not path.is_file():
        raise DistroError(f"{path} is missing; {what}")
    try:
        text = path.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DistroError(
            f"{path}: not UTF-8 text (byte {exc.start} is "
            f"{exc.object[exc.start : exc.start + 1]!r}); {what}"
        ) from None
    except OSError as exc:
        raise DistroError(f"cannot read {path}: {exc.strerror}; {what}") from None
    if any(ord(ch) < 32 and ch != "\n" for ch in text):
        raise DistroError(f"{path}: holds control characters; {what}")
    if not text:
        raise DistroError(f"{path} is empty; {what}")
    if "\n" in text:
        raise DistroError(f"{path}: must hold a single line; {what}")
    return text


def _resolved(link: Path) -> Path:
    """``link`` with every symlink followed; a loop or an unreadable link is a DistroError."""
    try:
        return link.resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: "Symlink loop" (Python < 3.13)
        raise DistroError(
            f"{link} is a symlink that cannot be followed ({exc}); point it at a real "
            "file or directory inside the repository"
        ) from None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _read_build_mode(path: Path) -> str | None:
    """BUILD_MODE, optional: how other architectures than the host's build (cross, emulated)."""
    if not path.exists():
        return None
    mode = _read_one_line(path, what="it holds cross or emulated")
    if mode not in BUILD_MODES:
        raise DistroError(f"{path}: {mode!r} is not a build mode; use cross or emulated")
    return mode


def load_distro_dir(path: Path, *, repo_root: Path) -> Distro:
    """Validate one distro directory. ``repo_root`` bounds where symlinks may point."""
    name = path.name
    m = _DIR_RE.fullmatch(name)
    if not m:
        raise DistroError(
            f"{path}: {name!r} is not a distro directory name; expected "
            "DISTRO-NUMERIC_VERSION[-NAME], e.g. debian-12-bookworm or ubuntu-16.04-xenial"
        )
    if not path.is_dir():
        raise DistroError(f"{path} is not a directory")
    root = repo_root.resolve()
    docker_base = validate_image_reference(
        _read_one_line(
            path / "DOCKER_BASE", what="it names the image to build in, e.g. debian:bookworm"
        ),
        where=str(path / "DOCKER_BASE"),
    )
    make_package = path / "make-package"
    own_builder = make_package.exists() or make_package.is_symlink()
    if own_builder:
        real = _resolved(make_package)
        if not _inside(real, root):
            raise DistroError(
                f"{make_package} points outside the repository ({real}); link inside it"
            )
        if not os.access(real, os.X_OK):
            raise DistroError(f"{make_package} is not executable; run: chmod +x {make_package}")
    family = m["family"]
    debian = path / "debian"
    debianish = (
        family in DEBIANISH_FAMILIES or not own_builder or debian.exists() or debian.is_symlink()
    )
    distribution = pkgver = None
    debian_dir = None
    if debianish:
        distribution = _read_one_line(
            path / "DISTRIBUTION", what="it holds the codename, e.g. bookworm"
        )
        if not _CODENAME_RE.fullmatch(distribution):
            raise DistroError(f"{path / 'DISTRIBUTION'}: {distribution!r} is not a codename")
        pkgver = _read_one_line(
            path / "PKGVER", what="it holds the Debian revision, e.g. 1~deb12u1"
        )
        if not _PKGVER_RE.fullmatch(pkgver) or not pkgver[0].isdigit():
            raise DistroError(
                f"{path / 'PKGVER'}: {pkgver!r} is not a Debian revision; expected e.g. 1~deb12u1"
            )
        if not (debian.exists() or debian.is_symlink()):
            raise DistroError(
                f"{debian} is missing; add a debian/ tree or a symlink to a shared one under packaging/"
            )
        real = _resolved(debian)
        if not _inside(real, root):
            raise DistroError(
                f"{debian} is a symlink that leaves the repository (to {real}); "
                "point it at another distro's debian/ or a tree under packaging/"
            )
        if not (real / "control").is_file():
            raise DistroError(f"{debian} has no control file (resolved to {real})")
        debian_dir = real
    hook = path / "make-package.prebuild"
    apt_sources = path / "APT_SOURCES"
    return Distro(
        id=name,
        path=path,
        family=family,
        number=m["number"],
        docker_base=docker_base,
        distribution=distribution,
        pkgver=pkgver,
        debian_dir=debian_dir,
        make_package=make_package if own_builder else None,
        prebuild_hook=hook if hook.exists() else None,
        apt_sources=apt_sources.read_text(encoding="utf-8") if apt_sources.is_file() else None,
        build_mode=_read_build_mode(path / "BUILD_MODE"),
    )


def _release_key(distro: Distro) -> tuple[int, ...]:
    return tuple(int(n) for n in distro.number.split("."))


def revision_order_warnings(distros: list[Distro]) -> list[str]:
    """Where a family's revisions do not sort in release order (dpkg's order).

    The same upstream version built for two releases of one family must sort newer on the
    newer release, or a user who upgrades the release keeps the old release's build:
    ``1~deb11u1 < 1~deb12u1`` does, ``1~bullseye > 1~bookworm`` does not.
    """
    from releng.version import dpkg_compare

    warnings = []
    families: dict[str, list[Distro]] = {}
    for d in distros:
        if d.pkgver is not None:
            families.setdefault(d.family, []).append(d)
    for members in families.values():
        members.sort(key=_release_key)
        for older, newer in itertools.pairwise(members):
            if dpkg_compare(f"1.0-{older.pkgver}", f"1.0-{newer.pkgver}") >= 0:
                warnings.append(
                    f"{older.id} PKGVER {older.pkgver} does not sort below {newer.id} PKGVER "
                    f"{newer.pkgver} (dpkg's order): a user who upgrades to {newer.id} keeps "
                    f"the {older.id} build of the same version; use revisions such as "
                    "1~deb11u1 < 1~deb12u1 or 1~ubuntu22.04.1 < 1~ubuntu24.04.1"
                )
    return warnings


def family_revision_warnings(root: Path, distro: Distro) -> list[str]:
    """:func:`revision_order_warnings` that concern ``distro`` (its family's other valid
    directories; a broken one is not this build's business)."""
    family = []
    for distro_id in distro_ids(root):
        if distro_id.startswith(f"{distro.family}-"):
            try:
                family.append(load_distro_dir(root / DISTROS_DIR / distro_id, repo_root=root))
            except DistroError:
                continue
    return [w for w in revision_order_warnings(family) if f"{distro.id} PKGVER" in w]


def distro_ids(root: Path) -> list[str]:
    """Every directory under ``distros/`` (valid or not), sorted."""
    base = root / DISTROS_DIR
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_distro(root: Path, distro_id: str) -> Distro:
    """The named distro, or a DistroError listing the valid names."""
    ids = distro_ids(root)
    if distro_id not in ids:
        raise DistroError(
            f"unknown distro {distro_id!r}; valid distros: {', '.join(ids) or '(none)'} "
            f"(directories under {root / DISTROS_DIR})"
        )
    return load_distro_dir(root / DISTROS_DIR / distro_id, repo_root=root)


def load_all(root: Path) -> list[Distro]:
    return [load_distro(root, d) for d in distro_ids(root)]


def read_targets(root: Path) -> list[str]:
    """The distros built by default, from ``distros/TARGETS`` (comments with #)."""
    path = root / DISTROS_DIR / TARGETS_FILE
    if not path.is_file():
        raise DistroError(f"{path} is missing; list the distros to build by default, one per line")
    ids = distro_ids(root)
    targets = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if entry not in ids:
            raise DistroError(
                f"{path}:{lineno}: unknown distro {entry!r}; valid distros: {', '.join(ids)}"
            )
        targets.append(entry)
    return targets
