"""verify-package: a user checks a package against its rebuild attestation, over HTTP
from 127.0.0.1, with nothing on disk but the rebuilder's public key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from releng.apt import include, settings_for
from releng.gpg import Signer, armored
from releng.rebuild import write_attestations
from releng.rebuild.check import NotVerified, verify_package
from tests.fixtures.gpg import TestKey, make_key
from tests.fixtures.http import StaticServer
from tests.fixtures.project import REPO_ROOT
from tests.rebuild_helpers import Rebuilt

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@dataclass(frozen=True)
class Published:
    repo: Path  # a repository with attestations/ beside its pool
    rebuilt: Rebuilt
    package: str  # NAME=VERSION of the demo's main package
    pool_path: str


@pytest.fixture(scope="module")
def published(rebuilt_demo: Rebuilt, tmp_path_factory: pytest.TempPathFactory) -> Published:
    base = tmp_path_factory.mktemp("verify-package")
    rebuilt = rebuilt_demo  # shared with test_rebuild.py: one rebuild per session
    archive = make_key(base / "archive-gnupg", name="releng test archive", passphrase=None)
    signer = Signer(gnupghome=archive.home, key=archive.fingerprint, passphrase=None)
    repo = base / "repo"
    changes = next(rebuilt.build_dir.glob("*_amd64.changes"))
    include(repo, settings_for(rebuilt.project), signer, suites=["bookworm"], paths=[changes])
    written = write_attestations(repo, [rebuilt.build_dir])
    debs = sorted(rebuilt.build_dir.glob("*.deb"))
    assert len(written) == len(debs)
    index = json.loads((repo / "attestations" / "index.json").read_text())["packages"]
    main = next(e for e in index if e["package"] == "tally")
    return Published(repo, rebuilt, f"tally={main['version']}", main["path"])


@pytest.fixture
def served(published: Published, http_server: StaticServer) -> StaticServer:
    shutil.copytree(published.repo, http_server.root, dirs_exist_ok=True)
    return http_server


@pytest.fixture
def keyring(published: Published, tmp_path: Path) -> Path:
    """All the user has on disk: the rebuilder's public key (armored, as it is published)."""
    from releng.gpg import Signer

    key = published.rebuilt.signer
    assert isinstance(key, Signer)
    path = tmp_path / "empty-disk" / "rebuilder.asc"
    path.parent.mkdir()
    path.write_bytes(armored(key.public_keys()))
    return path


def run_task(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "RELENG_ROOT": str(REPO_ROOT)},
        check=False,
        timeout=120,
    )


def test_a_good_package_is_verified_over_http(
    published: Published, served: StaticServer, keyring: Path
) -> None:
    result = run_task(
        "verify-package", published.package, "--repo", served.url, "--keyring", str(keyring)
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    fingerprint = published.rebuilt.signer.fingerprint
    assert lines[0].startswith("verified: tally_1.0.0-")
    assert f"by releng test rebuilder <tests@releng.invalid> ({fingerprint}) on 20" in lines[0]
    assert f"/{published.pool_path}" in served.requests  # the package itself was fetched
    # A downloaded .deb file checks the same way.
    deb = keyring.parent / Path(published.pool_path).name
    urllib.request.urlretrieve(f"{served.url}/{published.pool_path}", deb)
    verdict = verify_package(str(deb), repo=served.url, keyring=keyring)
    assert verdict.line() == lines[0]


def _refused(target: str, served: StaticServer, keyring: Path) -> str:
    with pytest.raises(NotVerified) as caught:
        verify_package(target, repo=served.url, keyring=keyring, arch="amd64")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_tampered_package_is_refused(
    published: Published, served: StaticServer, keyring: Path
) -> None:
    deb = served.root / published.pool_path
    data = bytearray(deb.read_bytes())
    data[-1] ^= 0xFF  # the end of data.tar: the control part still reads
    deb.write_bytes(bytes(data))
    message = _refused(published.package, served, keyring)
    assert message.startswith("not verified: tally_1.0.0-")
    assert "the package was altered" in message
    local = keyring.parent / deb.name
    local.write_bytes(bytes(data))
    assert "the package was altered" in _refused(str(local), served, keyring)
    # The command line says it in one line and fails.
    result = run_task(
        "verify-package", published.package, "--repo", served.url, "--keyring", str(keyring)
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: {message}"]


def test_a_tampered_attestation_is_refused(
    published: Published, served: StaticServer, keyring: Path
) -> None:
    path = served.root / "attestations" / f"{published.pool_path}.intoto.json"
    data = json.loads(path.read_text())
    data["predicate"]["runDetails"]["metadata"]["finishedOn"] = "2030-01-01T00:00:00Z"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    message = _refused(published.package, served, keyring)
    assert message == "not verified: the attestation's signature is bad (it was altered)"


def test_an_attestation_signed_by_another_key_is_refused(
    published: Published, served: StaticServer, keyring: Path, other_gpg_key: TestKey
) -> None:
    other = Signer(
        gnupghome=other_gpg_key.home,
        key=other_gpg_key.fingerprint,
        passphrase=other_gpg_key.passphrase,
    )
    path = served.root / "attestations" / f"{published.pool_path}.intoto.json"
    other.sign_file(path)  # replaces the .asc
    message = _refused(published.package, served, keyring)
    assert message == (f"not verified: the attestation is signed by a key that is not in {keyring}")


def test_a_missing_attestation_is_refused(
    published: Published, served: StaticServer, keyring: Path
) -> None:
    path = served.root / "attestations" / f"{published.pool_path}.intoto.json"
    path.unlink()
    message = _refused(published.package, served, keyring)
    assert message.startswith("not verified: tally_1.0.0-")
    assert message.endswith(".intoto.json is missing")
    shutil.rmtree(served.root / "attestations")
    assert _refused(published.package, served, keyring) == (
        f"not verified: {served.url} has no attestations (attestations/index.json is missing)"
    )
    assert _refused("tally=9.9-1", served, keyring).startswith("not verified: ")
