"""The README's two commands on a stock Debian 12, and scripts/setup's refusals.

The container tests start a stock ``debian:bookworm`` (the image the project
bootstraps: no pyenv, no pip, not even python3), mount the engine's socket and a
fresh copy of this checkout at the same path (so the paths releng gives the
engine resolve on the host), and run the README's commands verbatim in new
login shells. One container serves the module: the first command from nothing,
then the second command's set-up part, then the rebuild of a broken venv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from releng import lockfile
from tests.fixtures.docker import DOWNLOAD_CACHE_VOLUMES, PRIME_APT_ARCHIVES, SAVE_APT_ARCHIVES
from tests.fixtures.project import REPO_ROOT, git

README = (REPO_ROOT / "README.md").read_text()
FIRST = "./scripts/setup && invoke make-package debian-12-bookworm"
SECOND = "./scripts/setup && nox -s tests"
MARKER = ".venv/.releng-setup-complete"
HOST_CA = "/run/releng-host-ca.crt"


def test_readme_opens_with_the_two_commands() -> None:
    assert README.split("\n\n")[1].splitlines() == [f"    {FIRST}", f"    {SECOND}"]


def fresh_clone(dest: Path) -> Path:
    """This checkout's working tree as a fresh clone would have it (uncommitted edits included)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (p.decode() for p in listed)):
        src = REPO_ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel, follow_symlinks=False)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "fresh clone")
    return dest


@pytest.fixture(scope="module")
def stock_bookworm(docker_client: Any, base_image: Any) -> Iterator[tuple[Any, Path]]:
    """A running stock debian:bookworm container with the socket and a fresh clone mounted."""
    image = base_image("debian-12-bookworm")
    checkout = Path(tempfile.mkdtemp(prefix="releng-stock-"))
    checkout.chmod(0o755)  # as `git clone` makes it: the unprivileged build user reads it
    fresh_clone(checkout)
    sock = "/var/run/docker.sock"
    volumes = {sock: {"bind": sock}, str(checkout): {"bind": str(checkout)}}
    volumes |= DOWNLOAD_CACHE_VOLUMES
    env = {}
    # A network that intercepts TLS needs its CA, as this machine's pip does (PIP_CERT);
    # it is mounted apart from /etc/ssl, which the image's ca-certificates will own.
    if ca := os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE"):
        volumes[ca] = {"bind": HOST_CA, "mode": "ro"}
        env = {"PIP_CERT": HOST_CA, "SSL_CERT_FILE": HOST_CA}
    container = docker_client.containers.run(
        image,
        ["sleep", "infinity"],
        detach=True,
        init=True,
        volumes=volumes,
        environment=env,
        working_dir=str(checkout),
        labels={"org.releng.test": "stock-bookworm"},
    )
    try:
        container.exec_run(["sh", "-c", PRIME_APT_ARCHIVES])
        yield container, checkout
    finally:
        container.exec_run(["sh", "-c", SAVE_APT_ARCHIVES])
        container.remove(force=True)
        shutil.rmtree(checkout, ignore_errors=True)


def shell(container: Any, checkout: Path, command: str) -> tuple[int, str]:
    """Run COMMAND in a new login shell in the checkout, as a user typing it would."""
    code, output = container.exec_run(
        ["bash", "-lc", f"cd {checkout} && {command}"], environment={"CI": "true"}
    )
    return code, output.decode(errors="replace")


@pytest.mark.docker
@pytest.mark.slow
def test_readme_first_command_builds_the_demo_on_stock_bookworm(
    stock_bookworm: tuple[Any, Path],
) -> None:
    container, checkout = stock_bookworm
    assert shell(container, checkout, "command -v python3 pip pip3 invoke nox")[0] != 0

    code, output = shell(container, checkout, FIRST)

    assert code == 0, output[-5000:]
    debs = list(checkout.glob("out/*/debian-12-bookworm/tally-nightly_*.deb"))
    assert debs, output[-3000:]
    # invoke and nox resolve to the venv's in a new shell; Debian's Python stays without pip.
    code, where = shell(
        container, checkout, "command -v invoke nox && readlink -f .venv/bin/python"
    )
    assert code == 0, where
    assert where.split() == ["/usr/local/bin/invoke", "/usr/local/bin/nox", "/usr/bin/python3.11"]
    assert shell(container, checkout, "/usr/bin/python3 -m pip --version")[0] != 0


