"""Repositories: include, publish, retention, refusals, the lock, and kill -9 at every step.

Every repository is checked with check-repo (gpgv, every checksum, every referenced
file); apt itself reads them in test_apt_in_container.py.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import gzip
import hashlib
import lzma
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.apt import CRASH_POINTS, RepoSettings, Repository, check_repository
from releng.apt.lock import RepoLock
from releng.apt.state import STATE_DIR, RepoState
from releng.errors import LockError, RelengError, RepoError, SigningError
from releng.gpg import Signer, dearmored
from tests.apt_debs import make_changes, make_deb, make_source, raw_deb
from tests.fixtures.gpg import TestKey, make_key

REPO_ROOT = Path(__file__).resolve().parents[1]
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    """A key with no passphrase: each signature costs ~10 ms instead of gpg-agent's ~250 ms
    passphrase stretching, which matters for tests that publish dozens of times. The
    passphrase path is covered by the first test, which uses the shared ``gpg_key``."""
    return make_key(
        tmp_path_factory.mktemp("apt-gnupg"), name="releng apt test key", passphrase=None
    )


@pytest.fixture(scope="module")
def signer(key: TestKey) -> Signer:
    return Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)


def settings(**kw: object) -> RepoSettings:
    base: dict[str, object] = {
        "name": "tally",
        "origin": "releng tests",
        "label": "tally",
        "suite_patterns": (r"bookworm", r"bookworm-\d+\.\d+", r"trixie"),
    }
    base.update(kw)
    return RepoSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def repo(tmp_path: Path, signer: Signer) -> Callable[..., Repository]:
    def make(**kw: object) -> Repository:
        return Repository(tmp_path / "repo", settings(**kw), signer, clock=lambda: NOW)

    return make


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root with its sha256: what 'the repository unchanged' means."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "lock"
    }


def packages(root: Path, suite: str = "bookworm", arch: str = "amd64") -> str:
    return (root / "dists" / suite / "main" / f"binary-{arch}" / "Packages").read_text()


def assert_checks(root: Path) -> None:
    report = check_repository(root)
    assert report.problems == []
    assert report.warnings == []
    assert report.suites


def test_include_changes_publishes_a_signed_by_hash_repository(
    tmp_path: Path, gpg_key: TestKey
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    debs = [
        make_deb(inputs, "hello", "1.0-1"),
        make_deb(inputs, "hello-doc", "1.0-1", arch="all", source="hello"),
    ]
    dsc = make_source(inputs, "hello", "1.0-1")
    changes = make_changes(inputs, "hello_1.0-1_amd64", [*debs, dsc, inputs / "hello_1.0-1.tar.gz"])
    signer = Signer(gnupghome=gpg_key.home, key=gpg_key.fingerprint, passphrase=gpg_key.passphrase)
    r = Repository(tmp_path / "repo", settings(), signer, clock=lambda: NOW)
    result = r.include(["bookworm"], [changes])
    root = r.root
    assert sorted(result.added) == [
        "pool/main/h/hello/hello-doc_1.0-1_all.deb",
        "pool/main/h/hello/hello_1.0-1.dsc",
        "pool/main/h/hello/hello_1.0-1_amd64.deb",
    ]
    assert list(result.written[-3:]) == [
        "dists/bookworm/InRelease",
        "dists/bookworm/Release",
        "dists/bookworm/Release.gpg",
    ]
    release = (root / "dists/bookworm/Release").read_text()
    for line in (
        "Origin: releng tests",
        "Label: tally",
        "Suite: bookworm",
        "Codename: bookworm",
        "Date: Sun, 22 Nov 2026 12:00:00 UTC",
        "Architectures: amd64",
        "Components: main",
        "Acquire-By-Hash: yes",
    ):
        assert line + "\n" in release
    for name in ("Packages", "Packages.gz", "Packages.xz"):
        assert f" main/binary-amd64/{name}\n" in release
    for name in ("Sources", "Sources.gz", "Sources.xz"):
        assert f" main/source/{name}\n" in release
    text = packages(root)
    assert "Filename: pool/main/h/hello/hello_1.0-1_amd64.deb\n" in text
    assert "Package: hello-doc\n" in text  # arch all lands in every binary-<arch>
    sources = (root / "dists/bookworm/main/source/Sources").read_text()
    assert "Package: hello\n" in sources
    assert "Directory: pool/main/h/hello\n" in sources
    assert "hello_1.0-1.tar.gz" in sources
    xz = (root / "dists/bookworm/main/binary-amd64/Packages.xz").read_bytes()
    gz = (root / "dists/bookworm/main/binary-amd64/Packages.gz").read_bytes()
    assert lzma.decompress(xz).decode() == text == gzip.decompress(gz).decode()
    byhash = root / "dists/bookworm/main/binary-amd64/by-hash/SHA256"
    assert (byhash / hashlib.sha256(xz).hexdigest()).read_bytes() == xz
    assert (root / "tally-archive-keyring.gpg").stat().st_size > 0
    assert (root / "tally-archive-keyring.asc").read_text().startswith("-----BEGIN PGP PUBLIC KEY")
    assert_checks(root)


def test_identical_file_again_is_a_no_op(tmp_path: Path, repo: Callable[..., Repository]) -> None:
    deb = make_deb(tmp_path, "hello", "1.0-1")
    r = repo()
    r.include(["bookworm"], [deb])
    before = snapshot(r.root / "pool")
    packages_before = packages(r.root)
    again = r.include(["bookworm"], [deb])
    assert again.added == ()
    assert not [p for p in again.written if p.startswith("pool/")]
    assert snapshot(r.root / "pool") == before
    assert packages(r.root) == packages_before


def test_same_pool_name_with_other_content_is_refused(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path / "a", "hello", "1.0-1")])
    before = snapshot(r.root)
    other = make_deb(tmp_path / "b", "hello", "1.0-1", script="#!/bin/sh\necho changed\n")
    with pytest.raises(RepoError, match=r"already holds pool/main/h/hello/hello_1\.0-1_amd64\.deb"):
        r.include(["bookworm"], [other])
    assert snapshot(r.root) == before


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[Path], str, str]]:
    """name -> (paths, suite, what the one error line must say)."""
    good = make_deb(tmp, "good", "1.0")
    garbage = tmp / "garbage.deb"
    garbage.write_bytes(b"garbage\n" * 50)
    truncated = tmp / "truncated.deb"
    truncated.write_bytes(good.read_bytes()[:90])
    changes_dir = tmp / "changes"
    changes_dir.mkdir()
    listed = make_deb(changes_dir, "listed", "1.0")
    changes = make_changes(changes_dir, "listed_1.0_amd64", [listed])
    listed.write_bytes(listed.read_bytes() + b"tampered")
    return {
        "garbage": ([garbage], "bookworm", "garbage.deb is not a Debian package"),
        "truncated": ([truncated], "bookworm", "truncated.deb"),
        "no control member": (
            [raw_deb(tmp, "nocontrol.deb", None)],
            "bookworm",
            "nocontrol.deb: no control.tar member",
        ),
        "no Version": (
            [raw_deb(tmp, "nover.deb", "Package: nover\nArchitecture: all\n")],
            "bookworm",
            "nover.deb: the control file has no Version",
        ),
        "no Package": (
            [raw_deb(tmp, "nopkg.deb", "Version: 1\nArchitecture: all\n")],
            "bookworm",
            "nopkg.deb: the control file has no Package",
        ),
        "architecture not carried": (
            [make_deb(tmp, "armonly", "1.0", arch="arm64")],
            "bookworm",
            "architecture 'arm64' is not carried",
        ),
        "changes checksum mismatch": ([changes], "bookworm", "checksum mismatch"),
        "package name escapes the pool": (
            [raw_deb(tmp, "evil.deb", "Package: ../../etc\nVersion: 1\nArchitecture: all\n")],
            "bookworm",
            "'../../etc' is not a valid Debian package name",
        ),
        "source name with a slash": (
            [
                raw_deb(
                    tmp,
                    "evilsrc.deb",
                    "Package: ok\nSource: a/b\nVersion: 1\nArchitecture: all\n",
                )
            ],
            "bookworm",
            "source name 'a/b' is not a valid",
        ),
        "unknown suite": ([good], "sid-experimental", "unknown suite 'sid-experimental'"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "garbage",
        "truncated",
        "no control member",
        "no Version",
        "no Package",
        "architecture not carried",
        "changes checksum mismatch",
        "package name escapes the pool",
        "source name with a slash",
        "unknown suite",
    ],
)
def test_bad_input_is_one_clear_error_and_changes_nothing(
    tmp_path: Path, repo: Callable[..., Repository], case: str
) -> None:
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path, "existing", "1.0")])
    before = snapshot(r.root)
    bad = tmp_path / "bad"
    bad.mkdir()
    paths, suite, message = _bad_inputs(bad)[case]
    with pytest.raises(RelengError) as err:
        r.include([suite], [*paths, make_deb(tmp_path / "bad", "fine", "2.0")])
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    if case in ("garbage", "truncated", "no control member"):  # the file itself is broken
        assert str(err.value).endswith("; build or download it again"), err.value
    assert snapshot(r.root) == before


@pytest.mark.slow
def test_a_refused_input_among_many_leaves_no_new_pool_directories(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    """Many packages' pool directories are made while reading; a refusal removes them."""
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path, "existing", "1.0")])
    before = sorted(p for p in r.root.rglob("*") if p.name != "lock")
    inputs = tmp_path / "many"
    inputs.mkdir()
    for i in range(40):
        make_deb(inputs, f"many{i:02d}", "1.0")
    raw_deb(inputs, "zz-nover.deb", "Package: nover\nArchitecture: all\n")  # read last
    with pytest.raises(RelengError, match=r"zz-nover\.deb: the control file has no Version"):
        r.include(["bookworm"], [inputs])
    assert sorted(p for p in r.root.rglob("*") if p.name != "lock") == before
    r.include(["bookworm"], [*sorted(inputs.glob("many*.deb"))])
    assert (r.root / "pool/main/m/many39/many39_1.0_amd64.deb").is_file()
    assert_checks(r.root)


