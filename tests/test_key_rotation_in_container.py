"""Key rotation verified by apt itself, in containers, over HTTP on 127.0.0.1.

Every target's apt accepts a Release signed by two keys when it holds only one of them (old
key only, new key only). The user's story end to end: a bookworm and a xenial client install
by the front page's blocks, pasted as they are (key A; dpkg takes the pasted source file over
without a conffile question), the repository rotates to key B, the clients upgrade during the
overlap, A retires, and they upgrade to a build signed by B alone without a warning; a client
of each that missed the overlap gets one clear apt error, and the page's recovery block mends
it.
"""

from __future__ import annotations

import html
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from releng import key_rotation, keyring_package
from releng.apt import RepoSettings, Repository, settings_for
from releng.digest import file_sha256
from releng.distro import read_targets
from releng.engine import Mount
from releng.gpg import Signer, signer_for
from releng.project import Project
from releng.publish.front_page import write_front_page
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


def page_block(root: Path, block_id: str) -> str:
    """A command block of the repository's front page, as its Copy button copies it."""
    page = (root / "index.html").read_text()
    start = page.index(f'<pre id="{block_id}"')
    return html.unescape(re.sub(r"<[^>]+>", "", page[start : page.index("</pre>", start)]))


SOURCE_FILE = {"bookworm": "/etc/apt/sources.list.d/tally.sources"}
SOURCE_FILE["xenial"] = "/etc/apt/sources.list.d/tally.list"  # one line, as the page says


def _client_steps(block: str, suite: str, *, stale: bool) -> list[tuple[str, str]]:
    """What a client runs: the front page's install block, pasted as it is; during the overlap
    ``apt update && apt upgrade`` (a stale client does nothing); after the retirement the same
    again, where a stale client meets apt's error and then runs the page's recovery block
    (``/sync/recover.sh``, written by the host from the page as it then is)."""
    installed = (
        f"{block}\ntally\ndpkg -S {SOURCE_FILE[suite]}\nls /etc/apt/sources.list.d/ /etc/apt/"
    )
    if not stale:
        return [
            ("install", "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*\n" + installed),
            ("overlap", "apt-get -q update 2>&1 && apt-get -q upgrade -y 2>&1"),
            ("retired", "apt-get -q update 2>&1 && apt-get -q upgrade -y 2>&1 && tally"),
        ]
    return [
        ("install", "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*\n" + installed),
        ("overlap", "true"),  # never upgraded while both keys signed
        (
            "retired",
            # what its user does, as every day
            "apt-get -q update 2>&1 || echo update exit $?\n"
            "apt-get -q upgrade -y 2>&1 || echo upgrade exit $?\ntally\n"
            "echo '-- recover'\nsh -e /sync/recover.sh 2>&1\n"
            "apt-get -q upgrade -y 2>&1 && tally",
        ),
    ]


def _check_install(whole: str, install: str, suite: str) -> None:
    assert _problems(install) == [], whole
    assert f"tally 1.0-1~{suite}" in install, whole
    # dpkg took the pasted source file over: the package owns it, no conffile question
    assert f"tally-archive-keyring: {SOURCE_FILE[suite]}" in install, whole
    assert ".dpkg-" not in install, whole


def _check_client(client: Client, suite: str) -> None:
    whole = f"{suite}:\n{client.output}"
    assert client.code == 0, whole
    _check_install(whole, client.section("install"), suite)
    overlap, good = client.section("overlap"), client.section("retired")
    assert _problems(overlap) == [], whole
    assert "tally-archive-keyring" in overlap, whole  # the keyring package upgraded: A and B
    assert _problems(good) == [], whole
    assert good.rstrip().endswith(f"tally 2.0-1~{suite}"), whole  # the build B alone signed


def _check_stale_client(client: Client, suite: str, new_key: str) -> None:
    whole = f"{suite}, stale:\n{client.output}"
    assert client.code == 0, whole
    _check_install(whole, client.section("install"), suite)
    stale, recovered = client.section("retired").split("-- recover\n", 1)
    # apt names the key it lacks, on a W: or E: line, and ignores the repository's new
    # indexes: the product stays as it was
    assert [
        ln for ln in _problems(stale) if f"NO_PUBKEY {new_key[-16:]}" in ln and ln[:2] in "W:E:"
    ], whole
    assert stale.rstrip().endswith(f"tally 1.0-1~{suite}"), whole
    # the page's recovery block mends it: no warning, the build B alone signed
    assert _problems(recovered) == [], whole
    assert "tally-archive-keyring" in recovered, whole
    assert recovered.rstrip().endswith(f"tally 2.0-1~{suite}"), whole


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
        write_front_page(root, project, url=url)

    publish("1.0-1")
    project = Project.load(rotation_project.root)
    signer = signer_for(project, env, release=True)
    added = keyring_package.add_for_project(
        project, Repository(root, settings_for(project), signer), url=url
    )
    assert sorted(added) == ["bookworm", "xenial"]  # the publish hook
    write_front_page(root, project, url=url)
    first_digest = file_sha256(root / "tally-archive-keyring.gpg")

    def retire() -> None:
        key_rotation.rotate(
            rotation_project,
            env,
            retire=a.fingerprint,
            force=True,
            repo=root,
            url=url,
            scratch=tmp_path / "k2",
        )
        publish("2.0-1")  # signed by B alone; the front page written anew
        recover = page_block(root, "cmd-recover")
        assert first_digest not in recover  # the keys file of now: B alone
        for suite in clients_of.values():
            (tmp_path / "sync" / f"{suite}-stale" / "recover.sh").write_text(recover + "\n")

    host = {  # what the host does once every client has done the step
        "install": lambda: key_rotation.rotate(
            rotation_project, env, add=b.fingerprint, repo=root, url=url, scratch=tmp_path / "k1"
        ),
        "overlap": retire,
        "retired": lambda: None,
    }
    clients = {}
    for distro_id, suite in clients_of.items():
        block = page_block(root, f"cmd-{suite}")
        assert f"SHA256:{first_digest}" in block  # the key file, checked
        for stale in (False, True):
            clients[f"{suite}-stale" if stale else suite] = Client(
                engine,
                base_image(distro_id),
                tmp_path / "sync" / (f"{suite}-stale" if stale else suite),
                _client_steps(block, suite, stale=stale),
            )
    try:
        for step, act in host.items():
            for name, client in clients.items():
                assert client.reached(step), f"{name}: {client.code}\n{client.output}"
            act()
            for client in clients.values():
                client.go(step)
    finally:
        for client in clients.values():
            for step in host:
                client.go(step)
            client.finish()
    assert Project.load(rotation_project.root).config.signing.keys == (b.fingerprint,)
    for suite in clients_of.values():
        _check_client(clients[suite], suite)
        _check_stale_client(clients[f"{suite}-stale"], suite, b.fingerprint)
