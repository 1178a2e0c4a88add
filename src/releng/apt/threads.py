"""Small thread helpers for the publisher: run a call on a thread, a shorter GIL switch
interval while helper threads do I/O."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

SHORT_SWITCH = 0.0002  # seconds: the GIL switch interval while helper threads do I/O


def in_thread(fn: Callable[[], T]) -> Callable[[], T]:
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


def nothing() -> None:
    pass


@contextlib.contextmanager
def switch_interval(seconds: float | None) -> Iterator[None]:
    """A shorter GIL switch interval for the block (None: unchanged)."""
    before = sys.getswitchinterval()
    if seconds is not None:
        sys.setswitchinterval(min(before, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(before)
