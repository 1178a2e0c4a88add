"""invoke interactive, driven through a pseudo-terminal."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.build import LABEL_PROJECT
from releng.engine import Engine
from releng.project import Project
from tests.fixtures.project import REPO_ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def run_in_pty(
    args: list[str], env: dict[str, str], typed: bytes, *, timeout: float = 300
) -> tuple[int, str]:
    """Run ``args`` with a pty as its terminal, type ``typed`` once it prompts; (exit code, screen)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    screen = b""
    sent = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the other side closed
                    break
                if not chunk:
                    break
                screen += chunk
            if not sent and b"exit to leave" in screen:
                time.sleep(1)  # let the shell start and print its prompt
                os.write(master, typed)
                sent = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, screen.decode("utf-8", "replace")


def test_interactive_shell_has_the_mounts_and_no_seccomp(
    engine: Engine, base_image: Callable[[str], str], project_copy: Project
) -> None:
    base_image("debian-12-bookworm")
    env = {**os.environ, "RELENG_ROOT": str(project_copy.root), "TERM": "dumb"}
    typed = (
        b"echo marker-$((40+2)); grep Seccomp: /proc/self/status; "
        b"ls /opt/tally-distro-packaging; echo releng=[$(ls -A /opt/tally-packaging/.releng)]; exit 3\n"
    )
    code, screen = run_in_pty(
        [
            sys.executable,
            "-m",
            "invoke",
            "-r",
            str(REPO_ROOT),
            "interactive",
            "",
            "--version",
            "2026.11.20",
        ],
        env,
        typed,
    )
    assert "marker-42" in screen, screen
    assert "Seccomp:\t0" in screen or "Seccomp: 0" in screen
    assert "DOCKER_BASE" in screen  # the default distro (the first target) is mounted
    assert "releng=[]" in screen
    assert code == 3
    leftover = engine.client.containers.list(
        all=True, filters={"label": f"{LABEL_PROJECT}={project_copy.root}"}
    )
    assert leftover == []


def test_interactive_without_a_terminal_fails_clearly(project_copy: Project) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO_ROOT), "interactive", "debian-12-bookworm"],
        env={**os.environ, "RELENG_ROOT": str(project_copy.root)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "needs a terminal on standard input" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (Path(project_copy.root) / "out").exists()


def test_interactive_xenial_opens_a_shell_on_16_04(
    engine: Engine, base_image: Callable[[str], str], project_copy: Project
) -> None:
    """The users' own command: `invoke interactive ubuntu-16.04-xenial`."""
    base_image("ubuntu-16.04-xenial")
    env = {**os.environ, "RELENG_ROOT": str(project_copy.root), "TERM": "dumb"}
    typed = b'. /etc/os-release; echo "os=[$VERSION_ID]"; exit 0\n'
    code, screen = run_in_pty(
        [
            sys.executable,
            "-m",
            "invoke",
            "-r",
            str(REPO_ROOT),
            "interactive",
            "ubuntu-16.04-xenial",
            "--version",
            "2026.11.20",
        ],
        env,
        typed,
    )
    assert "os=[16.04]" in screen, screen
    assert code == 0, screen
