"""Ctrl-C while invoke is still starting ends in one line, never a traceback (issue 13).

The launchers run as ``scripts/setup`` installs them: started with SIGINT blocked, as
the /usr/local/bin wrappers and ``hand_over`` start them, by the test venv's Python.
"""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys
import time
from operator import attrgetter
from pathlib import Path

import pytest

from releng.launchers import ENTRY_POINTS, launcher_text
from tests.fixtures.project import REPO_ROOT


@pytest.mark.slow
def test_a_ctrl_c_at_any_moment_of_the_start_ends_in_one_line(tmp_path: Path) -> None:
    launcher = tmp_path / "invoke"
    launcher.write_text(launcher_text(Path(sys.executable), "invoke"))
    launcher.chmod(0o755)
    command = ["env", "--block-signal=INT", str(launcher), "-r", str(REPO_ROOT)]
    command += ["repo-check", "--repo", str(tmp_path / "no-such-repo")]
    interrupted = 0
    for step in range(60):  # from the exec to well into the task: 0 to 295 ms
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        time.sleep(step * 0.005)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        where = f"SIGINT after {step * 5} ms: exit {process.returncode}, stderr {stderr!r}"
        assert "Traceback" not in stderr and len(stderr.splitlines()) <= 1, where
        assert process.returncode != 0, where
        if stderr.strip() == "interrupted":
            assert process.returncode == 130, where
            interrupted += 1
    assert interrupted >= 30, "most signals land before the task has failed"


def test_every_tool_has_the_entry_point_its_package_provides() -> None:
    for tool, (module, call) in ENTRY_POINTS.items():
        compile(launcher_text(Path(sys.executable), tool), tool, "exec")
        assert callable(attrgetter(call)(importlib.import_module(module)))
