"""The gpg seam against a real gpg and gpgv: one verify, several signing keys, key expiry."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import subprocess
from pathlib import Path

import gnupg
import pytest

from releng.apt import RepoSettings, Repository, check_repository
from releng.errors import SigningError
from releng.gpg import Signer, armored, dearmored, keyring_keys, verify
from tests.apt_debs import make_deb
from tests.fixtures.gpg import TestKey, make_key

RELEASE = b"Origin: tests\nLabel: tests\nSuite: bookworm\n"


@pytest.fixture
def two_keys(tmp_path: Path) -> tuple[TestKey, TestKey]:
    """Keys A and B in one GNUPGHOME (one passphrase), as a rotation has them."""
    home = tmp_path / "gnupg"
    return make_key(home, name="key A"), make_key(home, name="key B")


def test_a_release_signed_by_two_keys_verifies_with_either_key_alone(
    two_keys: tuple[TestKey, TestKey], tmp_path: Path
) -> None:
    a, b = two_keys
    signer = Signer(gnupghome=a.home, key=[a.fingerprint, b.fingerprint], passphrase=a.passphrase)
    inrelease = signer.clearsign(RELEASE)
    detached = signer.detached_signature(RELEASE)
    assert inrelease.count(b"-----BEGIN PGP SIGNATURE-----") == 1
    for key, other in ((a, b), (b, a)):
        ring = key.public_keyring(tmp_path / f"{key.fingerprint}.gpg")
        for check in (verify(ring, inrelease), verify(ring, RELEASE, detached)):
            assert check.valid, check.reason
            assert check.signers == (key.fingerprint,)
            assert check.missing == (other.fingerprint[-16:],)  # ignored, as apt does
        assert verify(ring, inrelease).content == RELEASE
    both = verify([tmp_path / f"{a.fingerprint}.gpg", tmp_path / f"{b.fingerprint}.gpg"], inrelease)
    assert both.signers == (a.fingerprint, b.fingerprint)


def test_only_the_first_key_signs_files(two_keys: tuple[TestKey, TestKey], tmp_path: Path) -> None:
    a, b = two_keys
    signer = Signer(gnupghome=a.home, key=[a.fingerprint, b.fingerprint], passphrase=a.passphrase)
    tarball = tmp_path / "tally_1.0.orig.tar.gz"
    tarball.write_bytes(b"not really a tarball")
    sig = signer.sign_file(tarball)
    check = verify(signer.public_keys(), tarball.read_bytes(), sig.read_bytes())
    assert check.signers == (a.fingerprint,)
    assert armored(signer.public_keys()).count(b"BEGIN PGP PUBLIC KEY BLOCK") == 1
    assert {k.fingerprint for k in keyring_keys(signer.public_keys())} == {
        a.fingerprint,
        b.fingerprint,
    }


def test_verify_says_why_in_one_line(
    gpg_key: TestKey, other_gpg_key: TestKey, tmp_path: Path
) -> None:
    signer = Signer(gnupghome=gpg_key.home, key=gpg_key.fingerprint, passphrase=gpg_key.passphrase)
    ring = gpg_key.public_keyring(tmp_path / "k.gpg")
    other = other_gpg_key.public_keyring(tmp_path / "other.gpg")
    signed = signer.clearsign(RELEASE)
    tampered = signed.replace(b"Suite: bookworm", b"Suite: bullseye")
    cases = {
        "bad signature by": verify(ring, tampered),
        "which is not in the keyring": verify(other, signed),
        "not signed": verify(ring, RELEASE),
    }
    for expected, check in cases.items():
        assert not check.valid
        assert check.content == b""
        assert expected in check.reason and "\n" not in check.reason, check.reason


def _signer(key: TestKey, warn_days: int = 60) -> Signer:
    return Signer(
        gnupghome=key.home, key=key.fingerprint, passphrase=key.passphrase, warn_days=warn_days
    )


def _release(valid_until: dt.datetime) -> bytes:
    return RELEASE + f"Valid-Until: {email.utils.format_datetime(valid_until)}\n".encode()


def test_a_key_expiring_within_warn_days_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = make_key(tmp_path / "gnupg", name="short-lived key", expire="10d", passphrase=None)
    signer = _signer(key)
    with caplog.at_level(logging.WARNING, logger="releng.gpg"):
        signer.clearsign(RELEASE)
        signer.detached_signature(RELEASE)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert key.fingerprint in warned[0] and "warn_days = 60" in warned[0]
    assert "rotate-keys --add" in warned[0]
    caplog.clear()
    _signer(key, warn_days=5).clearsign(RELEASE)
    assert caplog.records == []


def test_an_expired_key_is_refused_with_what_to_run(tmp_path: Path) -> None:
    key = make_key(
        tmp_path / "gnupg", name="old key", expire="1d", made_at="20200101T000000", passphrase=None
    )
    signer = _signer(key)
    with pytest.raises(SigningError, match="has expired 2020-01-02") as err:
        signer.check_expiry()
    assert "gpg --quick-set-expire" in str(err.value)
    assert "rotate-keys --add" in str(err.value)
    root = tmp_path / "repo"
    with pytest.raises(SigningError, match="has expired"):
        Repository(root, RepoSettings(name="tally", origin="t", label="t"), signer).include(
            ["bookworm"], [make_deb(tmp_path, "hello", "1.0-1")]
        )
    assert not (root / "dists/bookworm/InRelease").exists()


def test_a_key_expiring_before_valid_until_is_refused(tmp_path: Path) -> None:
    key = make_key(tmp_path / "gnupg", name="short-lived key", expire="5d", passphrase=None)
    signer = _signer(key)
    now = dt.datetime.now(dt.UTC)
    signer.clearsign(_release(now + dt.timedelta(days=4)))  # the key outlives the Release
    with pytest.raises(SigningError, match="before the Release's Valid-Until") as err:
        signer.clearsign(_release(now + dt.timedelta(days=7)))
    assert "valid_for_days" in str(err.value)
    # The repository path: [repositories] valid_for_days past the key's expiry.
    settings = RepoSettings(name="tally", origin="t", label="t", valid_for_days=30)
    with pytest.raises(SigningError, match="Valid-Until"):
        Repository(tmp_path / "repo", settings, signer).include(
            ["bookworm"], [make_deb(tmp_path, "hello", "1.0-1")]
        )


def test_repo_check_warns_of_a_key_expiring_soon(tmp_path: Path) -> None:
    key = make_key(tmp_path / "gnupg", name="short-lived key", expire="20d", passphrase=None)
    root = tmp_path / "repo"
    Repository(root, RepoSettings(name="tally", origin="t", label="t"), _signer(key)).include(
        ["bookworm"], [make_deb(tmp_path, "hello", "1.0-1")]
    )
    report = check_repository(root)
    assert report.problems == []
    (warning,) = report.warnings
    assert warning.startswith(f"signing key {key.fingerprint} expires ")
    assert "rotate-keys --add" in warning


def test_a_signature_by_a_key_that_has_since_expired_does_not_verify(tmp_path: Path) -> None:
    key = make_key(
        tmp_path / "gnupg", name="old key", expire="1d", made_at="20200101T000000", passphrase=None
    )
    then = gnupg.GPG(gnupghome=str(key.home), options=["--faked-system-time", "20200101T120000"])
    signed = then.sign(RELEASE, keyid=key.fingerprint, clearsign=True).data
    assert signed, "gpg did not sign at the faked time"
    check = verify(key.public_keyring(tmp_path / "k.gpg"), signed)
    assert not check.valid
    assert check.expired == (key.fingerprint[-16:],)
    assert check.reason == f"signed by key {key.fingerprint[-16:]}, which has expired"


def test_the_armored_keys_are_what_gpg_armors(tmp_path: Path, gpg_key: TestKey) -> None:
    """The ``.asc`` beside a repository is made from the binary export without a second gpg
    run: byte for byte what ``gpg --armor --export`` writes, and gpg reads it back."""
    other = make_key(tmp_path / "other", name="a second key", passphrase=None)
    for fingerprints, home in (
        ([gpg_key.fingerprint], gpg_key.home),
        ([other.fingerprint], other.home),
    ):
        signer = Signer(gnupghome=home, key=fingerprints, passphrase=gpg_key.passphrase or None)
        theirs = subprocess.run(
            ["gpg", "--homedir", str(home), "--armor", "--export", *fingerprints],
            check=True,
            capture_output=True,
        ).stdout
        assert armored(signer.public_keys()) == theirs
        assert dearmored(theirs) == signer.public_keys()
        assert dearmored(signer.public_keys()) == signer.public_keys()  # binary: as it is
    with pytest.raises(ValueError):
        dearmored(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64!\n-----END")


def test_a_key_lists_when_it_last_signed_itself(tmp_path: Path) -> None:
    """An expiry extended is a new self-signature: KeyInfo.signed is its time, as gpg dated it
    (here with gpg's own faked clock, a year on)."""
    key = make_key(tmp_path / "k", name="extended later", passphrase=None, expire="30d")
    before = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None).keys[0]
    assert before.signed is not None
    assert abs(before.signed - before.created) < dt.timedelta(minutes=5)
    later = ["--faked-system-time", "20270601T000000!"]
    subprocess.run(
        [
            "gpg",
            "--homedir",
            str(key.home),
            "--batch",
            *later,
            "--quick-set-expire",
            key.fingerprint,
            "2y",
        ],
        check=True,
        capture_output=True,
    )
    after = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None).keys[0]
    assert after.created == before.created
    assert after.signed == dt.datetime(2027, 6, 1, tzinfo=dt.UTC)
    assert after.expires == after.signed + dt.timedelta(days=730)  # gpg's 2y
    shown = keyring_keys(
        Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None).public_keys()
    )
    assert shown[0].signed == after.signed  # --show-keys lists the same


def test_a_key_lists_every_user_id_and_the_primary_as_its_uid(tmp_path: Path) -> None:
    """The front page shows every user id of the keyring's keys: one parser of gpg's listing."""
    key = make_key(tmp_path / "k", name="first name", passphrase=None)
    add = ["--quick-add-uid", key.fingerprint, "second name <second@releng.invalid>"]
    subprocess.run(
        ["gpg", "--homedir", str(key.home), "--batch", *add], check=True, capture_output=True
    )
    signer = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)
    (shown,) = keyring_keys(signer.public_keys())
    assert shown.uids == signer.keys[0].uids
    assert len(shown.uids) == 2
    assert shown.uid == shown.uids[0] == signer.uid  # gpg lists the primary user id first
    assert {u.split(" <")[0] for u in shown.uids} == {"first name", "second name"}
