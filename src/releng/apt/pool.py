"""The pool: read and check the inputs, place their files under ``pool/`` and record them.

Pool files are immutable: ``pool/<component>/<prefix>/<source>/<file>``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from releng.apt import changes as _changes
from releng.apt import contents as _contents
from releng.apt import index as _index
from releng.apt.debfile import DebInfo, read_deb
from releng.apt.history import needed_paths
from releng.apt.incoming import Staged, Staging, collect_inputs, read_one
from releng.apt.state import CorruptRecordsError, PoolRecord
from releng.apt.steps import RepoBase, Run
from releng.apt.threads import SHORT_SWITCH, switch_interval
from releng.digest import file_size_sha256
from releng.errors import BadPackageError, RepoError
from releng.fastcopy import copy_and_hash

log = logging.getLogger(__name__)

PARALLEL_BYTES = 64 << 20  # below this, reading or copying inputs on several threads does not pay
# From this many packages (and below PARALLEL_BYTES), a forked child reads them while this
# process makes their pool directories: a fork and handing 1000 packages back cost a few ms,
# parsing 1000 control files ~30 ms.
FORK_MIN = 256


class _PoolFile(NamedTuple):
    path: str  # under the repo root
    source: str | Path
    size: int
    sha256: str
    staged: Staged | None = None  # the input's copy made while reading it


_DIR_THREAD_MIN = 16  # packages in one include from which pool directories are made on a thread


def _pool_dir(component: str, source: str) -> str:
    return f"pool/{component}/{_index.pool_prefix(source)}/{source}"


class _Dirs:
    """Makes the new packages' pool directories as their names are checked, in the calling
    thread; ``undo`` removes what was made (when an input is refused): directories another
    publisher filled meanwhile are not empty and stay."""

    def __init__(self, root: str) -> None:
        self._root = root
        self._made: list[str] = []  # absolute, parents first
        self._ok: set[str] = set()  # relative to the root: exists now

    def add(self, directory: str) -> None:
        if directory not in self._ok:
            with contextlib.suppress(OSError):  # _place_pool makes it again, or reports why
                self._mkdir(os.path.join(self._root, directory))  # noqa: PTH118
                self._ok.add(directory)

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
        """The directories (relative to the root) that exist."""
        return self._ok

    def undo(self) -> None:
        self.finish()
        for path in reversed(self._made):  # parents were made first
            with contextlib.suppress(OSError):
                os.rmdir(path)  # noqa: PTH106


class _PoolDirs(_Dirs):
    """Makes pool directories on a thread while the caller reads packages.

    One directory per source package is the pool's layout, and on ext4 a mkdir costs
    30-150 us of kernel time: for thousands of new packages as much as reading them. The
    syscall releases the GIL, so the two overlap.
    """

    def __init__(self, root: str) -> None:
        import queue

        super().__init__(root)
        self._todo: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="pool-dirs", daemon=True)
        self._thread.start()

    def add(self, directory: str) -> None:
        self._todo.put(directory)

    def _run(self) -> None:
        while (d := self._todo.get()) is not None:
            super().add(d)

    def finish(self) -> set[str]:
        """Wait for the thread; the directories (relative to the root) that exist."""
        if self._thread.is_alive():
            self._todo.put(None)
            self._thread.join()
        return self._ok


class PoolSteps(RepoBase):
    """Reading inputs and writing the pool (a part of :class:`~releng.apt.repository.Repository`)."""

    def _prepare(
        self, paths: Sequence[Path], component: str
    ) -> tuple[list[PoolRecord], list[_PoolFile], _Dirs | None]:
        """Read and validate every input before the lock and before writing anything but the
        new packages' pool directories, made meanwhile (on a thread, or between the reads of
        a forked read), and removed again if an input is refused."""
        debs, dscs = collect_inputs(paths)
        dirs: _Dirs | None = None
        fork = self._fork_reading(debs)  # it stats every input: decided once
        if fork:
            dirs = _Dirs(os.fspath(self.root))
        elif len(debs) >= _DIR_THREAD_MIN:
            dirs = _PoolDirs(os.fspath(self.root))
        staging = None
        try:
            # The directory thread needs the GIL for a moment between two mkdirs: with the
            # default 5 ms switch interval it would wait behind the parsing most of the time.
            with switch_interval(SHORT_SWITCH if isinstance(dirs, _PoolDirs) else None):
                staging = None if self.link_inputs else Staging(self.state.dir)
                infos, staged = self._read_debs(debs, component, dirs, staging, fork=fork)
                if self.settings.contents:
                    _contents.remember(self.state, infos)
                sources = [_changes.read_dsc(p) for p in dscs]
                records, files = self._plan_pool(infos, sources, component, staged)
        except BaseException:
            if dirs is not None:
                dirs.undo()
            if staging is not None:
                staging.remove()
            raise
        return records, files, dirs

    def _fork_reading(self, debs: Sequence[str]) -> bool:
        """Whether a forked child reads ``debs``: many small packages, two cores or
        more, and no other thread (a fork copies none, nor whatever lock one holds)."""
        return (
            len(debs) >= FORK_MIN
            and self.workers > 1
            and hasattr(os, "fork")
            and threading.active_count() == 1
            and _total_size(debs) <= PARALLEL_BYTES
        )

    def _read_debs(
        self,
        debs: Sequence[str],
        component: str,
        dirs: _Dirs | None,
        staging: Staging | None,
        *,
        fork: bool = False,
    ) -> tuple[list[DebInfo], dict[str, Staged]]:
        """Read and check every package; each checked one's pool directory goes to ``dirs``.
        With ``staging`` (the pool copies its inputs), each is copied in the same read pass
        that hashes it: the copies, by input path. ``fork``: in a forked child
        (:meth:`_fork_reading` said so; ``dirs`` made here)."""
        staged: dict[str, Staged] = {}

        def read(path: str) -> DebInfo:
            info, copy = read_one(path, staging)
            if copy is not None:
                staged[path] = copy
            return info

        if fork and dirs is not None:
            forked = self._read_forked(
                debs, component, dirs, staging=staging, read=read, staged=staged
            )
            return forked, staged
        if self.workers > 1 and len(debs) > 1 and _total_size(debs) > PARALLEL_BYTES:
            from concurrent.futures import ThreadPoolExecutor

            # hashlib and file reads release the GIL: big packages hash on every core. Small
            # ones are dominated by per-file Python work, which threads only slow down.
            with ThreadPoolExecutor(self.workers) as pool:
                infos = pool.map(read, debs)
                return [self._checked(info, component, dirs) for info in infos], staged
        return [self._checked(read(p), component, dirs) for p in debs], staged

    def _read_forked(
        self,
        debs: Sequence[str],
        component: str,
        dirs: _Dirs,
        *,
        staging: Staging | None,
        read: Callable[[str], DebInfo],
        staged: dict[str, Staged],
    ) -> list[DebInfo]:
        """Read and check ``debs`` on two cores: a forked child reads them from the first on,
        while this process makes their pool directories and, whenever it has none to make,
        reads packages itself from the last one back. Parsing control files is Python work,
        which threads do not spread; a mkdir is kernel work (30-150 us on ext4).

        The child reads and checks the packages in order as :meth:`_read_debs` does (copying
        each into ``staging`` when the pool copies) up to the first one this process has
        claimed (a number both share), and sends them back in batches through a pipe; each
        batch's directories are made as it arrives. Every package neither read, in order from
        where the child stopped (an input refused, or anything else), is read here again,
        so that the error, and its order among the inputs, are what one process would give.
        """
        rfd, wfd = os.pipe()
        claims = _Claims(len(debs))
        # Every page both processes write to is copied (copy-on-write): a garbage collection
        # would write to every object's header. None runs in the child, and the parent's
        # collections leave the objects made before the fork alone until it is over.
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # the child: it never returns
            code = 1
            try:
                gc.disable()
                os.close(rfd)
                if staging is not None:
                    staging.tag = "c"
                _read_part(self, debs, component, staging=staging, wfd=wfd, claims=claims)
                code = 0
            finally:
                os._exit(code)
        os.close(wfd)
        try:
            infos, tail = self._beside_child(
                rfd, claims, debs, component, dirs=dirs, staging=staging, staged=staged
            )
        finally:
            _reap(rfd, pid)
            gc.unfreeze()
            claims.close()
        # A package both read is the child's: the other copy goes with the staging directory.
        for n in range(len(infos), len(debs)):
            if n in tail:
                info, copy = tail[n]
                if copy is not None:
                    staged[info.path] = copy
                infos.append(info)
            else:
                infos.append(self._checked(read(debs[n]), component, dirs))
        return infos

    def _beside_child(
        self,
        rfd: int,
        claims: _Claims,
        debs: Sequence[str],
        component: str,
        *,
        dirs: _Dirs,
        staging: Staging | None,
        staged: dict[str, Staged],
    ) -> tuple[list[DebInfo], dict[int, tuple[DebInfo, Staged | None]]]:
        """A forked read's parent's work until its child ends: the packages the child sent
        (their directories made, their copies in ``staged``), and those read here, by number
        (read and checked, directories made; their copies not yet in ``staged``)."""
        infos: list[DebInfo] = []
        tail: dict[int, tuple[DebInfo, Staged | None]] = {}
        batches = _Batches()
        claiming = True
        waiting = select.poll()  # not select(): no limit on the descriptor's number
        waiting.register(rfd, select.POLLIN)
        os.set_blocking(rfd, False)
        try:
            while (chunk := _read_ready(rfd)) != b"":  # b"": the child is done
                if chunk is not None:
                    for part in batches.feed(chunk):
                        for info, path in zip(part.infos, part.copies, strict=True):
                            if path is not None and staging is not None:
                                staged[info.path] = Staged(path, staging)
                            infos.append(info)
                            dirs.add(_pool_dir(component, info.source))  # checked by the child
                    continue
                # Nothing to make: claim the last unclaimed package, unless the child (which
                # may be up to two batches past what it sent) could be reading it.
                last = claims.limit - 1
                if claiming and last >= len(infos) + _STEAL_MARGIN:
                    claims.limit = last
                    try:
                        info, copy = read_one(debs[last], staging)
                        tail[last] = (self._checked(info, component, dirs), copy)
                    except Exception:  # read again in its order, by the caller
                        claiming = False
                else:
                    waiting.poll()  # for the child's next batch, or its end
        finally:
            os.set_blocking(rfd, True)
        return infos, tail

    def _checked(self, info: DebInfo, component: str, dirs: _Dirs | None) -> DebInfo:
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
        self,
        infos: Sequence[DebInfo],
        sources: Sequence[_changes.SourcePackage],
        component: str,
        staged: Mapping[str, Staged] | None = None,
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
            copy = staged.get(info.path) if staged else None
            add_file(_PoolFile(path, info.path, info.size, info.sha256, copy))
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

    def _repair_records(self) -> None:
        """Rebuild the records ``pool.records`` lost to corruption from the pool files the
        suites (and their kept history) name; nothing to do when every record parses."""
        try:
            self.state.pool()
        except CorruptRecordsError:
            pass
        else:
            return
        records = self.state.readable_records()
        wanted = needed_paths(self.state)
        for suite in self.state.suites():
            wanted.update(self.state.load_suite(suite).members)
        rebuilt: list[PoolRecord] = []
        for path in sorted(wanted - records.keys()):
            full = self.root / path
            if not full.is_file():
                raise RepoError(
                    f"{full} is missing and its record in {self.state.pool_path} is corrupt; "
                    "include the package again (invoke include-packages)"
                )
            component = path.split("/")[1]
            if path.endswith(".dsc"):
                made, _ = self._plan_pool([], [_changes.read_dsc(full)], component)
            else:
                made, _ = self._plan_pool([read_deb(os.fspath(full))], [], component)
            rebuilt += [r for r in made if r.path == path]
        self.state.rewrite_pool({**records, **{r.path: r for r in rebuilt}})
        log.warning(
            "rebuilt %d record(s) of %s from the pool files", len(rebuilt), self.state.pool_path
        )

    def _verify_pool(self, records: Mapping[str, PoolRecord]) -> None:
        """Every pool file of ``records`` is there with the size and sha256 its record says
        (as an include checked them), before a Release names them; else one RepoError."""
        for rec in records.values():
            for path, size, sha256 in ((rec.path, rec.size, rec.sha256), *rec.files):
                full = self.root / path
                try:
                    have = file_size_sha256(full)
                except FileNotFoundError:
                    if self.remote_pool:
                        continue  # in the bucket: the sync checks it against the manifest
                    problem = "is missing"
                except OSError as exc:
                    problem = f"cannot be read ({exc.strerror})"
                else:
                    if have == (size, sha256):
                        continue
                    problem = f"has size {have[0]}, sha256 {have[1]}, not {size}, {sha256}"
                raise RepoError(
                    f"{full} {problem}; nothing was published: include {rec.package} "
                    f"{rec.version} again (invoke include-packages) to repair the pool first"
                )

    def _check_conflicts(self, files: Sequence[_PoolFile]) -> None:
        for f in files:
            have = self.state.known_sha256(f.path)
            if have is not None and have != f.sha256:
                _discard_staged(files)
                raise RepoError(
                    f"{f.source}: the pool already holds {f.path} with different contents "
                    f"(sha256 {have}, new {f.sha256}); a published file never changes: "
                    "give the package a new version (or Debian revision)"
                )

    def _place_new(
        self, files: Sequence[_PoolFile], dirs: _Dirs | None, run: Run, made: set[str]
    ) -> None:
        """Check ``files`` against the pool, then place them (see :meth:`_place_pool`): only
        what is in memory has changed before, and a conflict still writes nothing (the new
        packages' directories, made while reading, are removed again)."""
        try:
            self._check_conflicts(files)
        except RepoError:
            if dirs is not None:
                dirs.undo()
            raise
        self._place_pool(files, run, made)

    def _place_pool(self, files: Sequence[_PoolFile], run: Run, made: set[str]) -> None:
        """Place ``files`` (checked by :meth:`_check_conflicts`); ``made``: pool directories
        that exist. Of the state it changes only the collection's marks (it may run on a
        thread while the indexes are rendered); :meth:`_record_pool` follows."""
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

                # Reading, hashing and writing release the GIL: copy on every core.
                with ThreadPoolExecutor(self.workers) as ex:
                    placed = list(ex.map(self._place, files, known))
            else:
                placed = [self._place(f, k) for f, k in zip(files, known, strict=True)]
        except BaseException:
            _discard_staged(files)
            for path in unknown:  # unreferenced: this run's copies (or a killed run's)
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, path))  # noqa: PTH108, PTH118
            raise
        run.written += [f.path for f, new in zip(files, placed, strict=True) if new]
        self._crash("pool-written")

    def _record_pool(self, records: Sequence[PoolRecord]) -> None:
        """Append the placed files' ``records`` (after :meth:`_place_pool`)."""
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
            # Recorded with this sha256 (checked), or left by a run killed before it recorded
            # the file: nothing to do when its bytes are right; damaged, it is repaired below.
            if file_size_sha256(Path(dest)) == (f.size, f.sha256):
                return False
            if known:
                log.warning("%s does not match its record; replaced by %s", dest, f.source)
        if f.staged is not None:
            # Copied (and hashed: these bytes) while the input was read: the name appears
            # with all its content. Else a pool path two inputs share takes one copy.
            with contextlib.suppress(FileNotFoundError):
                os.replace(f.staged.path, dest)  # noqa: PTH105
                return True
        head, name = os.path.split(dest)
        tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")  # noqa: PTH118
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # noqa: PTH108
        try:
            # One pass: each block is read once, hashed and written (or the file cloned and
            # hashed where the filesystem shares extents): the copy is checked for free.
            have = copy_and_hash(f.source, tmp)
            if have == (f.size, f.sha256):
                os.chmod(tmp, 0o644)  # noqa: PTH101
                os.replace(tmp, dest)  # noqa: PTH105
                return True
            os.unlink(tmp)  # noqa: PTH108
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # noqa: PTH108
            # Opening the input fails with its name; writing the copy without one.
            if str(exc.filename) == os.fspath(f.source):
                raise RepoError(f"cannot read {f.source}: {exc.strerror}") from None
            raise OSError(exc.errno, exc.strerror, dest) from None
        raise RepoError(
            f"{f.source} changed while it was being included (read as {f.size} bytes, sha256 "
            f"{f.sha256}; copied as {have[0]} bytes, sha256 {have[1]}); nothing was published: "
            "include it again once it is complete"
        )


