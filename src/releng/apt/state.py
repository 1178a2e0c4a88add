"""The repository's own state, kept inside the repository under ``.releng-repo/``.

Layout (all of it private: never served, never synced as public files)::

    .releng-repo/
      lock                  the publisher lock (see lock.py)
      pool.records          one record per pool file that an index can name: appended on
                            include, compacted on garbage collection
      pool.snapshot         the records parsed, for a faster start (a cache: may be deleted)
      suites/<suite>.json   the suite's members: pool path -> time added (epoch seconds)
      suites/<suite>.byhash.json  per index, its recent by-hash SHA256s, newest first
      pending/<suite>       exists while a suite's state is newer than its published Release
      chunks/<suite>/...    compressed index chunks, reused by the next publish

A ``pool.jsonl`` record is a JSON array (positional: it loads 4x faster than
objects) ``[path, kind ("deb"|"dsc"), package, version, arch, source, size,
sha256, stanza, files?]`` where ``files`` lists a source package's other pool
files as ``[path, size, sha256]``. A torn last line
(a writer killed mid-append) is ignored and cut off by the next writer.
"""

from __future__ import annotations

import json
import marshal
import os
from pathlib import Path
from typing import Any, NamedTuple

from releng.errors import RepoError

STATE_DIR = ".releng-repo"
SNAPSHOT_TAIL = 256  # records appended after the last pool snapshot before a new one is written
_SNAPSHOT_VERSION = 1


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
        header = json.dumps(self.header(), separators=(",", ":")).encode()
        return header + b"\n" + self.stanza + b"\n\n"


