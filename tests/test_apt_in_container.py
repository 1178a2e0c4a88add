"""Verified by apt itself: real apt in a container of every Debian target, over HTTP on 127.0.0.1.

One repository is built per session from the demo product's real builds (via
``update_repos``, as ``invoke update-repos`` does) and served for every test;
the tampering, wrong-key and concurrent-publish tests use small repositories
of their own beside it, under the same server.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from releng.apt import RepoSettings, Repository, check_repository, update_repos
from releng.distro import read_targets
from releng.engine import Mount
from releng.gpg import Signer
from releng.project import Project
from releng.version import Version
from tests.apt_debs import make_deb
from tests.fixtures.gpg import TestKey, make_key
from tests.fixtures.project import REPO_ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TARGETS = read_targets(REPO_ROOT)
VERSION = "1.0.0"


@dataclass(frozen=True)
class Served:
    www: Path
    url: str
    key: TestKey
    signer: Signer


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A quiet threaded HTTP server on 127.0.0.1 for the session, serving ``www``."""
    www = tmp_path_factory.mktemp("apt-www")
    # RSA: xenial's apt verifies with gpgv 1.4, which knows no ed25519 (tested below).
    key = make_key(tmp_path_factory.mktemp("apt-key"), name="releng apt-in-container key", rsa=True)
    signer = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=key.passphrase)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(www))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(www, f"http://127.0.0.1:{server.server_address[1]}", key, signer)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def demo_repo(served: Served, demo_build: Callable[..., Path]) -> Path:
    """The demo product's release builds for every target, in ``www/demo`` via update_repos."""
    builds = [demo_build(distro, VERSION) for distro in TARGETS]
    project = Project.load(builds[0].parents[2])
    repo = served.www / "demo"
    results = update_repos(project, served.signer, version=Version.parse(VERSION), repo=repo)
    assert sorted(results) == sorted(TARGETS)
    report = check_repository(repo)
    assert report.problems == [] and report.warnings == []
    return repo


def apt_script(url: str, suite: str, *, then: str = "") -> str:
    """Only our repository in the container's sources; update; then ``then``."""
    return f"""
set -e
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
cat > /etc/apt/sources.list.d/tally.sources <<EOF
Types: deb
URIs: {url}
Suites: {suite}
Components: main
Signed-By: /keys/tally-archive-keyring.gpg
EOF
apt-get update 2>&1
{then}
"""


def run_apt(engine: Any, image: str, keyring: Path, script: str) -> tuple[int, str]:
    keys = keyring.parent
    result = engine.run(
        image,
        ["sh", "-c", script],
        mounts=[Mount(source=keys, target="/keys")],
        network="host",
    )
    return result.exit_code, result.output


def warnings_and_errors(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith(("W:", "E:", "Err:"))]


def keyring_dir(tmp_path: Path, keyring: Path) -> Path:
    d = tmp_path / "keys"
    d.mkdir(exist_ok=True)
    shutil.copy(keyring, d / "tally-archive-keyring.gpg")
    return d / "tally-archive-keyring.gpg"


@pytest.mark.parametrize("distro_id", TARGETS)
def test_apt_updates_without_warnings_installs_and_runs_the_demo(  # noqa: PLR0917 (fixtures)
    distro_id: str,
    demo_repo: Path,
    served: Served,
    engine: Any,
    base_image: Callable[[str], str],
    tmp_path: Path,
) -> None:
    project = Project.load(REPO_ROOT)
    codename = project.distro(distro_id).codename
    keyring = keyring_dir(tmp_path, demo_repo / "tally-archive-keyring.gpg")
    for suite in (codename, f"{codename}-1.0"):  # the release line suite too
        script = apt_script(
            f"{served.url}/demo",
            suite,
            then="apt-get install -y --no-install-recommends tally 2>&1\necho one two | tally -w",
        )
        code, output = run_apt(engine, base_image(distro_id), keyring, script)
        assert code == 0, output
        assert warnings_and_errors(output) == [], output
        assert output.rstrip().splitlines()[-1].strip() == "2", output


@pytest.fixture
def small_repo(served: Served, tmp_path: Path) -> Callable[[str, Signer], Path]:
    """``small_repo(name, signer)``: a one-package repository at www/<name>, signed by signer."""

    def make(name: str, signer: Signer) -> Path:
        root = served.www / name
        settings = RepoSettings(name="tally", origin="tests", label="tests")
        Repository(root, settings, signer).include(
            ["bookworm", "xenial"], [make_deb(tmp_path, "hello", "1.0-1")]
        )
        return root

    return make


