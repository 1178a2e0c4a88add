"""Copy a file and learn its size and sha-256, reading its bytes as few times as possible.

Where the filesystem shares extents (btrfs, XFS with reflink, bcachefs, overlayfs on
one of those), :func:`copy_and_hash` clones the file (``FICLONE``: no data is copied)
and hashes it in one read. Everywhere else it copies and hashes in the same read pass:
each block is read once into one buffer, hashed and written from it. On this
project's machines (ext4, 2 cores) that single pass beats ``os.copy_file_range``
followed by a second read to hash, because hashing needs the bytes in user space
anyway (``benchmarks/bench_fastcopy.py`` prints both; docs/speed.md has the figures).

Both sha-256 and the reads and writes release the GIL, so copies on several threads
overlap on several cores; the caller chooses the threads.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import Final, Literal

log = logging.getLogger(__name__)

FICLONE: Final = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
CHUNK: Final = 1 << 20  # 1 MiB: past this, larger reads gain nothing and cost cache
# A filesystem or pair of files that cannot share extents says so with one of these;
# anything else (EIO, ENOSPC, EBADF) is a real failure and is raised.
_NO_CLONE: Final = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM}
)
_NO_KERNEL_COPY: Final = frozenset(
    {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}
)

Strategy = Literal["auto", "clone", "kernel", "stream"]


def copy_and_hash(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, strategy: Strategy = "auto"
) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` (created or truncated, mode 0o644) and return the size and
    hex sha-256 of the bytes written.

    ``strategy``: ``auto`` clones where the filesystem can and otherwise reads once,
    hashing and writing each block; ``clone`` insists on a clone (``OSError`` where none
    is possible); ``kernel`` copies with ``os.copy_file_range`` and then hashes the copy
    in a second read; ``stream`` reads once, hashing and writing. The last two exist to
    be measured against each other.
    """
    with open(src, "rb") as fin:  # noqa: PTH123  (str paths: this runs once per pool file)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        with open(fd, "wb", buffering=0) as fout:  # noqa: PTH123
            if strategy in ("auto", "clone"):
                try:
                    fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
                except OSError as exc:
                    if strategy == "clone" or exc.errno not in _NO_CLONE:
                        raise
                else:
                    # The copy shares the source's blocks: one read of them hashes both.
                    digest = hashlib.file_digest(fin, "sha256")
                    return fin.tell(), digest.hexdigest()
            if strategy == "kernel" and _kernel_copy(fin.fileno(), fout.fileno()):
                with open(dst, "rb") as again:  # noqa: PTH123
                    digest = hashlib.file_digest(again, "sha256")
                    return again.tell(), digest.hexdigest()
            return _stream(fin.fileno(), fout.fileno())


def _kernel_copy(fin: int, fout: int) -> bool:
    """``copy_file_range`` until the end; False (nothing written) where the kernel cannot."""
    offset = 0
    while True:
        try:
            n = os.copy_file_range(fin, fout, CHUNK * 64)
        except OSError as exc:
            if offset == 0 and exc.errno in _NO_KERNEL_COPY:
                return False
            raise
        if n == 0:
            return True
        offset += n


def _stream(fin: int, fout: int) -> tuple[int, str]:
    """One read pass: each block into one buffer, hashed, then written from it."""
    sha = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    while n := os.readv(fin, [buf]):
        block = view[:n]
        sha.update(block)
        written = 0
        while written < n:
            written += os.write(fout, block[written:])
        size += n
    return size, sha.hexdigest()


def can_clone(directory: Path) -> bool:
    """Whether files in ``directory`` can be cloned (share extents) on its filesystem."""
    a = directory / f".releng-clone-probe-{os.getpid()}"
    b = directory / f".releng-clone-probe-{os.getpid()}.b"
    try:
        a.write_bytes(b"x" * 4096)
        copy_and_hash(a, b, strategy="clone")
    except OSError:
        return False
    else:
        return True
    finally:
        a.unlink(missing_ok=True)
        b.unlink(missing_ok=True)
