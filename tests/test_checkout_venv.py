"""An invoke or nox started by a Python outside any venv hands over to the checkout's .venv."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from releng.checkout_venv import COMPLETE, LAUNCHER_TAG, VENV
from tests.fixtures.project import REPO_ROOT

# Stands in for tasks.py: hand over, else say who ran.
SCRIPT = (
    "import sys; sys.path.insert(0, {src!r}); from pathlib import Path; "
    "from releng.checkout_venv import hand_over; hand_over(Path({root!r}), 'site'); "
    "print('not handed over', sys.prefix)"
)


def run(python: str, root: Path) -> str:
    code = SCRIPT.format(src=str(REPO_ROOT / "src"), root=str(root))
    env = {k: v for k, v in os.environ.items() if k != "RELENG_HANDED_OVER"}
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout


def fake_checkout(root: Path, *, complete: bool) -> Path:
    bindir = root / VENV / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").symlink_to(sys.executable)  # a venv's Python: `-m site` prints its prefix
    if complete:
        (root / VENV / COMPLETE).write_text("python ...\n")
    return root


def test_a_python_outside_any_venv_hands_over(tmp_path: Path) -> None:
    base = getattr(sys, "_base_executable", sys.executable)
    assert run(base, fake_checkout(tmp_path, complete=True)).startswith("sys.path = [")


def test_a_half_made_venv_is_not_used(tmp_path: Path) -> None:
    base = getattr(sys, "_base_executable", sys.executable)
    assert run(base, fake_checkout(tmp_path, complete=False)).startswith("not handed over")


def test_inside_a_venv_nothing_changes(tmp_path: Path) -> None:
    assert sys.prefix != sys.base_prefix, "the test suite runs in a venv (nox, .venv)"
    assert run(sys.executable, fake_checkout(tmp_path, complete=True)).startswith("not handed over")


def test_a_releng_launcher_is_run_with_sigint_blocked(tmp_path: Path) -> None:
    """hand_over execs .venv/bin/TOOL when it is releng's launcher, with SIGINT blocked:
    the launcher unblocks it once it can handle it (releng.launchers)."""
    root = fake_checkout(tmp_path, complete=True)
    launcher = root / VENV / "bin" / "site"
    launcher.write_text(f"#!/bin/sh\n{LAUNCHER_TAG}\nexec grep ^SigBlk: /proc/self/status\n")
    launcher.chmod(0o755)
    base = getattr(sys, "_base_executable", sys.executable)
    blocked = int(run(base, root).split()[1], 16)
    assert blocked & (1 << (signal.SIGINT - 1))
