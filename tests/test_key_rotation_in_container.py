"""Key rotation verified by apt itself, in containers, over HTTP on 127.0.0.1.

Every target's apt accepts a Release signed by two keys when it holds only one of them (old
key only, new key only). The user's story end to end: a bookworm and a xenial client install
by the published instructions (key A), the repository rotates to key B, the clients upgrade
during the overlap, A retires, and they upgrade to a build signed by B alone without a
warning; a client that missed the overlap gets one clear apt error.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from releng import key_rotation, keyring_package
from releng.apt import RepoSettings, Repository, settings_for
from releng.distro import read_targets
from releng.engine import Mount
from releng.gpg import Signer, signer_for
from releng.project import Project
from tests.apt_debs import make_deb
from tests.fixtures.gpg import TestKey, make_key
from tests.fixtures.http import StaticServer
from tests.fixtures.project import REPO_ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TARGETS = read_targets(REPO_ROOT)
STEP_TIMEOUT = 900  # seconds the host or a client waits for the other's step


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestKey, TestKey]:
    """Keys A and B (RSA: xenial's apt verifies with GnuPG 1.4) in one GNUPGHOME."""
    home = tmp_path_factory.mktemp("rotation-gnupg")
    return (
        make_key(home, name="tally archive key A", passphrase=None, rsa=True),
        make_key(home, name="tally archive key B", passphrase=None, rsa=True),
    )


def _problems(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith(("W:", "E:", "Err:"))]


def _sources(url: str, suite: str, keyring: str) -> str:
    return (
        "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*\n"
        "cat > /etc/apt/sources.list.d/tally.sources <<EOF\n"
        f"Types: deb\nURIs: {url}\nSuites: {suite}\nComponents: main\nSigned-By: {keyring}\n"
        "EOF\n"
    )


@pytest.mark.parametrize("distro_id", TARGETS)
def test_every_target_accepts_a_release_signed_by_two_keys_holding_either(  # noqa: PLR0917 (fixtures)
    distro_id: str,
    rsa_keys: tuple[TestKey, TestKey],
    http_server: StaticServer,
    engine: Any,
    base_image: Callable[[str], str],
    tmp_path: Path,
) -> None:
    a, b = rsa_keys
    codename = Project.load(REPO_ROOT).distro(distro_id).codename
    signer = Signer(gnupghome=a.home, key=[a.fingerprint, b.fingerprint], passphrase=None)
    settings = RepoSettings(name="tally", origin="tests", label="tests", sync_before_switch=False)
    root = http_server.root / "repo"
    Repository(root, settings, signer).include([codename], [make_deb(tmp_path, "hello", "1.0-1")])
    keys = tmp_path / "keys"
    keys.mkdir()
    a.public_keyring(keys / "a.gpg")
    b.public_keyring(keys / "b.gpg")
    script = "set -e\n" + "".join(
        _sources(f"{http_server.url}/repo", codename, f"/keys/{name}.gpg")
        + f"rm -rf /var/lib/apt/lists/*\necho '== key {name} only'\napt-get update 2>&1\n"
        "apt-get install -y --no-install-recommends hello 2>&1\nhello\napt-get remove -y hello\n"
        for name in ("a", "b")
    )
    result = engine.run(
        base_image(distro_id),
        ["sh", "-c", script],
        mounts=[Mount(source=keys, target="/keys")],
        network="host",
    )
    assert result.exit_code == 0, result.output
    assert _problems(result.output) == [], result.output
    assert result.output.count("hello 1.0-1") == 2, result.output


class Client:
    """A container that runs ``steps`` in order, waiting for the host between them (files in
    a mounted directory: ``<step>.done`` from the client, ``<step>.go`` from the host)."""

    def __init__(self, engine: Any, image: str, sync: Path, steps: list[tuple[str, str]]) -> None:
        sync.mkdir(parents=True)
        body = ["set -e", "wait_for() { while [ ! -f /sync/$1.go ]; do sleep 0.2; done; }"]
        for name, commands in steps:
            body += [f"echo '== {name}'", commands, f"touch /sync/{name}.done", f"wait_for {name}"]
        self.sync = sync
        self.output = ""
        self.code: int | None = None

        def run() -> None:
            try:
                result = engine.run(
                    image,
                    ["sh", "-c", "\n".join(body)],
                    mounts=[Mount(source=sync, target="/sync", read_only=False)],
                    network="host",
                )
                self.code, self.output = result.exit_code, result.output
            except Exception as exc:
                self.code, self.output = -1, repr(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def reached(self, step: str) -> bool:
        """Wait until the client has done ``step`` (False: it ended before)."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            if (self.sync / f"{step}.done").exists():
                return True
            if not self.thread.is_alive():
                return False
            time.sleep(0.2)
        return False

    def go(self, step: str) -> None:
        (self.sync / f"{step}.go").touch()

    def finish(self) -> None:
        self.thread.join(STEP_TIMEOUT)

    def section(self, step: str) -> str:
        after = self.output.split(f"== {step}\n", 1)[-1]
        return after.split("\n== ", 1)[0]


@pytest.fixture
def rotation_project(
    make_project: Callable[[str], Project], rsa_keys: tuple[TestKey, TestKey]
) -> Iterator[Project]:
    a, _ = rsa_keys
    yield make_project(f'[signing]\nkey = "{a.fingerprint}"\ngnupghome = "{a.home}"\n')


KEYRING = "/usr/share/keyrings/tally-archive-keyring.gpg"
# A client that never upgraded during the overlap: key A only, apt lists of its own.
STALE_APT = (
    "-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/etc/stale.d "
    "-o Dir::State::Lists=/var/lib/stale/lists"
)


def _client_steps(url: str, suite: str) -> list[tuple[str, str]]:
    """What a client runs: install by the published instructions (and keep a copy of key A
    for the stale client), upgrade during the overlap, upgrade after it, then the stale one."""
    stale = (
        "mkdir -p /etc/stale.d /var/lib/stale/lists/partial\n"
        "chown _apt /var/lib/stale/lists/partial\n"
        + _sources(url, suite, "/root/key-a-only.gpg")
        .replace("rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*\n", "")
        .replace("/etc/apt/sources.list.d/tally.sources", "/etc/stale.d/tally.sources")
        # xenial's apt 1.2 only warns on update; it refuses at install.
        + f"(apt-get -q update {STALE_APT} 2>&1 && "
        f"apt-get -q install -y --reinstall tally {STALE_APT} 2>&1) || echo stale client exit $?"
    )
    instructions = keyring_package.install_instructions(
        name="tally", url=url, suite=suite, components=["main"]
    )
    return [
        (
            "install",
            "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*\n"
            + instructions.replace("apt-get ", "apt-get -q ")
            + f"cp {KEYRING} /root/key-a-only.gpg\ntally",
        ),
        ("overlap", "apt-get -q update 2>&1 && apt-get -q upgrade -y 2>&1"),
        (
            "retired",
            "apt-get -q update 2>&1 && apt-get -q upgrade -y 2>&1 && tally\n"
            f"echo '-- stale'\n{stale}",
        ),
    ]


def _check_client(client: Client, suite: str, new_key: str) -> None:
    whole = f"{suite}:\n{client.output}"
    assert client.code == 0, whole
    install, overlap = client.section("install"), client.section("overlap")
    good, stale = client.section("retired").split("-- stale\n", 1)
    assert _problems(install) == [], whole
    assert f"tally 1.0-1~{suite}" in install, whole
    assert _problems(overlap) == [], whole
    assert "tally-archive-keyring" in overlap, whole  # the keyring package upgraded: A and B
    assert _problems(good) == [], whole
    assert good.rstrip().endswith(f"tally 2.0-1~{suite}"), whole  # the build B alone signed
    # The stale client: apt names the key it lacks and refuses the repository.
    assert "stale client exit" in stale, whole
    assert any(ln.startswith("E:") for ln in stale.splitlines()), whole
    assert f"NO_PUBKEY {new_key[-16:]}" in stale, whole


def test_clients_follow_a_rotation_from_key_a_to_key_b(  # noqa: PLR0917 (fixtures)
    rotation_project: Project,
    rsa_keys: tuple[TestKey, TestKey],
    http_server: StaticServer,
    engine: Any,
    base_image: Callable[[str], str],
    tmp_path: Path,
) -> None:
    a, b = rsa_keys
    env = dict(os.environ)
    root = http_server.root / "repo"
    url = f"{http_server.url}/repo"
    clients_of = {"debian-12-bookworm": "bookworm", "ubuntu-16.04-xenial": "xenial"}

    def publish(version: str) -> None:
        project = Project.load(rotation_project.root)
        repository = Repository(root, settings_for(project), signer_for(project, env, release=True))
        for suite in clients_of.values():
            deb = make_deb(tmp_path / suite, "tally", f"{version}~{suite}")
            repository.include([suite], [deb])

    publish("1.0-1")
    project = Project.load(rotation_project.root)
    signer = signer_for(project, env, release=True)
    added = keyring_package.add_for_project(
        project, Repository(root, settings_for(project), signer), url=url
    )
    assert sorted(added) == ["bookworm", "xenial"]  # the publish hook
    host = {  # what the host does once every client has done the step
        "install": lambda: key_rotation.rotate(
            rotation_project, env, add=b.fingerprint, repo=root, url=url, scratch=tmp_path / "k1"
        ),
        "overlap": lambda: (
            key_rotation.rotate(
                rotation_project,
                env,
                retire=a.fingerprint,
                force=True,
                repo=root,
                url=url,
                scratch=tmp_path / "k2",
            ),
            publish("2.0-1"),  # signed by B alone
        ),
        "retired": lambda: None,
    }
    clients = {
        suite: Client(
            engine, base_image(distro_id), tmp_path / "sync" / suite, _client_steps(url, suite)
        )
        for distro_id, suite in clients_of.items()
    }
    try:
        for step, act in host.items():
            for suite, client in clients.items():
                assert client.reached(step), f"{suite}: {client.code}\n{client.output}"
            act()
            for client in clients.values():
                client.go(step)
    finally:
        for client in clients.values():
            for step in host:
                client.go(step)
            client.finish()
    assert Project.load(rotation_project.root).config.signing.keys == (b.fingerprint,)
    for suite, client in clients.items():
        _check_client(client, suite, b.fingerprint)
