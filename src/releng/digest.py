"""The one file digest: sha-256 of a file's bytes, read once (``hashlib.file_digest``)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """The hex sha-256 of the file at ``path``."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_size_sha256(path: Path) -> tuple[int, str]:
    """The size and hex sha-256 of the file at ``path``, from one open file."""
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
        return fh.tell(), digest
