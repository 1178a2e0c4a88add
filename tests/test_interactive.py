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
from tests.fixtures.project import REPO_ROOT, git

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


def _interactive(*args: str) -> list[str]:
    return [sys.executable, "-m", "invoke", "-r", str(REPO_ROOT), "interactive", *args]


def _without_terminal(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """``invoke interactive ARGS`` for ``project`` with no terminal on standard input."""
    return subprocess.run(
        _interactive(*args),
        env={**os.environ, "RELENG_ROOT": str(project.root)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_interactive_without_a_terminal_fails_clearly(project_copy: Project) -> None:
    proc = _without_terminal(project_copy, "debian-12-bookworm")
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


def test_interactive_arm64_cross_and_emulated(
    engine: Engine, base_image: Callable[[str], str], project_copy: Project
) -> None:
    """`--arch arm64`: the cross builder (this host's architecture, with the arm64 toolchain
    and what a build would run in its environment) or, `--mode emulated`, the arm64 builder
    itself through qemu. The images are the ones make-package --arch arm64 uses."""
    from releng.images.foreign import ensure_foreign_base_image

    root = project_copy.root
    product = root / "product.toml"
    text = product.read_text()
    product.write_text(
        text.replace('architectures = ["amd64"]', 'architectures = ["amd64", "arm64"]', 1)
    )
    git(root, "commit", "-q", "-am", "amd64 and arm64")
    base_image("debian-12-bookworm")
    project = Project.load(root)
    ensure_foreign_base_image(
        engine, project, project.distro("debian-12-bookworm"), "arm64", env=os.environ, pull=False
    )
    env = {**os.environ, "RELENG_ROOT": str(root), "TERM": "dumb"}
    typed = (
        b'echo "dpkg=[$(dpkg --print-architecture)] host=[$HOST_ARCH] mode=[$BUILD_MODE] '
        b'args=[$DPKG_BUILDPACKAGE_ARGS] cc=[$(command -v aarch64-linux-gnu-gcc)]"; exit 0\n'
    )
    common = ("debian-12-bookworm", "--version", "2026.11.20", "--arch", "arm64")
    code, screen = run_in_pty(_interactive(*common), env, typed)
    assert code == 0, screen
    assert "(builder image, arm64, cross)" in screen, screen
    assert (
        "dpkg=[amd64] host=[arm64] mode=[cross] args=[-B --host-arch=arm64 -Pcross,nocheck] "
        "cc=[/usr/bin/aarch64-linux-gnu-gcc]"
    ) in screen, screen
    code, screen = run_in_pty(_interactive(*common, "--mode", "emulated"), env, typed)
    assert code == 0, screen
    assert "dpkg=[arm64] host=[arm64] mode=[emulated] args=[-B] cc=[" in screen, screen
    leftover = engine.client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={root}"})
    assert leftover == []


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("arm64", "error: architecture arm64 is not in [repositories] architectures of "),
        ("sparc99", "error: unknown architecture 'sparc99': dpkg does not know it"),
    ],
)
def test_interactive_refuses_a_bad_architecture_in_one_line(
    project_copy: Project, arch: str, message: str
) -> None:
    """Before anything else (even the terminal check): nothing is made."""
    proc = _without_terminal(project_copy, "debian-12-bookworm", "--arch", arch)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (Path(project_copy.root) / "out").exists()
