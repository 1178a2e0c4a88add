"""The repository's own state, kept inside the repository under ``.releng-repo/``.

Layout (all of it private: never served, never synced as public files)::

    .releng-repo/
      lock                  the publisher lock (see lock.py)
      pool.jsonl            one JSON record per pool file that an index can name: appended on
                            include, compacted on garbage collection
      suites/<suite>.json   the suite's members (pool paths) and its recent by-hash files
      pending/<suite>       exists while a suite's state is newer than its published Release
      chunks/<suite>/...    compressed index chunks, reused by the next publish

A ``pool.jsonl`` record is ``{"path", "kind": "deb"|"dsc", "package", "version",
"arch", "source", "size", "sha256", "stanza", "files"}`` where ``files`` lists a
source package's other pool files as ``[path, size, sha256]``. A torn last line
(a writer killed mid-append) is ignored and cut off by the next writer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from releng.errors import RepoError

STATE_DIR = ".releng-repo"


@dataclass(slots=True)
class PoolRecord:
    path: str
    kind: str  # "deb" or "dsc"
    package: str  # binary package name, or source name for a dsc
    version: str
    arch: str  # "source" for a dsc
    source: str
    size: int
    sha256: str
    stanza: str  # the complete Packages or Sources stanza
    files: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def component(self) -> str:
        return self.path.split("/", 2)[1]

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "path": self.path,
            "kind": self.kind,
            "package": self.package,
            "version": self.version,
            "arch": self.arch,
            "source": self.source,
            "size": self.size,
            "sha256": self.sha256,
            "stanza": self.stanza,
        }
        if self.files:
            d["files"] = self.files
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PoolRecord:
        return cls(
            path=d["path"],
            kind=d["kind"],
            package=d["package"],
            version=d["version"],
            arch=d["arch"],
            source=d["source"],
            size=d["size"],
            sha256=d["sha256"],
            stanza=d["stanza"],
            files=[(f[0], f[1], f[2]) for f in d.get("files", [])],
        )


@dataclass(slots=True)
class SuiteState:
    name: str
    members: dict[str, float]  # pool path -> time added (epoch seconds)
    byhash: dict[str, list[str]]  # index path under dists/<suite>/ -> recent sha256s, newest first

    def to_json(self) -> str:
        return json.dumps(
            {"suite": self.name, "members": self.members, "byhash": self.byhash},
            separators=(",", ":"),
            sort_keys=True,
        )


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

    @property
    def lock_path(self) -> Path:
        return self.dir / "lock"

    @property
    def pool_path(self) -> Path:
        return self.dir / "pool.jsonl"

    def suite_path(self, suite: str) -> Path:
        return self.dir / "suites" / f"{suite}.json"

    def chunk_cache_path(self, suite: str, index: str) -> Path:
        return self.dir / "chunks" / suite / (index.replace("/", "_") + ".pack")

    # -- pool records ---------------------------------------------------------------------------

    def pool(self) -> dict[str, PoolRecord]:
        if self._pool is None:
            self._pool = {}
            try:
                data = self.pool_path.read_bytes()
            except FileNotFoundError:
                data = b""
            for line in data.split(b"\n"):
                if not line:
                    continue
                try:
                    rec = PoolRecord.from_json(json.loads(line))
                except (ValueError, KeyError):
                    continue  # a torn line from a killed writer; cut off on the next append
                self._pool[rec.path] = rec
        return self._pool

    def known_files(self) -> dict[str, str]:
        """Every pool file the records know, path -> sha256 (debs, dscs and source files)."""
        out: dict[str, str] = {}
        for rec in self.pool().values():
            out[rec.path] = rec.sha256
            for path, _size, sha in rec.files:
                out[path] = sha
        return out

    def append(self, records: list[PoolRecord]) -> None:
        if not records:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.pool_path.open("ab+") as f:
            end = f.seek(0, os.SEEK_END)
            if end:
                f.seek(max(0, end - 1))
                if f.read(1) != b"\n":  # torn last line: cut it off
                    f.seek(0)
                    data = f.read()
                    f.truncate(data.rfind(b"\n") + 1)
            f.seek(0, os.SEEK_END)
            f.write(b"".join(r.to_json().encode() + b"\n" for r in records))
        pool = self.pool()
        for r in records:
            pool[r.path] = r

    def rewrite_pool(self, keep: dict[str, PoolRecord]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.pool_path, b"".join(r.to_json().encode() + b"\n" for r in keep.values()))
        self._pool = dict(keep)

    # -- suites ---------------------------------------------------------------------------------

    def suites(self) -> list[str]:
        d = self.dir / "suites"
        return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []

    def load_suite(self, suite: str) -> SuiteState:
        path = self.suite_path(suite)
        try:
            d = json.loads(path.read_bytes())
        except FileNotFoundError:
            return SuiteState(name=suite, members={}, byhash={})
        except ValueError as exc:
            raise RepoError(
                f"{path} is corrupt ({exc}); restore it from a backup or remove the suite's "
                "state and include its packages again"
            ) from None
        return SuiteState(name=suite, members=d["members"], byhash=d.get("byhash", {}))

    def save_suite(self, state: SuiteState) -> None:
        path = self.suite_path(state.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, state.to_json().encode())

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
