"""Keys every target's apt can verify: the development key, and check-repo's warning."""

from __future__ import annotations

from pathlib import Path

import gnupg

from releng.apt import RepoSettings, Repository, check_repository
from releng.gpg import DEV_KEY_BITS, Signer, dev_signer
from tests.apt_debs import make_deb
from tests.fixtures.gpg import make_key


def test_the_development_key_is_rsa_4096(tmp_path: Path) -> None:
    signer = dev_signer(tmp_path)
    assert signer.development and signer.gnupghome is not None
    (key,) = gnupg.GPG(gnupghome=str(signer.gnupghome)).list_keys(secret=True)
    assert key["fingerprint"] == signer.fingerprint
    assert (key["algo"], int(key["length"])) == ("1", DEV_KEY_BITS)
    again = dev_signer(tmp_path)  # made once: the second signer finds the same key
    assert (again.gnupghome, again.fingerprint) == (signer.gnupghome, signer.fingerprint)
    assert again.keys == signer.keys


def _repo(tmp_path: Path, *, rsa: bool) -> Path:
    key = make_key(tmp_path / "gnupg", name="releng key test", passphrase=None, rsa=rsa)
    root = tmp_path / "repo"
    signer = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)
    settings = RepoSettings(name="tally", origin="tests", label="tests")
    Repository(root, settings, signer).include(
        ["bookworm", "xenial", "xenial-1.0"], [make_deb(tmp_path, "hello", "1.0-1")]
    )
    return root


def test_repo_check_warns_of_an_ed25519_key_on_xenial_suites_only(tmp_path: Path) -> None:
    report = check_repository(_repo(tmp_path, rsa=False))
    assert report.problems == []
    assert [w.split(" is signed")[0] for w in report.warnings] == [
        "dists/xenial",
        "dists/xenial-1.0",
    ]
    assert "EdDSA (ed25519)" in report.warnings[0]
    assert "RSA" in report.warnings[0]  # what to do


def test_repo_check_is_content_with_an_rsa_key_on_xenial(tmp_path: Path) -> None:
    report = check_repository(_repo(tmp_path, rsa=True))
    assert report.problems == []
    assert report.warnings == []
