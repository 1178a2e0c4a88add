"""Faults an adversarial run found: truncated packages, kills at the wrong moment, stale
temporary files, half-made first publishes, full disks, immutable and misnamed directories.

Each repository is then held to check-repo and to the pool holding exactly what the
suites reference (tests/test_apt_crash.py); apt reads such repositories in
test_apt_in_container.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from releng.apt import RepoSettings, Repository, check_repository
from releng.apt.debfile import BadPackageError
from releng.apt.state import STATE_DIR
from releng.errors import RepoError
from releng.gpg import Signer
from tests.apt_debs import make_deb
from tests.fixtures.gpg import TestKey, make_key
from tests.test_apt_crash import assert_converged, worker, worker_env

SETTINGS = RepoSettings(name="tally", origin="o", label="l", keep_versions=1, byhash_keep=2)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    return make_key(tmp_path_factory.mktemp("faults-gnupg"), name="releng faults", passphrase=None)


@pytest.fixture(scope="module")
def signer(key: TestKey) -> Signer:
    return Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)


def killed(root: Path, key: TestKey, operation: str, kill_at: str, *args: str) -> None:
    proc = subprocess.run(
        worker(root, key, operation, kill_at, list(args)), env=worker_env(), check=False
    )
    assert proc.returncode == -signal.SIGKILL


def completes(root: Path, key: TestKey, operation: str, *args: str) -> None:
    proc = subprocess.run(
        worker(root, key, operation, "", list(args)),
        env=worker_env(),
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()


def test_a_deb_cut_inside_its_data_member_is_refused_and_the_intact_one_accepted(
    tmp_path: Path, signer: Signer
) -> None:
    deb = make_deb(tmp_path, "hello", "1.0", script="#!/bin/sh\n" + "echo hello\n" * 4000)
    whole = deb.read_bytes()
    cut = tmp_path / "cut" / deb.name
    cut.parent.mkdir()
    cut.write_bytes(whole[: len(whole) - 200])
    repo = Repository(tmp_path / "repo", SETTINGS, signer)
    with pytest.raises(BadPackageError, match=r"is truncated: its data\.tar\.xz member needs"):
        repo.include(["bookworm"], [cut])
    assert not (tmp_path / "repo" / "dists").exists()
    repo.include(["bookworm"], [deb])  # not refused as a conflict with the cut one
    assert_converged(repo.root, "intact")


@pytest.mark.parametrize("junk", [b"junk", b"x" * 80])
def test_trailing_garbage_after_the_ar_members_is_refused(
    tmp_path: Path, signer: Signer, junk: bytes
) -> None:
    deb = make_deb(tmp_path, "hello", "1.0")
    deb.write_bytes(deb.read_bytes() + junk)
    with pytest.raises(BadPackageError, match="corrupt or truncated ar member header"):
        Repository(tmp_path / "repo", SETTINGS, signer).include(["bookworm"], [deb])


@pytest.mark.parametrize("later", ["include", "retention"])
def test_a_collection_killed_between_records_and_files_is_finished_by_the_next_run(
    tmp_path: Path, key: TestKey, later: str
) -> None:
    root = tmp_path / "repo"
    one = make_deb(tmp_path, "hello", "1.0")
    two = make_deb(tmp_path, "hello", "2.0")
    other = make_deb(tmp_path, "other", "1.0")
    completes(root, key, "include", "bookworm", str(one))
    completes(root, key, "include", "bookworm", str(two))  # keep_versions 2: both kept
    # Retention (keep_versions 1) drops hello 1.0; killed after its record went, before its file.
    killed(root, key, "retention", "gc-records")
    assert (root / "pool/main/h/hello/hello_1.0_amd64.deb").is_file()
    if later == "include":
        completes(root, key, "include", "bookworm", str(other))  # drops nothing itself
    else:
        completes(root, key, "retention")
    assert not (root / "pool/main/h/hello/hello_1.0_amd64.deb").exists()
    assert_converged(root, later)


def test_pool_files_of_an_include_killed_before_its_records_are_collected(
    tmp_path: Path, key: TestKey
) -> None:
    root = tmp_path / "repo"
    completes(root, key, "include", "bookworm", str(make_deb(tmp_path, "hello", "1.0")))
    killed(root, key, "include", "pool-written", "bookworm", str(make_deb(tmp_path, "new", "1.0")))
    assert (root / "pool/main/n/new/new_1.0_amd64.deb").is_file()
    completes(root, key, "retention")  # another operation: the orphan is not its input
    assert not (root / "pool/main/n/new").exists()
    assert_converged(root, "after pool-written")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_locked_run_removes_temporary_files_killed_runs_left(
    tmp_path: Path, signer: Signer
) -> None:
    repo = Repository(tmp_path / "repo", SETTINGS, signer)
    repo.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0")])
    pid = dead_pid()
    state = repo.root / STATE_DIR
    left = [
        state / "suites" / f".bookworm.members.{pid}.tmp",
        state / "chunks" / "bookworm" / f".main_binary-amd64_Packages.table.{pid}.tmp",
        state / f".pool.records.{pid}.tmp",
        repo.root / "dists/bookworm" / f".InRelease.{pid}.tmp",
        repo.root / "dists/bookworm/main/binary-amd64/by-hash/SHA256" / f".{'0' * 64}.{pid}.tmp",
    ]
    alive = state / "suites" / f".trixie.members.{os.getppid()}.tmp"  # a live process's
    for path in [*left, alive]:
        path.write_bytes(b"half written")
    repo.publish()
    assert [p for p in left if p.exists()] == []
    assert alive.exists()
    alive.unlink()
    assert_converged(repo.root, "temporary files")


@pytest.mark.slow
def test_a_pool_copy_killed_half_way_leaves_no_temporary_file_after_the_next_run(
    tmp_path: Path, key: TestKey
) -> None:
    root = tmp_path / "repo"
    completes(root, key, "include", "bookworm", str(make_deb(tmp_path, "hello", "1.0")))
    big = make_deb(tmp_path, "big", "1.0", script="#!/bin/sh\n" + os.urandom(1 << 20).hex())
    # The copy into the pool stops half-way, as a kill in the middle of it would.
    code = (
        "import os, shutil, signal, sys\n"
        "def half(src, dst, **kw):\n"
        "    with open(src, 'rb') as f, open(dst, 'wb') as g:\n"
        "        g.write(f.read(os.path.getsize(src) // 2))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "shutil.copyfile = half\n"
        "from tests.crash_worker import main\n"
        "main(sys.argv[1:])\n"
    )
    cmd = [
        sys.executable,
        "-c",
        code,
        *worker(root, key, "include", "", ["bookworm", str(big)])[3:],
    ]
    assert subprocess.run(cmd, env=worker_env(), check=False).returncode == -signal.SIGKILL
    assert list((root / "pool/main/b/big").glob(".big_1.0_amd64.deb.*.tmp"))
    completes(root, key, "retention")
    assert not (root / "pool/main/b").exists()
    assert_converged(root, "half copy")


@pytest.mark.parametrize("point", ["byhash-written", "indexes-written", "inrelease-written"])
def test_a_first_publish_killed_before_its_release_leaves_no_half_suite(
    tmp_path: Path, key: TestKey, point: str
) -> None:
    root = tmp_path / "repo"
    completes(root, key, "include", "bookworm", str(make_deb(tmp_path, "hello", "1.0")))
    killed(root, key, "include", point, "trixie", str(make_deb(tmp_path, "world", "1.0")))
    assert sorted(p.name for p in (root / "dists").iterdir() if not p.name.startswith(".")) == [
        "bookworm"
    ]
    report = check_repository(root)
    assert report.problems == []
    completes(root, key, "include", "trixie", str(make_deb(tmp_path, "world", "1.0")))
    assert (root / "dists/trixie/InRelease").is_file()
    assert_converged(root, point)


@contextlib.contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (root only): a disk that fills up."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.mark.slow
def test_a_full_disk_during_include_names_the_path_and_leaves_the_repository_valid(
    tmp_path: Path, signer: Signer
) -> None:
    big = make_deb(tmp_path, "big", "1.0", script="#!/bin/sh\n" + os.urandom(1 << 20).hex())
    with small_filesystem(tmp_path / "small", "1m") as mnt:
        repo = Repository(mnt / "repo", SETTINGS, signer)
        repo.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0")])
        with pytest.raises(OSError, match="No space left on device") as err:
            repo.include(["bookworm"], [big])
        assert err.value.filename == str(mnt / "repo/pool/main/b/big/big_1.0_amd64.deb")
        assert_converged(repo.root, "full disk")  # no half copy, no temporary file
        assert (
            "Package: big"
            not in (repo.root / "dists/bookworm/main/binary-amd64/Packages").read_text()
        )


def test_a_repository_path_that_is_a_file_or_under_one_is_refused(
    tmp_path: Path, signer: Signer
) -> None:
    deb = make_deb(tmp_path, "hello", "1.0")
    afile = tmp_path / "afile"
    afile.write_text("not a repository\n")
    with pytest.raises(RepoError, match=r"afile is a file, not a directory; name a directory"):
        Repository(afile, SETTINGS, signer).include(["bookworm"], [deb])
    with pytest.raises(RepoError, match=rf"is under {afile}, which is a file"):
        Repository(afile / "repo", SETTINGS, signer).include(["bookworm"], [deb])
    with pytest.raises(RepoError, match="is a file, not a repository directory"):
        check_repository(afile)
    assert afile.read_text() == "not a repository\n"


@pytest.mark.parametrize("suite", ["bookworm\n", "book worm", "../bookworm", "bookworm/x"])
def test_a_suite_name_must_match_in_full(tmp_path: Path, signer: Signer, suite: str) -> None:
    deb = make_deb(tmp_path, "hello", "1.0")
    with pytest.raises(RepoError, match="is not valid"):
        Repository(tmp_path / "repo", SETTINGS, signer).include([suite], [deb])
    assert not (tmp_path / "repo" / "dists").exists()


def test_repo_publish_removes_every_pool_file_no_suite_references(
    tmp_path: Path, signer: Signer
) -> None:
    repo = Repository(tmp_path / "repo", SETTINGS, signer)
    repo.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0")])
    # What an older releng's killed runs left: a pool file with no record, a half copy.
    orphan = repo.root / "pool/main/o/old/old_1.0_amd64.deb"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left behind")
    half = repo.root / "pool/main/h/hello" / f".hello_2.0_amd64.deb.{dead_pid()}.tmp"
    half.write_bytes(b"half")
    result = repo.publish()
    assert "pool/main/o/old/old_1.0_amd64.deb" in result.removed
    assert not orphan.exists() and not half.exists() and not (repo.root / "pool/main/o").exists()
    assert_converged(repo.root, "publish")
