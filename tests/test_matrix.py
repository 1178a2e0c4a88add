"""make-all-packages's pool of builds (releng.matrix), without an engine."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest

from releng.build.reaper import RUN_ID
from releng.engine import Engine
from releng.matrix import Outcome, _run_all


class _GoneEngine:
    """An engine that went away: listing the run's containers fails."""

    def containers(self, label: str, value: str) -> list[Any]:
        raise OSError(f"engine gone (listing {label}={value})")


def test_an_interrupt_whose_container_clean_up_fails_ends_without_waiting_for_the_builds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    def one(distro: str, arch: str | None) -> Outcome:
        if distro == "interrupted":
            raise KeyboardInterrupt
        release.wait(60)  # a build still running: its container could not be removed
        raise AssertionError("not reached before the test releases it")

    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            _run_all(
                cast(Engine, _GoneEngine()),
                [("interrupted", None), ("running", None)],
                one,
                jobs=2,
            )
        waited = time.monotonic() - start
    finally:
        release.set()
    assert waited < 30, f"the interrupt waited {waited:.0f} s for a build"
    warning = [r.getMessage() for r in caplog.records if "could not remove" in r.getMessage()]
    assert warning and f"docker ps --filter label=org.releng.run={RUN_ID}" in warning[0]
    assert "engine gone" in warning[0]
