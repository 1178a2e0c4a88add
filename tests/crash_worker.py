"""A publisher for the crash tests to kill: one repository operation in its own process.

``python -m tests.crash_worker ROOT GNUPGHOME FINGERPRINT OPERATION KILL_AT [ARG]...``
runs ``OPERATIONS[OPERATION]`` on the repository at ROOT. ``KILL_AT`` is empty or
``POINT:N``: the process SIGKILLs itself the N-th time it reaches that crash point
(see ``releng.apt.repository.CRASH_POINTS``); the tests also kill it at random times.

A new repository operation joins the randomized crash test as one more entry here.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from releng.apt import RepoSettings, Repository, lifecycle
from releng.apt.history import History
from releng.apt.state import RepoState
from releng.gpg import Signer


class Operation(NamedTuple):
    settings: dict[str, int]  # RepoSettings fields beyond the shared ones
    run: Callable[[Repository, Sequence[str]], object]
    needs_suites: bool  # refused on an empty repository


def _include(repo: Repository, args: Sequence[str]) -> object:
    """``SUITE[,SUITE...] DEB...``"""
    return repo.include(args[0].split(","), [Path(a) for a in args[1:]])


def _retention(repo: Repository, _args: Sequence[str]) -> object:
    """Republish every suite with fewer versions kept: retention drops, collection removes."""
    return repo.publish()


def _copy(repo: Repository, _args: Sequence[str]) -> object:
    """Promote everything in bookworm to bookworm-stable (the pool files are shared)."""
    return lifecycle.copy(
        repo, source="bookworm", target="bookworm-stable", specs=[], all_packages=True
    )


def _remove(repo: Repository, _args: Sequence[str]) -> object:
    """Empty bookworm: collection keeps only what other suites and kept history need."""
    return lifecycle.remove(repo, suite="bookworm", specs=[], all_packages=True)


def _rollback(repo: Repository, _args: Sequence[str]) -> object:
    """Republish bookworm as it was at its oldest kept publish."""
    oldest = History(RepoState(repo.root), "bookworm").numbers()[0]
    return lifecycle.rollback(repo, suite="bookworm", to=oldest)


OPERATIONS: dict[str, Operation] = {
    # keep_history 1: what retention drops is collectable at once (the fault tests kill that
    # collection); the lifecycle operations keep 5 publishes, so kept history holds files too.
    "include": Operation({"keep_versions": 2, "keep_history": 1}, _include, needs_suites=False),
    "retention": Operation({"keep_versions": 1, "keep_history": 1}, _retention, needs_suites=True),
    "copy": Operation({"keep_history": 5}, _copy, needs_suites=True),
    "remove": Operation({"keep_history": 5}, _remove, needs_suites=True),
    "rollback": Operation({"keep_history": 5}, _rollback, needs_suites=True),
}


def settings(operation: str) -> RepoSettings:
    base = {"byhash_keep": 2, **OPERATIONS[operation].settings}
    return RepoSettings(name="tally", origin="releng crash test", label="tally", **base)  # type: ignore[arg-type]


def main(argv: Sequence[str]) -> None:
    root, home, fingerprint, operation, kill_at, *args = argv
    point, _, nth = kill_at.partition(":")
    hits = 0

    def hook(name: str) -> None:
        nonlocal hits
        if name == point:
            hits += 1
            if hits == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)

    signer = Signer(gnupghome=Path(home), key=fingerprint, passphrase=None)
    repo = Repository(Path(root), settings(operation), signer, crash_hook=hook)
    OPERATIONS[operation].run(repo, args)


if __name__ == "__main__":
    main(sys.argv[1:])
