"""What every publish step of :class:`releng.apt.repository.Repository` shares: the
attributes a repository has, and the record of one run's writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from releng.apt.repository import RepoSettings
    from releng.apt.state import RepoState
    from releng.gpg import Signer


class Run:
    """What one locked run wrote, removed and added (paths relative to the root)."""

    __slots__ = ("added", "removed", "written")

    def __init__(self) -> None:
        self.written: list[str] = []
        self.removed: list[str] = []
        self.added: list[str] = []


class RepoBase:
    """The attributes the step classes read; :class:`~releng.apt.repository.Repository` sets them."""

    root: Path
    settings: RepoSettings
    state: RepoState
    workers: int
    link_inputs: bool
    remote_pool: bool
    _clock: Callable[[], dt.datetime]
    _real_clock: bool
    _crash: Callable[[str], None]
    _allowed_archs: set[str]
    # A suite's publish checks and writes the keys beside the repository (Repository's).
    _check_clients_verify: Callable[[Signer, Callable[[], tuple[bytes, bytes]]], None]
    _export_changed_keys: Callable[[Signer, Run], None]
