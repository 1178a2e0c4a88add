"""Include packages into suites and publish them: pool, indexes, by-hash, signed Release.

Order of writes in one locked run (each file through a temporary name and a rename):

1. new pool files, then their records appended to ``.releng-repo/pool.jsonl``;
2. each changed suite's members (retention applied) and a ``pending/<suite>`` marker;
3. per suite: every index under ``by-hash/SHA256/<sha256>``, then the plain index names
   (hard links to those), then ``InRelease``, ``Release`` and ``Release.gpg``;
4. the suite's by-hash history; by-hash files beyond the last ``byhash_keep`` removed;
   the pending marker removed;
5. pool files no suite references, removed (records first, then files).

A reader of the local directory always finds every file the ``InRelease`` it
got names. A publisher killed at any point leaves the previous Release in
place with all its files; the next run republishes every pending suite first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import hashlib
import logging
import mmap
import os
import re
import shutil
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

from releng.apt import changes as _changes
from releng.apt import contents as _contents
from releng.apt import index as _index
from releng.apt.debfile import BadPackageError, DebInfo, read_deb, sha256_file
from releng.apt.durable import sync_filesystem
from releng.apt.history import History, needed_paths
from releng.apt.lock import RepoLock
from releng.apt.state import (
    STATE_DIR,
    Member,
    PoolRecord,
    RepoState,
    SuiteState,
    find_records,
    write_atomic,
)
from releng.errors import RepoError
from releng.gpg import Signer

log = logging.getLogger(__name__)
T = TypeVar("T")

PARALLEL_BYTES = 64 << 20  # below this, reading or copying inputs on several threads does not pay
_SUITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~_-]*$")
NIGHTLY_SUFFIX = "-nightly"  # what releng.version names a nightly's packages
_NIGHTLY_RE = re.compile(r"^(?:\d+:)?(\d{4})\.(\d{2})\.(\d{2})")

# Named points where a test may kill the publisher (see Repository(crash_hook=...)).
CRASH_POINTS = (
    "pool-written",
    "records-written",
    "suite-written",
    "byhash-written",
    "indexes-written",
    "inrelease-written",
    "release-written",
    "release-gpg-written",
    "history-written",
    "published",
    "gc-records",
    "gc-files",
)
_STAGING_PREFIX = ".staging-"  # dists/.staging-<suite>: a new suite until its Release is signed


class RepoSettings(NamedTuple):
    """What a repository carries and how long it keeps things (from product.toml).

    A NamedTuple, not a dataclass: this module is on every include's start-up path, and a
    dataclass costs its import plus ~0.7 ms per class. Construct it with keywords.
    """

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
    keep_history: int = 20  # publishes per suite kept for repo-history and repo-rollback
    # One syncfs before each Release switch (durable.py); off only for throwaway repositories.
    sync_before_switch: bool = True
    contents: bool = True  # Contents-<arch>.gz per component, for apt-file (contents.py)

    def check_suite(self, suite: str, *, existing: Iterable[str] = ()) -> None:
        if not _SUITE_RE.fullmatch(suite):
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


class PublishResult(NamedTuple):
    """What one run changed. Paths are relative to the repository root.

    ``written``: files created or replaced, in the order they were written (pool and by-hash
    files, the public key files, the plain indexes, then ``InRelease``, ``Release``,
    ``Release.gpg``): a mirror that copies them in this order never exposes a Release whose
    files are missing. ``removed``: files deleted locally
    (pool files no suite references, by-hash files past ``byhash_keep``); a mirror should
    delete them only after a grace period, since clients may still be reading older indexes.
    """

    suites: tuple[str, ...]
    added: tuple[str, ...] = ()  # pool paths of packages that were new to a suite
    written: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


# An index file to write: (by-hash file, plain name, path under dists/<suite>/, its pieces)
_Placed = tuple[Path, Path, str, list[_index.Buffer]]


class _Run:
    __slots__ = ("added", "removed", "written")

    def __init__(self) -> None:
        self.written: list[str] = []
        self.removed: list[str] = []
        self.added: list[str] = []


class _PoolFile(NamedTuple):
    path: str  # under the repo root
    source: str | Path
    size: int
    sha256: str


_DIR_THREAD_MIN = 16  # packages in one include from which pool directories are made on a thread


def _pool_dir(component: str, source: str) -> str:
    return f"pool/{component}/{_index.pool_prefix(source)}/{source}"


class _PoolDirs:
    """Makes pool directories on a thread while the caller reads packages.

    One directory per source package is the pool's layout, and on ext4 a mkdir costs
    30-150 us of kernel time: for thousands of new packages as much as reading them. The
    syscall releases the GIL, so the two overlap. ``undo`` removes what was made (when an
    input is refused); directories another publisher filled meanwhile are not empty and stay.
    """

    def __init__(self, root: str) -> None:
        import queue

        self._root = root
        self._todo: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._made: list[str] = []  # absolute, parents first
        self._ok: set[str] = set()  # relative to the root: exists now
        self._thread = threading.Thread(target=self._run, name="pool-dirs", daemon=True)
        self._thread.start()

    def add(self, directory: str) -> None:
        self._todo.put(directory)

    def _run(self) -> None:
        while (d := self._todo.get()) is not None:
            if d not in self._ok:
                with contextlib.suppress(OSError):  # _write_pool makes it again, or reports why
                    self._mkdir(os.path.join(self._root, d))  # noqa: PTH118
                    self._ok.add(d)

    def _mkdir(self, path: str) -> None:
        try:
            os.mkdir(path)  # noqa: PTH102
        except FileExistsError:
            return
        except FileNotFoundError:
            self._mkdir(os.path.dirname(path))  # noqa: PTH120
            os.mkdir(path)  # noqa: PTH102
        self._made.append(path)

    def finish(self) -> set[str]:
        """Wait for the thread; the directories (relative to the root) that exist."""
        self._todo.put(None)
        self._thread.join()
        return self._ok

    def undo(self) -> None:
        self.finish()
        for path in reversed(self._made):
            with contextlib.suppress(OSError):
                os.rmdir(path)  # noqa: PTH106


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
        link_inputs: bool = False,
    ) -> None:
        self.root = root
        self.settings = settings
        self.signer = signer
        self.state = RepoState(root)
        self.lock_timeout = lock_timeout
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._real_clock = clock is None
        self._crash = crash_hook or (lambda _point: None)
        self.workers = workers or min(4, os.cpu_count() or 1)
        # link_inputs: pool files become hard links to the inputs when they share a filesystem,
        # so including costs no more than hashing. Only for inputs that are replaced, never
        # rewritten in place: releng's builds rename a fresh out/<version>/<distro>/ into place,
        # but `dpkg-deb --build` truncates and rewrites an existing output file, which would
        # change a published pool file under its signed checksum. Default: copy.
        self.link_inputs = link_inputs
        self._allowed_archs = {*settings.architectures, "all"}

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
        _check_root(self.root)
        for suite in suites:
            self.settings.check_suite(suite, existing=self.state.suites())
        # A new repository (or key) needs the public key exported: two gpg runs, started now
        # so that they overlap the reading.
        exported = None if self._keys_current(signer) else _in_thread(lambda: _export(signer))
        records, files, dirs = self._prepare(paths, component)
        made = dirs.finish() if dirs is not None else set()
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock(), _no_cyclic_gc(self.state):
            self.state.forget()
            _remove_stale_temps(self.root)
            # Records added by a run that did not finish may be referenced by no suite.
            collect = self.state.gc_needed()
            run = _Run()
            changed: list[SuiteState] = []
            dropped = False
            for suite in suites:
                st = self.state.load_suite(suite)
                now = int(self._clock().timestamp())
                dropped |= self._add_members(st, records, now, run)
                dropped |= self._retain(st)
                changed.append(st)
            collect |= dropped

            def commit() -> None:
                """Pool files, their records, then every suite's members: all of them before
                any index is written. It runs while gpg signs the first suite's Release: only
                what is in memory has changed so far, and a conflict still writes nothing."""
                try:
                    self._check_conflicts(files)
                except RepoError:
                    if dirs is not None:
                        dirs.undo()  # the new packages' directories, made while reading
                    raise
                self._write_pool(files, records, run, made)
                if dropped:
                    self.state.mark_gc_needed()
                for st in changed:
                    self.state.mark_pending(st.name)
                    self.state.save_members(st)
                    self._crash("suite-written")
                self._ensure_keys(signer, run, exported)

            todo = list(dict.fromkeys([*self.state.pending(), *suites]))
            fresh = {r.path: r for r in records}
            for suite in todo:
                self._publish_suite(suite, signer, run, fresh, commit)
                commit = _nothing
            if collect:
                self._gc(run)
            else:
                # Every record this run added is in every suite it named: none is unreferenced.
                self.state.clear_gc_needed()
        return PublishResult(
            suites=tuple(todo),
            added=tuple(run.added),
            written=tuple(run.written),
            removed=tuple(run.removed),
        )

    def publish(self, suites: Sequence[str] | None = None) -> PublishResult:
        """Republish ``suites`` (default: every suite), with retention; re-signs their Release."""
        signer = self._require_signer()
        _check_root(self.root)
        if not self.state.suites():
            raise RepoError(
                f"{self.root} holds no suites yet; include packages first (invoke repo-include)"
            )
        with self._lock(), _no_cyclic_gc(self.state):
            self.state.forget()
            _remove_stale_temps(self.root)
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
                    self.state.mark_gc_needed()
                    self.state.mark_pending(suite)
                    self.state.save_members(st)
            self._ensure_keys(signer, run)
            for suite in dict.fromkeys([*self.state.pending(), *names]):
                self._publish_suite(suite, signer, run, {}, _nothing)
            # An explicit republish (rare) also looks at every pool file, so that it converges
            # whatever left files there: one directory walk.
            self._gc(run, whole_pool=True)
        return PublishResult(
            suites=tuple(names), written=tuple(run.written), removed=tuple(run.removed)
        )

    def change(
        self,
        edit: Callable[[RepoState], Sequence[SuiteState]],
        *,
        retain: bool = True,
        note: str = "",
        dry_run: bool = False,
    ) -> PublishResult:
        """Change suites' members and publish them, under the lock (copy, remove, rollback).

        Suites a killed run left pending are published first (so a rerun of a killed change
        finds it made). Then ``edit`` reads the state and returns the suites it changed, or
        raises a RepoError having changed nothing. Retention applies to them unless
        ``retain`` is false (a rollback publishes exactly what it restored); ``note`` goes
        into their history entries. ``dry_run``: ``edit`` runs, nothing is written.
        """
        signer = self._require_signer()
        with self._lock(), _no_cyclic_gc(self.state):
            self.state.forget()
            if not dry_run:
                _remove_stale_temps(self.root)
            run = _Run()
            finished = [] if dry_run else self.state.pending()
            if finished:
                self._ensure_keys(signer, run)
                for suite in finished:
                    self._publish_suite(suite, signer, run, {}, _nothing)
            changed = [st for st in edit(self.state) if st.changed]
            if retain:
                for st in changed:
                    self._retain(st)
            if dry_run:
                return PublishResult(
                    suites=tuple(st.name for st in changed),
                    added=tuple(p for st in changed for p in st.added),
                    removed=tuple(p for st in changed for p in st.dropped),
                )
            if any(st.dropped for st in changed) and self.settings.keep_history < 2:
                # With 2 or more kept, this publish's entry keeps what it drops; pruning the
                # history later marks what it frees (history.py).
                self.state.mark_gc_needed()
            for st in changed:
                self.state.mark_pending(st.name)
                self.state.save_members(st)
                History(self.state, st.name).set_note(note)
                self._crash("suite-written")
                run.added += st.added
            self._ensure_keys(signer, run)
            fresh = find_records(self.state, [p for st in changed for p in st.added])
            for st in changed:
                self._publish_suite(st.name, signer, run, fresh, _nothing)
            if self.state.gc_needed():
                self._gc(run)
        return PublishResult(
            suites=tuple(dict.fromkeys([*finished, *(st.name for st in changed)])),
            added=tuple(run.added),
            written=tuple(run.written),
            removed=tuple(run.removed),
        )

    @property
    def keyring_paths(self) -> tuple[Path, Path]:
        """``<name>-archive-keyring.gpg`` (binary, for Signed-By) and ``.asc``, in the root."""
        base = self.root / f"{self.settings.name}-archive-keyring"
        return base.with_name(base.name + ".gpg"), base.with_name(base.name + ".asc")

    def export_keys(self, exported: tuple[bytes, bytes] | None = None) -> tuple[Path, Path]:
        """Write the public key files (every publish does this when the key changed);
        ``exported``: the binary and armored key, when the caller has them already."""
        signer = self._require_signer()
        self.root.mkdir(parents=True, exist_ok=True)
        binary, armored = self.keyring_paths
        if exported is None:
            exported = _export(signer)
        write_atomic(binary, exported[0])
        write_atomic(armored, exported[1])
        self.state.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state.dir / "signing-key", signer.fingerprint.encode() + b"\n")
        return binary, armored

    def _keys_current(self, signer: Signer) -> bool:
        marker = self.state.dir / "signing-key"
        current = marker.read_text().strip() if marker.is_file() else ""
        return current == signer.fingerprint and all(p.is_file() for p in self.keyring_paths)

    def _ensure_keys(
        self,
        signer: Signer,
        run: _Run,
        exported: Callable[[], tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Export the public key beside the repository when it is not there or another key's;
        ``exported``: waits for an export started earlier."""
        if self._keys_current(signer):
            return
        for path in self.export_keys(exported() if exported is not None else None):
            run.written.append(path.name)

    # -- inputs ---------------------------------------------------------------------------------

    def _require_signer(self) -> Signer:
        if self.signer is None:
            raise RepoError("no signing key: a repository is always signed; configure [signing]")
        return self.signer

    def _prepare(
        self, paths: Sequence[Path], component: str
    ) -> tuple[list[PoolRecord], list[_PoolFile], _PoolDirs | None]:
        """Read and validate every input before the lock and before writing anything but the
        new packages' pool directories, made on a thread meanwhile (removed again if an input
        is refused)."""
        debs, dscs = collect_inputs(paths)
        dirs = _PoolDirs(os.fspath(self.root)) if len(debs) >= _DIR_THREAD_MIN else None
        try:
            # The directory thread needs the GIL for a moment between two mkdirs: with the
            # default 5 ms switch interval it would wait behind the parsing most of the time.
            with _switch_interval(_SHORT_SWITCH if dirs is not None else None):
                infos = self._read_debs(debs, component, dirs)
                if self.settings.contents:
                    _contents.remember(self.state, infos)
                sources = [_changes.read_dsc(p) for p in dscs]
                records, files = self._plan_pool(infos, sources, component)
        except BaseException:
            if dirs is not None:
                dirs.undo()
            raise
        return records, files, dirs

    def _read_debs(
        self, debs: Sequence[str], component: str, dirs: _PoolDirs | None
    ) -> list[DebInfo]:
        """Read and check every package; each checked one's pool directory goes to ``dirs``."""
        if self.workers > 1 and len(debs) > 1 and _total_size(debs) > PARALLEL_BYTES:
            from concurrent.futures import ThreadPoolExecutor

            # hashlib and file reads release the GIL: big packages hash on every core. Small
            # ones are dominated by per-file Python work, which threads only slow down.
            with ThreadPoolExecutor(self.workers) as pool:
                infos = pool.map(read_deb, debs)
                return [self._checked(info, component, dirs) for info in infos]
        return [self._checked(read_deb(p), component, dirs) for p in debs]

    def _checked(self, info: DebInfo, component: str, dirs: _PoolDirs | None) -> DebInfo:
        where = info.path
        _changes.checked_name(info.package, what="package name", where=where)
        _changes.checked_name(info.source, what="source name", where=where)
        _changes.checked_version(info.version, where=where)
        if info.architecture not in self._allowed_archs:
            raise BadPackageError(
                f"{where}: architecture {info.architecture!r} is not carried by this repository "
                f"({', '.join(sorted(self._allowed_archs))}); add it to [repositories] "
                "architectures"
            )
        if dirs is not None:  # names checked: the directory cannot escape the pool
            dirs.add(_pool_dir(component, info.source))
        return info

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
            directory = _pool_dir(component, info.source)
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
                    stanza=_index.deb_stanza(info, path).rstrip("\n").encode(),
                )
            )
        for src in sources:
            directory = _pool_dir(component, src.name)
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
                    stanza=_index.dsc_stanza(src, directory).rstrip("\n").encode(),
                    files=tuple((f"{directory}/{r.name}", r.size, r.sha256) for r in src.files),
                )
            )
        return records, list(files.values())

    def _check_conflicts(self, files: Sequence[_PoolFile]) -> None:
        for f in files:
            have = self.state.known_sha256(f.path)
            if have is not None and have != f.sha256:
                raise RepoError(
                    f"{f.source}: the pool already holds {f.path} with different contents "
                    f"(sha256 {have}, new {f.sha256}); a published file never changes: "
                    "give the package a new version (or Debian revision)"
                )

    def _write_pool(
        self,
        files: Sequence[_PoolFile],
        records: Sequence[PoolRecord],
        run: _Run,
        made: set[str],
    ) -> None:
        """Place ``files`` and append their ``records``; ``made``: pool directories that exist."""
        known = [self.state.known_sha256(f.path) is not None for f in files]
        root = os.fspath(self.root)
        for f in files:
            d = f.path.rsplit("/", 1)[0]
            if d not in made:
                os.makedirs(os.path.join(root, d), exist_ok=True)  # noqa: PTH103, PTH118
                made.add(d)
        # New pool files are garbage-collection candidates until a suite names them: a run
        # killed (or out of space) between placing them and saving the suites leaves them to
        # the next run's collection, which removes every candidate that nothing references.
        unknown = [f.path for f, k in zip(files, known, strict=True) if not k]
        if unknown:
            self.state.mark_gc_needed(unknown)
        copying = not self.link_inputs
        try:
            if (
                copying
                and self.workers > 1
                and len(files) > 1
                and _total_size(files) > PARALLEL_BYTES
            ):
                from concurrent.futures import ThreadPoolExecutor

                # Copies run in the kernel (sendfile) without the GIL: copy on every core.
                with ThreadPoolExecutor(self.workers) as ex:
                    placed = list(ex.map(self._place, files, known))
            else:
                placed = [self._place(f, k) for f, k in zip(files, known, strict=True)]
        except BaseException:
            for path in unknown:  # unreferenced: this run's copies (or a killed run's)
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, path))  # noqa: PTH108, PTH118
            raise
        run.written += [f.path for f, new in zip(files, placed, strict=True) if new]
        self._crash("pool-written")
        # A record with this path has its sha256 (else _check_conflicts refused): the same one.
        todo = [r for r in records if self.state.known_sha256(r.path) is None]
        if todo:
            self.state.mark_gc_needed()  # until a suite names them (kill -9 before: collected)
            self.state.append(todo)
        self._crash("records-written")

    def _place(self, f: _PoolFile, known: bool) -> bool:
        """Put one file into the pool; False when the identical file is already there."""
        # Plain strings, not pathlib: this runs once per package of a big batch.
        dest = os.path.join(self.root, f.path)  # noqa: PTH118
        if self.link_inputs:
            try:
                os.link(f.source, dest)  # atomic: the name appears with all its content
                return True
            except FileExistsError:
                pass  # handled below, as for a copy
            except OSError:
                pass  # another filesystem, or links not allowed: copy
        if os.path.isfile(dest):  # noqa: PTH113
            if known:
                return False  # recorded with this sha256 (checked): nothing to do
            if sha256_file(Path(dest)) == (f.size, f.sha256):
                return False  # left by a run killed before it recorded the file
        head, name = os.path.split(dest)
        tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")  # noqa: PTH118
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # noqa: PTH108
        try:
            shutil.copyfile(f.source, tmp)
            os.chmod(tmp, 0o644)  # noqa: PTH101
            os.replace(tmp, dest)  # noqa: PTH105
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # noqa: PTH108
            # Reading the input fails with its name alone; sendfile names both files.
            if exc.filename2 is None and str(exc.filename) == os.fspath(f.source):
                raise RepoError(f"cannot read {f.source}: {exc.strerror}") from None
            raise OSError(exc.errno, exc.strerror, dest) from None
        return True

    # -- suite membership and retention ---------------------------------------------------------

    def _add_members(
        self, st: SuiteState, records: Sequence[PoolRecord], now: int, run: _Run
    ) -> bool:
        """Add ``records`` to the suite; True when members were replaced (dropped)."""
        new = {
            (r.kind, r.package, r.version, r.arch): r for r in records if r.path not in st.members
        }
        if not new:
            return False
        names = {r.package for r in new.values()}
        replaced = [
            p for p, m in st.members.items() if m[2] in names and (m[1], m[2], m[3], m[4]) in new
        ]
        for path in replaced:
            st.drop(path)  # the same package from another component: replaced
        for r in new.values():
            st.add(r.path, (now, r.kind, r.package, r.version, r.arch))
            run.added.append(r.path)
        return bool(replaced)

    def _retain(self, st: SuiteState) -> bool:
        """Apply keep_versions and the nightly age limit; True when members were dropped."""
        members = st.members
        drop: list[str] = []
        max_age = self.settings.nightly_max_age_days
        if max_age > 0:
            today = self._clock().date()
            drop += [
                path
                for path, m in members.items()
                # Nightlies are the renamed <name>-nightly packages: a release whose version
                # looks like a date (made with --release) keeps its own name, and is kept.
                if m[2].endswith(NIGHTLY_SUFFIX) and _too_old(m[3], today, max_age)
            ]
        keep = self.settings.keep_versions
        # Groups of (kind, package, arch) with more than ``keep`` versions. Package names are
        # counted in C first: in most suites no name has that many members.
        counts = Counter([m[2] for m in members.values()])
        names = {name for name, n in counts.items() if n > keep}
        if names:
            groups: dict[tuple[str, str, str], list[tuple[str, str]]] = defaultdict(list)
            for path, m in members.items():
                if m[2] in names:
                    groups[(m[1], m[2], m[4])].append((path, m[3]))
            for versions in groups.values():
                if len(versions) <= keep:
                    continue
                versions.sort(key=_newest_first)
                drop += [path for path, _v in versions[keep:]]
        for path in drop:
            if st.drop(path):
                log.info("suite %s: retention drops %s", st.name, path)
        return bool(drop)

    # -- publishing -----------------------------------------------------------------------------

    def _render_indexes(
        self, st: SuiteState, fresh: Mapping[str, PoolRecord]
    ) -> dict[str, _index.IndexTable]:
        """Each index's chunks: the saved table of the last publish, updated with the members
        added and removed since (only their chunks are re-cut), or built from every record."""
        out: dict[str, _index.IndexTable] = {}
        single = len(self.settings.components) == 1
        members = st.members
        dists = os.path.join(self.root, "dists", st.name)  # noqa: PTH118

        def key(path: str) -> _index.Entry:
            m = members[path]
            return (m[2], m[3], m[4], path)

        jobs: list[tuple[str, Callable[[str, Member], bool]]] = []
        for comp in self.settings.components:
            for arch in self.settings.architectures:
                jobs.append((f"{comp}/binary-{arch}/Packages", _chooser(comp, arch, single)))
            jobs.append((f"{comp}/source/Sources", _chooser(comp, None, single)))
        for name, wanted in jobs:
            table = self._load_table(st.name, name, dists)
            if table is None:
                paths = [p for p, m in members.items() if wanted(p, m)]
                table = _index.IndexTable.build(self._items(paths, fresh, st.name), self.workers)
            elif table.tag is not None and table.tag == st.tag:
                # The table shows the members as this run read them: apply this run's changes.
                add = [p for p in st.added if wanted(p, members[p])]
                table.update(self._items(add, fresh, st.name), st.dropped, key, self.workers)
            else:  # saved by a run that did not finish, or before a tag: compare every member
                chosen = {p for p, m in members.items() if wanted(p, m)}
                have = table.paths()
                items = self._items(chosen - have, fresh, st.name)
                table.update(items, have - chosen, key, self.workers)
            out[name] = table
        return out

    def _load_table(self, suite: str, name: str, dists: str) -> _index.IndexTable | None:
        try:
            with open(self.state.table_path(suite, name), "rb") as f:  # noqa: PTH123
                data = f.read()
        except OSError:
            return None
        byhash = os.path.join(dists, name.rsplit("/", 1)[0], "by-hash", "SHA256")  # noqa: PTH118

        def read(sha256: str) -> _index.Buffer | None:
            # Mapped, not read: the unchanged chunks go from the page cache to the new files'
            # hash and writes without a copy. (A by-hash file is never rewritten in place.)
            try:
                with open(os.path.join(byhash, sha256), "rb") as f:  # noqa: PTH118, PTH123
                    if os.fstat(f.fileno()).st_size == 0:
                        return b""
                    return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
            except (OSError, ValueError):
                return None

        return _index.IndexTable.loads(data, read)

    def _items(
        self, paths: Iterable[str], fresh: Mapping[str, PoolRecord], suite: str
    ) -> list[tuple[_index.Entry, bytes]]:
        items: list[tuple[_index.Entry, bytes]] = []
        for path in paths:
            rec = fresh.get(path) or self.state.pool().get(path)
            if rec is None:
                log.warning("suite %s names %s, which has no pool record; left out", suite, path)
                continue
            items.append(((rec.package, rec.version, rec.arch, path), rec.stanza))
        return items

    def _render_release(self, suite: str, entries: Sequence[_index.IndexEntry]) -> bytes:
        now = self._clock()
        valid = self.settings.valid_for_days
        return _index.render_release(
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

    def _write_indexes(self, placed: Sequence[_Placed], run: _Run, suite: str, dists: Path) -> None:
        """Every index under by-hash, then the plain names (hard links to those); ``dists``:
        where the suite's files are written (its staging directory for a new suite)."""
        for byhash, _plain, _path, data in placed:
            if not byhash.is_file():
                byhash.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(byhash, data)
                run.written.append(f"dists/{suite}/{byhash.relative_to(dists)}")
        self._crash("byhash-written")
        for byhash, plain, _path, _data in placed:
            if plain.is_file() and plain.samefile(byhash):
                continue
            tmp = plain.with_name(f".{plain.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            os.link(byhash, tmp)
            tmp.replace(plain)
            run.written.append(f"dists/{suite}/{plain.relative_to(dists)}")
        self._crash("indexes-written")

    def _publish_suite(  # noqa: PLR0912, PLR0915  (one suite's publish, in the order of its writes)
        self,
        suite: str,
        signer: Signer,
        run: _Run,
        fresh: Mapping[str, PoolRecord],
        before_indexes: Callable[[], None],
    ) -> None:
        """Render, sign and switch one suite; ``before_indexes`` runs before any index file is
        written (while gpg signs)."""
        st = self.state.load_suite(suite)
        final = self.root / "dists" / suite
        dists = _writing_dir(final)
        tables = self._render_indexes(st, fresh)
        entries: list[_index.IndexEntry] = []
        placed: list[_Placed] = []
        saved: list[tuple[Path, _index.IndexTable, tuple[str, str, str]]] = []
        for name, table in tables.items():
            files = table.pieces()
            digests: list[str] = []
            for suffix, data in (("", files.raw), (".gz", files.gz), (".xz", files.xz)):
                sha = hashlib.sha256()
                size = 0
                for piece in data:
                    sha.update(piece)
                    size += len(piece)
                digest = sha.hexdigest()
                digests.append(digest)
                path = f"{name}{suffix}"
                entries.append(_index.IndexEntry(path=path, size=size, sha256=digest))
                byhash = dists / path.rsplit("/", 1)[0] / "by-hash" / "SHA256" / digest
                placed.append((byhash, dists / path, path, data))
            raw, gz, xz = digests
            saved.append((self.state.table_path(suite, name), table, (raw, gz, xz)))
        contents = _contents.add_indexes(
            self.state, self.settings, st, fresh, dists, entries, placed
        )
        release = self._render_release(suite, entries)
        if self._real_clock and release == _read_or_none(dists / "Release"):
            # Nothing changed within the second of the published Date: the signatures would be
            # the same bytes too (ed25519 is deterministic, gpg's timestamps are in seconds).
            # A republish is for signing anew, so it waits for the next second.
            time.sleep(1.0 - time.time() % 1.0 + 0.01)
            release = self._render_release(suite, entries)
        # The Release text needs only the indexes' digests: gpg signs it while the indexes are
        # written (the order of the writes is unchanged: Release files come last).
        signing = _sign_both(signer, release)
        try:
            before_indexes()
            self._write_indexes(placed, run, suite, dists)
            # The tables name this publish's by-hash files, which pruning below keeps.
            # Tagged with the members they show, as saved (no tag: changes not saved).
            tag = st.saved_tag if st.saved_tag != st.tag or not st.changed else None
            for table_path, table, sums in saved:
                table_path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(table_path, table.dumps(sums, tag))
            contents.save()
        finally:
            inrelease, detached = signing()  # always joined; re-raises a signing error
        # The by-hash history, with this publish's files, is saved before the switch: a run
        # killed right after it must not later delete what the Release it left still names.
        keep_n = self.settings.byhash_keep
        keep_by_dir: dict[Path, set[str]] = defaultdict(set)
        for byhash, _plain, path, _data in placed:
            older = [h for h in st.byhash.get(path, []) if h != byhash.name]
            st.byhash[path] = [byhash.name, *older][:keep_n]
            keep_by_dir[byhash.parent].update(st.byhash[path])
        self.state.save_byhash(st)
        if self.settings.sync_before_switch:
            sync_filesystem(self.root)  # every file the new Release names is on disk first
        # InRelease first: it is what apt reads, and it is one file. Release and Release.gpg
        # (for older clients) follow back to back; between those two renames the pair disagrees.
        previous = _mtime_second(dists / "InRelease")
        for fname, signed, point in (
            ("InRelease", inrelease, "inrelease-written"),
            ("Release", release, "release-written"),
            ("Release.gpg", detached, "release-gpg-written"),
        ):
            write_atomic(dists / fname, signed)
            _later_than(dists / fname, previous)
            run.written.append(f"dists/{suite}/{fname}")
            self._crash(point)
        # by-hash files past the last byhash_keep versions of every index.
        for directory, keep in keep_by_dir.items():
            for f in directory.iterdir():
                if f.name not in keep:
                    f.unlink()
                    run.removed.append(f"dists/{suite}/{f.relative_to(dists)}")
        if dists != final:
            dists.rename(final)
        History(self.state, suite).record(
            st,
            release=release,
            keep=self.settings.keep_history,
            crash=self._crash,
        )
        self.state.clear_pending(suite)
        self._crash("published")
        log.info("published %s: %d packages, %d index files", suite, len(st.members), len(entries))

    def _maybe_unreferenced(self) -> bool:
        """Whether some pool record may be unreferenced, from the records' paths alone (their
        SHA256 index), without loading every record: most collections find nothing."""
        referenced = needed_paths(self.state)
        for suite in self.state.suites():
            referenced.update(self.state.load_suite(suite).members)
        return any(
            p.endswith((".deb", ".udeb", ".dsc")) and p not in referenced
            for p in self.state.known_paths()
        )

    def _gc(self, run: _Run, *, whole_pool: bool = False) -> None:
        """Remove pool files that no suite references any more; ``whole_pool``: also every
        other file under pool/ that no record names (what older releases left, or hands)."""
        if self.state.pending():
            return  # a suite failed to publish: its old Release may still need them
        if not whole_pool and not self.state.gc_candidates() and not self._maybe_unreferenced():
            self.state.clear_gc_needed()
            return
        pool = self.state.pool()
        referenced: set[str] = set()
        for suite in self.state.suites():
            referenced.update(self.state.load_suite(suite).members)
        referenced |= needed_paths(self.state)  # what kept history entries would roll back to
        dead = [rec for path, rec in pool.items() if path not in referenced]
        # Pool files a killed or failed run placed (or a killed collection did not remove):
        # recorded as candidates before they were written, so none is left behind for good.
        journaled = self.state.gc_candidates()
        candidates = journaled | (_files_under(self.root, "pool") if whole_pool else set())
        if not dead and not candidates:
            self.state.clear_gc_needed()
            return
        keep = {p: r for p, r in pool.items() if p in referenced}
        still = {p for r in keep.values() for p in (r.path, *(f[0] for f in r.files))}
        # e.g. an orig tarball another source version still lists stays
        doomed = {p for rec in dead for p in (rec.path, *(f[0] for f in rec.files))} - still
        doomed_or_orphaned = doomed | (candidates - still)
        # Every file to go is noted first: a kill between the records and the files (or among
        # the files) leaves them to the next run rather than to no one.
        self.state.mark_gc_needed(sorted(doomed_or_orphaned - journaled))
        if dead:
            self.state.rewrite_pool(keep)
            self._crash("gc-records")
        directories: set[Path] = set()
        for path in sorted(doomed_or_orphaned):
            full = self.root / path
            directories.add(full.parent)
            try:
                full.unlink()
            except FileNotFoundError:
                if path not in doomed:
                    continue  # a candidate that was never written
            else:
                log.info("removed unreferenced %s", path)
            run.removed.append(path)
            self._crash("gc-files")
        for directory in sorted(directories, reverse=True):
            _remove_empty_parents(directory, self.root / "pool")
        self.state.clear_gc_needed()


@contextlib.contextmanager
def _no_cyclic_gc(state: RepoState) -> Iterator[None]:
    """No cyclic garbage collection during a locked run, and none of its objects left after it.

    A run builds ~10 objects per package, none of them in cycles, and the collector would
    otherwise walk them all again and again (a third of the time it takes to load 10,000 pool
    records). What the run read is dropped at its end (the next run must read it again anyway,
    under the lock): freed by reference counting, it is not left for a collection, nor for the
    one at interpreter exit (30-50 ms with 10,000 records alive).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        state.forget()
        if was:
            gc.enable()


def _writing_dir(final: Path) -> Path:
    """Where a suite's files are written: ``final``, or for a new suite a staging directory
    renamed into place whole once signed, so that a client (or a run killed half-way) never
    sees ``dists/<suite>`` without its InRelease."""
    if (final / "InRelease").is_file():
        return final
    staging = final.with_name(f"{_STAGING_PREFIX}{final.name}")
    shutil.rmtree(staging, ignore_errors=True)  # a killed run's
    if final.is_dir():  # left by a killed first publish of an older releng
        shutil.rmtree(final)
    return staging


def _check_root(root: Path) -> None:
    """The repository path is a directory, or can become one."""
    for parent in (root, *root.parents):
        if parent.exists():
            if not parent.is_dir():
                where = "is" if parent == root else f"is under {parent}, which is"
                raise RepoError(
                    f"the repository path {root} {where} a file, not a directory; "
                    "name a directory with --repo"
                )
            return


_TEMP_RE = re.compile(r"\.(.+)\.(\d+)\.tmp")


def _is_stale_temp(name: str) -> bool:
    """Whether ``name`` is a ``.NAME.PID.tmp`` of a process that is gone (or of this one,
    which holds the lock and so is writing none of them now)."""
    m = _TEMP_RE.fullmatch(name)
    if m is None:
        return False
    pid = int(m[2])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False


def _remove_stale_temps(root: Path) -> None:
    """Remove temporary files (and staging directories) that killed runs left in the state
    directories and under dists/; those under pool/ go with the collection of candidates.

    Called under the lock: a few directory listings, no walk of the pool.
    """
    state = root / STATE_DIR
    dirs = [state, state / "suites"]
    for parent in (state / "chunks", state / "history"):  # one directory per suite in each
        with contextlib.suppress(OSError):
            dirs += [p for p in parent.iterdir() if p.is_dir()]
    dists = root / "dists"
    with contextlib.suppress(OSError):
        for suite in dists.iterdir():
            if suite.name.startswith(_STAGING_PREFIX):
                continue  # removed when that suite is published again (it is pending)
            dirs += [Path(here) for here, _subdirs, _files in os.walk(suite)]
    for d in dict.fromkeys(dirs):
        try:
            with os.scandir(d) as it:
                names = [e.name for e in it if e.name.endswith(".tmp") and e.is_file()]
        except OSError:
            continue
        for name in names:
            if _is_stale_temp(name):
                with contextlib.suppress(OSError):
                    (d / name).unlink()
                    log.info("removed %s, left by a killed run", d / name)


def _files_under(root: Path, top: str) -> set[str]:
    """Every regular file under ``root/top``, relative to ``root``."""
    found: set[str] = set()
    base = os.fspath(root)
    for here, _dirs, files in os.walk(os.path.join(base, top)):  # noqa: PTH118
        rel = os.path.relpath(here, base)
        found.update(f"{rel}/{name}" for name in files)
    return found


def _remove_empty_parents(directory: Path, stop: Path) -> None:
    """Remove ``directory`` and its parents up to (not including) ``stop`` while empty, and
    the stale temporary files in it."""
    with contextlib.suppress(OSError):
        for e in os.scandir(directory):
            if _is_stale_temp(e.name):
                os.unlink(e.path)  # noqa: PTH108
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def _chooser(component: str, arch: str | None, single: bool) -> Callable[[str, Member], bool]:
    """Whether a member belongs in the index of ``component`` and ``arch`` (None: Sources)."""

    def chosen(path: str, m: Member) -> bool:
        if not single and path.split("/", 2)[1] != component:
            return False
        return m[1] == "dsc" if arch is None else m[1] == "deb" and m[4] in (arch, "all")

    return chosen


def _export(signer: Signer) -> tuple[bytes, bytes]:
    """The public key: binary (for Signed-By) and ASCII-armored."""
    return signer.export_public(armor=False), signer.export_public(armor=True)


def _in_thread(fn: Callable[[], T]) -> Callable[[], T]:
    """Start ``fn`` on a thread; the returned call waits for its result or re-raises its error."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised by wait(), in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, name=getattr(fn, "__name__", "work"), daemon=True)
    thread.start()

    def wait() -> T:
        thread.join()
        if error:
            raise error[0]
        return result[0]

    return wait


def _nothing() -> None:
    pass


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _total_size(items: Sequence[str] | Sequence[_PoolFile]) -> int:
    total = 0
    for item in items:
        total += item.size if isinstance(item, _PoolFile) else os.stat(item).st_size  # noqa: PTH116
    return total


_SHORT_SWITCH = 0.0002  # seconds: the GIL switch interval while helper threads do I/O


@contextlib.contextmanager
def _switch_interval(seconds: float | None) -> Iterator[None]:
    """A shorter GIL switch interval for the block (None: unchanged)."""
    before = sys.getswitchinterval()
    if seconds is not None:
        sys.setswitchinterval(min(before, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _sign_both(signer: Signer, release: bytes) -> Callable[[], tuple[bytes, bytes]]:
    """Start making InRelease and Release.gpg (two gpg runs at once, each verified).

    The returned call waits for both and returns them, or re-raises the first error.
    """
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def run(name: str, sign: Callable[[bytes], bytes]) -> None:
        try:
            results[name] = sign(release)
        except BaseException as exc:  # re-raised by wait(), in the caller's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=("InRelease", signer.clearsign), name="sign-InRelease"),
        threading.Thread(
            target=run, args=("Release.gpg", signer.detached_signature), name="sign-Release.gpg"
        ),
    ]
    # The signing threads mostly wait for gpg, then need the GIL for a moment to go on; while
    # the caller computes, each such moment could wait the default 5 ms switch interval.
    switching = _switch_interval(_SHORT_SWITCH)
    switching.__enter__()
    for t in threads:
        t.start()

    def wait() -> tuple[bytes, bytes]:
        try:
            for t in threads:
                t.join()
        finally:
            switching.__exit__(None, None, None)
        if errors:
            raise errors[0]
        return results["InRelease"], results["Release.gpg"]

    return wait


def _newer(a: tuple[str, str], b: tuple[str, str]) -> int:
    """``(path, version)`` pairs, newest first."""
    return _index.version_compare(b[1], a[1])


_newest_first = functools.cmp_to_key(_newer)


def _mtime_second(path: Path) -> int | None:
    try:
        return int(path.stat().st_mtime)
    except FileNotFoundError:
        return None


def _later_than(path: Path, previous: int | None) -> None:
    """Move ``path``'s mtime past ``previous`` (a whole second) when it is not already.

    HTTP's Last-Modified and If-Modified-Since have one-second resolution: a Release
    published in the same second as the one before would be answered "304 Not Modified"
    to an apt that fetched in between (static servers such as nginx and Python's compare
    seconds), and that client would miss the publish until the next one.
    """
    if previous is not None and int(path.stat().st_mtime) <= previous:
        os.utime(path, (previous + 1, previous + 1))


def _too_old(version: str, today: dt.date, max_age: int) -> bool:
    """Whether ``version`` is a nightly (``YYYY.MM.DD...``) more than ``max_age`` days old."""
    m = _NIGHTLY_RE.match(version)
    if not m:
        return False
    try:
        built = dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return False
    return (today - built).days > max_age


def collect_inputs(paths: Sequence[Path]) -> tuple[list[str], list[Path]]:  # noqa: PLR0912
    """The .deb and .dsc files that ``paths`` name: files, .changes (verified) or directories.

    The .debs come as plain strings: a directory may hold thousands, and a Path costs ~7 us.
    """
    debs: dict[str, None] = {}
    dscs: dict[Path, None] = {}

    def add(p: Path) -> None:
        if p.suffix in (".deb", ".udeb"):
            debs[os.fspath(p)] = None
        elif p.suffix == ".dsc":
            dscs[p] = None

    for path in paths:
        if path.is_dir():
            base = os.fspath(path)
            with os.scandir(path) as it:  # d_type: no stat per file
                names = sorted(e.name for e in it if e.is_file())
            listed: set[str] = set()
            for n in names:
                if n.endswith(".changes"):
                    for f in _changes.read_changes(path / n):
                        listed.add(os.fspath(f))
                        add(f)
            for n in names:
                full = os.path.join(base, n)  # noqa: PTH118
                if full in listed:
                    continue
                if n.endswith((".deb", ".udeb")):
                    debs[full] = None
                elif n.endswith(".dsc"):
                    dscs[path / n] = None
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
    _refuse_udebs(debs)
    return list(debs), list(dscs)


def _refuse_udebs(debs: Iterable[str]) -> None:
    """Installer packages are refused: this archive has no main/debian-installer/ indexes,
    and listed in main/binary-<arch>/Packages they would be offered to ordinary apt clients."""
    udebs = sorted(os.path.basename(d) for d in debs if d.endswith(".udeb"))  # noqa: PTH119  (plain strings, see above)
    if udebs:
        raise RepoError(
            f"{', '.join(udebs)}: .udeb (debian-installer) packages are not supported, since "
            "releng's suites have no main/debian-installer/ index; drop the udeb package from "
            "debian/control (or remove it from the build's output) and include the rest"
        )
