"""The include's inputs: the packages that paths name (:func:`collect_inputs`), and the
private copies made while they are read, before the lock (:class:`Staging`), which
:class:`~releng.apt.pool.PoolSteps` moves into the pool."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from releng.apt import changes as _changes
from releng.apt.debfile import DebInfo, not_a_file, read_deb
from releng.errors import RepoError

INCOMING = "incoming"  # under the state directory: copies made while reading (not synced)


class Staging:
    """A private directory of copies made while the inputs are read (before the lock), moved
    into the pool by :meth:`releng.apt.pool.PoolSteps._place`. What is left (a refused
    include) goes when the last file naming it does, or at exit; a killed run's, by the next
    run that takes the lock."""

    def __init__(self, state_dir: Path) -> None:
        import tempfile
        import weakref

        parent = state_dir / INCOMING
        made = [os.fspath(d) for d in (parent, *parent.parents) if not d.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        self.path = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent)
        self._count = itertools.count()
        self.remove = weakref.finalize(self, remove_tree, self.path, made)

    tag = ""  # before each copy's number: a forked read's child names its copies apart

    def new(self) -> str:
        return os.path.join(self.path, f"{self.tag}{next(self._count)}")  # noqa: PTH118


class Staged(NamedTuple):
    path: str  # the copy, under Staging.path
    staging: Staging  # kept alive while a file is staged in it


def read_one(path: str, staging: Staging | None) -> tuple[DebInfo, Staged | None]:
    """One input read; copied into ``staging`` in the same pass when the pool copies."""
    return (read_deb(path), None) if staging is None else _read_and_copy(path, staging)


def _read_and_copy(path: str, staging: Staging) -> tuple[DebInfo, Staged | None]:
    """Read a package as :func:`read_deb` does, copying it into ``staging`` in the same pass;
    without the copy where it cannot be written (a full disk: the pool's copy reports it)."""
    copy = staging.new()
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)  # whatever the umask, as pool files are
        info = read_deb(path, copy_to=fd)
    except OSError:
        os.close(fd)
        os.unlink(copy)  # noqa: PTH108
        return read_deb(path), None
    except BaseException:
        os.close(fd)
        os.unlink(copy)  # noqa: PTH108
        raise
    os.close(fd)
    return info, Staged(copy, staging)


def remove_tree(path: str, made: Sequence[str] = ()) -> None:
    """Remove ``path``, then those of the directories ``made`` for it that are empty."""
    shutil.rmtree(path, ignore_errors=True)
    for d in made:  # innermost first
        with contextlib.suppress(OSError):
            os.rmdir(d)  # noqa: PTH106


def remove_stale_staging(incoming: Path) -> None:
    """Remove the staging directories of runs that are gone (killed while reading); called
    under the lock by :func:`releng.apt.gc.remove_stale_temps`."""
    try:
        names = os.listdir(incoming)  # noqa: PTH208  (plain strings)
    except OSError:
        return
    for name in names:
        pid = name.split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            remove_tree(os.path.join(incoming, name))  # noqa: PTH118
        except OSError:
            pass  # alive, another user's


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
                raise RepoError(f"{path} {not_a_file(path)}")
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
