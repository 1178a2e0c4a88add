"""An exclusive publisher lock on a repository directory (``fcntl.flock``, with a timeout).

The holder writes ``pid host since`` into the lock file, so that a publisher
that gives up can say who holds it. The kernel drops the lock when the holder
dies, even by ``kill -9``: there is no stale lock to clean up.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from types import TracebackType

from releng.errors import LockError

log = logging.getLogger(__name__)


class RepoLock:
    def __init__(self, path: Path, *, timeout: float, poll: float = 0.05) -> None:
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self._fd: int | None = None

    def holder(self) -> str:
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return "an unknown process"
        parts = text.split()
        if len(parts) >= 3:
            return f"pid {parts[0]} on host {parts[1]} (since {parts[2]})"
        return "an unknown process"

    def __enter__(self) -> RepoLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockError(
                        f"the repository lock {self.path} is held by {self.holder()}; "
                        f"waited {self.timeout:g} s. Wait for that publisher to finish, "
                        "or raise the timeout"
                    ) from None
                if not logged:
                    log.info("waiting for the repository lock held by %s", self.holder())
                    logged = True
                time.sleep(self.poll)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {os.uname().nodename} {since}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