BOOKWORM = "debian-12-bookworm"
XENIAL = "ubuntu-16.04-xenial"


def test_xenial_apt_refuses_an_ed25519_key_and_repo_check_warns_of_it(
    served: Served,
    small_repo: Callable[[str, Signer], Path],
    engine: Any,
    base_image: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Why the development key is RSA: xenial's gpgv 1.4 cannot check an ed25519 signature."""
    key = make_key(tmp_path / "gnupg", name="releng ed25519 key", passphrase=None)
    root = small_repo("ed25519", Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None))
    keyring = keyring_dir(tmp_path, root / "tally-archive-keyring.gpg")
    script = apt_script(f"{served.url}/ed25519", "xenial", then="apt-get install -y hello 2>&1")
    code, output = run_apt(engine, base_image(XENIAL), keyring, script)
    assert "The following signatures were invalid" in output, output
    assert "is not signed" in output, output
    assert code != 0, output
    assert "unauthenticated packages" in output, output
    report = check_repository(root)
    assert report.problems == []
    assert any(
        w.startswith("dists/xenial is signed with an EdDSA (ed25519) key") for w in report.warnings
    ), report.warnings
    assert not any("dists/bookworm" in w for w in report.warnings), report.warnings


def test_apt_refuses_a_tampered_packages_file(
    served: Served,
    small_repo: Callable[[str, Signer], Path],
    engine: Any,
    base_image: Callable[[str], str],
    tmp_path: Path,
) -> None:
    root = small_repo("tampered", served.signer)
    index_dir = root / "dists/bookworm/main/binary-amd64"
    for f in [*index_dir.glob("Packages*"), *(index_dir / "by-hash/SHA256").iterdir()]:
        data = f.read_bytes()
        f.unlink()  # a new inode: the by-hash file and the plain name are hard links
        f.write_bytes(
            data.replace(b"Version: 1.0-1", b"Version: 9.9-9")
            if f.name == "Packages"
            else data + b"\0"
        )
    keyring = keyring_dir(tmp_path, root / "tally-archive-keyring.gpg")
    code, output = run_apt(
        engine, base_image(BOOKWORM), keyring, apt_script(f"{served.url}/tampered", "bookworm")
    )
    assert code != 0, output
    assert "Hash Sum mismatch" in output or "File has unexpected size" in output, output


def test_apt_refuses_a_repository_signed_by_another_key(  # noqa: PLR0917 (fixtures)
    served: Served,
    small_repo: Callable[[str, Signer], Path],
    other_gpg_key: TestKey,
    engine: Any,
    base_image: Callable[[str], str],
    tmp_path: Path,
) -> None:
    other = Signer(
        gnupghome=other_gpg_key.home,
        key=other_gpg_key.fingerprint,
        passphrase=other_gpg_key.passphrase,
    )
    root = small_repo("otherkey", other)
    # The client trusts the real key; the repository is signed by another one.
    keys = tmp_path / "keys"
    keys.mkdir()
    keyring = served.key.public_keyring(keys / "tally-archive-keyring.gpg")
    code, output = run_apt(
        engine, base_image(BOOKWORM), keyring, apt_script(f"{served.url}/otherkey", "bookworm")
    )
    assert code != 0, output
    assert "NO_PUBKEY" in output or "not signed" in output, output
    assert any(ln.startswith(("E:", "W:")) for ln in output.splitlines()), output
    assert (root / "dists/bookworm/InRelease").is_file()


def fast_signer(home: Path) -> Signer:
    """A key without a passphrase: publishes take ~0.1 s, not gpg-agent's ~0.5 s, so the
    20 publishes below come fast and hard against apt's update loop."""
    key = make_key(home, name="releng busy repo key", passphrase=None)
    return Signer(gnupghome=home, key=key.fingerprint, passphrase=None)


