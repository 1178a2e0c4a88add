"""Contents indexes: which package holds which file, for ``apt-file`` (and ``apt-file search``).

Per suite and component: ``dists/<suite>/<component>/Contents-<arch>{,.gz}`` for every
architecture of the repository (its arch-specific packages and the ``all`` ones, as apt-file
fetches only ``Contents-$(ARCHITECTURE)`` unless the Release names ``all`` as an
architecture), and ``Contents-all{,.gz}`` when the suite holds arch-``all`` packages. Each
is listed in the Release with its hash and stored under ``by-hash/SHA256/`` like the other
indexes (the repository writes and prunes them with the Packages files). The plain file is
published as well as the ``.gz``: apt knows an index target only by its plain name in the
Release (Debian lists it without publishing it; check-repo wants every listed file).

A line is ``<path without ./>   <section>/<package>`` (Debian's format, no header).

Incremental, in two levels:

* a package's lines are read from its ``data.tar`` once, when it is included, and kept as
  one gzip member in ``.releng-repo/contents.pack`` by the SHA256 of the .deb (see
  :class:`Pack`; synced with the rest of the state, so a publisher with no pool files, e.g.
  a lifecycle change on S3, has them);
* an index file is those members concatenated in (package, version, arch, path) order (a
  multi-member gzip file: zlib's gzread, which apt uses, reads it as one). Its table
  (``chunks/<suite>/<component>_Contents-<arch>.table``: each member's entry and lengths)
  lets the next publish slice the unchanged members out of the published files (the .gz
  and the plain one) and read only the added packages' members.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import io
import itertools
import logging
import lzma
import marshal
import operator
import os
import shutil
import subprocess
import weakref
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

from releng.apt.state import write_atomic
from releng.deb822 import IndexEntry
from releng.errors import BadPackageError

if TYPE_CHECKING:
    from releng.apt.debfile import DebInfo
    from releng.apt.repository import RepoSettings
    from releng.apt.state import Member, PoolRecord, RepoState, SuiteState

log = logging.getLogger(__name__)

PACK = "contents.pack"  # under the state directory: see Pack
PACK_INDEX = "contents.idx"
_TABLE_VERSION = 2
_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60
GZIP_LEVEL = 6

Buffer = bytes | memoryview
Entry = tuple[str, str, str, str]  # (package, version, arch, pool path)


class ContentsFile(NamedTuple):
    """One Contents index to publish: its path under ``dists/<suite>/`` and its pieces."""

    path: str  # e.g. main/Contents-amd64.gz
    pieces: list[Buffer]
    size: int
    sha256: str


# -- one package's file list ------------------------------------------------------------------------


class _Limited(io.RawIOBase):
    """``size`` bytes of ``f`` from its current position, as a stream."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f = f
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self._left)
        if n <= 0:
            return 0
        data = self._f.read(n)
        buf[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _data_stream(f: IO[bytes], member: str, size: int, *, where: str) -> IO[bytes]:
    raw = io.BufferedReader(_Limited(f, size), 1 << 16)
    if member == "data.tar":
        return raw
    if member.endswith(".gz"):
        return io.BufferedReader(gzip.GzipFile(fileobj=raw))
    if member.endswith(".xz"):
        return io.BufferedReader(lzma.LZMAFile(raw))
    if member.endswith(".zst"):
        exe = shutil.which("zstd")
        if exe is None:
            raise BadPackageError(
                f"{where}: its data.tar is zstd-compressed and no `zstd` program is installed; "
                "install zstd (apt-get install zstd)"
            )
        proc = subprocess.run([exe, "-dc"], input=raw.read(), capture_output=True, check=False)
        if proc.returncode != 0:
            raise BadPackageError(f"{where}: data.tar.zst is corrupt; rebuild the package")
        return io.BytesIO(proc.stdout)
    raise BadPackageError(f"{where}: unsupported data member {member!r}")


_SMALL = 1 << 20  # a compressed data member this small is unpacked in memory and walked here


def _small_tar_names(member: bytes, name: str, *, where: str) -> list[str]:
    """The file names of a small compressed data.tar, by hand: ~5x faster than tarfile for
    the typical package of a few files. GNU long names and pax paths are understood; any
    other oddity falls back to tarfile."""
    try:
        tar = zlib.decompress(member, wbits=47) if name.endswith(".gz") else lzma.decompress(member)
    except (zlib.error, lzma.LZMAError) as exc:
        raise BadPackageError(f"{where}: its {name} is corrupt ({exc})") from None
    names: list[str] = []
    pos = 0
    override: str | None = None
    end = len(tar)
    while pos + 512 <= end:
        header = tar[pos : pos + 512]
        if header[:1] == b"\0" and header == b"\0" * 512:
            break
        try:
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            size = -1
        kind = header[156:157]
        if size < 0 or kind not in b"01234567LxgK\0" or len(kind) != 1:
            return _tarfile_names(tar, where=where)
        body_at = pos + 512
        pos = body_at + (size + 511) // 512 * 512
        if kind == b"L":
            override = tar[body_at : body_at + size].split(b"\0", 1)[0].decode("utf-8", "replace")
            continue
        if kind == b"x":
            for record in tar[body_at : body_at + size].decode("utf-8", "replace").split("\n"):
                _len, _, kv = record.partition(" ")
                if kv.startswith("path="):
                    override = kv[5:]
            continue
        if kind in (b"g", b"K"):
            continue
        path = override
        override = None
        path = (path if path is not None else _ustar_name(header)).removeprefix("./")
        if kind != b"5" and path and not path.endswith("/"):
            names.append(path)
    return names


def _ustar_name(header: bytes) -> str:
    path = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
    return f"{prefix}/{path}" if prefix and header[257:262] == b"ustar" else path


def _tarfile_names(tar: bytes, *, where: str) -> list[str]:
    import tarfile  # here: the usual data.tar is read without it (and off the start-up path)

    try:
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as t:
            return [
                m.name.removeprefix("./") for m in t if not m.isdir() and m.name.removeprefix("./")
            ]
    except tarfile.TarError as exc:
        raise BadPackageError(f"{where}: its data.tar is corrupt ({exc})") from None


def file_list(deb: str | Path) -> list[str]:
    """The files (regular files and links, not directories) a ``.deb`` installs, without
    the leading ``./``, in the order of its data.tar."""
    where = os.fspath(deb)
    with open(deb, "rb") as f:  # noqa: PTH123  (plain strings: once per included package)
        if f.read(len(_AR_MAGIC)) != _AR_MAGIC:
            raise BadPackageError(f"{where} is not a Debian package (no ar header)")
        while len(header := f.read(_AR_HEADER)) == _AR_HEADER:
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            try:
                size = int(header[48:58].decode("ascii").strip())
            except ValueError:
                raise BadPackageError(f"{where}: a corrupt ar member header") from None
            if not name.startswith("data.tar"):
                f.seek(size + (size & 1), os.SEEK_CUR)
                continue
            if size <= _SMALL and name in ("data.tar.gz", "data.tar.xz"):
                return _small_tar_names(f.read(size), name, where=where)
            import tarfile  # here: see _tarfile_names

            try:
                # An uncompressed data.tar (big payloads are often left so) is walked by
                # seeking from header to header, never read; a compressed one is streamed.
                plain = name == "data.tar"
                stream = f if plain else _data_stream(f, name, size, where=where)
                with tarfile.open(fileobj=stream, mode="r:" if plain else "r|") as tar:
                    return [
                        m.name.removeprefix("./")
                        for m in tar
                        if not m.isdir() and m.name.removeprefix("./")
                    ]
            except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
                raise BadPackageError(f"{where}: its {name} is corrupt ({exc})") from None
    raise BadPackageError(f"{where} has no data.tar member; rebuild the package")


def lines_for(files: Iterable[str], *, package: str, section: str) -> bytes:
    """The Contents lines of one package."""
    location = f"{section or 'misc'}/{package}"
    return "".join(f"{name}    {location}\n" for name in files).encode()


# -- the per-package cache ------------------------------------------------------------------------


_FIND_AT_MOST = 32  # packages looked up by searching the raw index; more: it is parsed


def _entry(line: bytes, pack_size: int) -> tuple[str, tuple[int, int]] | None:
    parts = line.split()
    if len(parts) != 3 or len(parts[0]) != 64 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    offset, length = int(parts[1]), int(parts[2])
    if offset + length > pack_size:
        return None  # appended by a run killed before the pack was complete
    return parts[0].decode(), (offset, length)


class Pack:
    """Every package's gzip member, kept by the SHA256 of its .deb: appended to
    ``contents.pack``, with a line ``<sha256> <offset> <length>`` in ``contents.idx`` for each
    (two files, not one per package: 10,000 small files cost more to write, and to sync,
    than the lines of their lists). Appended under the repository lock, the pack first: a
    run killed in between leaves bytes no line names; a torn last line is ignored. Never
    compacted: a few hundred bytes per package ever included.
    """

    def __init__(self, state_dir: Path) -> None:
        self.pack = state_dir / PACK
        self.idx = state_dir / PACK_INDEX
        self._index: dict[str, tuple[int, int]] | None = None
        self._raw: tuple[bytes, int] | None = None
        self._new: dict[str, bytes] = {}

    def _read(self) -> tuple[bytes, int]:
        """The index file's complete lines (a torn last one left out) and the pack's size."""
        if self._raw is None:
            try:
                size = os.stat(self.pack).st_size  # noqa: PTH116
                data = self.idx.read_bytes()
            except FileNotFoundError:
                data, size = b"", 0
            self._raw = (data[: data.rfind(b"\n") + 1], size)
        return self._raw

    def index(self) -> dict[str, tuple[int, int]]:
        if self._index is None:
            data, size = self._read()
            index: dict[str, tuple[int, int]] = {}
            for line in data.split(b"\n"):
                found = _entry(line, size)
                if found is not None:
                    index[found[0]] = found[1]
            self._index = index
        return self._index

    def _find(self, sha256: str) -> tuple[int, int] | None:
        """One package's entry without parsing every line: a search of the raw index (the
        newest line for it counts, as in :meth:`index`)."""
        if self._index is not None:
            return self._index.get(sha256)
        data, size = self._read()
        at = data.rfind(sha256.encode() + b" ")
        while at > 0 and data[at - 1 : at] != b"\n":  # not at the start of a line
            at = data.rfind(sha256.encode() + b" ", 0, at)
        if at < 0:
            return None
        found = _entry(data[at : data.find(b"\n", at)], size)
        return found[1] if found is not None else None

    def has(self, shas: Sequence[str]) -> set[str]:
        """Which of ``shas`` are kept (a few: searched; many: the whole index parsed)."""
        if len(shas) > _FIND_AT_MOST:
            self.index()
        return {s for s in shas if s in self._new or self._find(s) is not None}

    def get(self, sha256: str) -> bytes | None:
        if sha256 in self._new:
            return self._new[sha256]
        where = self._find(sha256)
        if where is None:
            return None
        with open(self.pack, "rb") as f:  # noqa: PTH123
            return os.pread(f.fileno(), where[1], where[0])

    def add(self, sha256: str, member: bytes) -> None:
        self._new[sha256] = member

    def flush(self) -> None:
        """Append what was added (call with the repository lock held)."""
        if not self._new:
            return
        self.pack.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        with open(self.pack, "ab") as f:  # noqa: PTH123
            offset = f.seek(0, os.SEEK_END)
            f.write(b"".join(self._new.values()))
            for sha, member in self._new.items():
                lines.append(f"{sha} {offset} {len(member)}\n")
                offset += len(member)
        with open(self.idx, "a+b") as f:  # noqa: PTH123
            end = f.seek(0, os.SEEK_END)
            torn = end > 0 and os.pread(f.fileno(), 1, end - 1) != b"\n"
            f.write((b"\n" if torn else b"") + "".join(lines).encode())
        self._new = {}
        self._index = self._raw = None  # read again when asked


# Lists read while the inputs are read (before the lock), by RepoState: kept only when a
# publish uses them, so that a refused include leaves nothing behind.
_read: weakref.WeakKeyDictionary[RepoState, dict[str, bytes]] = weakref.WeakKeyDictionary()


def remember(state: RepoState, infos: Sequence[DebInfo]) -> None:
    """Read each package's Contents lines from its data.tar (once per .deb: kept by its
    SHA256), to be kept when a publish uses them."""
    pending = _read.setdefault(state, {})
    kept = Pack(state.dir).has([i.sha256 for i in infos if i.sha256 not in pending])
    for info in infos:
        if info.sha256 in pending or info.sha256 in kept:
            continue
        pending[info.sha256] = _gz(
            lines_for(
                file_list(info.path), package=info.package, section=info.control.get("Section", "")
            )
        )


def _gz(lines: bytes) -> bytes:
    return gzip.compress(lines, compresslevel=GZIP_LEVEL, mtime=0) if lines else b""


def _section(stanza: bytes) -> str:
    for line in stanza.split(b"\n"):
        if line.startswith(b"Section:"):
            return line[8:].strip().decode("utf-8", "replace")
    return ""


def _member(state: RepoState, pack: Pack, root: Path, rec: PoolRecord) -> bytes | None:
    """The package's gzip member: read at include, kept in the pack, or read from its pool
    file now (added to the pack)."""
    pending = _read.get(state)
    if pending is not None and (member := pending.pop(rec.sha256, None)) is not None:
        pack.add(rec.sha256, member)
        return member
    member = pack.get(rec.sha256)
    if member is not None:
        return member
    deb = root / rec.path
    if not deb.is_file():
        log.warning(
            "no file list for %s (none kept, no pool file); left out of the Contents indexes",
            rec.path,
        )
        return None
    member = _gz(lines_for(file_list(deb), package=rec.package, section=_section(rec.stanza)))
    pack.add(rec.sha256, member)
    return member


# -- the indexes ------------------------------------------------------------------------------------


# A member in a saved table: its entry and the lengths of its gzip member and of its lines.
_Row = tuple[Entry, int, int]


class _Published(NamedTuple):
    rows: list[_Row]  # sorted by entry
    gz: Buffer  # the published .gz: the rows' members, concatenated
    raw: Buffer  # the published plain file: the rows' lines, concatenated


_ENTRY, _GZ_LEN, _RAW_LEN = (operator.itemgetter(k) for k in range(3))  # of a _Row


def _load_table(table_path: Path, byhash_dir: Path) -> _Published | None:
    """The last publish's table and files; None if unusable."""
    try:
        version, (gz_digest, raw_digest), rows = marshal.loads(table_path.read_bytes())  # noqa: S302  (private state, written under the lock)
        if version != _TABLE_VERSION:
            return None
        # Read, not mapped: a mapping would live as long as any slice of it, and keep the
        # file (and its filesystem) busy after a failed run, whose traceback holds them.
        gz = memoryview((byhash_dir / gz_digest).read_bytes())
        raw = memoryview((byhash_dir / raw_digest).read_bytes())
    except (OSError, ValueError, TypeError, EOFError):
        return None
    # Sums in C (map, itemgetter): 10,000 rows on every publish.
    if sum(map(_GZ_LEN, rows)) != len(gz) or sum(map(_RAW_LEN, rows)) != len(raw):
        return None
    return _Published(rows, gz, raw)


def _merge(
    old: _Published, keep: Sequence[bool], new: Sequence[tuple[Entry, bytes, bytes]]
) -> tuple[list[Buffer], list[Buffer], list[_Row]]:
    """The .gz and plain files' pieces and the rows: the kept old rows as runs sliced out of
    the published files, the new ones put in their place by entry."""
    rows = old.rows
    gz_ends = [0, *itertools.accumulate(map(_GZ_LEN, rows))]
    raw_ends = [0, *itertools.accumulate(map(_RAW_LEN, rows))]
    entries = list(map(_ENTRY, rows))
    gz: list[Buffer] = []
    raw: list[Buffer] = []
    out: list[_Row] = []

    def old_rows(i: int, j: int) -> None:
        k = i
        while k < j:
            if not keep[k]:
                k += 1
                continue
            start = k
            while k < j and keep[k]:
                k += 1
            gz.append(old.gz[gz_ends[start] : gz_ends[k]])
            raw.append(old.raw[raw_ends[start] : raw_ends[k]])
            out.extend(rows[start:k])

    i = 0
    for entry, member, lines in new:
        j = bisect.bisect_left(entries, entry, lo=i)
        old_rows(i, j)
        i = j
        gz.append(member)
        raw.append(lines)
        out.append((entry, len(member), len(lines)))
    old_rows(i, len(rows))
    return gz, raw, out


def _file(path: str, pieces: list[Buffer]) -> ContentsFile:
    data = b"".join(pieces)  # one copy: cheaper than hashing and writing 10,000 small pieces
    return ContentsFile(
        path=path, pieces=[data], size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )


class Contents:
    """The Contents indexes of one suite: render (what to publish), then save (the tables)."""

    def __init__(
        self,
        state: RepoState,
        root: Path,
        *,
        components: Sequence[str],
        architectures: Sequence[str],
    ) -> None:
        self.state = state
        self.root = root
        self.components = components
        self.architectures = architectures
        self._tables: list[tuple[Path, tuple[str, str], list[_Row]]] = []
        self._pack = Pack(state.dir)

    def render(
        self,
        suite: str,
        members: Mapping[str, Member],
        fresh: Mapping[str, PoolRecord],
        dists: Path,
    ) -> list[ContentsFile]:
        """Every Contents file of the suite whose files are written under ``dists``."""
        single = len(self.components) == 1
        out: list[ContentsFile] = []
        self._tables = []
        for comp in self.components:
            debs = {
                p: m
                for p, m in members.items()
                if m[1] == "deb" and (single or p.split("/", 2)[1] == comp)
            }
            has_all = any(m[4] == "all" for m in debs.values())
            for arch in (*self.architectures, *(("all",) if has_all else ())):
                kinds = ("all",) if arch == "all" else (arch, "all")
                wanted = {p: m for p, m in debs.items() if m[4] in kinds}
                name = f"{comp}/Contents-{arch}"
                out += self._render_one(suite, name, wanted, fresh, dists / comp)
        return out

    def _render_one(
        self,
        suite: str,
        name: str,
        wanted: Mapping[str, Member],
        fresh: Mapping[str, PoolRecord],
        comp_dir: Path,
    ) -> list[ContentsFile]:
        table_path = self.state.table_path(suite, name)
        old = _load_table(table_path, comp_dir / "by-hash" / "SHA256") or _Published([], b"", b"")
        paths = [r[0][3] for r in old.rows]
        had = set(paths)
        keep = list(map(wanted.__contains__, paths))
        missing = [p for p in wanted if p not in had]
        new: list[tuple[Entry, bytes, bytes]] = []
        if missing:
            pool = self.state.pool() if any(p not in fresh for p in missing) else {}
            for path in missing:
                rec = fresh.get(path) or pool.get(path)
                if rec is None:
                    log.warning("suite %s names %s, which has no pool record", suite, path)
                    continue
                member = _member(self.state, self._pack, self.root, rec)
                if member is not None:
                    m = wanted[path]
                    lines = zlib.decompress(member, wbits=31) if member else b""
                    new.append(((m[2], m[3], m[4], path), member, lines))
        new.sort(key=lambda n: n[0])
        # Only the added members are unpacked; the others are runs sliced out of the last
        # files. apt finds an index target in the Release by its uncompressed name (then
        # fetches the best compressed one listed): the plain file is listed, and published.
        pieces, raw, rows = _merge(old, keep, new)
        empty = not any(len(p) for p in pieces)
        gz = _file(f"{name}.gz", [gzip.compress(b"", mtime=0)] if empty else pieces)
        plain = _file(name, raw)
        self._tables.append((table_path, (gz.sha256, plain.sha256), [] if empty else rows))
        return [plain, gz]

    def save(self) -> None:
        """Keep the new packages' members and save the rendered files' tables (call once
        their by-hash files are written)."""
        self._pack.flush()
        for table_path, digests, lengths in self._tables:
            if not lengths:
                table_path.unlink(missing_ok=True)  # nothing to slice: an empty gzip file
                continue
            table_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(table_path, marshal.dumps((_TABLE_VERSION, digests, lengths)))
        self._tables = []


def add_indexes(  # noqa: PLR0917  (the publish's own lists, extended in place)
    state: RepoState,
    settings: RepoSettings,
    st: SuiteState,
    fresh: Mapping[str, PoolRecord],
    dists: Path,
    entries: list[IndexEntry],
    placed: list[tuple[Path, Path, str, list[Buffer]]],
) -> Contents:
    """The repository's hook: append the suite's Contents files to the Release ``entries``
    and to the files to write (``placed``: by-hash path, plain path, name, pieces). Call
    ``save()`` on the result once they are written. Nothing when ``settings.contents`` is off."""
    contents = Contents(
        state,
        state.root,
        components=settings.components,
        architectures=settings.architectures,
    )
    if not settings.contents:
        return contents
    for c in contents.render(st.name, st.members, fresh, dists):
        entries.append(IndexEntry(path=c.path, size=c.size, sha256=c.sha256))
        byhash = dists / c.path.rsplit("/", 1)[0] / "by-hash" / "SHA256" / c.sha256
        placed.append((byhash, dists / c.path, c.path, c.pieces))
    return contents


# -- reading, for check-repo and the tests -----------------------------------------------------------


def parse_contents(data: bytes, *, where: str) -> dict[str, set[str]]:
    """A Contents file's text: file path -> package names; BadPackageError when malformed."""
    out: dict[str, set[str]] = {}
    for n, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        path, _, locations = raw.rstrip().rpartition(" ")
        path = path.strip()
        if not path or not locations:
            raise BadPackageError(f"{where}: line {n} is not 'PATH  SECTION/PACKAGE': {raw[:80]!r}")
        out.setdefault(path, set()).update(loc.rsplit("/", 1)[-1] for loc in locations.split(","))
    return out
