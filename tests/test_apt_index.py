"""The indexer's pure parts: reading .debs, version order, chunked .gz/.xz that real tools read."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from releng.apt import index
from releng.apt.debfile import BadPackageError, read_deb
from tests.apt_debs import make_deb, raw_deb

APT_HELPER = Path("/usr/lib/apt/apt-helper")


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd", "none"])
def test_read_deb_gets_control_size_and_sha256_like_dpkg(tmp_path: Path, compression: str) -> None:
    if compression == "zstd" and not shutil.which("zstd"):
        pytest.skip("dpkg-deb needs zstd to build this case")
    deb = make_deb(tmp_path, "hello", "1:2.0-3", compression=compression, extra="Depends: libc6\n")
    info = read_deb(deb)
    dpkg = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture", "Depends"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Package: {info.package}\n" in dpkg
    assert f"Version: {info.version}\n" in dpkg
    assert info.control["Depends"] == "libc6"
    assert info.control["Description"].startswith("test package hello\n ")
    assert info.size == deb.stat().st_size
    sha = subprocess.run(["sha256sum", str(deb)], capture_output=True, text=True, check=True)
    assert info.sha256 == sha.stdout.split()[0]


def test_read_deb_refuses_what_is_not_a_package(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.deb"
    garbage.write_bytes(b"this is not an ar archive\n" * 10)
    with pytest.raises(BadPackageError, match=r"garbage\.deb is not a Debian package"):
        read_deb(garbage)
    good = make_deb(tmp_path, "hello", "1.0")
    truncated = tmp_path / "truncated.deb"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(BadPackageError, match=r"truncated\.deb: (truncated|no control)"):
        read_deb(truncated)
    no_control = raw_deb(tmp_path, "nocontrol.deb", None)
    with pytest.raises(BadPackageError, match=r"nocontrol\.deb: no control\.tar member"):
        read_deb(no_control)
    no_version = raw_deb(tmp_path, "noversion.deb", "Package: x\nArchitecture: all\n")
    with pytest.raises(BadPackageError, match=r"noversion\.deb: the control file has no Version"):
        read_deb(no_version)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.0", "1.0", 0),
        ("1.0~rc1", "1.0", -1),
        ("1.10", "1.9", 1),
        ("1:0.1", "2.0", 1),
        ("1.0-1", "1.0-1~bpo1", 1),
        ("2026.01.02-1~bookworm", "2026.01.10-1~bookworm", -1),
        ("1.0+b1", "1.0", 1),
        ("1.0a", "1.0+", -1),
    ],
)
def test_version_compare_agrees_with_dpkg(a: str, b: str, expected: int) -> None:
    ours = index.version_compare(a, b)
    assert (ours > 0) - (ours < 0) == expected
    dpkg_lt = (
        subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0
    )
    assert dpkg_lt == (expected < 0)


def _stanzas(n: int, extra: str = "") -> list[tuple[str, list[bytes]]]:
    return [
        (
            f"pkg{i:04d}",
            [f"Package: pkg{i:04d}\nVersion: 1.{i}{extra}\nArchitecture: all\n".encode()],
        )
        for i in range(n)
    ]


def test_chunked_gz_and_xz_decompress_to_the_index_with_every_reader(tmp_path: Path) -> None:
    cache = index.ChunkCache(tmp_path / "cache.pack")
    files = index.compress_index(index.chunk_stanzas(_stanzas(500)), cache)
    assert files.raw.count(b"\n\n") == 500
    assert gzip.decompress(files.gz) == files.raw
    assert lzma.decompress(files.xz) == files.raw
    for name, data in (("Packages.gz", files.gz), ("Packages.xz", files.xz)):
        (tmp_path / name).write_bytes(data)
    subprocess.run(["xz", "--test", str(tmp_path / "Packages.xz")], check=True)
    if APT_HELPER.exists():  # apt's own decompressor: it reads only the first of several xz streams
        for name in ("Packages.gz", "Packages.xz"):
            out = subprocess.run(
                [str(APT_HELPER), "cat-file", str(tmp_path / name)], capture_output=True, check=True
            ).stdout
            assert out == files.raw


def test_adding_one_package_recompresses_one_chunk(tmp_path: Path) -> None:
    stanzas = _stanzas(2000)
    cache = index.ChunkCache(tmp_path / "cache.pack")
    first = index.chunk_stanzas(stanzas)
    index.compress_index(first, cache)
    cache.save()
    stanzas.insert(1000, ("pkg0999a", [b"Package: pkg0999a\nVersion: 1\nArchitecture: all"]))
    second = index.chunk_stanzas(stanzas)
    assert len(set(second) - set(first)) == 1  # content-defined boundaries: one chunk differs
    reloaded = index.ChunkCache(tmp_path / "cache.pack")
    assert len(reloaded.old) == len(first)
    files = index.compress_index(second, reloaded)
    assert lzma.decompress(files.xz) == b"".join(second)
    assert gzip.decompress(files.gz) == b"".join(second)


def test_empty_index_compresses_to_valid_empty_files(tmp_path: Path) -> None:
    files = index.compress_index([], index.ChunkCache(tmp_path / "c.pack"))
    assert files.raw == b""
    assert gzip.decompress(files.gz) == b""
    assert lzma.decompress(files.xz) == b""


def test_release_dates_are_rfc1123_in_utc() -> None:
    import datetime as dt

    when = dt.datetime(2026, 11, 22, 1, 2, 3, tzinfo=dt.UTC)
    assert index.rfc1123(when) == "Sun, 22 Nov 2026 01:02:03 UTC"
