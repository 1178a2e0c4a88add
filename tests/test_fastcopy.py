"""fastcopy: every strategy writes the same bytes and reports their size and sha-256."""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from releng.fastcopy import CHUNK, can_clone, copy_and_hash

STRATEGIES = ["auto", "stream", "kernel"]


def _data(n: int) -> bytes:
    return (os.urandom(4096) * (n // 4096 + 1))[:n]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, 2 * CHUNK + 123], ids=["empty", "1", "chunk-1", "2chunks+"]
)
def test_copy_is_byte_identical_and_hash_is_of_those_bytes(tmp_path: Path, strategy, size):
    data = _data(size)
    src = tmp_path / "in.deb"
    src.write_bytes(data)
    dst = tmp_path / "out.deb"
    assert copy_and_hash(src, dst, strategy=strategy) == (size, hashlib.sha256(data).hexdigest())
    assert dst.read_bytes() == data
    assert stat.S_IMODE(dst.stat().st_mode) == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_longer_file_at_the_destination_is_replaced_not_overlaid(tmp_path: Path, strategy):
    src = tmp_path / "in"
    src.write_bytes(b"short")
    dst = tmp_path / "out"
    dst.write_bytes(b"a much longer left-over file")
    assert copy_and_hash(src, dst, strategy=strategy) == (5, hashlib.sha256(b"short").hexdigest())
    assert dst.read_bytes() == b"short"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_across_filesystems(tmp_path: Path, strategy):
    """tmp_path on the disk, the copy on tmpfs: copy_file_range may refuse (EXDEV on older
    kernels) and the copy still happens."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.fail("/dev/shm is missing: this test needs a tmpfs there (every Linux has one)")
    data = _data(3 * CHUNK + 7)
    src = tmp_path / "in"
    src.write_bytes(data)
    dst = shm / f"releng-test-fastcopy-{os.getpid()}-{strategy}"
    try:
        assert copy_and_hash(src, dst, strategy=strategy) == (
            len(data),
            hashlib.sha256(data).hexdigest(),
        )
        assert dst.read_bytes() == data
    finally:
        dst.unlink(missing_ok=True)


def test_a_missing_source_creates_nothing(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        copy_and_hash(tmp_path / "absent", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_clone_is_used_exactly_where_the_filesystem_can(tmp_path: Path):
    """``clone`` either makes an identical copy or refuses with OSError, as can_clone said."""
    data = _data(CHUNK + 1)
    src = tmp_path / "in"
    src.write_bytes(data)
    if can_clone(tmp_path):
        assert copy_and_hash(src, tmp_path / "out", strategy="clone") == (
            len(data),
            hashlib.sha256(data).hexdigest(),
        )
        assert (tmp_path / "out").read_bytes() == data
    else:
        with pytest.raises(OSError):  # EOPNOTSUPP, EXDEV or ENOTTY, by filesystem
            copy_and_hash(src, tmp_path / "out", strategy="clone")
    assert not list(tmp_path.glob(".releng-clone-probe-*"))


def test_copies_on_threads_do_not_mix(tmp_path: Path):
    """The pool copies on every core: each copy gets its own bytes and its own digest."""
    files = []
    for i in range(16):
        data = _data(CHUNK // 2 + i)
        (tmp_path / f"in{i}").write_bytes(data)
        files.append((tmp_path / f"in{i}", tmp_path / f"out{i}", data))
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda f: copy_and_hash(f[0], f[1]), files))
    for (_, dst, data), result in zip(files, results, strict=True):
        assert result == (len(data), hashlib.sha256(data).hexdigest())
        assert dst.read_bytes() == data
