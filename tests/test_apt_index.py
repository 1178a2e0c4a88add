"""The indexer's pure parts: reading .debs, version order, chunked .gz/.xz that real tools read."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from releng.apt import index
from releng.apt.debfile import read_deb
from releng.errors import BadPackageError
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


def _items(names: list[str], extra: str = "") -> list[tuple[index.Entry, bytes]]:
    out = []
    for i, name in enumerate(names):
        version = f"1.{i}{extra}"
        stanza = f"Package: {name}\nVersion: {version}\nArchitecture: all\n" + "X: y\n" * (i % 7)
        out.append(
            (
                (name, version, "all", f"pool/main/p/{name}/{name}_{version}_all.deb"),
                stanza.rstrip("\n").encode(),  # without the final newline, as stored
            )
        )
    return out


def _files_by_sha(files: index.IndexFiles) -> dict[str, bytes]:
    return {hashlib.sha256(d).hexdigest(): d for d in files}


def test_chunked_gz_and_xz_decompress_to_the_index_with_every_reader(tmp_path: Path) -> None:
    files = index.IndexTable.build(_items([f"pkg{i:04d}" for i in range(500)])).files()
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


def test_adding_one_package_recompresses_one_chunk() -> None:
    items = _items([f"pkg{i:04d}" for i in range(2000)])
    table = index.IndexTable.build(items)
    before = {c.raw for c in table.chunks}
    table.update(_items(["pkg0999a"]), set(), {e[3]: e for e, _s in items}.__getitem__)
    assert len({c.raw for c in table.chunks} - before) == 1  # content-defined boundaries
    again = index.IndexTable.build([*items, *_items(["pkg0999a"])])
    assert table.files() == again.files()


@pytest.mark.parametrize(
    ("seed", "one_stream"), [*((s, False) for s in range(12)), *((s, True) for s in range(4))]
)
def test_an_updated_table_is_what_building_it_again_makes(seed: int, one_stream: bool) -> None:
    """Adds and removes anywhere (boundary packages, size cuts, the ends): the same bytes."""
    rng = random.Random(seed)
    names = sorted({f"p{rng.randrange(10**6):06d}" for _ in range(rng.randrange(0, 600))})
    big = rng.random() < 0.3  # stanzas near MAX_CHUNK make size cuts
    items = _items(names, extra="x" * (4000 if big else 0))
    table = index.IndexTable.build(items, 2, one_stream=one_stream)
    for _round in range(3):
        paths = [e[3] for e, _s in items]
        remove = set(rng.sample(paths, min(len(paths), rng.randrange(0, 40))))
        add = _items([f"q{rng.randrange(10**6):06d}" for _ in range(rng.randrange(0, 40))])
        add += _items([f"{rng.choice(names)}" for _ in range(3)] if names else [], extra="+b1")
        add = list({e[3]: (e, s) for e, s in add if e[3] not in paths}.values())
        table.update(add, remove, {e[3]: e for e, _s in items}.__getitem__, 2)
        items = [it for it in items if it[0][3] not in remove] + add
        expected = index.IndexTable.build(items, one_stream=one_stream)
        assert [c.raw for c in table.chunks] == [c.raw for c in expected.chunks]
        assert [c.paths for c in table.chunks] == [c.paths for c in expected.chunks]
        assert [c.last for c in table.chunks] == [c.last for c in expected.chunks]
        assert table.files() == expected.files()
        # What is saved comes back from the published files alone.
        saved = table.dumps(tuple(hashlib.sha256(d).hexdigest() for d in table.files()))  # type: ignore[arg-type]
        loaded = index.IndexTable.loads(
            saved, _files_by_sha(table.files()).get, one_stream=one_stream
        )
        assert loaded is not None
        assert (
            index.IndexTable.loads(
                saved, _files_by_sha(table.files()).get, one_stream=not one_stream
            )
            is None
        )
        assert loaded.files() == table.files()
        table = loaded
    assert lzma.decompress(table.files().xz) == table.files().raw


def test_one_stream_xz_is_one_block_every_reader_takes_and_smaller_than_chunks(
    tmp_path: Path,
) -> None:
    items = _items([f"pkg{i:04d}" for i in range(1500)])
    chunked = index.IndexTable.build(items).files()
    one = index.IndexTable.build(items, one_stream=True)
    files = one.files()
    assert (files.raw, files.gz) == (chunked.raw, chunked.gz)  # only the .xz differs
    assert files.xz == lzma.compress(
        files.raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=index.XZ_PRESET
    )
    assert len(files.xz) < len(chunked.xz)
    path = tmp_path / "Packages.xz"
    path.write_bytes(files.xz)
    listed = subprocess.run(
        ["xz", "--robot", "--list", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert [ln.split("\t")[2] for ln in listed.splitlines() if ln.startswith("totals")] == ["1"]
    assert subprocess.run(["xz", "-dc", str(path)], capture_output=True, check=True).stdout == (
        files.raw
    )
    if APT_HELPER.exists():
        out = subprocess.run(
            [str(APT_HELPER), "cat-file", str(path)], capture_output=True, check=True
        )
        assert out.stdout == files.raw
    # The saved table needs no .xz to come back: the stream is made anew from the chunks.
    saved = one.dumps(tuple(hashlib.sha256(d).hexdigest() for d in files))  # type: ignore[arg-type]
    xz_sha = hashlib.sha256(files.xz).hexdigest()
    without_xz = {k: v for k, v in _files_by_sha(files).items() if k != xz_sha}
    loaded = index.IndexTable.loads(saved, without_xz.get, one_stream=True)
    assert loaded is not None
    assert loaded.files() == files


def test_a_one_stream_table_compresses_its_index_again_only_when_it_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = _items([f"pkg{i:04d}" for i in range(800)])
    table = index.IndexTable.build(items, one_stream=True)
    files = table.files()
    saved = table.dumps(tuple(hashlib.sha256(d).hexdigest() for d in files))  # type: ignore[arg-type]
    loaded = index.IndexTable.loads(saved, _files_by_sha(files).get, one_stream=True)
    assert loaded is not None
    made: list[int] = []
    real = index._xz_stream
    monkeypatch.setattr(index, "_xz_stream", lambda raw: made.append(1) or real(raw))
    key = {e[3]: e for e, _s in items}.__getitem__
    loaded.update([], set(), key)  # nothing added or removed: the published stream is kept
    assert loaded.files() == files
    assert made == []
    loaded.update(_items(["pkg0400a"]), set(), key)
    expected = index.IndexTable.build([*items, *_items(["pkg0400a"])], one_stream=True)
    assert loaded.files() == expected.files()
    assert made == [1, 1]  # loaded's new stream, and expected's
    assert index.IndexTable.build([], one_stream=True).files().xz == lzma.compress(
        b"", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32
    )


def test_a_table_whose_files_are_gone_or_other_is_not_loaded() -> None:
    table = index.IndexTable.build(_items([f"pkg{i:04d}" for i in range(300)]))
    files = table.files()
    saved = table.dumps(tuple(hashlib.sha256(d).hexdigest() for d in files))  # type: ignore[arg-type]
    by_sha = _files_by_sha(files)
    assert index.IndexTable.loads(saved, by_sha.get) is not None
    raw_sha = hashlib.sha256(files.raw).hexdigest()
    assert (
        index.IndexTable.loads(saved, lambda sha: None if sha == raw_sha else by_sha[sha]) is None
    )
    assert index.IndexTable.loads(saved, lambda sha: by_sha[sha][:-10]) is None
    assert index.IndexTable.loads(b"garbage", by_sha.get) is None


def test_empty_index_compresses_to_valid_empty_files() -> None:
    files = index.IndexTable.build([]).files()
    assert files.raw == b""
    assert gzip.decompress(files.gz) == b""
    assert lzma.decompress(files.xz) == b""
