"""Index text: Packages and Sources stanzas, Release files, and fast .gz/.xz compression.

Compression is incremental. An index is cut into chunks at package-name
boundaries chosen by the content (a name whose CRC32 is 0 mod BOUNDARY_MOD ends
a chunk), so adding one package changes one chunk. Each chunk is compressed on
its own, once; an :class:`IndexTable` keeps the chunks between publishes, and
the next publish re-cuts and recompresses only the chunks that changed:

* ``.gz``: one gzip member per chunk, concatenated (RFC 1952 multi-member;
  zlib's gzread, which apt uses, and every gunzip read them as one file).
* ``.xz``: one xz *block* per chunk inside a single xz stream whose index we
  write ourselves (what ``xz -T`` produces). Concatenated xz *streams* would be
  shorter code but apt 2.6 stops reading after the first one.

The price is size: each xz block starts with an empty dictionary, so on Debian's own
Packages the chunked ``.xz`` is 17% (200 packages) to 33% (10,000) bigger than one xz
stream of the same text (``.gz``: 9%). ``[repositories] index_xz = "one-stream"``
(``IndexTable(one_stream=True)``) compresses the whole index into one stream instead, as
Debian's archive is, whenever it changed: the smallest download, for a publish that pays
0.2 to 0.5 s of CPU per MB of changed index (one core: liblzma's threads are not in
Python's lzma).
"""

from __future__ import annotations

import bisect
import datetime as dt
import gzip
import lzma
import marshal
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from releng.apt.changes import SourcePackage
from releng.apt.debfile import DebInfo
from releng.deb822 import IndexEntry, rfc1123

GZIP_LEVEL = 6  # level 9 is ~2x slower for < 2% smaller indexes
XZ_PRESET = 6
# On average a chunk ends every 32 package names (~12-40 KiB of index): xz compresses such
# chunks ~20% smaller than 16-name ones, and each costs less set-up per byte.
BOUNDARY_MOD = 32
MAX_CHUNK = 256 * 1024

_XZ_MAGIC = b"\xfd7zXZ\x00"
_XZ_CHECK_CRC32 = 1


# -- Debian version ordering (dpkg's algorithm; small, fast, no dependency) -------------------------


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_version(v: str) -> tuple[int, str, str]:
    epoch = 0
    if ":" in v:
        e, v = v.split(":", 1)
        epoch = int(e) if e.isdigit() else 0
    upstream, _, revision = v.rpartition("-") if "-" in v else (v, "", "")
    return epoch, upstream, revision


def version_compare(a: str, b: str) -> int:
    """<0, 0, >0 as Debian version ``a`` sorts before, equal to, after ``b``."""
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


# -- stanzas ---------------------------------------------------------------------------------------


def _field(key: str, value: str) -> str:
    return f"{key}:{value}\n" if value.startswith("\n") else f"{key}: {value}\n"


def deb_stanza(info: DebInfo, filename: str) -> str:
    """The Packages stanza for ``info`` stored at ``filename`` (a path under the repo root)."""
    skip = {"Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512"}
    parts = [_field(k, v) for k, v in info.control.items() if k not in skip]
    parts.append(f"Filename: {filename}\nSize: {info.size}\nSHA256: {info.sha256}\n")
    return "".join(parts)


def dsc_stanza(src: SourcePackage, directory: str) -> str:
    """The Sources stanza for ``src`` whose files live under ``directory``."""
    skip = {
        "Source",
        "Files",
        "Checksums-Sha1",
        "Checksums-Sha256",
        "Checksums-Sha512",
        "Directory",
    }
    refs = [src.dsc_ref, *src.files]
    parts = [f"Package: {src.name}\n"]
    parts += [_field(k, v) for k, v in src.fields.items() if k not in skip]
    parts.append(f"Directory: {directory}\n")
    parts.append("Files:\n" + "".join(f" {r.md5} {r.size} {r.name}\n" for r in refs))
    parts.append("Checksums-Sha256:\n" + "".join(f" {r.sha256} {r.size} {r.name}\n" for r in refs))
    return "".join(parts)


def pool_prefix(source: str) -> str:
    return source[:4] if source.startswith("lib") and len(source) > 3 else source[:1]


# -- compression -----------------------------------------------------------------------------------


class CompressedChunk(NamedTuple):
    raw_len: int
    gz: bytes  # one complete gzip member
    xz_block: bytes  # one xz block, padded, with its CRC32 check
    xz_unpadded: int