@pytest.mark.slow
def xz_blocks(path: Path) -> int:
    """How many xz blocks the xz tool finds in the file (after checking it decompresses)."""
    listed = subprocess.run(
        ["xz", "--robot", "--list", str(path)], capture_output=True, text=True, check=True
    ).stdout
    (totals,) = [line.split("\t") for line in listed.splitlines() if line.startswith("totals")]
    return int(totals[2])


@pytest.mark.parametrize("index_xz", ["chunks", "one-stream"])
def test_indexes_updated_run_by_run_are_what_building_them_anew_makes(
    tmp_path: Path, repo: Callable[..., Repository], index_xz: str
) -> None:
    """Each include re-cuts only changed chunks; dropping the saved tables rebuilds them. The
    .xz is one block per chunk, or one stream of the whole index ([repositories] index_xz)."""
    r = repo(keep_versions=2, index_xz=index_xz)
    names = [f"p{i:03d}" for i in range(120)]
    r.include(["bookworm"], [make_deb(tmp_path, n, "1.0") for n in names[::2]])
    for version in ("1.1", "1.2"):  # retention drops 1.0 of the first few
        r.include(["bookworm"], [make_deb(tmp_path, n, version) for n in names[:40:3]])
    r.include(["bookworm"], [make_deb(tmp_path, n, "1.0") for n in names[1::2]])
    r.include(["bookworm"], [make_deb(tmp_path, "p050a", "1.0")])
    incremental = packages(r.root)
    assert incremental.count("Package: ") == 135  # 106 names at 1.0, 14 at 1.1 and 1.2, p050a
    tables = r.root / STATE_DIR / "chunks"
    assert list(tables.rglob("*.table"))
    for table in tables.rglob("*.table"):
        table.unlink()
    r.publish()
    assert packages(r.root) == incremental
    assert_checks(r.root)
    xz = r.root / "dists" / "bookworm" / "main" / "binary-amd64" / "Packages.xz"
    unpacked = subprocess.run(["xz", "-dc", str(xz)], capture_output=True, check=True).stdout
    assert unpacked.decode() == incremental
    assert (xz_blocks(xz) == 1) == (index_xz == "one-stream")


