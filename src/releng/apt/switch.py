"""Publishing one suite: render its indexes, sign its Release, write by-hash files and
plain indexes, then switch ``InRelease``, ``Release`` and ``Release.gpg``.

Two hook points for signing and rendering: :func:`_sign_both` (InRelease and
Release.gpg from the Release text) and :meth:`SuitePublishing._render_release`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import mmap
import os
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from releng.apt import contents as _contents
from releng.apt import index as _index
from releng.apt.durable import sync_filesystem
from releng.apt.history import History
from releng.apt.state import Member, PoolRecord, SuiteState, read_or_none, write_atomic
from releng.apt.steps import RepoBase, Run
from releng.apt.threads import SHORT_SWITCH, in_thread, nothing, switch_interval
from releng.deb822 import IndexEntry
from releng.gpg import Signer

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"  # dists/.staging-<suite>: a new suite until its Release is signed

# An index file to write: (by-hash file, plain name, path under dists/<suite>/, its pieces)
_Placed = tuple[Path, Path, str, list[_index.Buffer]]
# An index table to save: (its path in the state, the table, its raw/gz/xz sha256s)
_Saved = tuple[Path, _index.IndexTable, tuple[str, str, str]]


class SuitePublishing(RepoBase):
    """Render, sign and switch a suite (a part of :class:`~releng.apt.repository.Repository`)."""

    def _render_indexes(
        self, st: SuiteState, fresh: Mapping[str, PoolRecord]
    ) -> dict[str, _index.IndexTable]:
        """Each index's chunks: the saved table of the last publish, updated with the members
        added and removed since (only their chunks are re-cut), or built from every record."""
        out: dict[str, _index.IndexTable] = {}
        single = len(self.settings.components) == 1
        one_stream = self.settings.index_xz == "one-stream"
        members = st.members
        dists = os.path.join(self.root, "dists", st.name)  # noqa: PTH118

        def key(path: str) -> _index.Entry:
            m = members[path]
            return (m[2], m[3], m[4], path)

        jobs: list[tuple[str, Callable[[str, Member], bool]]] = []
        for comp in self.settings.components:
            for arch in self._architectures(st):
                jobs.append((f"{comp}/binary-{arch}/Packages", _chooser(comp, arch, single)))
            jobs.append((f"{comp}/source/Sources", _chooser(comp, None, single)))
        for name, wanted in jobs:
            table = self._load_table(st.name, name, dists, one_stream=one_stream)
            if table is None:
                paths = [p for p, m in members.items() if wanted(p, m)]
                items = self._items(paths, fresh, st.name)
                table = _index.IndexTable.build(items, self.workers, one_stream=one_stream)
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

    def _load_table(
        self, suite: str, name: str, dists: str, *, one_stream: bool
    ) -> _index.IndexTable | None:
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

        return _index.IndexTable.loads(data, read, one_stream=one_stream)

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

    def _architectures(self, st: SuiteState) -> tuple[str, ...]:
        """The architectures a suite serves: product.toml's, and any other its members still
        have. An architecture dropped from product.toml stays served (its index, in Release)
        until its packages are removed (remove-packages): its clients never lose them silently,
        while new packages of it are refused."""
        held = {m[4] for m in st.members.values() if m[1] == "deb"} - {"all"}
        extra = sorted(held - set(self.settings.architectures))
        return (*self.settings.architectures, *extra)

    def _render_release(
        self,
        suite: str,
        entries: Sequence[IndexEntry],
        architectures: Sequence[str] | None = None,
    ) -> bytes:
        now = self._clock()
        valid = self.settings.valid_for_days
        return _index.render_release(
            origin=self.settings.origin,
            label=self.settings.label,
            suite=suite,
            date=now,
            valid_until=now + dt.timedelta(days=valid) if valid > 0 else None,
            architectures=architectures or self.settings.architectures,
            components=self.settings.components,
            description=f"{self.settings.label} packages for {suite}",
            entries=entries,
        )

    def _write_indexes(self, placed: Sequence[_Placed], run: Run, suite: str, dists: Path) -> None:
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

    def _index_files(
        self, st: SuiteState, fresh: Mapping[str, PoolRecord], dists: Path
    ) -> tuple[list[IndexEntry], list[_Placed], list[_Saved]]:
        """Every index of the suite rendered and hashed: the Release's entries, the files to
        place (by-hash and plain name) under ``dists`` and the index tables to save."""
        suite = st.name
        tables = self._render_indexes(st, fresh)
        entries: list[IndexEntry] = []
        placed: list[_Placed] = []
        saved: list[_Saved] = []
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
                entries.append(IndexEntry(path=path, size=size, sha256=digest))
                byhash = dists / path.rsplit("/", 1)[0] / "by-hash" / "SHA256" / digest
                placed.append((byhash, dists / path, path, data))
            raw, gz, xz = digests
            saved.append((self.state.table_path(suite, name), table, (raw, gz, xz)))
        return entries, placed, saved

    def _publish_suite(  # one suite's publish, in the order of its writes
        self,
        suite: str,
        signer: Signer,
        run: Run,
        fresh: Mapping[str, PoolRecord],
        *,
        beside_rendering: Callable[[], None] = nothing,
        before_indexes: Callable[[], None] = nothing,
    ) -> None:
        """Render, sign and switch one suite; ``beside_rendering`` runs on a thread while the
        indexes are rendered (before signing), ``before_indexes`` before any index file is
        written (while gpg signs)."""
        st = self.state.load_suite(suite)
        final = self.root / "dists" / suite
        dists = _writing_dir(final)
        rendered = nothing if beside_rendering is nothing else in_thread(beside_rendering)
        try:
            entries, placed, saved = self._index_files(st, fresh, dists)
        finally:
            rendered()  # always joined; re-raises its error
        # After the join: a package whose file list was not kept at include is read from its
        # pool file, which is there now.
        contents = _contents.add_indexes(
            self.state, self.settings, st, fresh, dists, entries, placed
        )
        release = self._render_release(suite, entries, self._architectures(st))
        if self._real_clock and release == read_or_none(dists / "Release"):
            # Nothing changed within the second of the published Date: the signatures would be
            # the same bytes too (ed25519 is deterministic, gpg's timestamps are in seconds).
            # A republish is for signing anew, so it waits for the next second.
            time.sleep(1.0 - time.time() % 1.0 + 0.01)
            release = self._render_release(suite, entries, self._architectures(st))
        # The Release text needs only the indexes' digests: gpg signs it while the indexes are
        # written (the order of the writes is unchanged: Release files come last).
        signing = _sign_both(signer, release)
        keep_by_dir: dict[Path, set[str]] = defaultdict(set)
        try:
            # Before anything of the suite is written: a key change no client could verify
            # stops here (it waits for the signatures only when the keys changed).
            self._check_clients_verify(signer, signing)
            before_indexes()
            self._write_indexes(placed, run, suite, dists)
            # The tables name this publish's by-hash files, which pruning below keeps.
            # Tagged with the members they show, as saved (no tag: changes not saved).
            tag = st.saved_tag if st.saved_tag != st.tag or not st.changed else None
            for table_path, table, sums in saved:
                table_path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(table_path, table.dumps(sums, tag))
            contents.save()
            # The by-hash history, with this publish's files, is saved before the switch: a run
            # killed right after it must not later delete what the Release it left still names.
            keep_n = self.settings.byhash_keep
            for byhash, _plain, path, _data in placed:
                older = [h for h in st.byhash.get(path, []) if h != byhash.name]
                st.byhash[path] = [byhash.name, *older][:keep_n]
                keep_by_dir[byhash.parent].update(st.byhash[path])
            self.state.save_byhash(st)
            if self.settings.sync_before_switch:
                # Every file the new Release names is on disk before it is written. The flush
                # waits for the disk, not the CPU: it runs while gpg signs (it needs no
                # signature, only the files written above).
                sync_filesystem(self.root)
        finally:
            inrelease, detached = signing()  # always joined; re-raises a signing error
        self._export_changed_keys(signer, run)  # before the Release that needs them
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


def _writing_dir(final: Path) -> Path:
    """Where a suite's files are written: ``final``, or for a new suite a staging directory
    renamed into place whole once signed, so that a client (or a run killed half-way) never
    sees ``dists/<suite>`` without its InRelease."""
    if (final / "InRelease").is_file():
        return final
    staging = final.with_name(f"{STAGING_PREFIX}{final.name}")
    shutil.rmtree(staging, ignore_errors=True)  # a killed run's
    if final.is_dir():  # left by a killed first publish of an older releng
        shutil.rmtree(final)
    return staging


def _chooser(component: str, arch: str | None, single: bool) -> Callable[[str, Member], bool]:
    """Whether a member belongs in the index of ``component`` and ``arch`` (None: Sources)."""

    def chosen(path: str, m: Member) -> bool:
        if not single and path.split("/", 2)[1] != component:
            return False
        return m[1] == "dsc" if arch is None else m[1] == "deb" and m[4] in (arch, "all")

    return chosen


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
    switching = switch_interval(SHORT_SWITCH)
    switching.__enter__()
    for t in threads:
        t.start()

    def wait() -> tuple[bytes, bytes]:
        if threads:
            try:
                for t in threads:
                    t.join()
            finally:
                threads.clear()  # a second call only returns (or re-raises) the results
                switching.__exit__(None, None, None)
        if errors:
            raise errors[0]
        return results["InRelease"], results["Release.gpg"]

    return wait


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