def test_apt_update_loop_sees_no_mismatch_while_20_publishes_happen(
    served: Served, engine: Any, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    root = served.www / "busy"
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    # Five by-hash generations: a client that stalls for a few publishes (a loaded CI box)
    # between InRelease and its index still finds it.
    settings = RepoSettings(name="tally", origin="tests", label="tests", byhash_keep=5)
    repo = Repository(root, settings, fast_signer(home))
    repo.include(["bookworm"], [make_deb(tmp_path, "busy0", "1.0")])
    keyring = keyring_dir(tmp_path, root / "tally-archive-keyring.gpg")
    control = tmp_path / "control"
    control.mkdir()
    loop = """
touch /control/started
n=0
while [ ! -e /control/stop ]; do
  n=$((n+1))
  apt-get update 2>&1 | sed "s/^/[$n] /"
  echo $n > /control/count
done
echo "updates: $n"
"""
    script = apt_script(f"{served.url}/busy", "bookworm", then=loop)
    outcome: dict[str, Any] = {}

    def client() -> None:
        outcome["run"] = engine.run(
            base_image(BOOKWORM),
            ["sh", "-c", script],
            mounts=[
                Mount(source=keyring.parent, target="/keys"),
                Mount(source=control, target="/control", read_only=False),
            ],
            network="host",
        )

    thread = threading.Thread(target=client)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not (control / "started").exists() and thread.is_alive():
            assert time.monotonic() < deadline, "the apt container did not start"
            time.sleep(0.1)
        count = control / "count"
        for i in range(1, 21):
            repo.include(["bookworm"], [make_deb(tmp_path, f"busy{i}", "1.0")])
            # Pace the publishes so that they interleave with at least ten apt-get updates.
            while i % 2 == 0 and thread.is_alive():
                done = int(count.read_text() or 0) if count.exists() else 0
                if done >= i // 2:
                    break
                assert time.monotonic() < deadline + 300, "apt-get update stopped making progress"
                time.sleep(0.02)
    finally:
        (control / "stop").touch()
        thread.join(timeout=300)
    result = outcome["run"]
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    bad = [
        ln
        for ln in lines
        if "mismatch" in ln.lower() or "signature" in ln.lower() or "] E:" in ln or "] W:" in ln
    ]
    assert bad == [], "\n".join(bad)
    updates = int(lines[-1].split(":")[1])
    print(f"{updates} apt-get update runs overlapped 20 publishes")
    assert updates >= 10, result.output
    assert "Package: busy20\n" in (root / "dists/bookworm/main/binary-amd64/Packages").read_text()


def _oracle_repositories(root: Path, signer: Signer, tmp_path: Path) -> dict[str, bool]:
    """Repositories made with settings that product.toml once let through (its checks now
    refuse them, so Repository is called directly) and by killed publishers: name -> whether
    it is one that apt must reject (a repository releng must never make)."""
    now = dt.datetime.now(dt.UTC)
    cases: dict[str, tuple[dict[str, Any], dt.datetime, bool]] = {
        "good": ({}, now, False),
        "one-stream-xz": ({"index_xz": "one-stream"}, now, False),  # apt fetches the .xz
        "name-newline": ({"name": "tally\n", "origin": "tally\n", "label": "tally\n"}, now, True),
        "label-injects-a-field": ({"label": "x\nSuite: evil"}, now, True),
        "origin-newline": ({"origin": "a\nb"}, now, True),
        "components-with-a-space": ({"components": ("main contrib",)}, now, True),
        "byhash-keep-0": ({"byhash_keep": 0}, now, True),
        "byhash-keep-negative": ({"byhash_keep": -1}, now, True),
        "expired": ({"valid_for_days": 1}, now - dt.timedelta(days=3), True),
        "dated-tomorrow": ({}, now + dt.timedelta(days=1), True),
    }
    bad: dict[str, bool] = {}
    for name, (overrides, when, must_fail) in cases.items():
        fields: dict[str, Any] = {"name": "tally", "origin": "tests", "label": "tests"}
        settings = RepoSettings(**{**fields, **overrides})
        repo = Repository(root / name, settings, signer, clock=lambda when=when: when)
        repo.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0")])
        repo.include(["bookworm"], [make_deb(tmp_path, "hello", "2.0")])  # by-hash pruned
        bad[name] = must_fail
    return bad


def test_repo_check_says_all_good_only_when_apt_updates_without_a_warning(
    served: Served,
    engine: Any,
    base_image: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """apt is the oracle: every repository the hardening cases produce, and those killed
    publishers leave (tests/test_apt_crash.py), goes through check-repo and through
    `apt-get update` in a bookworm container; "all good" must mean apt prints no W:/E:."""
    from tests.test_apt_crash import crash_rounds

    root = served.www / "oracle"
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    signer = fast_signer(home)
    must_fail = _oracle_repositories(root, signer, tmp_path)
    crash_key = make_key(tmp_path / "crash-gnupg", name="releng crash key", passphrase=None)
    for seed in (1, 2):
        crash_rounds(root / f"crashed-{seed}", crash_key, tmp_path, seed=seed, rounds=4)
        must_fail[f"crashed-{seed}"] = False
    keys = tmp_path / "keys"
    keys.mkdir()
    script = ["set -e", "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*"]
    reports = {}
    for name in must_fail:
        keyring = next((root / name).glob("*-archive-keyring.gpg"))
        shutil.copy(keyring, keys / f"{name}.gpg")
        reports[name] = check_repository(root / name, keyring=keyring)
        for suite in sorted(p.name for p in (root / name / "dists").iterdir()):
            script += [
                f"echo '=== {name} {suite}'",
                "rm -rf /var/lib/apt/lists/*",
                "cat > /etc/apt/sources.list.d/oracle.sources <<EOF",
                f"Types: deb\nURIs: {served.url}/oracle/{name}\nSuites: {suite}\n"
                f"Components: main\nSigned-By: /keys/{name}.gpg",
                "EOF",
                "apt-get update 2>&1 || true",
            ]
    result = engine.run(
        base_image(BOOKWORM),
        ["sh", "-c", "\n".join(script)],
        mounts=[Mount(source=keys, target="/keys")],
        network="host",
    )
    assert result.exit_code == 0, result.output
    apt_says: dict[str, list[str]] = {name: [] for name in must_fail}
    for block in result.output.split("=== ")[1:]:
        apt_says[block.split()[0]] += warnings_and_errors(block)
    for name, failing in must_fail.items():
        problems = reports[name].problems
        print(f"{name}: check-repo {len(problems)} problem(s); apt: {apt_says[name]}")
        if not problems:  # check-repo: all good
            assert apt_says[name] == [], (name, apt_says[name])
        # check-repo may be stricter than apt (an injected field apt happens to ignore is still
        # refused), never laxer; and it passes what releng makes, killed or not.
        assert bool(problems) == failing, (name, problems, apt_says[name])


def test_an_architecture_dropped_from_product_toml_stays_served_until_removed(
    served: Served,
    engine: Any,
    base_image: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Issue 23.5: removing arm64 from [repositories] architectures silently stopped serving
    arm64 ("Unable to locate package") while list-packages still listed it. Now a suite keeps
    serving what it holds; new arm64 packages are refused; remove-packages drops it."""
    from releng.apt import lifecycle
    from releng.apt.lifecycle import Spec
    from releng.errors import RepoError

    root = served.www / "dropped-arch"
    both = RepoSettings(
        name="tally", origin="tests", label="tests", architectures=("amd64", "arm64")
    )
    Repository(root, both, served.signer).include(
        ["bookworm"],
        [
            make_deb(tmp_path, "hello", "1.0-1"),
            make_deb(tmp_path, "armtool", "1.0-1", arch="arm64"),
        ],
    )
    amd64_only = both._replace(architectures=("amd64",))
    repository = Repository(root, amd64_only, served.signer)
    repository.publish()
    release = (root / "dists/bookworm/Release").read_text()
    assert "Architectures: amd64 arm64" in release
    assert check_repository(root).problems == []
    keyring = keyring_dir(tmp_path, root / "tally-archive-keyring.gpg")
    then = "dpkg --add-architecture arm64 && apt-get update 2>&1 && apt-get download armtool:arm64"
    code, output = run_apt(
        engine,
        base_image(BOOKWORM),
        keyring,
        apt_script(f"{served.url}/dropped-arch", "bookworm", then=then),
    )
    assert code == 0, output
    assert "Unable to locate package" not in output
    with pytest.raises(RepoError, match="arm64"):
        repository.include(
            ["bookworm"], [make_deb(tmp_path / "new", "armtool", "1.1-1", arch="arm64")]
        )
    lifecycle.remove(repository, suite="bookworm", specs=[Spec.parse("armtool")])
    assert "Architectures: amd64\n" in (root / "dists/bookworm/Release").read_text()
    assert check_repository(root).problems == []
