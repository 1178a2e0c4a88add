"""A .udeb (debian-installer package) is refused in one line; nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from releng.apt import RepoSettings, Repository
from releng.errors import RepoError
from releng.gpg import Signer
from tests.apt_debs import make_deb
from tests.fixtures.gpg import make_key


def test_a_udeb_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    key = make_key(tmp_path / "gnupg", name="udeb test key", passphrase=None)
    signer = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)
    deb = make_deb(tmp_path, "tally", "1.0-1~deb12u1")
    udeb = make_deb(tmp_path, "tally-udeb", "1.0-1~deb12u1", extra="Package-Type: udeb\n")
    udeb = udeb.rename(udeb.with_suffix(".udeb"))
    root = tmp_path / "repo"
    settings = RepoSettings(name="tally", origin="t", label="t", suite_patterns=("bookworm",))
    repository = Repository(root, settings, signer)
    with pytest.raises(RepoError) as err:
        repository.include(["bookworm"], [deb, udeb])
    message = str(err.value)
    assert message.startswith("tally-udeb_1.0-1~deb12u1_amd64.udeb: .udeb (debian-installer)")
    assert "\n" not in message
    assert not (root / "pool").exists() and not (root / "dists").exists()
    repository.include(["bookworm"], [deb])  # the rest goes in
    assert (root / "pool/main/t/tally/tally_1.0-1~deb12u1_amd64.deb").is_file()
