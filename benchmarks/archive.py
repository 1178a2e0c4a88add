"""Unpacking the archive tarballs the benchmarks download (Debian's pool, sha256 pinned)."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath


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
