"""The repository's own state, kept inside the repository under ``.releng-repo/``.

Layout (all of it private: never served, never synced as public files)::

    .releng-repo/
      lock                  the publisher lock (see lock.py)
      pool.records          one record per pool file that an index can name: appended on
                            include, compacted on garbage collection
      pool.snapshot         the records parsed, for a faster start (a cache: may be deleted);
                            first the SHA256 of every pool file, then the records
      suites/<suite>.members  the suite's members (the text format below), with a new
                            random tag each time it is written; older repositories have a
                            marshal file there, or suites/<suite>.json (pool path -> time
                            added): read once, written anew in this format
      suites/<suite>.byhash.json  per index, its recent by-hash SHA256s, newest first
      history/<suite>/      the suite's publishes, for show-history and rollback (history.py)
      pending/<suite>       exists while a suite's state is newer than its published Release
      gc-needed             exists while pool records may be unreferenced (a run added or
                            dropped some and has not finished): the next run collects them
      chunks/<suite>/<index>.table  the published index's chunks (see index.IndexTable), so
                            the next publish re-cuts only what changed (a cache: may be deleted)
      chunks/<suite>/members.marshal  the suite's members as the last save wrote them, with
                            its tag (a cache: may be deleted; used only while the tag matches)

A ``pool.jsonl`` record is a JSON array (positional: it loads 4x faster than
objects) ``[path, kind ("deb"|"dsc"), package, version, arch, source, size,
sha256, stanza, files?]`` where ``files`` lists a source package's other pool
files as ``[path, size, sha256]``. A torn last line
(a writer killed mid-append) is ignored and cut off by the next writer.

A ``.members`` file is text that does not depend on the Python that wrote it (it is synced
to S3 and read by other publishers): a first line ``releng-members 1 <tag, 16 hex digits>``,
then one line per member, fields separated by a tab: ``pool path, time added (epoch
seconds), kind, package, version, arch``. No field can hold a tab or a newline (names and
versions are checked on include). 10,000 members load in a few ms.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from releng.errors import RepoError

STATE_DIR = ".releng-repo"
SNAPSHOT_TAIL = 256 << 10  # bytes appended to pool.records after the snapshot before a new one
_SNAPSHOT_VERSION = 2

# json.dumps(obj, separators=(",", ":")), without making an encoder per call (a record each).
_compact_json = json.JSONEncoder(separators=(",", ":")).encode

# A suite member: (time added in epoch seconds, kind, package, version, arch); enough for
# membership and retention without reading the pool records.
Member = tuple[int, str, str, str, str]


class PoolRecord(NamedTuple):
    """One pool file an index names. A NamedTuple: 10,000 of them load in a few ms."""

    path: str
    kind: str  # "deb" or "dsc"
    package: str  # binary package name, or source name for a dsc
    version: str
    arch: str  # "source" for a dsc
    source: str
    size: int
    sha256: str
    stanza: bytes  # the complete Packages or Sources stanza, without its final newline
    files: tuple[tuple[str, int, str], ...] = ()  # a source package's other pool files

    @property
    def component(self) -> str:
        return self.path.split("/", 2)[1]

    def header(self) -> list[Any]:
        row: list[Any] = [*self[:8], len(self.stanza)]
        if self.files:
            row.append([list(f) for f in self.files])
        return row

    def to_block(self) -> bytes:
        header = _compact_json(self.header()).encode()
        return header + b"\n" + self.stanza + b"\n\n"


class SuiteState:
    """A suite's members and by-hash history, and what this run changed in its members.

    ``tag`` names the members as they were read (None: unknown); ``saved_tag`` what is on
    disk now. An index table saved with the tag of the members it shows can be brought up to
    date with ``added`` and ``dropped`` alone, without comparing every member.
    """

    __slots__ = ("added", "byhash", "dropped", "members", "name", "saved_tag", "tag")

    def __init__(
        self,
        *,
        name: str,
        members: dict[str, Member],
        byhash: dict[str, list[str]],
        tag: bytes | None = None,
    ) -> None:
        self.name = name
        self.members = members  # pool path -> (time added, kind, package, version, arch)
        self.byhash = byhash  # index path under dists/<suite>/ -> recent sha256s, newest first
        self.tag = self.saved_tag = tag
        self.added: set[str] = set()
        self.dropped: set[str] = set()

    def add(self, path: str, member: Member) -> None:
        self.members[path] = member
        self.added.add(path)

    def drop(self, path: str) -> bool:
        """Remove a member; False when it was not one."""
        if self.members.pop(path, None) is None:
            return False
        self.dropped.add(path)
        self.added.discard(path)
        return True

    @property
    def changed(self) -> bool:
        return bool(self.added or self.dropped)

    def __repr__(self) -> str:
        return f"SuiteState(name={self.name!r}, members={len(self.members)})"


_PREALLOCATE = 64 << 10
_IOV_MAX = 1024


def read_or_none(path: Path) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_atomic(path: Path, data: bytes | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` (or its pieces, in order) to ``path`` through a temporary file and a
    rename.

    A large file's blocks are allocated first, in one call: on ext4 a delayed-allocation
    write of a few MB now and then waits 5-15 ms for the journal (measured here: 4 MB took
    15 ms in one run of 20 and 0.7 ms with the blocks preallocated, every time).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    pieces = [data] if isinstance(data, bytes) else data
    try:
        try:
            size = sum(len(p) for p in pieces)
            if size >= _PREALLOCATE:
                with contextlib.suppress(OSError):  # not supported here: written as usual
                    os.posix_fallocate(fd, 0, size)
            for start in range(0, len(pieces), _IOV_MAX):
                batch = pieces[start : start + _IOV_MAX]
                done = os.writev(fd, batch)
                total = sum(len(p) for p in batch)
                rest = memoryview(b"".join(batch))[done:] if done < total else b""
                while rest:  # a short write (rare for a file): the rest, piece by piece
                    rest = rest[os.write(fd, rest) :]
        finally:
            os.close(fd)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        # A full disk fails in writev, which names no file: name the one being written.
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None


class RepoState:
    """Reads and writes ``<repo>/.releng-repo``; callers hold the repository lock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / STATE_DIR
        self._pool: dict[str, PoolRecord] | None = None
        self._shas: dict[str, str] | None = None  # every pool file's sha256 (without the pool)
        self._suites: dict[str, SuiteState] = {}
        # Set when pruning a suite's history freed what its oldest kept entry held (history.py):
        # a collection must follow, even in a run that added only referenced records.
        self.history_freed = False

    @property
    def lock_path(self) -> Path:
        return self.dir / "lock"

    @property
    def pool_path(self) -> Path:
        return self.dir / "pool.records"

    def suite_path(self, suite: str) -> Path:
        return self.dir / "suites" / f"{suite}.members"

    def table_path(self, suite: str, index: str) -> Path:
        return self.dir / "chunks" / suite / (index.replace("/", "_") + ".table")

    # -- pool records ---------------------------------------------------------------------------

    def forget(self) -> None:
        """Drop what was read: another publisher may have changed it since (call under the lock)."""
        self._pool = None
        self._shas = None
        self._suites = {}
        self.history_freed = False

    @property
    def snapshot_path(self) -> Path:
        return self.dir / "pool.snapshot"

    def pool(self) -> dict[str, PoolRecord]:
        if self._pool is None:
            pool, tail = self._read_snapshot()
            pool.update(_parse_pool(tail, where=self.pool_path))
            self._pool = pool
        return self._pool

    # A snapshot of the parsed records (marshal: loads 2-3x faster than parsing them), valid for
    # the first ``covered`` bytes of pool.records, which are only ever appended to; the records
    # after them are parsed as usual. rewrite_pool removes it before it replaces the file. Its
    # first part, every pool file's SHA256, is all that including a new package needs.

    def _open_snapshot(self, f: BinaryIO) -> tuple[BinaryIO, dict[str, str]] | None:
        """The snapshot (positioned at its records) and its SHA256s, if it is of ``f``'s file;
        ``f`` is left at the first byte of pool.records the snapshot does not cover."""
        try:
            snap = self.snapshot_path.open("rb")
        except OSError:
            return None
        try:
            # Private state this code wrote under the lock (as trusted as pool.records).
            version, covered, check, shas_len = marshal.load(snap)  # noqa: S302
            if version != _SNAPSHOT_VERSION:
                raise ValueError("another snapshot format")
            # marshal.loads of bytes, not marshal.load of the file: that reads it string by string.
            shas = marshal.loads(snap.read(shas_len))  # noqa: S302
            if not isinstance(shas, dict):
                raise ValueError("another snapshot format")
            f.seek(max(0, covered - len(check)))
            if f.read(len(check)) != check:
                raise ValueError("not a snapshot of this file")
        except (OSError, ValueError, EOFError, TypeError):
            snap.close()
            f.seek(0)
            return None
        return snap, shas

    def _read_snapshot(self) -> tuple[dict[str, PoolRecord], bytes]:
        """The snapshot's records and the bytes of pool.records after it (all of them: none)."""
        try:
            f = self.pool_path.open("rb")
        except FileNotFoundError:
            return {}, b""
        with f:
            opened = self._open_snapshot(f)
            if opened is None:
                return {}, f.read()
            snap, _shas = opened
            with snap:
                try:
                    rows = marshal.loads(snap.read())  # noqa: S302
                    make = PoolRecord._make
                    pool = dict(zip([r[0] for r in rows], map(make, rows), strict=True))
                except (OSError, ValueError, EOFError, TypeError, IndexError):
                    f.seek(0)  # damaged: parse every record
                    return {}, f.read()
            return pool, f.read()

    def _write_snapshot(self, covered: int, check: bytes) -> None:
        pool = self.pool()
        rows = [tuple(r) for r in pool.values()]
        tmp = self.snapshot_path.with_name(f".{self.snapshot_path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            shas = marshal.dumps(_shas_of(pool.values()))
            marshal.dump((_SNAPSHOT_VERSION, covered, check, len(shas)), f)
            f.write(shas)
            marshal.dump(rows, f)
        tmp.replace(self.snapshot_path)

    def _sha_index(self) -> dict[str, str]:
        """Every pool file's SHA256: from the snapshot's first part and the records after it
        (the whole pool when there is no usable snapshot)."""
        if self._shas is None:
            if self._pool is not None:
                self._shas = _shas_of(self._pool.values())
                return self._shas
            try:
                f = self.pool_path.open("rb")
            except FileNotFoundError:
                self._shas = {}
                return self._shas
            with f:
                opened = self._open_snapshot(f)
                if opened is None:
                    shas = _shas_of(_parse_pool(f.read(), where=self.pool_path).values())
                else:
                    opened[0].close()
                    shas = opened[1]
                    shas.update(_shas_of(_parse_pool(f.read(), where=self.pool_path).values()))
            self._shas = shas
        return self._shas

    def known_sha256(self, path: str) -> str | None:
        """The SHA256 the records give for a pool file (a .deb, a .dsc or a source file)."""
        return self._sha_index().get(path)

    def known_paths(self) -> Iterable[str]:
        """Every pool file the records name (packages and a source's other files)."""
        return self._sha_index().keys()

    def append(self, records: list[PoolRecord]) -> None:
        if not records:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            with self.pool_path.open("ab+") as f:
                end = f.seek(0, os.SEEK_END)
                if end:
                    f.seek(max(0, end - 2))
                    if f.read(2) != b"\n\n":  # a torn last record: cut it off
                        f.seek(0)
                        data = f.read()
                        cut = data.rfind(b"\n\n")
                        f.truncate(cut + 2 if cut >= 0 else 0)
                f.seek(0, os.SEEK_END)
                f.write(b"".join(r.to_block() for r in records))
                covered = f.tell()
                f.seek(max(0, covered - 64))
                check = f.read(64)
        except OSError as exc:  # a full disk: a torn record, which the next append cuts off
            raise OSError(exc.errno, exc.strerror, os.fspath(self.pool_path)) from None
        if end == 0 and self._pool is None:
            self._pool = {}  # a new file: these records are all of it
        if self._pool is not None:
            for r in records:
                self._pool[r.path] = r
        if self._shas is not None:
            self._shas.update(_shas_of(records))
        if covered - self._snapshot_covered() >= SNAPSHOT_TAIL:
            self._write_snapshot(covered, check)

    def _snapshot_covered(self) -> int:
        try:
            with self.snapshot_path.open("rb") as snap:
                header = marshal.load(snap)  # noqa: S302
            return int(header[1]) if header[0] == _SNAPSHOT_VERSION else 0
        except (OSError, ValueError, EOFError, TypeError, IndexError):
            return 0

    def readable_records(self) -> dict[str, PoolRecord]:
        """Every record of ``pool.records`` that parses, the corrupt ones left out (to repair)."""
        try:
            return _parse_pool(self.pool_path.read_bytes())
        except FileNotFoundError:
            return {}

    def rewrite_pool(self, keep: dict[str, PoolRecord]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.snapshot_path.unlink(missing_ok=True)  # before: it must never outlive its file
        write_atomic(self.pool_path, b"".join(r.to_block() for r in keep.values()))
        self._pool = dict(keep)
        self._shas = None

    # -- suites ---------------------------------------------------------------------------------

    def suites(self) -> list[str]:
        d = self.dir / "suites"
        if not d.is_dir():
            return []
        names = {p.stem for p in d.glob("*.members")}
        names.update(p.stem for p in d.glob("*.json") if not p.name.endswith(".byhash.json"))
        return sorted(names)

    def _load_json(self, path: Path, default: Any) -> Any:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return default
        except ValueError as exc:
            raise RepoError(
                f"{path} is corrupt ({exc}); restore it from a backup or remove the suite's "
                "state and include its packages again"
            ) from None

    def _load_members(self, suite: str) -> tuple[bytes | None, dict[str, Member]]:
        path = self.suite_path(suite)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            # A repository from before .members: pool path -> time added, in JSON.
            legacy = self._load_json(path.with_suffix(".json"), {})
            pool = self.pool()
            return None, {
                p: (int(t), r.kind, r.package, r.version, r.arch)
                for p, t in legacy.items()
                if (r := pool.get(p)) is not None
            }
        if data.startswith(MEMBERS_MAGIC):
            cached = self._cached_members(suite, data)
            if cached is not None:
                return cached
            try:
                return parse_members(data)
            except ValueError as exc:
                raise RepoError(
                    f"{path} is corrupt ({exc}); restore it from a backup or remove the suite's "
                    "state and include its packages again"
                ) from None
        try:
            # The format before MEMBERS_MAGIC: (tag, members), marshalled; private state
            # written under the lock. The next save writes it in the current format.
            loaded = marshal.loads(data)  # noqa: S302
            tag, members = (None, loaded) if isinstance(loaded, dict) else loaded
            if not isinstance(members, dict) or not isinstance(tag, bytes | None):
                raise TypeError(type(members).__name__)
        except (ValueError, EOFError, TypeError) as exc:
            raise RepoError(
                f"{path} is corrupt ({exc}); restore it from a backup or remove the suite's "
                "state and include its packages again"
            ) from None
        return tag, members

    def load_suite(self, suite: str) -> SuiteState:
        """The suite's state, read once per locked run (``forget`` drops it); callers share it."""
        st = self._suites.get(suite)
        if st is None:
            tag, members = self._load_members(suite)
            byhash = self._load_json(self.byhash_path(suite), {})
            st = SuiteState(name=suite, members=members, byhash=byhash, tag=tag)
            self._suites[suite] = st
        return st

    def byhash_path(self, suite: str) -> Path:
        return self.dir / "suites" / f"{suite}.byhash.json"

    def save_members(self, state: SuiteState) -> None:
        path = self.suite_path(state.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tag = os.urandom(8)
        data = dump_members(tag, state.members)
        write_atomic(path, data)
        state.saved_tag = tag
        path.with_suffix(".json").unlink(missing_ok=True)  # the old format, now converted
        self._suites[state.name] = state
        # After the members file: a run killed in between leaves a copy of older members,
        # whose tag no longer matches. (A cache: no error of its own stops a publish.)
        cache = self.members_cache_path(state.name)
        with contextlib.suppress(OSError):
            cache.parent.mkdir(parents=True, exist_ok=True)
            copy = marshal.dumps((_MEMBERS_CACHE_VERSION, tag, len(data), state.members))
            write_atomic(cache, copy)

    def members_cache_path(self, suite: str) -> Path:
        """The suite's members, marshalled, beside its index tables (local state: never
        synced): they load 3x faster than parsing the ``.members`` file they copy."""
        return self.dir / "chunks" / suite / "members.marshal"

    def _cached_members(
        self, suite: str, data: bytes
    ) -> tuple[bytes | None, dict[str, Member]] | None:
        """The members of the ``.members`` file ``data`` from their marshalled copy, when it
        is a copy of that file (the same random tag and length); else None."""
        try:
            raw = self.members_cache_path(suite).read_bytes()
            # Private state this code wrote under the lock (as trusted as pool.records).
            version, tag, length, members = marshal.loads(raw)  # noqa: S302
        except (OSError, ValueError, EOFError, TypeError):
            return None
        first = data[: data.find(b"\n")] if b"\n" in data else data
        if (
            version != _MEMBERS_CACHE_VERSION
            or not isinstance(tag, bytes)
            or not tag
            or first != MEMBERS_MAGIC + tag.hex().encode()
            or length != len(data)
            or not isinstance(members, dict)
        ):
            return None
        return tag, members

    def save_byhash(self, state: SuiteState) -> None:
        path = self.byhash_path(state.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(state.byhash, separators=(",", ":")).encode())

    # -- unreferenced pool records --------------------------------------------------------------

    @property
    def _gc_marker(self) -> Path:
        return self.dir / "gc-needed"

    def mark_gc_needed(self, candidates: Sequence[str] = ()) -> None:
        """Ask the next collection to run; ``candidates``: pool files about to be written or
        removed, which it removes unless a record still names them (one per line, appended:
        a torn last line from a killed writer names no file that exists)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if candidates:
            with self._gc_candidates.open("ab") as f:
                f.write("".join(f"{p}\n" for p in candidates).encode())
        self._gc_marker.touch()

    @property
    def _gc_candidates(self) -> Path:
        return self.dir / "gc-candidates"

    def gc_candidates(self) -> set[str]:
        try:
            lines = self._gc_candidates.read_bytes().decode(errors="replace").split("\n")
        except FileNotFoundError:
            return set()
        # Only pool paths: the file is private state, but a path never leaves the pool.
        return {p for p in lines if p.startswith("pool/") and "/../" not in p and "\\" not in p}

    def gc_needed(self) -> bool:
        return self._gc_marker.exists()

    def clear_gc_needed(self) -> None:
        self._gc_candidates.unlink(missing_ok=True)
        self._gc_marker.unlink(missing_ok=True)

    # -- pending publishes ----------------------------------------------------------------------

    def mark_pending(self, suite: str) -> None:
        d = self.dir / "pending"
        d.mkdir(parents=True, exist_ok=True)
        (d / suite).touch()

    def clear_pending(self, suite: str) -> None:
        (self.dir / "pending" / suite).unlink(missing_ok=True)

    def pending(self) -> list[str]:
        d = self.dir / "pending"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


MEMBERS_MAGIC = b"releng-members 1 "
_MEMBERS_CACHE_VERSION = 1


def dump_members(tag: bytes | None, members: dict[str, Member]) -> bytes:
    """A suite's members in the ``.members`` format (see the module's docstring)."""
    head = MEMBERS_MAGIC + (tag or b"").hex().encode() + b"\n"
    body = "".join([f"{p}\t{m[0]}\t{m[1]}\t{m[2]}\t{m[3]}\t{m[4]}\n" for p, m in members.items()])
    return head + body.encode()


def parse_members(data: bytes) -> tuple[bytes | None, dict[str, Member]]:
    """``(tag, members)`` of a ``.members`` file; ValueError when it is not one."""
    text = data.decode()
    first, _, rest = text.partition("\n")
    if not data.startswith(MEMBERS_MAGIC) or (rest and not rest.endswith("\n")):
        raise ValueError("not a complete members file")
    tag_hex = first[len(MEMBERS_MAGIC) :]
    tag = bytes.fromhex(tag_hex) if tag_hex else None
    if not rest:
        return tag, {}
    # One split over every field, then columns by slicing: the loops run in C (10,000 members
    # in a few ms; a split per line takes several times longer).
    fields = rest[:-1].replace("\n", "\t").split("\t")
    if len(fields) % 6:
        raise ValueError("a line without its 6 fields")
    paths = fields[0::6]
    rows = zip(
        map(int, fields[1::6]), fields[2::6], fields[3::6], fields[4::6], fields[5::6], strict=True
    )
    return tag, dict(zip(paths, rows, strict=True))


def _shas_of(records: Iterable[PoolRecord]) -> dict[str, str]:
    shas: dict[str, str] = {}
    for r in records:
        shas[r.path] = r.sha256
        for path, _size, sha in r.files:
            shas[path] = sha
    return shas


def find_records(state: RepoState, paths: Iterable[str]) -> dict[str, PoolRecord]:
    """The pool records of ``paths``, found in ``pool.records`` by their header's first bytes
    rather than by loading every record (a copy of 1 package into a 10,000-package suite
    needs one stanza); a path with no complete record is left out."""
    wanted = list(paths)
    if not wanted:
        return {}
    if state._pool is not None:
        return {p: r for p in wanted if (r := state._pool.get(p)) is not None}
    try:
        data = state.pool_path.read_bytes()
    except FileNotFoundError:
        return {}
    found: dict[str, PoolRecord] = {}
    for path in wanted:
        needle = b'["' + path.encode() + b'",'
        start = data.rfind(b"\n\n" + needle)  # the last: a later record is the current one
        start = start + 2 if start >= 0 else (0 if data.startswith(needle) else -1)
        if start < 0:
            continue
        end = data.find(b"\n\n", start)
        block = data[start : end + 2] if end >= 0 else data[start:]
        found.update(_parse_pool(block))
    return found


class CorruptRecordsError(RepoError):
    """``pool.records`` holds a record that is neither whole nor a killed writer's torn tail."""


def _parse_pool(data: bytes, *, where: Path | None = None) -> dict[str, PoolRecord]:
    """``pool.records`` as a dict by pool path. A torn last record (a killed writer; the next
    append cuts it off) is skipped; with ``where`` (the file), any other record that does
    not parse is a :class:`CorruptRecordsError`, else it is skipped too."""
    heads: list[bytes] = []
    stanzas: list[bytes] = []
    for block in data.split(b"\n\n"):
        if block:
            head, _, stanza = block.partition(b"\n")
            heads.append(head)
            stanzas.append(stanza)
    try:  # one JSON parse for every header: much faster than one per record
        rows = json.loads(b"[" + b",".join(heads) + b"]")
    except ValueError:
        rows = []
        for h in heads:
            try:
                rows.append(json.loads(h))
            except ValueError:
                rows.append(None)  # a torn record from a killed writer, or a corrupt one
    torn_tail = len(rows) - 1 if data and not data.endswith(b"\n\n") else -1
    pool: dict[str, PoolRecord] = {}
    make = PoolRecord._make
    for n, (row, stanza) in enumerate(zip(rows, stanzas, strict=True)):
        try:
            if row[8] != len(stanza):
                raise ValueError("its stanza's length differs")
            if len(row) > 9:
                files = tuple((f[0], f[1], f[2]) for f in row[9])
                rec = make((*row[:8], stanza, files))
            else:
                rec = make((*row[:8], stanza, ()))
        except (TypeError, IndexError, ValueError):
            if where is not None and n != torn_tail:
                raise CorruptRecordsError(
                    f"{where} holds a corrupt record (record {n + 1} of {len(rows)}); "
                    "run `invoke republish-repo` to rebuild the records from the pool files"
                ) from None
            continue
        pool[rec[0]] = rec
    return pool
