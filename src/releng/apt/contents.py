"""Contents indexes: which package holds which file, for ``apt-file`` (and ``apt-file search``).

Per suite and component: ``dists/<suite>/<component>/Contents-<arch>{,.gz}`` for every
architecture of the repository (its arch-specific packages and the ``all`` ones, as apt-file
fetches only ``Contents-$(ARCHITECTURE)`` unless the Release names ``all`` as an
architecture), and ``Contents-all{,.gz}`` when the suite holds arch-``all`` packages. Each
is listed in the Release with its hash and stored under ``by-hash/SHA256/`` like the other
indexes (the repository writes and prunes them with the Packages files). The plain file is
published as well as the ``.gz``: apt knows an index target only by its plain name in the
Release (Debian lists it without publishing it; repo-check wants every listed file).

A line is ``<path without ./>   <section>/<package>`` (Debian's format, no header).

Incremental, in two levels:

* a package's lines are read from its ``data.tar`` once, when it is included, and kept as
  one gzip member in ``.releng-repo/contents/<sha256 of the .deb>.gz`` (synced with the rest
  of the state, so a publisher with no pool files, e.g. a lifecycle change on S3, has them);
* an index file is those members concatenated in (package, version, arch, path) order (a
  multi-member gzip file: zlib's gzread, which apt uses, reads it as one). Its table
  (``chunks/<suite>/<component>_Contents-<arch>.table``: each member's entry and length)
  lets the next publish slice the unchanged members out of the published file and read
  only the added packages' members.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import logging
import lzma
import marshal
import mmap
import os
import shutil
import subprocess
import tarfile
import weakref
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

from releng.apt.debfile import BadPackageError
from releng.apt.state import write_atomic

if TYPE_CHECKING:
    from releng.apt.debfile import DebInfo
    from releng.apt.index import IndexEntry
    from releng.apt.repository import RepoSettings
    from releng.apt.state import Member, PoolRecord, RepoState, SuiteState

log = logging.getLogger(__name__)

CACHE_DIR = "contents"  # under the state directory
_TABLE_VERSION = 1
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


def cache_path(state: RepoState, sha256: str) -> Path:
    return state.dir / CACHE_DIR / sha256[:2] / f"{sha256}.gz"


# Lists read while the inputs are read (before the lock), by RepoState: written to the cache
# only when a publish uses them, so that a refused include leaves no file behind.
_read: weakref.WeakKeyDictionary[RepoState, dict[str, bytes]] = weakref.WeakKeyDictionary()


def remember(state: RepoState, infos: Sequence[DebInfo]) -> None:
    """Read each package's Contents lines from its data.tar (once per .deb: cached by its
    SHA256), to be kept when a publish uses them."""
    pending = _read.setdefault(state, {})
    for info in infos:
        if info.sha256 in pending or cache_path(state, info.sha256).is_file():
            continue
        lines = lines_for(
            file_list(info.path), package=info.package, section=info.control.get("Section", "")
        )
        pending[info.sha256] = (
            gzip.compress(lines, compresslevel=GZIP_LEVEL, mtime=0) if lines else b""
        )


def _store(path: Path, files: Sequence[str], *, package: str, section: str) -> bytes:
    data = lines_for(files, package=package, section=section)
    member = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0) if data else b""
    _write(path, member)
    return member


def _write(path: Path, member: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, member)


def _section(stanza: bytes) -> str:
    for line in stanza.split(b"\n"):
        if line.startswith(b"Section:"):
            return line[8:].strip().decode("utf-8", "replace")
    return ""


def _member(state: RepoState, root: Path, rec: PoolRecord) -> bytes | None:
    """The package's gzip member: from the cache, else read from its pool file now."""
    path = cache_path(state, rec.sha256)
    pending = _read.get(state)
    if pending is not None and (member := pending.pop(rec.sha256, None)) is not None:
        _write(path, member)
        return member
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    deb = root / rec.path
    if not deb.is_file():
        log.warning(
            "no file list for %s (no cache, no pool file); left out of the Contents indexes",
            rec.path,
        )
        return None
    return _store(path, file_list(deb), package=rec.package, section=_section(rec.stanza))


# -- the indexes ------------------------------------------------------------------------------------


def _load_table(table_path: Path, byhash_dir: Path) -> dict[str, tuple[Entry, Buffer]] | None:
    """The last publish's members, sliced out of its published file; None if unusable."""
    try:
        version, digest, rows = marshal.loads(table_path.read_bytes())  # noqa: S302  (private state, written under the lock)
        if version != _TABLE_VERSION:
            return None
        with open(byhash_dir / digest, "rb") as f:  # noqa: PTH123
            size = os.fstat(f.fileno()).st_size
            data: Buffer = (
                memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)) if size else b""
            )
    except (OSError, ValueError, TypeError, EOFError):
        return None
    out: dict[str, tuple[Entry, Buffer]] = {}
    pos = 0
    for entry, length in rows:
        out[entry[3]] = (tuple(entry), data[pos : pos + length])
        pos += length
    return out if pos == len(data) else None


def _file(path: str, pieces: list[Buffer]) -> ContentsFile:
    sha = hashlib.sha256()
    size = 0
    for piece in pieces:
        sha.update(piece)
        size += len(piece)
    return ContentsFile(path=path, pieces=pieces, size=size, sha256=sha.hexdigest())


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
        self._tables: list[tuple[Path, str, list[tuple[Entry, int]]]] = []

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
        have = _load_table(table_path, comp_dir / "by-hash" / "SHA256") or {}
        rows: dict[str, tuple[Entry, Buffer]] = {p: have[p] for p in wanted.keys() & have.keys()}
        missing = wanted.keys() - have.keys()
        if missing:
            pool = self.state.pool() if any(p not in fresh for p in missing) else {}
            for path in missing:
                rec = fresh.get(path) or pool.get(path)
                if rec is None:
                    log.warning("suite %s names %s, which has no pool record", suite, path)
                    continue
                member = _member(self.state, self.root, rec)
                if member is not None:
                    m = wanted[path]
                    rows[path] = ((m[2], m[3], m[4], path), member)
        ordered = sorted(rows.values(), key=lambda r: r[0])
        pieces = [buf for _e, buf in ordered if len(buf)]
        # apt finds an index target in the Release by its uncompressed name (then fetches
        # the best compressed one listed): the plain file is listed, and published, too.
        raw: list[Buffer] = [zlib.decompress(p, wbits=31) for p in pieces]
        if not pieces:
            pieces = [gzip.compress(b"", mtime=0)]  # an empty suite: still a valid gzip file
        gz = _file(f"{name}.gz", pieces)
        lengths = [(e, len(buf)) for e, buf in ordered if len(buf)]
        self._tables.append((table_path, gz.sha256, lengths))
        return [_file(name, raw), gz]

    def save(self) -> None:
        """Save the rendered files' tables (call once their by-hash files are written)."""
        for table_path, digest, lengths in self._tables:
            if not lengths:
                table_path.unlink(missing_ok=True)  # nothing to slice: an empty gzip file
                continue
            table_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(table_path, marshal.dumps((_TABLE_VERSION, digest, lengths)))
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
    from releng.apt.index import IndexEntry

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


# -- reading, for repo-check and the tests -----------------------------------------------------------


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