_BATCH = 64  # packages per message of a forked read's child
# A forked read's parent claims a package only this far past what the child has sent: the
# child may be one batch further on, and part-way through the next.
_STEAL_MARGIN = 2 * _BATCH


class _Part(NamedTuple):
    """A batch a forked read's child sends: packages it read and checked, in order, and each
    one's copy (or None). It stops at the first it cannot read or check."""

    infos: list[DebInfo]
    copies: list[str | None]


def _read_part(
    steps: PoolSteps,
    paths: Sequence[str],
    component: str,
    *,
    staging: Staging | None,
    wfd: int,
    claims: _Claims,
) -> None:
    """A forked read's child's work (see :meth:`PoolSteps._read_forked`): the packages before
    the first one the parent claimed, in order; each message is a 4-byte length and a pickled
    :class:`_Part`."""
    import pickle

    infos: list[DebInfo] = []
    copies: list[str | None] = []

    def send() -> None:
        data = pickle.dumps(_Part(infos, copies), protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(len(data).to_bytes(4, "little") + data)
        while view:
            view = view[os.write(wfd, view) :]
        infos.clear()
        copies.clear()

    try:
        for n, path in enumerate(paths):
            if n >= claims.limit:
                break
            info, copy = read_one(path, staging)
            infos.append(steps._checked(info, component, None))
            copies.append(copy.path if copy is not None else None)
            if len(infos) == _BATCH:
                send()
    except Exception:  # noqa: S110  (the parent reads the rest again and says why)
        pass
    if infos:
        send()


class _Claims:
    """The number of the first package a forked read's parent has claimed (it claims them
    from the last one back), in memory both processes share: the child reads up to it."""

    def __init__(self, count: int) -> None:
        import mmap

        self._shared = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and shared across the fork
        self._value = memoryview(self._shared).cast("q")  # one aligned 8-byte word
        self._value[0] = count

    @property
    def limit(self) -> int:
        return self._value[0]

    @limit.setter
    def limit(self, value: int) -> None:
        self._value[0] = value

    def close(self) -> None:
        self._value.release()
        self._shared.close()


def _read_ready(fd: int) -> bytes | None:
    """What a non-blocking pipe holds now: None when nothing, b"" at its end."""
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return None


class _Batches:
    """The batches of a forked read's child, decoded as the pipe's bytes arrive; a torn last
    one (the child died) is never returned."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[_Part]:
        import pickle

        buf = self._buf
        buf += chunk
        parts: list[_Part] = []
        while len(buf) >= 4 and len(buf) >= 4 + (n := int.from_bytes(buf[:4], "little")):
            # From the child forked above, through a pipe of its own: as trusted as this process.
            part = pickle.loads(bytes(buf[4 : 4 + n]))  # noqa: S301
            del buf[: 4 + n]
            if isinstance(part, _Part):
                parts.append(part)
        return parts


def _reap(rfd: int, pid: int) -> None:
    """Read a forked read's child's pipe to its end (it cannot block writing), close it and
    wait for the child to exit."""
    try:
        while os.read(rfd, 1 << 20):
            pass
    finally:
        os.close(rfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _discard_staged(files: Iterable[_PoolFile]) -> None:
    """Remove the copies made for ``files`` (the include failed: none will be placed)."""
    for staging in {id(f.staged.staging): f.staged.staging for f in files if f.staged}.values():
        staging.remove()


def _total_size(items: Sequence[str] | Sequence[_PoolFile]) -> int:
    total = 0
    for item in items:
        total += item.size if isinstance(item, _PoolFile) else os.stat(item).st_size  # noqa: PTH116
    return total
