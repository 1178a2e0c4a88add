"""A Debian archive package as a releng project, for the benchmarks: its tarballs downloaded
from Debian's pool (sha256 pinned), unpacked, and laid out with releng's packaging scripts."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
DOWNLOADS = ROOT / "benchmarks" / ".work" / "downloads"
# releng's scripts a build needs beside the package's own debian/
PACKAGING_SCRIPTS = (
    "builder-setup",
    "make-debianish-package",
    "binaries-ready",
    "with-compiler-cache",
)


def fetch(pool: str, name: str, sha256: Mapping[str, str]) -> Path:
    """``pool/name`` in benchmarks/.work/downloads/ (downloaded once), checked against ``sha256``."""
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    path = DOWNLOADS / name
    if not path.exists():
        print(f"downloading {pool}/{name}", flush=True)
        tmp = path.with_suffix(".part")
        with urllib.request.urlopen(f"{pool}/{name}", timeout=120) as resp:
            tmp.write_bytes(resp.read())
        tmp.replace(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256[name]:
        path.unlink()
        raise SystemExit(f"{name}: sha256 {digest} is not the pinned {sha256[name]}")
    return path


def lay_out(root: Path, debian_tar: Path, *, pkgvers: Mapping[str, str]) -> None:
    """``root/packaging``: releng's scripts and the package's debian/ from ``debian_tar``;
    ``root/distros/<distro>`` for each distro of ``pkgvers`` (distro id -> Debian revision),
    its ``DOCKER_BASE`` and ``DISTRIBUTION`` those of releng's own ``distros/<distro>``, its
    ``debian`` a link to the shared tree; all of them the project's targets."""
    (root / "packaging").mkdir(parents=True)
    for name in PACKAGING_SCRIPTS:
        shutil.copy2(ROOT / "packaging" / name, root / "packaging" / name)
    extract(debian_tar, root / "packaging")
    for distro, pkgver in pkgvers.items():
        directory = root / "distros" / distro
        directory.mkdir(parents=True)
        for name in ("DOCKER_BASE", "DISTRIBUTION"):
            shutil.copy2(ROOT / "distros" / distro / name, directory / name)
        (directory / "PKGVER").write_text(f"{pkgver}\n")
        (directory / "debian").symlink_to("../../packaging/debian")
    (root / "distros" / "TARGETS").write_text("".join(f"{d}\n" for d in pkgvers))


def extract(tarball: Path, dest: Path) -> None:
    """Unpack ``tarball`` into ``dest``, refusing members that would land outside it.

    tarfile's ``data`` filter does that where this Python has it (3.11.4 and newer);
    Debian 12's python3 is 3.11.2, so the same checks are made here before extracting.
    """
    with tarfile.open(tarball) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
            return
        for member in tf.getmembers():
            for name in (member.name, member.linkname if member.issym() or member.islnk() else ""):
                path = PurePosixPath(name)
                if path.is_absolute() or ".." in path.parts:
                    raise ValueError(f"{tarball}: {member.name!r} would land outside {dest}")
            if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                raise ValueError(f"{tarball}: {member.name!r} is not a file, directory or link")
        tf.extractall(dest)  # every member checked above
