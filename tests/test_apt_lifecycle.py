"""A repository's lifecycle: list, copy (promote), remove, history, rollback, retention with
history, the members file format, and kill -9 at every step of each change.

Every repository is checked with check-repo (gpgv, every checksum, every referenced file);
apt itself reads them in test_apt_lifecycle_in_container.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import marshal
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.apt import CRASH_POINTS, RepoSettings, Repository, check_repository, lifecycle
from releng.apt.history import History
from releng.apt.lifecycle import Spec
from releng.apt.state import STATE_DIR, RepoState
from releng.errors import RepoError
from releng.gpg import Signer
from releng.project import Project
from releng.version import Version
from tests.apt_debs import make_deb, make_source
from tests.fixtures.gpg import TestKey, make_key

REPO_ROOT = Path(__file__).resolve().parents[1]
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
PATTERNS = (r"bookworm", r"bookworm-staging", r"bookworm-stable", r"trixie")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    """No passphrase: these tests publish dozens of times (see test_apt_repository.py)."""
    return make_key(
        tmp_path_factory.mktemp("life-gnupg"), name="releng lifecycle key", passphrase=None
    )


@pytest.fixture(scope="module")
def signer(key: TestKey) -> Signer:
    return Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)


def settings(**kw: object) -> RepoSettings:
    base: dict[str, object] = {
        "name": "tally",
        "origin": "releng tests",
        "label": "tally",
        "suite_patterns": PATTERNS,
        "sync_before_switch": False,  # tmpfs-like speed for unit tests; durable.py is tested below
    }
    base.update(kw)
    return RepoSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def repo(tmp_path: Path, signer: Signer) -> Callable[..., Repository]:
    def make(**kw: object) -> Repository:
        return Repository(tmp_path / "repo", settings(**kw), signer)

    return make


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "lock"
    }


def packages(root: Path, suite: str) -> str:
    return (root / "dists" / suite / "main" / "binary-amd64" / "Packages").read_text()


def sources(root: Path, suite: str) -> str:
    return (root / "dists" / suite / "main" / "source" / "Sources").read_text()


def assert_checks(root: Path) -> None:
    report = check_repository(root)
    assert report.problems == []
    assert report.warnings == []


def release_date(text: str) -> dt.datetime:
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(
        next(ln[6:] for ln in text.splitlines() if ln.startswith("Date: "))
    )


def pool_files(root: Path) -> set[str]:
    return {p.name for p in (root / "pool").rglob("*") if p.is_file()}


def specs(*texts: str) -> list[Spec]:
    return [Spec.parse(t) for t in texts]


def test_promote_shares_the_pool_file_and_re_signs_only_the_target(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo()
    r.include(
        ["bookworm-staging"],
        [make_deb(tmp_path, "tally", "1.0-1"), make_deb(tmp_path, "other", "2.0")],
    )
    r.include(["bookworm"], [make_deb(tmp_path, "base", "1.0")])
    staging_release = (r.root / "dists/bookworm-staging/InRelease").read_bytes()
    target_release = (r.root / "dists/bookworm/InRelease").read_bytes()
    result = lifecycle.copy(r, source="bookworm-staging", target="bookworm", specs=specs("tally"))
    assert result.suites == ("bookworm",)
    assert "Package: tally\nVersion: 1.0-1\n" in packages(r.root, "bookworm")
    assert "Package: other\n" not in packages(r.root, "bookworm")
    assert "Package: base\n" in packages(r.root, "bookworm")
    assert (r.root / "dists/bookworm/InRelease").read_bytes() != target_release
    assert (r.root / "dists/bookworm-staging/InRelease").read_bytes() == staging_release
    # One pool file, named by both suites.
    debs = list((r.root / "pool").rglob("tally_*.deb"))
    assert len(debs) == 1
    assert assert_checks(r.root) is None
    # Again: nothing to do, nothing written.
    before = snapshot(r.root)
    again = lifecycle.copy(r, source="bookworm-staging", target="bookworm", specs=specs("tally"))
    assert again.suites == ()
    assert snapshot(r.root) == before


def test_a_source_brings_its_binaries_and_a_binary_its_source(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo()
    inputs = [
        make_source(tmp_path, "tally", "1.0-1"),
        make_deb(tmp_path, "tally", "1.0-1"),
        make_deb(tmp_path, "tally-doc", "1.0-1", arch="all", source="tally"),
        make_deb(tmp_path, "lone", "3.0"),
    ]
    r.include(["bookworm-staging"], inputs)
    lifecycle.copy(r, source="bookworm-staging", target="bookworm", specs=specs("tally-doc"))
    assert "Package: tally\n" in sources(r.root, "bookworm")
    assert "Package: tally\n" in packages(r.root, "bookworm")
    assert "Package: tally-doc\n" in packages(r.root, "bookworm")
    assert "Package: lone\n" not in packages(r.root, "bookworm")
    # Told otherwise: only the one named.
    lifecycle.copy(
        r, source="bookworm-staging", target="trixie", specs=specs("tally-doc=1.0-1"), related=False
    )
    assert "Package: tally-doc\n" in packages(r.root, "trixie")
    assert "Package: tally\n" not in packages(r.root, "trixie")
    assert "Package: tally\n" not in sources(r.root, "trixie")
    # --all
    lifecycle.copy(
        r, source="bookworm-staging", target="bookworm-stable", specs=[], all_packages=True
    )
    assert "Package: lone\n" in packages(r.root, "bookworm-stable")
    assert_checks(r.root)


def test_copy_without_a_version_takes_the_newest_and_keeps_retention(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo(keep_versions=1)
    r.include(["bookworm-staging"], [make_deb(tmp_path, "tally", "1.0-1")])
    lifecycle.copy(r, source="bookworm-staging", target="bookworm", specs=specs("tally"))
    r2 = repo(keep_versions=2)
    r2.include(["bookworm-staging"], [make_deb(tmp_path, "tally", "2.0-1")])
    lifecycle.copy(r, source="bookworm-staging", target="bookworm", specs=specs("tally"))
    text = packages(r.root, "bookworm")
    assert "Version: 2.0-1\n" in text
    assert "Version: 1.0-1\n" not in text  # keep_versions = 1 in the target


def test_list_shows_versions_arch_size_and_when_added(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo()
    deb = make_deb(tmp_path, "tally", "1.0-1")
    r.include(["bookworm"], [deb, make_deb(tmp_path, "other", "2.0")])
    rows = lifecycle.list_packages(r.root, suite="bookworm", package="tal*")
    assert [(x.package, x.version, x.arch, x.size) for x in rows] == [
        ("tally", "1.0-1", "amd64", deb.stat().st_size)
    ]
    assert rows[0].added.startswith(dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"))
    assert {x.suite for x in lifecycle.list_packages(r.root)} == {"bookworm"}


def test_history_numbers_publishes_and_a_rollback_is_a_fresh_publish(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo(keep_versions=1, valid_for_days=7)
    r.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0-1")])
    first_release = (r.root / "dists/bookworm/Release").read_bytes()
    time.sleep(1.0)  # Dates are in seconds
    r.include(["bookworm"], [make_deb(tmp_path, "tally", "2.0-1")])
    assert "Version: 2.0-1\n" in packages(r.root, "bookworm")
    r.publish(["bookworm"])  # a re-sign: no entry
    entries = lifecycle.history(r.root, "bookworm")
    assert [e.n for e in entries] == [1, 2]
    assert entries[0].release_sha256 == hashlib.sha256(first_release).hexdigest()
    assert [m[3] for m in entries[1].added.values()] == ["2.0-1"]
    assert [m[3] for m in entries[1].removed.values()] == ["1.0-1"]
    before = (r.root / "dists/bookworm/Release").read_text()
    lifecycle.rollback(r, suite="bookworm", to=1)
    text = packages(r.root, "bookworm")
    assert "Version: 1.0-1\n" in text and "Version: 2.0-1\n" not in text
    after = (r.root / "dists/bookworm/Release").read_text()
    # Signed now, not publish 1's Release again: apt sees no replay of an older Date.
    assert release_date(after) >= release_date(before) > release_date(first_release.decode())
    assert "Valid-Until: " in after
    entries = lifecycle.history(r.root, "bookworm")
    assert [(e.n, e.note) for e in entries] == [(1, ""), (2, ""), (3, "rollback to 1")]
    # Both versions' pool files stay: history entry 2 needs 2.0-1.
    assert {"tally_1.0-1_amd64.deb", "tally_2.0-1_amd64.deb"} <= pool_files(r.root)
    lifecycle.rollback(r, suite="bookworm", to=2)
    assert "Version: 2.0-1\n" in packages(r.root, "bookworm")
    assert_checks(r.root)


def test_an_include_that_prunes_history_collects_what_the_pruned_entry_held(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    """Adding another package drops nothing, but its publish pushes the entry that removed
    tally 1.0 out of the kept history: tally 1.0's pool file is then referenced by nothing and
    goes in the same run (the crash test's convergence check found it left behind)."""
    r = repo(keep_versions=1, keep_history=2)
    r.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0")])
    r.include(["bookworm"], [make_deb(tmp_path, "tally", "2.0")])  # entry 2 removes 1.0
    assert "tally_1.0_amd64.deb" in pool_files(r.root)  # rolling back to 1 needs it
    r.include(["bookworm"], [make_deb(tmp_path, "other", "1.0")])  # drops nothing
    assert [e.n for e in lifecycle.history(r.root, "bookworm")] == [2, 3]
    assert pool_files(r.root) == {"tally_2.0_amd64.deb", "other_1.0_amd64.deb"}
    assert_checks(r.root)


def test_retention_keeps_exactly_what_kept_history_needs(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo(keep_versions=1, keep_history=2)
    for v in ("1.0", "2.0", "3.0"):
        r.include(["bookworm"], [make_deb(tmp_path, "tally", v)])
    # Kept entries: 2 (tally 2.0) and 3 (tally 3.0); 1.0 is needed by none.
    assert [e.n for e in lifecycle.history(r.root, "bookworm")] == [2, 3]
    assert pool_files(r.root) == {"tally_2.0_amd64.deb", "tally_3.0_amd64.deb"}
    with pytest.raises(RepoError, match="no publish 1 in its history"):
        lifecycle.rollback(r, suite="bookworm", to=1)
    lifecycle.remove(r, suite="bookworm", specs=specs("tally"))
    assert "Package: tally" not in packages(r.root, "bookworm")
    # Kept: 3 (3.0) and 4 (empty): 2.0 is needed by no kept entry any more.
    assert pool_files(r.root) == {"tally_3.0_amd64.deb"}
    assert set(RepoState(r.root).pool()) == {
        p.relative_to(r.root).as_posix() for p in (r.root / "pool").rglob("*.deb")
    }
    assert_checks(r.root)
    lifecycle.rollback(r, suite="bookworm", to=3)
    assert "Version: 3.0\n" in packages(r.root, "bookworm")
    assert_checks(r.root)


def test_remove_drops_from_one_suite_and_the_pool_file_stays_while_named(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo(keep_history=1)
    r.include(["bookworm", "trixie"], [make_deb(tmp_path, "tally", "1.0-1")])
    lifecycle.remove(r, suite="bookworm", specs=specs("tally=1.0-1"))
    assert "Package: tally" not in packages(r.root, "bookworm")
    assert "Package: tally" in packages(r.root, "trixie")
    assert pool_files(r.root) == {"tally_1.0-1_amd64.deb"}
    lifecycle.remove(r, suite="trixie", specs=[], all_packages=True)
    assert pool_files(r.root) == set()
    assert_checks(r.root)


def test_dry_run_changes_nothing(tmp_path: Path, repo: Callable[..., Repository]) -> None:
    r = repo()
    r.include(["bookworm-staging"], [make_deb(tmp_path, "tally", "1.0-1")])
    r.include(["bookworm-staging"], [make_deb(tmp_path, "tally", "2.0-1")])
    before = snapshot(r.root)
    result = lifecycle.copy(
        r, source="bookworm-staging", target="bookworm", specs=specs("tally"), dry_run=True
    )
    assert [p.rsplit("/", 1)[1] for p in result.added] == ["tally_2.0-1_amd64.deb"]
    assert lifecycle.remove(r, suite="bookworm-staging", specs=specs("tally"), dry_run=True).removed
    assert lifecycle.rollback(r, suite="bookworm-staging", to=1, dry_run=True).removed
    assert snapshot(r.root) == before


def _bad_calls(r: Repository) -> dict[str, tuple[Callable[[], object], str]]:
    return {
        "unknown suite": (
            lambda: lifecycle.copy(r, source="sid", target="bookworm", specs=specs("tally")),
            "unknown suite 'sid'",
        ),
        "unknown target": (
            lambda: lifecycle.copy(
                r, source="bookworm-staging", target="nowhere", specs=specs("tally")
            ),
            "unknown suite 'nowhere'",
        ),
        "spec matching nothing": (
            lambda: lifecycle.remove(r, suite="bookworm", specs=specs("tally=9.9")),
            "tally=9.9 matches nothing in suite 'bookworm'",
        ),
        "history number": (
            lambda: lifecycle.rollback(r, suite="bookworm", to=7),
            "has no publish 7",
        ),
        "conflicting version": (
            lambda: lifecycle.copy(
                r, source="bookworm-staging", target="bookworm", specs=specs("tally")
            ),
            "with other content",
        ),
        "slash": (
            lambda: lifecycle.copy(
                r, source="bookworm-staging", target="a/b", specs=specs("tally")
            ),
            "no '/' and no '..'",
        ),
        "dot dot": (
            lambda: lifecycle.remove(r, suite="bookworm..x", specs=specs("tally")),
            "no '/' and no '..'",
        ),
        "bad spec": (lambda: Spec.parse("tally==1"), "not a package SPEC"),
    }


def test_bad_input_is_one_clear_error_and_changes_nothing(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0-1")])
    # The same name and version, built again with other content, in another component's pool.
    other = tmp_path / "other"
    other.mkdir()
    r2 = repo(components=("main", "contrib"))
    r2.include(
        ["bookworm-staging"],
        [make_deb(other, "tally", "1.0-1", extra="Section: x\n")],
        component="contrib",
    )
    before = snapshot(r.root)
    for what, (call, message) in _bad_calls(r2).items():
        with pytest.raises(RepoError) as err:
            call()
        assert message in str(err.value), what
        assert "\n" not in str(err.value), what
        assert snapshot(r.root) == before, what


def test_members_are_text_and_the_old_marshal_format_is_read_once(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0-1")])
    path = r.root / STATE_DIR / "suites" / "bookworm.members"
    text = path.read_text()
    head, line = text.splitlines()
    assert head.startswith("releng-members 1 ") and len(head.split()[2]) == 16
    member_path, added, kind, package, version, arch = line.split("\t")
    assert (kind, package, version, arch) == ("deb", "tally", "1.0-1", "amd64")
    assert member_path.endswith("/tally_1.0-1_amd64.deb") and int(added) > 0
    # A repository written before: (tag, members) marshalled.
    old = path.with_name("old")  # written as releng always writes: a new file, renamed
    old.write_bytes(
        marshal.dumps((b"12345678", {member_path: (int(added), kind, package, version, arch)}))
    )
    old.replace(path)
    assert [x.package for x in lifecycle.list_packages(r.root)] == ["tally"]
    r.include(["bookworm"], [make_deb(tmp_path, "other", "2.0")])
    assert path.read_bytes().startswith(b"releng-members 1 ")
    assert "Package: tally\n" in packages(r.root, "bookworm")
    assert_checks(r.root)


def test_sync_before_switch_flushes_the_filesystem(tmp_path: Path, signer: Signer) -> None:
    from releng.apt.durable import _syncfs, sync_filesystem

    assert _syncfs() is not None  # Linux: syncfs(2), one call per switch
    sync_filesystem(tmp_path)
    r = Repository(tmp_path / "repo", settings(sync_before_switch=True), signer)
    r.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0-1")])
    assert_checks(r.root)


CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from releng.apt import Repository, RepoSettings, lifecycle
    from releng.apt.lifecycle import Spec
    from releng.gpg import Signer
    root, home, fpr, op, point, *debs = sys.argv[1:]
    def hook(name):
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)
    settings = RepoSettings(
        name="tally", origin="o", label="l", keep_versions=2, byhash_keep=1,
        keep_history=1 if op == "remove" else 3,
    )
    r = Repository(Path(root), settings, Signer(gnupghome=Path(home), key=fpr, passphrase=None),
                   crash_hook=hook)
    if op == "include":
        r.include(["staging"], [Path(d) for d in debs])
    elif op == "copy":
        lifecycle.copy(r, source="staging", target="stable", specs=[Spec.parse("tally")])
    elif op == "remove":
        lifecycle.remove(r, suite="staging", specs=[Spec.parse("extra")])
    elif op == "rollback":
        lifecycle.rollback(r, suite="staging", to=1)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["copy", "remove", "rollback"])
def test_kill_9_at_any_point_of_a_change_leaves_a_valid_repository_and_a_rerun_completes(
    tmp_path: Path, key: TestKey, op: str
) -> None:
    first = make_deb(tmp_path, "tally", "1.0-1")
    second = make_deb(tmp_path, "tally", "2.0-1")
    extra = make_deb(tmp_path, "extra", "1.0")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}

    def run(root: Path, what: str, point: str, *debs: Path) -> int:
        cmd = [sys.executable, "-c", CRASHER, str(root), str(key.home), key.fingerprint, what]
        cmd += [point, *map(str, debs)]
        done = subprocess.run(cmd, env=env, capture_output=True, check=False, text=True)
        assert done.returncode in (0, -signal.SIGKILL), done.stderr
        return done.returncode

    points = [p for p in CRASH_POINTS if p not in ("pool-written", "records-written")]
    for point in points:
        root = tmp_path / f"{op}-{point}"
        assert run(root, "include", "none", first) == 0
        assert run(root, "include", "none", second, extra) == 0
        if op == "copy":
            assert run(root, "copy", "none") == 0  # stable: tally 2.0-1 (history 1)
            assert run(root, "include", "none", make_deb(tmp_path, "tally", "3.0-1")) == 0
        if run(root, op, point) == 0:
            # Only a remove here drops a file nothing needs: the others' history keeps all.
            assert point in ("gc-records", "gc-files") and op != "remove", (op, point)
            continue
        report = check_repository(root)
        assert report.problems == [], (op, point, report.problems)
        assert run(root, op, "none") == 0
        assert_checks(root)
        assert not any((root / STATE_DIR / "pending").iterdir()), (op, point)
        stable = root / "dists/stable/main/binary-amd64/Packages"
        staging = packages(root, "staging")
        if op == "copy":
            assert "Version: 3.0-1\n" in stable.read_text(), point
            assert "Version: 2.0-1\n" in stable.read_text(), point
        elif op == "remove":
            assert "Package: extra\n" not in staging, point
            assert "Package: tally\n" in staging, point
        else:
            assert "Version: 1.0-1\n" in staging and "Version: 2.0-1\n" not in staging, point
        suite, note, times = {
            "copy": ("stable", "copy from staging", 2),
            "remove": ("staging", "remove", 1),
            "rollback": ("staging", "rollback to 1", 1),
        }[op]
        notes = [e.note for e in History(RepoState(root), suite).entries()]
        assert notes.count(note) == times, (point, notes)


def test_promotion_suites_and_keep_history_in_product_toml(
    make_project: Callable[[str], Project],
) -> None:
    from releng.apt import settings_for
    from releng.config import parse_product
    from releng.errors import ConfigError

    project = make_project(
        '[repositories]\npromotion_suites = ["{codename}-staging"]\nkeep_history = 3\n'
    )
    settings = settings_for(project)
    assert settings.keep_history == 3
    settings.check_suite("bookworm-staging")  # copy-packages may go there
    with pytest.raises(RepoError, match="unknown suite 'bookworm-nope'"):
        settings.check_suite("bookworm-nope")
    # Builds never go into a promotion suite.
    assert "bookworm-staging" not in project.config.suites_for(
        codename="bookworm", distro="debian-12-bookworm", version=Version.parse("1.2.3")
    )
    for text, message in (
        ("[repositories]\nkeep_history = 0\n", "keep_history = 0 is out of range"),
        ('[repositories]\npromotion_suites = ["{arch}-x"]\n', "promotion_suites entry"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_product(text, path=None, where="product.toml")


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_copy_refuses_a_damaged_pool_file_before_any_release_switch(
    tmp_path: Path, repo: Callable[..., Repository], damage: str
) -> None:
    """Issue 23.3: a promotion would publish a pool file apt cannot fetch (404 or hash
    mismatch); it is refused with one line naming the file and saying to include it again."""
    r = repo()
    r.include(["bookworm-staging"], [make_deb(tmp_path, "tally", "1.0-1")])
    pool = r.root / "pool/main/t/tally/tally_1.0-1_amd64.deb"
    if damage == "missing":
        pool.unlink()
    else:
        pool.write_bytes(pool.read_bytes()[:100])
    before = snapshot(r.root)
    with pytest.raises(RepoError) as err:
        lifecycle.copy(r, source="bookworm-staging", target="bookworm", specs=specs("tally"))
    message = str(err.value)
    assert "\n" not in message
    assert str(pool) in message and "include-packages" in message
    assert not (r.root / "dists/bookworm").exists()
    assert snapshot(r.root) == before
    # Repaired by including it again, the promotion goes through.
    r.include(["bookworm-staging"], [make_deb(tmp_path / "again", "tally", "1.0-1")])
    lifecycle.copy(r, source="bookworm-staging", target="bookworm", specs=specs("tally"))
    assert "Version: 1.0-1" in packages(r.root, "bookworm")
    assert_checks(r.root)


def test_rollback_refuses_a_corrupt_pool_file_it_would_publish(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0-1")])
    lifecycle.remove(r, suite="bookworm", specs=specs("tally"))
    pool = r.root / "pool/main/t/tally/tally_1.0-1_amd64.deb"
    assert pool.is_file(), "the history keeps it for a rollback"
    pool.write_bytes(b"x" * pool.stat().st_size)  # same size, other bytes
    release = (r.root / "dists/bookworm/InRelease").read_bytes()
    with pytest.raises(RepoError, match=r"sha256 .*include-packages"):
        lifecycle.rollback(r, suite="bookworm", to=1)
    assert (r.root / "dists/bookworm/InRelease").read_bytes() == release
    with pytest.raises(RepoError, match="include-packages"):
        lifecycle.rollback(r, suite="bookworm", to=1, dry_run=True)


class _Killed(Exception):
    pass


def test_list_shows_only_published_suites_and_repo_publish_finishes_a_killed_one(
    tmp_path: Path, signer: Signer
) -> None:
    """Issue 23.6: after a first publish killed before its Release (only
    dists/.staging-<suite> exists), list-packages must not show a suite apt cannot see."""
    root = tmp_path / "repo"
    Repository(root, settings(), signer).include(["bookworm"], [make_deb(tmp_path, "base", "1")])

    def kill(point: str) -> None:
        if point == "indexes-written":
            raise _Killed(point)

    with pytest.raises(_Killed):
        Repository(root, settings(), signer, crash_hook=kill).include(
            ["trixie"], [make_deb(tmp_path, "tally", "1.0-1")]
        )
    assert (root / "dists/.staging-trixie").is_dir() and not (root / "dists/trixie").exists()
    assert {r.suite for r in lifecycle.list_packages(root)} == {"bookworm"}
    with pytest.raises(RepoError, match=r"not published yet.*republish-repo"):
        lifecycle.list_packages(root, suite="trixie")
    Repository(root, settings(), signer).publish()
    assert {r.suite for r in lifecycle.list_packages(root)} == {"bookworm", "trixie"}


def test_a_corrupt_pool_record_is_an_error_and_repo_publish_rebuilds_it(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    """Issue 23.6: a corrupt record in pool.records was skipped (size 0, "all good")."""
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0-1")])
    r.include(["bookworm"], [make_deb(tmp_path, "other", "2.0")])
    records = r.root / STATE_DIR / "pool.records"
    data = records.read_bytes()
    assert data.count(b"\n\n") == 2
    records.write_bytes(data.replace(b'"deb"', b'"de\x00', 1))  # the first record's header
    with pytest.raises(RepoError) as err:
        lifecycle.list_packages(r.root)
    assert str(records) in str(err.value) and "republish-repo" in str(err.value)
    assert "\n" not in str(err.value)
    repo().publish()
    rows = {x.package: x for x in lifecycle.list_packages(r.root)}
    assert set(rows) == {"tally", "other"}
    assert rows["tally"].size == (r.root / rows["tally"].path).stat().st_size > 0
    assert_checks(r.root)


def test_a_torn_last_record_of_a_killed_writer_is_still_skipped(
    tmp_path: Path, repo: Callable[..., Repository]
) -> None:
    r = repo()
    r.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0-1")])
    records = r.root / STATE_DIR / "pool.records"
    records.write_bytes(records.read_bytes() + b'["pool/main/x/x/x.deb","deb"')
    assert [x.package for x in lifecycle.list_packages(r.root)] == ["tally"]
