"""Index text: Packages and Sources stanzas, Release files, and fast .gz/.xz compression.

Compression is incremental. An index is cut into chunks at package-name
boundaries chosen by the content (a name whose CRC32 is 0 mod 16 ends a
chunk), so adding one package changes one chunk. Each chunk is compressed on
its own, once, and the results are cached between publishes:

* ``.gz``: one gzip member per chunk, concatenated (RFC 1952 multi-member;
  zlib's gzread, which apt uses, and every gunzip read them as one file).
* ``.xz``: one xz *block* per chunk inside a single xz stream whose index we
  write ourselves (what ``xz -T`` produces). Concatenated xz *streams* would be
  shorter code but apt 2.6 stops reading after the first one.
"""

from __future__ import annotations

import datetime as dt
import gzip
import lzma
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from hashlib import sha256
from pathlib import Path
from typing import NamedTuple

from releng.apt.changes import SourcePackage
from releng.apt.debfile import DebInfo

GZIP_LEVEL = 6  # level 9 is ~2x slower for < 2% smaller indexes
XZ_PRESET = 6
BOUNDARY_MOD = 16  # on average a chunk ends every 16 package names
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


def chunk_stanzas(groups: Iterable[tuple[str, Sequence[bytes]]]) -> list[bytes]:
    """Cut ``(name, stanzas)`` groups, in order, into content-defined chunks of index text.

    Stanzas come without their final newline; in the index each ends with a blank line.
    """
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    crc32 = zlib.crc32
    for name, stanzas in groups:
        for stanza in stanzas:
            current.append(stanza)
            size += len(stanza) + 2
        if crc32(name.encode()) % BOUNDARY_MOD == 0 or size >= MAX_CHUNK:
            chunks.append(b"\n\n".join(current) + b"\n\n")
            current, size = [], 0
    if current:
        chunks.append(b"\n\n".join(current) + b"\n\n")
    return chunks


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


def compress_chunk(data: bytes) -> CompressedChunk:
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
        raw_len=len(data),
        gz=gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0),
        xz_block=stream[12:index_start],
        xz_unpadded=unpadded,
    )


def assemble_xz(chunks: Sequence[CompressedChunk]) -> bytes:
    """One xz stream holding each chunk's block, with the stream index written here."""
    flags = bytes([0, _XZ_CHECK_CRC32])
    header = _XZ_MAGIC + flags + struct.pack("<I", zlib.crc32(flags))
    index = bytearray(b"\x00" + _vli(len(chunks)))
    for c in chunks:
        index += _vli(c.xz_unpadded) + _vli(c.raw_len)
    index += b"\x00" * (-len(index) % 4)
    index += struct.pack("<I", zlib.crc32(index))
    backward = struct.pack("<I", len(index) // 4 - 1)
    footer = struct.pack("<I", zlib.crc32(backward + flags)) + backward + flags + b"YZ"
    return b"".join([header, *(c.xz_block for c in chunks), bytes(index), footer])


class ChunkCache:
    """Compressed chunks by the SHA256 of their text, stored in one pack file per index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.old: dict[bytes, CompressedChunk] = {}
        self.used: dict[bytes, CompressedChunk] = {}
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        try:
            (count,) = struct.unpack_from("<I", data, 0)
            pos = 4
            for _ in range(count):
                key = data[pos : pos + 32]
                raw_len, gz_len, xz_len, unpadded = struct.unpack_from("<IIII", data, pos + 32)
                pos += 48
                gz, xz = data[pos : pos + gz_len], data[pos + gz_len : pos + gz_len + xz_len]
                pos += gz_len + xz_len
                self.old[key] = CompressedChunk(raw_len, gz, xz, unpadded)
        except struct.error:
            self.old = {}  # a damaged cache only costs time: everything is recompressed

    def get(self, data: bytes, key: bytes | None = None) -> CompressedChunk:
        """``data`` compressed; ``key``: its SHA256 digest, when the caller has it already."""
        key = key or sha256(data).digest()
        chunk = self.used.get(key) or self.old.get(key)
        if chunk is None:
            chunk = compress_chunk(data)
        self.used[key] = chunk
        return chunk

    def save(self) -> None:
        parts = [struct.pack("<I", len(self.used))]
        for key, c in self.used.items():
            parts += [
                key,
                struct.pack("<IIII", c.raw_len, len(c.gz), len(c.xz_block), c.xz_unpadded),
            ]
            parts += [c.gz, c.xz_block]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(b"".join(parts))
        tmp.replace(self.path)


class IndexFiles(NamedTuple):
    raw: bytes
    gz: bytes
    xz: bytes


def compress_index(
    chunks: Sequence[bytes], cache: ChunkCache, keys: Sequence[bytes] | None = None
) -> IndexFiles:
    """The index from its chunks; ``keys``: their SHA256 digests, when the caller has them."""
    if keys is None:
        compressed = [cache.get(c) for c in chunks if c]
    else:
        compressed = [cache.get(c, k) for c, k in zip(chunks, keys, strict=True) if c]
    gz = b"".join(c.gz for c in compressed) if compressed else gzip.compress(b"", mtime=0)
    return IndexFiles(raw=b"".join(chunks), gz=gz, xz=assemble_xz(compressed))


# -- Release ---------------------------------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc1123(when: dt.datetime) -> str:
    """``Sun, 22 Nov 2026 01:02:03 UTC``: locale-independent, as apt expects."""
    u = when.astimezone(dt.UTC)
    return f"{_DAYS[u.weekday()]}, {u.day:02d} {_MONTHS[u.month - 1]} {u.year} {u:%H:%M:%S} UTC"


class IndexEntry(NamedTuple):
    path: str  # relative to dists/<suite>/
    size: int
    sha256: str


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


_RELEASE_FILE_RE = re.compile(r"^ ([0-9a-f]{64}) +(\d+) (\S+)$")


def parse_release_sha256(text: str) -> list[IndexEntry]:
    """The SHA256 section of a Release file."""
    out: list[IndexEntry] = []
    in_section = False
    for line in text.splitlines():
        if not line.startswith(" "):
            in_section = line.rstrip() == "SHA256:"
            continue
        if in_section:
            m = _RELEASE_FILE_RE.match(line)
            if m:
                out.append(IndexEntry(path=m.group(3), size=int(m.group(2)), sha256=m.group(1)))
    return out
