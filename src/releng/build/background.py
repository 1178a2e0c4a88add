"""A container created and started on a thread while the caller goes on."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from releng.build.signals import interrupts_deferred
from releng.engine import Container, ContainerSpec, Engine

_T = TypeVar("_T")


class Background:
    """A container created and started on a thread while the caller goes on.

    ``begin`` starts that; ``wait_started`` waits for it (raising what it raised);
    ``remove_soon`` begins the removal on the thread. On the way out, whatever happened,
    the thread's work is waited for and the container is removed.
    """

    def __init__(self, engine: Engine, spec: ContainerSpec, name: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.container = engine.container(spec)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._started: Future[None] | None = None
        self._removal: Future[None] | None = None

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        # A second Ctrl-C right after the first must not cut the removal short: it would
        # leave the container behind (it waits for its creation to finish first).
        with interrupts_deferred():
            try:
                if self._started is not None:
                    self._started.exception()  # a container being created cannot be removed
                if self._removal is not None:
                    self._removal.result()
                self.container.remove()
            finally:
                self._pool.shutdown()

    def begin(self) -> None:
        if self._started is None:
            self._started = self._pool.submit(self._create_and_start)

    def _create_and_start(self) -> None:
        self.container.__enter__()
        self.container.start()

    def wait_started(self) -> Container:
        self.begin()
        assert self._started is not None
        self._started.result()
        return self.container

    def submit(self, fn: Callable[[], _T]) -> Future[_T]:
        """Run ``fn`` on the container's thread (after its start)."""
        return self._pool.submit(fn)

    def remove_soon(self) -> None:
        if self._removal is None:
            self._removal = self._pool.submit(self.container.remove)
