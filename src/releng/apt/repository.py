"""Include packages into suites and publish them: pool, indexes, by-hash, signed Release.

Order of writes in one locked run (each file through a temporary name and a rename):

1. new pool files, then their records appended to ``.releng-repo/pool.jsonl``;
2. each changed suite's members (retention applied) and a ``pending/<suite>`` marker;
3. per suite: every index under ``by-hash/SHA256/<sha256>``, then the plain index names
   (hard links to those), then ``Release``, ``Release.gpg`` and finally ``InRelease``;
4. the suite's by-hash history; by-hash files beyond the last ``byhash_keep`` removed;
   the pending marker removed;
5. pool files no suite references, removed (records first, then files).

A reader of the local directory always finds every file the ``InRelease`` it
got names. A publisher killed at any point leaves the previous Release in
place with all its files; the next run republishes every pending suite first.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from releng.apt import changes as _changes
from releng.apt import index as _index
from releng.apt.debfile import BadPackageError, DebInfo, read_deb, sha256_file
from releng.apt.lock import RepoLock
from releng.apt.state import PoolRecord, RepoState, SuiteState, write_atomic
from releng.errors import RepoError
from releng.gpg import Signer

log = logging.getLogger(__name__)

_SUITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~_-]*$")
_NIGHTLY_RE = re.compile(r"^(?:\d+:)?(\d{4})\.(\d{2})\.(\d{2})")

# Named points where a test may kill the publisher (see Repository(crash_hook=...)).
CRASH_POINTS = (
    "pool-written",
    "records-written",
    "suite-written",
    "byhash-written",
    "indexes-written",
    "release-written",
    "release-gpg-written",
    "inrelease-written",
    "published",
    "gc-records",
)


@dataclass(frozen=True, kw_only=True)
class RepoSettings:
    """What a repository carries and how long it keeps things (from product.toml)."""

    name: str  # the product: names the keyring files
    origin: str
    label: str
    components: tuple[str, ...] = ("main",)
    architectures: tuple[str, ...] = ("amd64",)
    keep_versions: int = 5
    nightly_max_age_days: int = 40  # 0: keep nightlies forever
    valid_for_days: int = 0  # 0: no Valid-Until
    byhash_keep: int = 3
    # Regular expressions a suite name must match in full; empty: any well-formed name.
    suite_patterns: tuple[str, ...] = ()

    def check_suite(self, suite: str, *, existing: Iterable[str] = ()) -> None:
        if not _SUITE_RE.match(suite):
            raise RepoError(
                f"suite name {suite!r} is not valid; use letters, digits, '.', '-', '_'"
            )
        if not self.suite_patterns or suite in existing:
            return
        if not any(re.fullmatch(p, suite) for p in self.suite_patterns):
            raise RepoError(
                f"unknown suite {suite!r}: product.toml's [repositories] suite templates do not "
                "name it; use a codename of distros/ (e.g. bookworm) or add a template"
            )


@dataclass(frozen=True)
class PublishResult:
    """What one run changed. Paths are relative to the repository root.

    ``written``: files created or replaced, in the order they were written (pool and by-hash
    files before the indexes, ``InRelease`` last): a mirror that copies them in this order
    never exposes a Release whose files are missing. ``removed``: files deleted locally
    (pool files no suite references, by-hash files past ``byhash_keep``); a mirror should
    delete them only after a grace period, since clients may still be reading older indexes.
    """

    suites: tuple[str, ...]
    added: tuple[str, ...] = ()  # pool paths of packages that were new to a suite
    written: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass
class _Run:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _PoolFile:
    path: str  # under the repo root
    source: Path
    size: int
    sha256: str


class Repository:
    """One repository directory. Every public method takes the publisher lock."""

    def __init__(
        self,
        root: Path,
        settings: RepoSettings,
        signer: Signer | None,
        *,
        lock_timeout: float = 300.0,
        clock: Callable[[], dt.datetime] | None = None,
        crash_hook: Callable[[str], None] | None = None,
        workers: int | None = None,
    ) -> None:
        self.root = root
        self.settings = settings
        self.signer = signer
        self.state = RepoState(root)
        self.lock_timeout = lock_timeout
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._crash = crash_hook or (lambda _point: None)
        self.workers = workers or min(4, os.cpu_count() or 1)

    def _lock(self) -> RepoLock:
        return RepoLock(self.state.lock_path, timeout=self.lock_timeout)

    # -- public operations ----------------------------------------------------------------------

    def include(
        self, suites: Sequence[str], paths: Sequence[Path], *, component: str | None = None
    ) -> PublishResult:
        """Add the packages at ``paths`` to every suite in ``suites`` and publish them."""
        component = component or self.settings.components[0]
        if component not in self.settings.components:
            raise RepoError(
                f"component {component!r} is not one of this repository's components "
                f"({', '.join(self.settings.components)})"
            )
        signer = self._require_signer()
        for suite in suites:
            self.settings.check_suite(suite, existing=self.state.suites())
        debs, dscs = collect_inputs(paths)
        # Read and validate everything before the lock and before writing anything.
        infos = self._read_debs(debs)
        sources = [_changes.read_dsc(p) for p in dscs]
        records, files = self._plan_pool(infos, sources, component)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._check_conflicts(files)
            run = _Run()
            self._write_pool(files, records, run)
            for suite in suites:
                st = self.state.load_suite(suite)
                now = self._clock().timestamp()
                for rec in records:
                    self._add_member(st, rec, now, run)
                self._retain(st)
                self.state.mark_pending(suite)
                self.state.save_suite(st)
                self._crash("suite-written")
            todo = list(dict.fromkeys([*self.state.pending(), *suites]))
            for suite in todo:
                self._publish_suite(suite, signer, run)
            self._gc(run)
        return PublishResult(
            suites=tuple(todo),
            added=tuple(run.added),
            written=tuple(run.written),
            removed=tuple(run.removed),
        )

    def publish(self, suites: Sequence[str] | None = None) -> PublishResult:
        """Republish ``suites`` (default: every suite), with retention; re-signs their Release."""
        signer = self._require_signer()
        with self._lock():
            names = list(suites) if suites is not None else self.state.suites()
            existing = self.state.suites()
            for suite in names:
                if suite not in existing:
                    raise RepoError(
                        f"unknown suite {suite!r} in {self.root}; it has: {', '.join(existing) or 'none'}"
                    )
            run = _Run()
            for suite in names:
                st = self.state.load_suite(suite)
                if self._retain(st):
                    self.state.mark_pending(suite)
                    self.state.save_suite(st)
            for suite in dict.fromkeys([*self.state.pending(), *names]):
                self._publish_suite(suite, signer, run)
            self._gc(run)
        return PublishResult(
            suites=tuple(names), written=tuple(run.written), removed=tuple(run.removed)
        )

    def export_keys(self) -> tuple[Path, Path]:
        """``<name>-archive-keyring.gpg`` (binary) and ``.asc`` in the repository root."""
        signer = self._require_signer()
        self.root.mkdir(parents=True, exist_ok=True)
        binary = self.root / f"{self.settings.name}-archive-keyring.gpg"
        armored = self.root / f"{self.settings.name}-archive-keyring.asc"
        write_atomic(binary, signer.export_public(armor=False))
        write_atomic(armored, signer.export_public(armor=True))
        return binary, armored

    # -- inputs ---------------------------------------------------------------------------------

    def _require_signer(self) -> Signer:
        if self.signer is None:
            raise RepoError("no signing key: a repository is always signed; configure [signing]")
        return self.signer

    def _read_debs(self, debs: Sequence[Path]) -> list[DebInfo]:
        if len(debs) > 8 and self.workers > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                infos = list(pool.map(read_deb, debs))
        else:
            infos = [read_deb(p) for p in debs]
        allowed = {*self.settings.architectures, "all"}
        for info in infos:
            where = str(info.path)
            _changes.checked_name(info.package, what="package name", where=where)
            _changes.checked_name(info.source, what="source name", where=where)
            _changes.checked_version(info.version, where=where)
            if info.architecture not in allowed:
                raise BadPackageError(
                    f"{where}: architecture {info.architecture!r} is not carried by this repository "
                    f"({', '.join(sorted(allowed))}); add it to [repositories] architectures"
                )
        return infos

    def _plan_pool(
        self, infos: Sequence[DebInfo], sources: Sequence[_changes.SourcePackage], component: str
    ) -> tuple[list[PoolRecord], list[_PoolFile]]:
        records: list[PoolRecord] = []
        files: dict[str, _PoolFile] = {}

        def add_file(f: _PoolFile) -> None:
            old = files.get(f.path)
            if old is not None and old.sha256 != f.sha256:
                raise BadPackageError(
                    f"{f.source} and {old.source} would both be {f.path} with different contents"
                )
            files[f.path] = f

        for info in infos:
            directory = f"pool/{component}/{_index.pool_prefix(info.source)}/{info.source}"
            version = info.version.split(":", 1)[-1]
            path = f"{directory}/{info.package}_{version}_{info.architecture}.deb"
            add_file(_PoolFile(path, info.path, info.size, info.sha256))
            records.append(
                PoolRecord(
                    path=path,
                    kind="deb",
                    package=info.package,
                    version=info.version,
                    arch=info.architecture,
                    source=info.source,
                    size=info.size,
                    sha256=info.sha256,
                    stanza=_index.deb_stanza(info, path),
                )
            )
        for src in sources:
            directory = f"pool/{component}/{_index.pool_prefix(src.name)}/{src.name}"
            path = f"{directory}/{src.dsc_ref.name}"
            add_file(_PoolFile(path, src.dsc, src.dsc_ref.size, src.dsc_ref.sha256))
            for ref in src.files:
                add_file(
                    _PoolFile(
                        f"{directory}/{ref.name}", src.dsc.parent / ref.name, ref.size, ref.sha256
                    )
                )
            records.append(
                PoolRecord(
                    path=path,
                    kind="dsc",
                    package=src.name,
                    version=src.version,
                    arch="source",
                    source=src.name,
                    size=src.dsc_ref.size,
                    sha256=src.dsc_ref.sha256,
                    stanza=_index.dsc_stanza(src, directory),
                    files=[(f"{directory}/{r.name}", r.size, r.sha256) for r in src.files],
                )
            )
        return records, list(files.values())

    def _check_conflicts(self, files: Sequence[_PoolFile]) -> None:
        known = self.state.known_files()
        for f in files:
            have = known.get(f.path)
            if have is not None and have != f.sha256:
                raise RepoError(
                    f"{f.source}: the pool already holds {f.path} with different contents "
                    f"(sha256 {have}, new {f.sha256}); a published file never changes: "
                    "give the package a new version (or Debian revision)"
                )

    def _write_pool(
        self, files: Sequence[_PoolFile], records: Sequence[PoolRecord], run: _Run
    ) -> None:
        known = self.state.known_files()
        for f in files:
            dest = self.root / f.path
            if f.path in known and dest.is_file():
                continue  # the identical file is already there: nothing to do
            if dest.is_file() and sha256_file(dest) == (f.size, f.sha256):
                continue  # left by a run killed before it recorded the file
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.copyfile(f.source, tmp)
            tmp.chmod(0o644)
            tmp.replace(dest)
            run.written.append(f.path)
        self._crash("pool-written")
        pool = self.state.pool()
        self.state.append(
            [
                r
                for r in records
                if pool.get(r.path) is None or pool[r.path].to_json() != r.to_json()
            ]
        )
        self._crash("records-written")

    # -- suite membership and retention ---------------------------------------------------------

    def _add_member(self, st: SuiteState, rec: PoolRecord, now: float, run: _Run) -> None:
        if rec.path in st.members:
            return
        pool = self.state.pool()
        for path in list(st.members):
            old = pool.get(path)
            if old and (old.kind, old.package, old.version, old.arch) == (
                rec.kind,
                rec.package,
                rec.version,
                rec.arch,
            ):
                del st.members[path]  # the same package in another component: replaced
        st.members[rec.path] = now
        run.added.append(rec.path)

    def _retain(self, st: SuiteState) -> bool:
        """Apply keep_versions and the nightly age limit; True when members were dropped."""
        pool = self.state.pool()
        groups: dict[tuple[str, str, str], list[PoolRecord]] = defaultdict(list)
        for path in list(st.members):
            rec = pool.get(path)
            if rec is None:
                log.warning(
                    "suite %s names %s, which has no pool record; dropping it", st.name, path
                )
                del st.members[path]
                continue
            groups[(rec.kind, rec.package, rec.arch)].append(rec)
        drop: list[str] = []
        keep = self.settings.keep_versions
        for recs in groups.values():
            if len(recs) > keep:
                recs.sort(
                    key=functools.cmp_to_key(
                        lambda a, b: _index.version_compare(b.version, a.version)
                    )
                )
                drop += [r.path for r in recs[keep:]]
        max_age = self.settings.nightly_max_age_days
        if max_age > 0:
            today = self._clock().date()
            for recs in groups.values():
                for r in recs:
                    m = _NIGHTLY_RE.match(r.version)
                    if not m:
                        continue
                    try:
                        built = dt.date(int(m[1]), int(m[2]), int(m[3]))
                    except ValueError:
                        continue
                    if (today - built).days > max_age:
                        drop.append(r.path)
        for path in drop:
            if st.members.pop(path, None) is not None:
                log.info("suite %s: retention drops %s", st.name, path)
        return bool(drop)

    # -- publishing -----------------------------------------------------------------------------

    def _render_indexes(self, st: SuiteState) -> dict[str, _index.IndexFiles]:
        pool = self.state.pool()
        recs = [pool[p] for p in st.members if p in pool]
        out: dict[str, _index.IndexFiles] = {}
        jobs: list[tuple[str, list[bytes]]] = []
        for comp in self.settings.components:
            mine = [r for r in recs if r.component == comp]
            debs = sorted(
                (r for r in mine if r.kind == "deb"), key=lambda r: (r.package, r.version, r.arch)
            )
            dscs = sorted(
                (r for r in mine if r.kind == "dsc"), key=lambda r: (r.package, r.version)
            )
            for arch in self.settings.architectures:
                chosen = [r for r in debs if r.arch in (arch, "all")]
                jobs.append(
                    (f"{comp}/binary-{arch}/Packages", _index.chunk_stanzas(_grouped(chosen)))
                )
            jobs.append((f"{comp}/source/Sources", _index.chunk_stanzas(_grouped(dscs))))
        for name, chunks in jobs:
            cache = _index.ChunkCache(self.state.chunk_cache_path(st.name, name))
            missing = [c for c in chunks if c and hashlib.sha256(c).digest() not in cache.old]
            if len(missing) > 4 and self.workers > 1:
                # zlib and liblzma release the GIL: compress new chunks on every core.
                with ThreadPoolExecutor(self.workers) as ex:
                    done = dict(zip(missing, ex.map(_index.compress_chunk, missing), strict=True))
                for c in missing:
                    cache.old[hashlib.sha256(c).digest()] = done[c]
            out[name] = _index.compress_index(chunks, cache)
            cache.save()
        return out

    def _publish_suite(self, suite: str, signer: Signer, run: _Run) -> None:
        st = self.state.load_suite(suite)
        dists = self.root / "dists" / suite
        indexes = self._render_indexes(st)
        entries: list[_index.IndexEntry] = []
        placed: list[tuple[Path, Path, str]] = []  # (by-hash file, plain name, index path)
        for name, files in indexes.items():
            for suffix, data in (("", files.raw), (".gz", files.gz), (".xz", files.xz)):
                digest = hashlib.sha256(data).hexdigest()
                path = f"{name}{suffix}"
                entries.append(_index.IndexEntry(path=path, size=len(data), sha256=digest))
                byhash = dists / path.rsplit("/", 1)[0] / "by-hash" / "SHA256" / digest
                if not byhash.is_file():
                    byhash.parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(byhash, data)
                    run.written.append(str(byhash.relative_to(self.root)))
                placed.append((byhash, dists / path, path))
        self._crash("byhash-written")
        for byhash, plain, _path in placed:
            if plain.is_file() and plain.samefile(byhash):
                continue
            tmp = plain.with_name(f".{plain.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            os.link(byhash, tmp)
            tmp.replace(plain)
            run.written.append(str(plain.relative_to(self.root)))
        self._crash("indexes-written")
        now = self._clock()
        valid = self.settings.valid_for_days
        release = _index.render_release(
            origin=self.settings.origin,
            label=self.settings.label,
            suite=suite,
            date=now,
            valid_until=now + dt.timedelta(days=valid) if valid > 0 else None,
            architectures=self.settings.architectures,
            components=self.settings.components,
            description=f"{self.settings.label} packages for {suite}",
            entries=entries,
        )
        with ThreadPoolExecutor(2) as ex:  # two gpg processes at once
            inrelease_f = ex.submit(signer.clearsign, release)
            detached_f = ex.submit(signer.detached_signature, release)
            inrelease, detached = inrelease_f.result(), detached_f.result()
        for fname, data, point in (
            ("Release", release, "release-written"),
            ("Release.gpg", detached, "release-gpg-written"),
            ("InRelease", inrelease, "inrelease-written"),
        ):
            write_atomic(dists / fname, data)
            run.written.append(f"dists/{suite}/{fname}")
            self._crash(point)
        # by-hash history: keep the last byhash_keep versions of every index.
        keep_n = self.settings.byhash_keep
        keep_by_dir: dict[Path, set[str]] = defaultdict(set)
        for byhash, _plain, path in placed:
            history = [byhash.name, *(h for h in st.byhash.get(path, []) if h != byhash.name)][
                :keep_n
            ]
            st.byhash[path] = history
            keep_by_dir[byhash.parent].update(history)
        for directory, keep in keep_by_dir.items():
            for f in directory.iterdir():
                if f.name not in keep:
                    f.unlink()
                    run.removed.append(str(f.relative_to(self.root)))
        self.state.save_suite(st)
        self.state.clear_pending(suite)
        self._crash("published")
        log.info("published %s: %d packages, %d index files", suite, len(st.members), len(entries))

    def _gc(self, run: _Run) -> None:
        """Remove pool files that no suite references any more."""
        if self.state.pending():
            return  # a suite failed to publish: its old Release may still need them
        pool = self.state.pool()
        referenced: set[str] = set()
        for suite in self.state.suites():
            referenced.update(self.state.load_suite(suite).members)
        dead = [rec for path, rec in pool.items() if path not in referenced]
        if not dead:
            return
        keep = {p: r for p, r in pool.items() if p in referenced}
        still = {p for r in keep.values() for p in (r.path, *(f[0] for f in r.files))}
        self.state.rewrite_pool(keep)
        self._crash("gc-records")
        for rec in dead:
            for path in (rec.path, *(f[0] for f in rec.files)):
                if path in still:
                    continue  # e.g. an orig tarball another source version still lists
                (self.root / path).unlink(missing_ok=True)
                run.removed.append(path)
                log.info("removed unreferenced %s", path)


def _grouped(recs: Sequence[PoolRecord]) -> Iterable[tuple[str, list[str]]]:
    current: str | None = None
    stanzas: list[str] = []
    for r in recs:
        if r.package != current:
            if current is not None:
                yield current, stanzas
            current, stanzas = r.package, []
        stanzas.append(r.stanza)
    if current is not None:
        yield current, stanzas


def collect_inputs(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:  # noqa: PLR0912
    """The .deb and .dsc files that ``paths`` name: files, .changes (verified) or directories."""
    debs: dict[Path, None] = {}
    dscs: dict[Path, None] = {}

    def add(p: Path) -> None:
        if p.suffix in (".deb", ".udeb"):
            debs[p] = None
        elif p.suffix == ".dsc":
            dscs[p] = None

    for path in paths:
        if path.is_dir():
            entries = sorted(path.iterdir())
            listed: set[Path] = set()
            for p in entries:
                if p.suffix == ".changes" and p.is_file():
                    for f in _changes.read_changes(p):
                        listed.add(f)
                        add(f)
            for p in entries:
                if p not in listed and p.is_file():
                    add(p)
        elif path.suffix == ".changes":
            for f in _changes.read_changes(path):
                add(f)
        elif path.suffix in (".deb", ".udeb", ".dsc"):
            if not path.is_file():
                raise RepoError(f"{path} does not exist")
            add(path)
        elif not path.exists():
            raise RepoError(f"{path} does not exist")
        else:
            raise RepoError(f"{path} is not a .deb, .dsc, .changes or directory")
    if not debs and not dscs:
        raise RepoError(
            f"no .deb, .dsc or .changes found in {', '.join(str(p) for p in paths)}; "
            "build the packages first (invoke make-package)"
        )
    return list(debs), list(dscs)
