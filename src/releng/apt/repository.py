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
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from releng.apt.gc import Collector, remove_stale_temps
from releng.apt.history import History
from releng.apt.lock import RepoLock
from releng.apt.pool import PoolSteps
from releng.apt.retention import Retention
from releng.apt.state import RepoState, SuiteState, find_records, read_or_none, write_atomic
from releng.apt.steps import Run
from releng.apt.switch import SuitePublishing
from releng.apt.threads import in_thread, nothing
from releng.errors import RepoError, SigningError
from releng.gpg import Signer, armored, keyring_keys, verify

log = logging.getLogger(__name__)

_SUITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~_-]*$")

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
    keep_history: int = 20  # publishes per suite kept for show-history and rollback-repo
    # One syncfs before each Release switch (durable.py); off only for throwaway repositories.
    sync_before_switch: bool = True
    contents: bool = True  # Contents-<arch>.gz per component, for apt-file (contents.py)
    # Packages.xz and Sources.xz: "chunks" (a publish recompresses what changed) or
    # "one-stream" (the whole index when it changed: the smallest download; index.IndexTable).
    index_xz: str = "chunks"

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


class Repository(PoolSteps, Retention, SuitePublishing, Collector):
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
        remote_pool: bool = False,
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
        # remote_pool: the pool lives elsewhere (a bucket; this is the state pulled from it):
        # a pool file that is not here is not missing (the sync checks it against the bucket).
        self.remote_pool = remote_pool or (self.state.dir / "remote-pool").is_file()
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
        records, files, dirs = self._prepare(paths, component)
        # For the keyring beside the repository and for verifying the signatures: started
        # after the reading (which may fork), it overlaps taking the lock and the rendering.
        in_thread(signer.public_keys)
        made = dirs.finish() if dirs is not None else set()
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock(), _no_cyclic_gc(self.state):
            self.state.forget()
            remove_stale_temps(self.root)
            # Records added by a run that did not finish may be referenced by no suite.
            collect = self.state.gc_needed()
            run = Run()
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
                """The new files' records, then every suite's members: all of them before any
                index is written. It runs while gpg signs the first suite's Release."""
                self._record_pool(records)
                if dropped:
                    self.state.mark_gc_needed()
                for st in changed:
                    self.state.mark_pending(st.name)
                    self.state.save_members(st)
                    self._crash("suite-written")

            # The new pool files, placed on a thread while the first suite's indexes are
            # rendered (links and copies are kernel work, the rendering Python's and the
            # compressors'); their records and the members follow while gpg signs.
            place: Callable[[], None] = functools.partial(self._place_new, files, dirs, run, made)
            todo = list(dict.fromkeys([*self.state.pending(), *suites]))
            fresh = {r.path: r for r in records}
            for suite in todo:
                self._publish_suite(
                    suite, signer, run, fresh, beside_rendering=place, before_indexes=commit
                )
                place = commit = nothing
            if collect or self.state.history_freed:
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
                f"{self.root} holds no suites yet; include packages first (invoke include-packages)"
            )
        in_thread(signer.public_keys)  # for verifying the signatures: overlaps the reading
        with self._lock(), _no_cyclic_gc(self.state):
            self.state.forget()
            remove_stale_temps(self.root)
            self._repair_records()  # a corrupt pool.records: republish-repo is the repair
            names = list(suites) if suites is not None else self.state.suites()
            existing = self.state.suites()
            for suite in names:
                if suite not in existing:
                    raise RepoError(
                        f"unknown suite {suite!r} in {self.root}; it has: {', '.join(existing) or 'none'}"
                    )
            run = Run()
            for suite in names:
                st = self.state.load_suite(suite)
                if self._retain(st):
                    self.state.mark_gc_needed()
                    self.state.mark_pending(suite)
                    self.state.save_members(st)
            for suite in dict.fromkeys([*self.state.pending(), *names]):
                self._publish_suite(suite, signer, run, {})
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
        if not self.state.dir.is_dir():  # nothing to change: make nothing (not even the lock)
            raise RepoError(
                f"{self.root} holds no repository (no {self.state.dir.name}/); name one with "
                "--repo, or add packages first: invoke include-packages"
            )
        if not dry_run:
            in_thread(signer.public_keys)  # for verifying the signatures: overlaps the reading
        with self._lock(), _no_cyclic_gc(self.state):
            self.state.forget()
            if not dry_run:
                remove_stale_temps(self.root)
            run = Run()
            finished = [] if dry_run else self.state.pending()
            if finished:
                for suite in finished:
                    self._publish_suite(suite, signer, run, {})
            changed = [st for st in edit(self.state) if st.changed]
            if retain:
                for st in changed:
                    self._retain(st)
            # A promotion or rollback publishes pool files no include just checked.
            self._verify_pool(find_records(self.state, [p for st in changed for p in st.added]))
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
            fresh = find_records(self.state, [p for st in changed for p in st.added])
            for st in changed:
                self._publish_suite(st.name, signer, run, fresh)
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

    def export_keys(self) -> tuple[Path, Path]:
        """Write the public key files: the signing keys as gpg exports them now (every
        publish does this when they differ: another key, or the same key with a new expiry,
        user id or subkey)."""
        signer = self._require_signer()
        self.root.mkdir(parents=True, exist_ok=True)
        binary, armor = self.keyring_paths
        keys = signer.public_keys()
        write_atomic(binary, keys)
        write_atomic(armor, armored(keys))
        # The marker of releng before 2026-12-07, which compared fingerprints alone.
        (self.state.dir / "signing-key").unlink(missing_ok=True)
        return binary, armor

    def _check_clients_verify(
        self, signer: Signer, signing: Callable[[], tuple[bytes, bytes]]
    ) -> None:
        """When the signing keys changed, the keyring clients took from beside the repository
        (as this run found it) must verify the new InRelease, as their apt will. It does not
        when they changed without a rotation (another key named in [signing] key, or a new
        signing subkey, which gpg signs with at once): every client would refuse the suite
        (NO_PUBKEY). ``signing`` waits for the signatures; called before anything of the
        suite is written, so that a refusal writes nothing."""
        binary = self.keyring_paths[0]
        held = read_or_none(binary)
        if held is None or held == signer.public_keys() or not _readable_keys(binary, held):
            return
        inrelease, _detached = signing()
        check = verify(held, inrelease)
        if not check.valid:
            raise RepoError(
                f"{binary}, the keyring clients hold, does not verify the new Release "
                f"({check.reason}): their apt would refuse it. The signing keys changed "
                "without a rotation: add a new key with invoke rotate-keys --add NEWFPR "
                "(docs/key-rotation.md), or remove a new signing subkey (gpg signs with "
                f"the newest); if no client uses this repository yet, delete {binary.name} "
                "and publish again"
            )

    def _export_changed_keys(self, signer: Signer, run: Run) -> None:
        """The key files beside the repository hold the signing keys as gpg exports them now
        (written before the Release that needs them, once :meth:`_check_clients_verify`
        passed)."""
        binary, armor = self.keyring_paths
        if read_or_none(binary) == signer.public_keys() and armor.is_file():
            return
        for path in self.export_keys():
            run.written.append(path.name)

    # -- inputs ---------------------------------------------------------------------------------

    def _require_signer(self) -> Signer:
        if self.signer is None:
            raise RepoError("no signing key: a repository is always signed; configure [signing]")
        return self.signer


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


def _readable_keys(path: Path, data: bytes) -> bool:
    """Whether ``data`` (the keyring at ``path``) holds keys gpg can read; damaged (a bad
    disk, a hand edit), it is exported again with a warning: what clients took was whole."""
    try:
        return bool(keyring_keys(data))
    except SigningError:
        log.warning("%s is damaged (gpg cannot read its keys); exporting it again", path)
        return False