@pytest.mark.docker
@pytest.mark.slow
def test_readme_second_command_installs_the_test_session(
    stock_bookworm: tuple[Any, Path],
) -> None:
    container, checkout = stock_bookworm
    setup_part = SECOND.replace("nox -s tests", "nox --install-only -s tests")

    code, output = shell(container, checkout, setup_part)

    assert code == 0, output[-5000:]
    listing = "import importlib.metadata as m; print(*(f'{d.name}=={d.version}' for d in m.distributions()))"
    code, installed = shell(container, checkout, f'.nox/tests/bin/python -c "{listing}"')
    assert code == 0, installed
    locked = lockfile.pins(checkout / lockfile.LOCK)
    names = set()
    for line in installed.split():
        name, _, version = line.partition("==")
        name = re.sub(r"[-_.]+", "-", name).lower()
        names.add(name)
        if name != "releng":
            assert version in locked.get(name, set()), f"{line} is not the locked version"
    assert {"pytest", "moto", "docker", "releng"} <= names


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (f"rm {MARKER}", "an earlier setup was cut short"),
        (f"sed -i '1s/.*/python \\/usr\\/bin\\/python3.13 3.13.1/' {MARKER}", "another Python"),
    ],
)
def test_setup_rebuilds_a_broken_or_foreign_venv(
    stock_bookworm: tuple[Any, Path], damage: str, why: str
) -> None:
    container, checkout = stock_bookworm
    assert shell(container, checkout, damage)[0] == 0

    code, output = shell(container, checkout, "./scripts/setup && invoke --list")

    assert code == 0, output[-3000:]
    assert "setup: rebuilding .venv" in output, why
    assert "make-package" in output
    assert (checkout / MARKER).read_text().startswith("python /usr/bin/python3.11 ")


def run_setup(path_tools: list[str], tmp: Path, *, user: int | None = None) -> Any:
    """scripts/setup with a PATH of only PATH_TOOLS (symlinked), optionally as another user."""
    bindir = tmp / "bin"
    bindir.mkdir()
    for tool in path_tools:
        if found := shutil.which(tool):
            (bindir / tool).symlink_to(found)
    (tmp / "scripts").mkdir()
    shutil.copy2(REPO_ROOT / "scripts" / "setup", tmp / "scripts" / "setup")
    for path in (tmp, bindir, tmp / "scripts"):
        path.chmod(0o755)
    prefix = (
        []
        if user is None
        else ["/usr/bin/setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    )
    return subprocess.run(
        [*prefix, "/bin/bash", str(tmp / "scripts" / "setup")],
        env={"PATH": str(bindir), "HOME": str(tmp)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
def world_readable_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="releng-setup-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_setup_without_apt_says_what_it_needs(world_readable_tmp: Path) -> None:
    result = run_setup(["dirname", "id"], world_readable_tmp)
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "error: scripts/setup needs a Debian or Ubuntu host (apt-get and dpkg); on another "
        "system install the packages listed in scripts/setup and releng from "
        "requirements/lock.txt by hand"
    ]


def test_setup_without_root_or_sudo_says_what_it_needs(world_readable_tmp: Path) -> None:
    nobody = 65534 if os.geteuid() == 0 else None  # a non-root runner is that user already
    result = run_setup(["dirname", "id", "apt-get", "dpkg"], world_readable_tmp, user=nobody)
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: scripts/setup needs root or sudo"), result.stderr
