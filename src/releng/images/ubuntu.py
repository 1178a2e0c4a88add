"""Ubuntu base images, bootstrapped from the Ubuntu archive with mmdebstrap.

The sources are the release and its ``-updates`` and ``-security`` pockets,
components ``main`` and ``universe`` (debhelper's helpers live in universe on
some releases), from ``[images] ubuntu_mirror``; a distro's ``APT_SOURCES``
replaces them (a release that moved to old-releases.ubuntu.com). The image
keeps those lines as its sources.list, so builds link against what users
have installed.

Their Release files are verified against Ubuntu's archive signing keys:
Debian bookworm no longer packages ``ubuntu-keyring``, so the public keyring
is carried here (``keyrings/ubuntu-archive-keyring.gpg``, taken from Debian
trixie's ubuntu-keyring 2023.11.28.1-0.2; a test checks its fingerprints),
and ``[images] ubuntu_keyring`` may name another. The keyring is used by
mmdebstrap only (a copy ``_apt`` can read: see :func:`.bootstrap.readable_keyring`);
apt inside the image trusts what its own ubuntu-keyring package installs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from releng.distro import Distro
from releng.images.bootstrap import AptSource, Recipe, parse_sources
from releng.project import Project

log = logging.getLogger(__name__)

BUNDLED_KEYRING = Path(__file__).parent / "keyrings" / "ubuntu-archive-keyring.gpg"
COMPONENTS = ("main", "universe")
POCKETS = ("", "-updates", "-security")
SETTINGS = "[images] ubuntu_mirror and ubuntu_keyring in product.toml, or the distro's APT_SOURCES"
PORTS_SETTINGS = "[images] ubuntu_ports_mirror and ubuntu_keyring in product.toml"
# The architectures Ubuntu's main archive carries; the others are on ports
# ([images] ubuntu_ports_mirror).
ARCHIVE_ARCHITECTURES = frozenset({"amd64", "i386"})

# systemd (in xenial's required set) runs chfn from its postinst, which fails with
# "PAM: Critical error" in a bootstrap chroot: chfn is diverted to a stub while the
# packages are configured, and restored before the chroot is packed.
_DIVERT = 'chroot "$1" dpkg-divert --quiet --local --rename'
CHFN_HOOKS = (
    f"--extract-hook={_DIVERT} --add /usr/bin/chfn"
    ' && printf "#!/bin/sh\\nexit 0\\n" >"$1/usr/bin/chfn" && chmod 755 "$1/usr/bin/chfn"',
    f'--customize-hook=rm -f "$1/usr/bin/chfn" && {_DIVERT} --remove /usr/bin/chfn',
)


def keyring(project: Project) -> Path:
    """The keyring that verifies the archive: ``[images] ubuntu_keyring``, else the bundled one."""
    configured = project.config.images.ubuntu_keyring
    return (project.root / configured).expanduser() if configured else BUNDLED_KEYRING


def sources(project: Project, distro: Distro, *, arch: str = "") -> list[AptSource]:
    """The distro's APT_SOURCES ``deb`` lines, else the release's pockets on the mirror:
    ``[images] ubuntu_mirror``, or ``ubuntu_ports_mirror`` for an ``arch`` it lacks."""
    if distro.apt_sources is not None:
        listed = parse_sources(distro.apt_sources)
        if listed:
            return listed
    images = project.config.images
    ports = bool(arch) and arch not in ARCHIVE_ARCHITECTURES
    mirror = (images.ubuntu_ports_mirror if ports else images.ubuntu_mirror).rstrip("/")
    return [
        AptSource(uri=mirror, suite=distro.codename + pocket, components=COMPONENTS)
        for pocket in POCKETS
    ]


def recipe(project: Project, distro: Distro, *, arch: str = "") -> Recipe:
    """``arch``: a foreign architecture's (its packages may be on ports)."""
    listed = sources(project, distro, arch=arch)
    return Recipe(
        suite=distro.codename,
        mirror=listed[0].uri,
        mirror_args=tuple(s.line for s in listed),
        options=(
            # The keyring is for the bootstrap; apt in the image trusts its ubuntu-keyring.
            "--skip=check/signed-by",
            "--include=apt",  # not in xenial's minbase set
            *CHFN_HOOKS,
        ),
        keyring=keyring(project),
        verify=tuple(listed),
        settings_hint=PORTS_SETTINGS if listed[0].uri.rstrip("/") == _ports(project) else SETTINGS,
    )


def _ports(project: Project) -> str:
    return project.config.images.ubuntu_ports_mirror.rstrip("/")


def reachable_ports_mirror(project: Project, distro: Distro, *, timeout: float = 10.0) -> str:
    """``[images] ubuntu_ports_mirror`` when it serves ``distro``'s release (its
    ``dists/<codename>/InRelease`` answers), else empty: a cross builder then does without
    (packaging/cross-setup). A release on APT_SOURCES (archived) has none."""
    import urllib.error
    import urllib.request

    mirror = project.config.images.ubuntu_ports_mirror.rstrip("/")
    if not mirror.startswith(("http://", "https://")) or distro.apt_sources:
        return ""
    url = f"{mirror}/dists/{distro.codename}/InRelease"
    request = urllib.request.Request(url, method="HEAD")  # noqa: S310 (http(s) only, above)
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310
            return mirror
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        reason = getattr(exc, "reason", None) or exc
        log.warning(
            "%s: the Ubuntu ports mirror %s cannot be reached (%s): cross-building "
            "without an archive of other architectures",
            distro.id,
            mirror,
            reason,
        )
        return ""
