"""Garbage collection: pool files no suite (and no kept history entry) references, and the
temporary files killed runs left."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

from releng.apt.history import needed_paths
from releng.apt.state import STATE_DIR
from releng.apt.steps import RepoBase, Run
from releng.apt.switch import STAGING_PREFIX

log = logging.getLogger(__name__)


class Collector(RepoBase):
    """Removing what nothing references (a part of :class:`~releng.apt.repository.Repository`)."""

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

    def _gc(self, run: Run, *, whole_pool: bool = False) -> None:
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


def remove_stale_temps(root: Path) -> None:
    """Remove temporary files (and staging directories) that killed runs left in the state
    directories and under dists/; those under pool/ go with the collection of candidates.

    Called under the lock: a few directory listings, no walk of the pool.
    """
    state = root / STATE_DIR
    # Copies a killed include made while reading its inputs (imported here: pool is not
    # otherwise needed by the operations that only collect).
    from releng.apt.incoming import INCOMING, remove_stale_staging

    remove_stale_staging(state / INCOMING)
    dirs = [state, state / "suites"]
    for parent in (state / "chunks", state / "history"):  # one directory per suite in each
        with contextlib.suppress(OSError):
            dirs += [p for p in parent.iterdir() if p.is_dir()]
    dists = root / "dists"
    with contextlib.suppress(OSError):
        for suite in dists.iterdir():
            if suite.name.startswith(STAGING_PREFIX):
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