def test_changing_index_xz_rewrites_the_next_publishes_xz_in_the_new_layout(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    debs = [make_deb(tmp_path, f"p{i:03d}", "1.0") for i in range(150)]
    chunked = repo()
    chunked.include(["bookworm"], debs[:100])
    xz = chunked.root / "dists" / "bookworm" / "main" / "binary-amd64" / "Packages.xz"
    assert xz_blocks(xz) > 1
    chunk_size = xz.stat().st_size
    one = repo(index_xz="one-stream")
    one.publish()
    assert xz_blocks(xz) == 1
    assert xz.stat().st_size < chunk_size  # one dictionary over the whole index
    one.include(["bookworm"], debs[100:])
    assert xz_blocks(xz) == 1
    back = repo()
    back.include(["bookworm"], [make_deb(tmp_path, "p050a", "1.0")])
    assert xz_blocks(xz) > 1
    unpacked = subprocess.run(["xz", "-dc", str(xz)], capture_output=True, check=True).stdout
    assert unpacked.decode() == packages(back.root)
    assert packages(back.root).count("Package: ") == 151
    assert_checks(back.root)


def test_a_missing_signing_key_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    empty = tmp_path / "empty-gnupg"
    with pytest.raises(SigningError, match="is not in the keyring"):
        Signer(gnupghome=empty, key="0123456789ABCDEF0123456789ABCDEF01234567", passphrase=None)
    r = Repository(tmp_path / "repo", settings(), None)
    with pytest.raises(RepoError, match="no signing key"):
        r.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0")])
    assert not (tmp_path / "repo").exists()


def test_retention_keeps_the_last_n_versions_and_collects_pool_files(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    # History keeps only each suite's current publish (what more it keeps: test_apt_lifecycle).
    r = repo(keep_versions=2, keep_history=1)
    r.include(["bookworm", "trixie"], [make_deb(tmp_path, "hello", "1.0-1")])
    r.include(["bookworm"], [make_deb(tmp_path, "hello", "1.10-1")])
    result = r.include(["bookworm"], [make_deb(tmp_path, "hello", "1.9-1")])
    text = packages(r.root)
    assert "Version: 1.10-1\n" in text
    assert "Version: 1.9-1\n" in text
    assert "Version: 1.0-1\n" not in text
    # 1.0-1 is still in trixie: its pool file stays.
    assert (r.root / "pool/main/h/hello/hello_1.0-1_amd64.deb").is_file()
    assert result.removed == () or all("by-hash" in p for p in result.removed)
    gone = r.include(
        ["trixie"], [make_deb(tmp_path, "hello", "1.10-1"), make_deb(tmp_path, "hello", "1.9-1")]
    )
    assert "Version: 1.0-1\n" not in packages(r.root, "trixie")
    assert "pool/main/h/hello/hello_1.0-1_amd64.deb" in gone.removed
    assert not (r.root / "pool/main/h/hello/hello_1.0-1_amd64.deb").exists()
    assert_checks(r.root)


def test_two_architectures_each_index_their_own_and_share_architecture_all(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    # keep_history 1: what retention drops is collected at once (no rollback keeps it)
    r = repo(architectures=("amd64", "arm64"), keep_versions=1, keep_history=1)
    doc = make_deb(tmp_path, "hello-doc", "1.0-1", arch="all", source="hello")
    r.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0-1"), doc])
    r.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0-1", arch="arm64")])
    release = (r.root / "dists/bookworm/Release").read_text()
    assert "Architectures: amd64 arm64\n" in release
    for arch in ("amd64", "arm64"):
        text = packages(r.root, arch=arch)
        assert f"Filename: pool/main/h/hello/hello_1.0-1_{arch}.deb\n" in text
        # As in Debian's archive: Architecture: all packages are in every architecture's index.
        assert "Filename: pool/main/h/hello/hello-doc_1.0-1_all.deb\n" in text
        assert text.count("Package: ") == 2
        assert f" main/binary-{arch}/Packages.xz\n" in release
    # Retention counts each architecture on its own: a new amd64 build leaves arm64's.
    result = r.include(["bookworm"], [make_deb(tmp_path, "hello", "1.1-1")])
    assert "pool/main/h/hello/hello_1.0-1_amd64.deb" in result.removed
    assert "Version: 1.0-1\n" in packages(r.root, arch="arm64")
    assert (r.root / "pool/main/h/hello/hello_1.0-1_arm64.deb").is_file()
    assert_checks(r.root)


def _hand_made_stanza(root: Path, arch: str) -> bytes:
    """A hello .deb in the pool of ``root`` and its Packages stanza."""
    pool = root / "pool/main/h/hello"
    pool.mkdir(parents=True)
    deb = make_deb(pool, "hello", "1.0-1", arch=arch)
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    return (
        f"Package: hello\nVersion: 1.0-1\nArchitecture: {arch}\n"
        f"Filename: {deb.relative_to(root)}\nSize: {deb.stat().st_size}\nSHA256: {digest}\n"
    ).encode()


def _hand_made_suite(root: Path, signer: Signer, files: dict[str, bytes]) -> None:
    """dists/bookworm with ``files`` (path under it -> bytes) and a signed Release listing
    them (Architectures: amd64), and the keyring beside the repository."""
    suite = root / "dists/bookworm"
    for path, data in files.items():
        (suite / path).parent.mkdir(parents=True, exist_ok=True)
        (suite / path).write_bytes(data)
    lines = [f" {hashlib.sha256(d).hexdigest()} {len(d)} {path}" for path, d in files.items()]
    date = email.utils.format_datetime(dt.datetime.now(dt.UTC), usegmt=True)
    release = (
        f"Suite: bookworm\nDate: {date}\nArchitectures: amd64\nComponents: main\nSHA256:\n"
        + "\n".join(lines)
        + "\n"
    )
    (suite / "Release").write_text(release)
    (suite / "Release.gpg").write_bytes(signer.detached_signature(release.encode()))
    (suite / "InRelease").write_bytes(signer.clearsign(release.encode()))
    (root / "tally-archive-keyring.gpg").write_bytes(signer.public_keys())


def test_repo_check_finds_a_package_in_another_architectures_index(
    tmp_path: Path, signer: Signer
) -> None:
    """A hand-made suite (releng's own indexes cannot be wrong this way): an arm64 package in
    binary-amd64/Packages and a binary-arm64 index the Release's Architectures omits."""
    root = tmp_path / "repo"
    stanza = _hand_made_stanza(root, "arm64")
    _hand_made_suite(
        root,
        signer,
        {f"main/binary-{arch}/Packages": stanza for arch in ("amd64", "arm64")},
    )
    problems = check_repository(root).problems
    assert problems == [
        "dists/bookworm/main/binary-amd64/Packages: 'hello' is built for arm64, not amd64 (or all)",
        "dists/bookworm/main/binary-arm64/Packages is listed, but arm64 is not in the Release's "
        "Architectures",
    ]


def test_repo_check_finds_a_compressed_index_that_is_not_its_plain_one(
    tmp_path: Path, signer: Signer
) -> None:
    """Hashes that match the Release say nothing of what a .gz or .xz holds: apt reads the
    .xz. A hand-made suite whose .gz holds another text and whose .xz is cut short."""
    root = tmp_path / "repo"
    stanza = _hand_made_stanza(root, "amd64")
    _hand_made_suite(
        root,
        signer,
        {
            "main/binary-amd64/Packages": stanza,
            "main/binary-amd64/Packages.gz": gzip.compress(stanza.replace(b"1.0-1", b"9.9-9")),
            "main/binary-amd64/Packages.xz": lzma.compress(stanza)[:-20],
        },
    )
    problems = check_repository(root).problems
    assert len(problems) == 2, problems
    assert problems[0] == (
        "dists/bookworm/main/binary-amd64/Packages.gz does not decompress to the "
        "main/binary-amd64/Packages the Release lists; republish it (invoke republish-repo)"
    )
    assert problems[1].startswith(
        "dists/bookworm/main/binary-amd64/Packages.xz cannot be decompressed ("
    )


def test_nightlies_older_than_the_limit_are_dropped(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo(nightly_max_age_days=40)
    old = make_deb(tmp_path, "tally-nightly", "2026.09.01-1~bookworm")
    new = make_deb(tmp_path, "tally-nightly", "2026.11.20-1~bookworm")
    release = make_deb(tmp_path, "tally", "2019.1.0-1~bookworm")  # not a YYYY.MM.DD nightly
    # A release shaped like a date (make-package --release): not a nightly, never aged out.
    dated = make_deb(tmp_path, "other", "2024.01.15-1~bookworm")
    r.include(["bookworm"], [old, new, release, dated])
    text = packages(r.root)
    assert "Version: 2026.11.20-1~bookworm\n" in text
    assert "Version: 2026.09.01-1~bookworm\n" not in text
    assert "Version: 2019.1.0-1~bookworm\n" in text
    assert "Version: 2024.01.15-1~bookworm\n" in text
    assert not (
        r.root / "pool/main/t/tally-nightly/tally-nightly_2026.09.01-1~bookworm_amd64.deb"
    ).exists()


def test_by_hash_keeps_the_last_few_versions_of_each_index(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo(byhash_keep=2)
    byhash = r.root / "dists/bookworm/main/binary-amd64/by-hash/SHA256"
    removed: list[str] = []
    for i in range(4):
        removed += r.include(["bookworm"], [make_deb(tmp_path, f"pkg{i}", "1.0")]).removed
    assert len(list(byhash.iterdir())) == 2 * 3  # Packages, .gz, .xz: the last 2 of each
    assert len([p for p in removed if "binary-amd64/by-hash" in p]) == 2 * 3
    assert_checks(r.root)


def test_release_line_suites_and_valid_until(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo(valid_for_days=7)
    r.include(["bookworm", "bookworm-1.2"], [make_deb(tmp_path, "tally", "1.2.3-1~bookworm")])
    release = (r.root / "dists/bookworm-1.2/Release").read_text()
    assert "Suite: bookworm-1.2\nCodename: bookworm-1.2\n" in release
    assert "Valid-Until: Sun, 29 Nov 2026 12:00:00 UTC\n" in release
    assert packages(r.root, "bookworm-1.2") == packages(r.root, "bookworm")


def test_a_second_publisher_waits_then_fails_naming_the_holder(
    tmp_path: Path, signer: Signer
) -> None:
    r = Repository(tmp_path / "repo", settings(), signer, lock_timeout=0.3)
    deb = make_deb(tmp_path, "hello", "1.0")
    with RepoLock(RepoState(r.root).lock_path, timeout=1), pytest.raises(LockError) as err:
        r.include(["bookworm"], [deb])
    assert f"pid {os.getpid()} on host " in str(err.value)
    assert "waited 0.3 s" in str(err.value)
    r.include(["bookworm"], [deb])  # free again
    assert_checks(r.root)


CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from releng.apt import Repository, RepoSettings
    from releng.gpg import Signer
    root, home, fpr, passphrase, point, *debs = sys.argv[1:]
    def hook(name):
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)
    settings = RepoSettings(
        name="tally", origin="o", label="l", keep_versions=1, byhash_keep=1, keep_history=1
    )
    signer = Signer(gnupghome=Path(home), key=fpr, passphrase=passphrase or None)
    Repository(Path(root), settings, signer, crash_hook=hook).include(
        ["bookworm", "trixie"], [Path(d) for d in debs]
    )
    """
)


@pytest.mark.slow
def test_kill_9_at_any_point_leaves_a_valid_repository_and_a_rerun_completes(
    tmp_path: Path, key: TestKey
) -> None:
    first = make_deb(tmp_path, "hello", "1.0-1")
    second = make_deb(tmp_path, "hello", "2.0-1")
    extra = make_deb(tmp_path, "extra", "1.0")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}

    def run(root: Path, point: str, *debs: Path) -> int:
        cmd = [sys.executable, "-c", CRASHER, str(root), str(key.home), key.fingerprint]
        cmd += ["", point, *map(str, debs)]
        return subprocess.run(cmd, env=env, capture_output=True, check=False).returncode

    for point in CRASH_POINTS:
        root = tmp_path / f"repo-{point}"
        assert run(root, "none", first) == 0
        assert run(root, point, second, extra) == -signal.SIGKILL, point
        # apt's view after the kill: a complete, verifiable repository (old or new).
        report = check_repository(root)
        assert report.problems == [], (point, report.problems)
        assert run(root, "none", second, extra) == 0
        assert_checks(root)
        for suite in ("bookworm", "trixie"):
            text = packages(root, suite)
            assert "Version: 2.0-1\n" in text, point
            assert "Version: 1.0-1\n" not in text, point  # keep_versions = 1
            assert "Package: extra\n" in text, point
        assert not (root / STATE_DIR / "pending").exists() or not any(
            (root / STATE_DIR / "pending").iterdir()
        )


def test_including_one_package_reads_only_that_package(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path, f"pkg{i}", "1.0") for i in range(5)])
    stanza_before = packages(r.root).split("\n\n")[0]
    # Were existing .debs re-read, this one would now fail to parse or change its stanza.
    (r.root / "pool/main/p/pkg0/pkg0_1.0_amd64.deb").write_bytes(b"not read again")
    r.include(["bookworm"], [make_deb(tmp_path, "pkg9", "1.0")])
    text = packages(r.root)
    assert text.split("\n\n")[0] == stanza_before
    assert "Package: pkg9\n" in text


def test_a_record_torn_by_a_killed_writer_is_ignored_and_cut_off(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0")])
    records = r.root / STATE_DIR / "pool.records"
    whole = records.read_bytes()
    torn = b'["pool/main/t/torn/torn_1_amd64.deb","deb","torn","1","amd64","torn",12,"ab'
    records.write_bytes(whole + torn)
    assert list(RepoState(r.root).pool()) == ["pool/main/h/hello/hello_1.0_amd64.deb"]
    r2 = repo()
    r2.include(["bookworm"], [make_deb(tmp_path, "world", "1.0")])
    data = records.read_bytes()
    assert torn not in data
    assert data.startswith(whole)
    assert sorted(RepoState(r.root).pool()) == [
        "pool/main/h/hello/hello_1.0_amd64.deb",
        "pool/main/w/world/world_1.0_amd64.deb",
    ]
    assert_checks(r.root)


def test_a_second_publisher_waits_for_the_first(tmp_path: Path, signer: Signer) -> None:
    import threading

    r = Repository(tmp_path / "repo", settings(), signer, lock_timeout=60)
    held = threading.Event()
    release = threading.Event()

    def first_publisher() -> None:
        with RepoLock(RepoState(r.root).lock_path, timeout=1):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=first_publisher)
    thread.start()
    held.wait(10)
    threading.Timer(0.5, release.set).start()
    result = r.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0")])
    thread.join()
    assert release.is_set()  # it could only get the lock after the first publisher let go
    assert result.added == ("pool/main/h/hello/hello_1.0_amd64.deb",)
    assert_checks(r.root)


def test_one_repository_object_sees_what_another_publisher_did_meanwhile(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    first, other = repo(keep_versions=1, keep_history=1), repo(keep_versions=1, keep_history=1)
    first.include(["bookworm"], [make_deb(tmp_path, "one", "1.0")])
    other.include(["trixie"], [make_deb(tmp_path, "two", "1.0")])
    # one 1.0 is dropped (keep_versions = 1): the pool records are rewritten without it.
    gone = first.include(["bookworm"], [make_deb(tmp_path, "one", "2.0")])
    assert "pool/main/o/one/one_1.0_amd64.deb" in gone.removed
    # The first object's garbage collection must not drop the other publisher's records.
    assert "pool/main/t/two/two_1.0_amd64.deb" in RepoState(first.root).pool()
    assert (first.root / "pool/main/t/two/two_1.0_amd64.deb").is_file()
    assert_checks(first.root)


def test_each_publish_moves_the_release_files_mtime_past_the_last_ones(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    """HTTP's If-Modified-Since has one-second resolution: a publish in the same second as
    the last (here: a last one stamped in the future) must still look newer to a client."""
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0")])
    inrelease = r.root / "dists/bookworm/InRelease"
    ahead = int(time.time()) + 10
    os.utime(inrelease, (ahead, ahead))
    r.include(["bookworm"], [make_deb(tmp_path, "hello", "1.1")])
    for name in ("InRelease", "Release", "Release.gpg"):
        assert int((r.root / "dists/bookworm" / name).stat().st_mtime) > ahead, name


def test_a_damaged_or_stale_keyring_beside_the_repository_is_exported_again(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    """The key files beside the repository are what gpg exports now: garbage in them (a bad
    disk, a hand edit), or a marker an older releng left, is mended by the next operation."""
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path / "in", "hello", "1.0-1")])
    binary, armor = r.keyring_paths
    assert binary.read_bytes() == r.signer.public_keys()
    binary.write_bytes(b"\xff\xfe\x00garbage\x80\n")
    armor.unlink()
    marker = " ".join(r.signer.fingerprints) + "\n"
    (r.root / STATE_DIR / "signing-key").write_text(marker)  # as releng wrote it before 12-07
    done = r.include(["bookworm"], [make_deb(tmp_path / "in", "hello", "1.1-1")])
    assert {binary.name, armor.name} <= set(done.written)
    assert binary.read_bytes() == r.signer.public_keys()
    assert dearmored(armor.read_bytes()) == r.signer.public_keys()
    assert not (r.root / STATE_DIR / "signing-key").exists()
    assert_checks(r.root)
    again = r.include(["bookworm"], [make_deb(tmp_path / "in", "hello", "1.2-1")])
    assert binary.name not in again.written  # current: not written again
