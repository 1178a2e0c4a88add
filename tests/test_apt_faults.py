"""Faults an adversarial run found: truncated packages, kills at the wrong moment, stale
temporary files, half-made first publishes, full disks, immutable and misnamed directories.

Each repository is then held to check-repo and to the pool holding exactly what the
suites reference (tests/test_apt_crash.py); apt reads such repositories in
test_apt_in_container.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from releng.apt import RepoSettings, Repository, check_repository
from releng.apt.lock import RepoLock
from releng.apt.state import STATE_DIR
from releng.errors import BadPackageError, RepoError
from releng.gpg import Signer
from tests.apt_debs import make_deb, make_source
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
    # The copy, made while the input is read and hashed, stops half-way, as a kill in the
    # middle of it would.
    code = (
        "import os, signal, sys\n"
        "from releng.apt import debfile\n"
        "def half(self, data):\n"
        "    os.write(self._fd, bytes(data)[: len(data) // 2])\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "debfile._Tee.update = half\n"
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
    incoming = root / STATE_DIR / "incoming"
    assert [p for d in incoming.iterdir() for p in d.iterdir()]  # the half copy
    completes(root, key, "retention")
    assert not list(incoming.iterdir())
    assert not (root / "pool/main/b").exists()
    assert_converged(root, "half copy")


def _include_changing_meanwhile(
    repo: Repository, paths: list[Path], change: Callable[[], None]
) -> BaseException | None:
    """Include ``paths`` while the test holds the lock; once the include waits for it (its
    inputs read), ``change`` rewrites one; then the lock is let go. What the include raised."""
    waiting = threading.Event()

    class Waiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for the repository lock" in record.getMessage():
                waiting.set()

    handler = Waiting()
    lock_log = logging.getLogger("releng.apt.lock")
    level = lock_log.level
    lock_log.addHandler(handler)
    lock_log.setLevel(logging.INFO)
    outcome: list[BaseException | None] = []

    def include() -> None:
        try:
            repo.include(["bookworm"], paths)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)
        else:
            outcome.append(None)

    try:
        with RepoLock(repo.state.lock_path, timeout=60):
            thread = threading.Thread(target=include)
            thread.start()
            assert waiting.wait(60), "the include never waited for the lock"
            change()
        thread.join(60)
    finally:
        lock_log.removeHandler(handler)
        lock_log.setLevel(level)
    assert outcome, "the include did not finish"
    return outcome[0]


def test_a_deb_rewritten_while_its_include_waits_publishes_the_bytes_it_indexed(
    tmp_path: Path, signer: Signer
) -> None:
    """The pool's copy is made in the read that hashes the .deb for the index: a package
    rewritten before the copy cannot land in the pool under the old digest."""
    repo = Repository(tmp_path / "repo", SETTINGS, signer)
    repo.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0")])
    deb = make_deb(tmp_path, "tally", "1.0")
    before = deb.read_bytes()
    other = make_deb(tmp_path / "other", "tally", "1.0", script="#!/bin/sh\necho other\n")
    assert other.read_bytes() != before

    assert (
        _include_changing_meanwhile(repo, [deb], lambda: deb.write_bytes(other.read_bytes()))
        is None
    )
    assert (repo.root / "pool/main/t/tally/tally_1.0_amd64.deb").read_bytes() == before
    assert check_repository(repo.root).problems == []
    assert not (repo.root / STATE_DIR / "incoming").exists()  # the include's copies, moved
    assert_converged(repo.root, "rewritten input")


def test_a_source_file_rewritten_while_its_include_waits_is_refused_in_one_line(
    tmp_path: Path, signer: Signer
) -> None:
    """A .dsc's files are checked against it when read and copied later: the copy is checked
    in the same read, and a mismatch publishes nothing."""
    repo = Repository(tmp_path / "repo", SETTINGS, signer)
    repo.include(["bookworm"], [make_deb(tmp_path, "hello", "1.0")])
    dsc = make_source(tmp_path, "tally", "1.0")
    tarball = tmp_path / "tally_1.0.tar.gz"

    err = _include_changing_meanwhile(repo, [dsc], lambda: tarball.write_bytes(b"not it"))
    assert isinstance(err, RepoError), err
    message = str(err)
    assert message.startswith(f"{tarball} changed while it was being included"), message
    assert "\n" not in message
    assert not [p for p in (repo.root / "pool").rglob("*") if p.is_file() and "tally" in p.name]
    assert "tally" not in (repo.root / "dists/bookworm/main/source/Sources").read_text()
    assert_converged(repo.root, "rewritten source")


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
