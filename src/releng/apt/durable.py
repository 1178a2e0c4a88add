"""Durability: the files a new Release names reach the disk before it replaces the old one.

One ``syncfs(2)`` of the repository's filesystem per switch, not an ``fsync`` per file: a
publish writes dozens of files (pool files, by-hash indexes, their plain names) and one call
flushes them all, with their directory entries. Without it, a power cut soon after a publish
could leave an ``InRelease`` (renamed into place, its metadata journaled) naming indexes whose
blocks never reached the disk: empty or missing files, a Hash Sum mismatch for every client.
Where ``syncfs`` is missing (not Linux), ``os.sync`` does the same for every filesystem.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    import ctypes  # here, not at the top: this module is on every include's start-up path

    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs  # libc's, from the running interpreter
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def sync_filesystem(path: Path) -> None:
    """Flush every written file of the filesystem that holds ``path`` to the disk."""
    syncfs = _syncfs()
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, f"syncfs({path}): {os.strerror(err)}")
    finally:
        os.close(fd)