def _vli(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_vli(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def compress_chunk(data: bytes, *, xz: bool = True) -> CompressedChunk:
    """A chunk's gzip member and (``xz``) its xz block."""
    gz = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    if not xz:
        return CompressedChunk(raw_len=len(data), gz=gz, xz_block=b"", xz_unpadded=0)
    dict_size = 1 << max(16, (len(data) - 1).bit_length())  # small dictionary: cheap encoder init
    filters = [{"id": lzma.FILTER_LZMA2, "preset": XZ_PRESET, "dict_size": min(dict_size, 1 << 23)}]
    stream = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)
    (backward,) = struct.unpack("<I", stream[-8:-4])
    index_start = len(stream) - 12 - (backward + 1) * 4
    count, pos = _read_vli(stream, index_start + 1)
    if count != 1:
        # liblzma writes no block for empty input; callers never pass empty chunks.
        raise AssertionError(f"expected one xz block, got {count}")
    unpadded, _ = _read_vli(stream, pos)
    return CompressedChunk(
        raw_len=len(data), gz=gz, xz_block=stream[12:index_start], xz_unpadded=unpadded
    )


def _gz_only(data: bytes) -> CompressedChunk:
    return compress_chunk(data, xz=False)


def _xz_stream(raw: Sequence[Buffer]) -> bytes:
    """The whole index as one xz stream (``index_xz = "one-stream"``)."""
    return lzma.compress(
        b"".join(raw), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=XZ_PRESET
    )


def _xz_pieces(chunks: Sequence[Chunk]) -> list[Buffer]:
    flags = bytes([0, _XZ_CHECK_CRC32])
    header = _XZ_MAGIC + flags + struct.pack("<I", zlib.crc32(flags))
    index = bytearray(b"\x00" + _vli(len(chunks)))
    for c in chunks:
        index += _vli(c.xz_unpadded) + _vli(len(c.raw))
    index += b"\x00" * (-len(index) % 4)
    index += struct.pack("<I", zlib.crc32(index))
    backward = struct.pack("<I", len(index) // 4 - 1)
    footer = struct.pack("<I", zlib.crc32(backward + flags)) + backward + flags + b"YZ"
    return [header, *(c.xz_block for c in chunks), bytes(index) + footer]


class IndexFiles(NamedTuple):
    raw: bytes
    gz: bytes
    xz: bytes


class IndexPieces(NamedTuple):
    """The index files as the pieces that make them, in order (nothing joined or copied)."""

    raw: list[Buffer]
    gz: list[Buffer]
    xz: list[Buffer]


Entry = tuple[str, str, str, str]  # (package, version, arch, pool path): an index's sort order
Buffer = bytes | memoryview
_TABLE_VERSION = 4


class Chunk(NamedTuple):
    """A chunk's bytes are bytes, or read-only views of a published file (see loads)."""

    paths: tuple[str, ...]  # the stanzas' pool paths, in index order
    last: str  # the package name of the last stanza
    raw: Buffer  # the stanzas, each followed by a blank line
    gz: Buffer  # one complete gzip member
    xz_block: Buffer  # one xz block, padded, with its CRC32 check
    xz_unpadded: int


def _is_boundary(name: str) -> bool:
    return zlib.crc32(name.encode()) % BOUNDARY_MOD == 0


def _cut(items: Sequence[tuple[Entry, bytes]]) -> list[tuple[list[Entry], bytes]]:
    """Sorted ``(entry, stanza)`` items cut into chunks: after a package whose name is a
    content boundary (its CRC32 is 0 mod BOUNDARY_MOD), or once a chunk reaches MAX_CHUNK."""
    out: list[tuple[list[Entry], bytes]] = []
    entries: list[Entry] = []
    stanzas: list[bytes] = []
    size = 0
    n = len(items)
    for k, (entry, stanza) in enumerate(items):
        entries.append(entry)
        stanzas.append(stanza)
        size += len(stanza) + 2
        name = entry[0]
        if k + 1 < n and items[k + 1][0][0] == name:
            continue  # a package's stanzas stay in one chunk
        if _is_boundary(name) or size >= MAX_CHUNK:
            out.append((entries, b"\n\n".join(stanzas) + b"\n\n"))
            entries, stanzas, size = [], [], 0
    if entries:
        out.append((entries, b"\n\n".join(stanzas) + b"\n\n"))
    return out


def _compress_all(
    pieces: Sequence[tuple[list[Entry], bytes]],
    reuse: dict[Buffer, Chunk],
    workers: int,
    *,
    xz: bool,
) -> list[Chunk]:
    todo = [raw for _e, raw in pieces if raw not in reuse]
    compress = compress_chunk if xz else _gz_only
    if len(todo) > 4 and workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        # zlib and liblzma release the GIL: compress new chunks on every core.
        with ThreadPoolExecutor(workers) as ex:
            done = dict(zip(todo, ex.map(compress, todo), strict=True))
    else:
        done = {raw: compress(raw) for raw in todo}
    out: list[Chunk] = []
    for entries, raw in pieces:
        paths = tuple(e[3] for e in entries)
        old = reuse.get(raw)
        c = done[raw] if old is None else old
        out.append(Chunk(paths, entries[-1][0], raw, c.gz, c.xz_block, c.xz_unpadded))
    return out


class IndexTable:
    """One index (a Packages or Sources file) as its content-defined chunks, each compressed.

    Adding or removing a package re-cuts and recompresses only the chunks between the two
    content boundaries around it; the same chunks as cutting the whole index again, so the
    result is byte for byte what :meth:`build` makes. Saved between publishes as the chunks'
    pool paths and lengths (:meth:`dumps`); their bytes come back from the published files
    (:meth:`loads`), so nothing is stored twice.

    ``one_stream``: the ``.xz`` is one stream of the whole index, and the chunks carry no xz
    block; the stream is made again only when a chunk changed (a loaded table keeps the one
    it was published with).
    """

    __slots__ = ("_stream", "chunks", "one_stream", "tag")

    def __init__(
        self,
        chunks: list[Chunk],
        tag: bytes | None = None,
        *,
        one_stream: bool = False,
        stream: Buffer | None = None,
    ) -> None:
        self.chunks = chunks
        self.tag = tag  # what the caller saved with it (see dumps)
        self.one_stream = one_stream
        self._stream = stream  # one_stream: the xz of these chunks, when known

    @classmethod
    def build(
        cls, items: Iterable[tuple[Entry, bytes]], workers: int = 1, *, one_stream: bool = False
    ) -> IndexTable:
        cut = _cut(sorted(items, key=_first))
        return cls(_compress_all(cut, {}, workers, xz=not one_stream), one_stream=one_stream)

    def paths(self) -> set[str]:
        return set().union(*(c.paths for c in self.chunks))

    def update(
        self,
        add: Sequence[tuple[Entry, bytes]],
        remove: set[str],
        key: Callable[[str], Entry],
        workers: int = 1,
    ) -> None:
        """Add ``(entry, stanza)`` items and remove the stanzas whose path is in ``remove``.

        ``key(path)``: the entry of a stanza the table holds and keeps (only the re-cut chunks'
        are asked for).
        """
        chunks = self.chunks
        xz = not self.one_stream
        if not chunks:
            self.chunks = _compress_all(_cut(sorted(add, key=_first)), {}, workers, xz=xz)
            self._stream = None
            return
        n = len(chunks)
        lasts = [c.last for c in chunks]
        ends = [_is_boundary(name) for name in lasts]  # else it was cut for its size
        adds: dict[int, list[tuple[Entry, bytes]]] = {}
        for item in add:
            adds.setdefault(min(bisect.bisect_left(lasts, item[0][0]), n - 1), []).append(item)
        dirty = set(adds)
        if remove:
            dirty.update(i for i, c in enumerate(chunks) if not remove.isdisjoint(c.paths))
        starts = set()
        for d in dirty:
            start = d
            while start > 0 and not ends[start - 1]:
                start -= 1
            starts.add(start)
        out: list[Chunk] = []
        i = 0
        while i < n:
            if i not in starts:
                out.append(chunks[i])
                i += 1
                continue
            items: list[tuple[Entry, bytes]] = []
            reuse: dict[Buffer, Chunk] = {}  # read-only views hash and compare as bytes
            j = i
            while True:  # take chunks up to a content boundary whose package is still there
                c = chunks[j]
                reuse[c.raw] = c
                stanzas = bytes(c.raw[:-2]).split(b"\n\n")
                if len(stanzas) != len(c.paths):
                    raise ValueError("a chunk's stanzas do not match its paths")
                items += [
                    (key(p), s) for p, s in zip(c.paths, stanzas, strict=True) if p not in remove
                ]
                items += adds.get(j, ())
                j += 1
                if j == n or (ends[j - 1] and any(e[0] == lasts[j - 1] for e, _s in items)):
                    break
            items.sort(key=_first)
            out += _compress_all(_cut(items), reuse, workers, xz=xz)
            i = j
        if len(out) != n or any(a is not b for a, b in zip(out, chunks, strict=True)):
            self._stream = None  # the index changed: its one stream is made again
        self.chunks = out

    def pieces(self) -> IndexPieces:
        chunks = self.chunks
        gz: list[Buffer] = [c.gz for c in chunks] if chunks else [gzip.compress(b"", mtime=0)]
        raw = [c.raw for c in chunks]
        if not self.one_stream:
            return IndexPieces(raw=raw, gz=gz, xz=_xz_pieces(chunks))
        if self._stream is None:
            self._stream = _xz_stream(raw)
        return IndexPieces(raw=raw, gz=gz, xz=[self._stream])

    def files(self) -> IndexFiles:
        raw, gz, xz = (b"".join(p) for p in self.pieces())
        return IndexFiles(raw=raw, gz=gz, xz=xz)

    def dumps(self, digests: tuple[str, str, str], tag: bytes | None = None) -> bytes:
        """The table, for files whose SHA256s are ``digests`` (raw, gz, xz), with ``tag``."""
        rows = [
            (c.paths, c.last, len(c.raw), len(c.gz), len(c.xz_block), c.xz_unpadded)
            for c in self.chunks
        ]
        rule = _rule(one_stream=self.one_stream)
        return marshal.dumps((_TABLE_VERSION, rule, tag, digests, rows))

    @classmethod
    def loads(
        cls, data: bytes, read: Callable[[str], Buffer | None], *, one_stream: bool = False
    ) -> IndexTable | None:
        """A saved table with its chunks' bytes sliced from the files ``read(sha256)`` gives;
        None when it or they are missing, damaged or of another format (or xz layout)."""
        try:
            # Private state this code wrote under the lock (as trusted as pool.records).
            version, rule, tag, digests, rows = marshal.loads(data)  # noqa: S302
            if version != _TABLE_VERSION or tuple(rule) != _rule(one_stream=one_stream):
                return None  # chunks cut by another rule: build the index anew
            raw, gz, xz = (read(d) for d in digests)
            # One stream: the chunks carry no xz block, and a stream gone is made again.
            stream, xz = (xz, b"") if one_stream else (None, xz)
            if raw is None or gz is None or xz is None:
                return None
            chunks: list[Chunk] = []
            r = g = 0
            x = 12  # after the xz stream header
            for paths, last, raw_len, gz_len, xz_len, unpadded in rows:
                chunks.append(
                    Chunk(
                        paths,
                        last,
                        raw[r : r + raw_len],
                        gz[g : g + gz_len],
                        xz[x : x + xz_len],
                        unpadded,
                    )
                )
                r, g, x = r + raw_len, g + gz_len, x + xz_len
            if r != len(raw) or (rows and g != len(gz)) or (not one_stream and x > len(xz)):
                return None
            if any(not c.paths or c.raw[-2:] != b"\n\n" for c in chunks):
                return None
        except (ValueError, TypeError, EOFError):
            return None
        return cls(
            chunks, tag if isinstance(tag, bytes) else None, one_stream=one_stream, stream=stream
        )


def _rule(*, one_stream: bool) -> tuple[int | str, ...]:
    """How a saved table's chunks were cut and compressed (another rule: build anew)."""
    return (BOUNDARY_MOD, MAX_CHUNK, "one-stream") if one_stream else (BOUNDARY_MOD, MAX_CHUNK)


def _first(item: tuple[Entry, bytes]) -> Entry:
    return item[0]


# -- Release ---------------------------------------------------------------------------------------


def render_release(
    *,
    origin: str,
    label: str,
    suite: str,
    date: dt.datetime,
    valid_until: dt.datetime | None,
    architectures: Sequence[str],
    components: Sequence[str],
    description: str,
    entries: Sequence[IndexEntry],
) -> bytes:
    lines = [
        f"Origin: {origin}",
        f"Label: {label}",
        f"Suite: {suite}",
        f"Codename: {suite}",
        f"Date: {rfc1123(date)}",
    ]
    if valid_until is not None:
        lines.append(f"Valid-Until: {rfc1123(valid_until)}")
    lines += [
        f"Architectures: {' '.join(architectures)}",
        f"Components: {' '.join(components)}",
        f"Description: {description}",
        "Acquire-By-Hash: yes",
        "SHA256:",
    ]
    width = max((len(str(e.size)) for e in entries), default=1)
    lines += [f" {e.sha256} {e.size:>{width}} {e.path}" for e in entries]
    return ("\n".join(lines) + "\n").encode()