class SuiteState:
    __slots__ = ("byhash", "members", "name")

    def __init__(self, *, name: str, members: dict[str, int], byhash: dict[str, list[str]]) -> None:
        self.name = name
        self.members = members  # pool path -> time added (epoch seconds)
        self.byhash = byhash  # index path under dists/<suite>/ -> recent sha256s, newest first

    def __repr__(self) -> str:
        return f"SuiteState(name={self.name!r}, members={len(self.members)})"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class RepoState:
    """Reads and writes ``<repo>/.releng-repo``; callers hold the repository lock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / STATE_DIR
        self._pool: dict[str, PoolRecord] | None = None
        self._source_files: dict[str, str] | None = None
        self._suites: dict[str, SuiteState] = {}
        self._tail = 0  # records in pool.records after the snapshot
        self._snapshot_count = 0

    @property
    def lock_path(self) -> Path:
        return self.dir / "lock"

    @property
    def pool_path(self) -> Path:
        return self.dir / "pool.records"

    def suite_path(self, suite: str) -> Path:
        return self.dir / "suites" / f"{suite}.json"

    def chunk_cache_path(self, suite: str, index: str) -> Path:
        return self.dir / "chunks" / suite / (index.replace("/", "_") + ".pack")

    # -- pool records ---------------------------------------------------------------------------

    def forget(self) -> None:
        """Drop what was read: another publisher may have changed it since (call under the lock)."""
        self._pool = None
        self._source_files = None
        self._suites = {}

    @property
    def snapshot_path(self) -> Path:
        return self.dir / "pool.snapshot"

    def pool(self) -> dict[str, PoolRecord]:
        if self._pool is None:
            pool, tail = self._read_snapshot()
            pool.update(_parse_pool(tail))
            self._pool = pool
            self._tail = len(pool) - self._snapshot_count
        return self._pool

    # A snapshot of the parsed records (marshal: loads 2-3x faster than parsing them), valid for
    # the first ``covered`` bytes of pool.records, which are only ever appended to; the records
    # after them are parsed as usual. rewrite_pool removes it before it replaces the file.

    def _read_snapshot(self) -> tuple[dict[str, PoolRecord], bytes]:
        """The snapshot's records and the bytes of pool.records after it (all of them: none)."""
        self._snapshot_count = 0
        try:
            with self.pool_path.open("rb") as f:
                try:
                    raw = self.snapshot_path.read_bytes()
                    # Private state this code wrote under the lock (as trusted as pool.records).
                    version, covered, check, rows = marshal.loads(raw)  # noqa: S302
                    if version != _SNAPSHOT_VERSION:
                        raise ValueError("another snapshot format")
                    f.seek(max(0, covered - len(check)))
                    if f.read(len(check)) != check:
                        raise ValueError("not a snapshot of this file")
                    make = PoolRecord._make
                    pool = dict(zip([r[0] for r in rows], map(make, rows), strict=True))
                except (OSError, ValueError, EOFError, TypeError, IndexError):
                    f.seek(0)  # none, damaged or stale: parse every record
                    return {}, f.read()
                self._snapshot_count = len(pool)
                return pool, f.read()
        except FileNotFoundError:
            return {}, b""

    def _write_snapshot(self, covered: int, check: bytes) -> None:
        rows = [tuple(r) for r in self.pool().values()]
        write_atomic(self.snapshot_path, marshal.dumps((_SNAPSHOT_VERSION, covered, check, rows)))
        self._snapshot_count = len(rows)
        self._tail = 0

    def known_sha256(self, path: str) -> str | None:
        """The SHA256 the records give for a pool file (a .deb, a .dsc or a source file)."""
        rec = self.pool().get(path)
        if rec is not None:
            return rec.sha256
        if self._source_files is None:
            self._source_files = {
                p: sha for r in self.pool().values() if r.files for p, _size, sha in r.files
            }
        return self._source_files.get(path)

    def append(self, records: list[PoolRecord]) -> None:
        if not records:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
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
        pool = self.pool()
        for r in records:
            pool[r.path] = r
        self._source_files = None
        self._tail += len(records)
        if self._tail >= SNAPSHOT_TAIL:
            self._write_snapshot(covered, check)

    def rewrite_pool(self, keep: dict[str, PoolRecord]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.snapshot_path.unlink(missing_ok=True)  # before: it must never outlive its file
        self._tail = len(keep)
        write_atomic(self.pool_path, b"".join(r.to_block() for r in keep.values()))
        self._pool = dict(keep)
        self._source_files = None

    # -- suites ---------------------------------------------------------------------------------

    def suites(self) -> list[str]:
        d = self.dir / "suites"
        if not d.is_dir():
            return []
        return sorted(p.stem for p in d.glob("*.json") if not p.name.endswith(".byhash.json"))

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

    def load_suite(self, suite: str) -> SuiteState:
        """The suite's state, read once per locked run (``forget`` drops it); callers share it."""
        st = self._suites.get(suite)
        if st is None:
            members = self._load_json(self.suite_path(suite), {})
            byhash = self._load_json(self.suite_path(suite).with_suffix(".byhash.json"), {})
            st = self._suites[suite] = SuiteState(name=suite, members=members, byhash=byhash)
        return st

    def save_members(self, state: SuiteState) -> None:
        path = self.suite_path(state.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(state.members, separators=(",", ":")).encode())
        self._suites[state.name] = state

    def save_byhash(self, state: SuiteState) -> None:
        path = self.suite_path(state.name).with_suffix(".byhash.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(state.byhash, separators=(",", ":")).encode())

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


def _parse_pool(data: bytes) -> dict[str, PoolRecord]:
    """``pool.records`` as a dict by pool path; torn records (a killed writer) are skipped."""
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
                rows.append(None)  # a torn record from a killed writer
    pool: dict[str, PoolRecord] = {}
    make = PoolRecord._make
    for row, stanza in zip(rows, stanzas, strict=True):
        try:
            if row[8] != len(stanza):
                continue  # a torn record from a killed writer
            if len(row) > 9:
                files = tuple((f[0], f[1], f[2]) for f in row[9])
                rec = make((*row[:8], stanza, files))
            else:
                rec = make((*row[:8], stanza, ()))
        except (TypeError, IndexError):
            continue
        pool[rec[0]] = rec
    return pool
