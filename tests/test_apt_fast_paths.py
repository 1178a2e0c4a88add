"""The include's fast paths give what the plain ones give (issue 25).

- Many small packages are read on two cores, by a forked child from the first while this
  process makes their pool directories and reads from the last
  (``releng.apt.pool.PoolSteps._read_forked``): the pool, the indexes and the Release are
  byte for byte what one process makes, whichever process read which package; a refused
  input first or last is the same one-line error, and leaves no new pool directory; copies
  made by either process land in the pool, and a package both read leaves no copy behind.
- The syncfs before the Release switch runs while gpg signs: every file the new Release
  names is written before it, the Release files after it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from releng.apt import RepoSettings, Repository, check_repository
from releng.apt import pool as pool_mod
from releng.apt import switch as switch_mod
from releng.apt.debfile import DebInfo
from releng.apt.state import STATE_DIR
from releng.errors import RelengError
from releng.gpg import Signer
from tests.apt_debs import make_deb, raw_deb
from tests.fixtures.gpg import TestKey, make_key

REPO_ROOT = Path(__file__).resolve().parents[1]
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
COUNT = 12  # packages per include; FORK_MIN is lowered to 6 so that they are read forked


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    return make_key(
        tmp_path_factory.mktemp("fast-gnupg"), name="releng fast paths", passphrase=None
    )


@pytest.fixture(scope="module")
def signer(key: TestKey) -> Signer:
    return Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("debs")
    for i in range(COUNT):
        make_deb(d, f"fast{i:02d}", "1.0", source="fastsrc" if i % 4 == 0 else "")
    return d


class Forks:
    """For each forked read, how many packages its child handed back; how many packages this
    process read itself while a child read."""

    def __init__(self) -> None:
        self.child: list[int] = []
        self.parent = 0


def count_forks(*, slow_child: bool = False, child_ignores_claims: bool = False) -> Forks:
    """FORK_MIN lowered for small inputs; what each forked read's processes read (the real
    _Batches doing the work). Only in a process of its own (in_fresh_process).

    ``slow_child``: the child takes 50 ms a package, so that this process claims and reads
    most of them from the end (batches of 2, claimed 2 past what the child sent).
    ``child_ignores_claims``: the child reads every package, as a child that checked the
    shared number just before this process lowered it would read one.
    """
    pool_mod.FORK_MIN = 6
    seen = Forks()
    real_read_forked, real_feed = pool_mod.PoolSteps._read_forked, pool_mod._Batches.feed
    parent, real_read_one = os.getpid(), pool_mod.read_one
    forked = False

    def read_forked(self: pool_mod.PoolSteps, *args: Any, **kw: Any) -> list[DebInfo]:
        nonlocal forked
        seen.child.append(0)
        forked = True
        try:
            return real_read_forked(self, *args, **kw)
        finally:
            forked = False

    def feed(self: pool_mod._Batches, chunk: bytes) -> list[pool_mod._Part]:
        parts = real_feed(self, chunk)
        seen.child[-1] += sum(len(part.infos) for part in parts)
        return parts

    def read_one(path: str, staging: Any) -> Any:
        if os.getpid() != parent:
            if slow_child:
                time.sleep(0.05)
        elif forked:
            seen.parent += 1
        return real_read_one(path, staging)

    pool_mod.PoolSteps._read_forked = read_forked  # type: ignore[method-assign]
    pool_mod._Batches.feed = feed  # type: ignore[method-assign]
    pool_mod.read_one = read_one
    if slow_child:
        pool_mod._BATCH = pool_mod._STEAL_MARGIN = 2
    if child_ignores_claims:
        real_part = pool_mod._read_part

        def read_part(*args: Any, **kw: Any) -> None:
            real_part(*args, **{**kw, "claims": SimpleNamespace(limit=1 << 30)})

        pool_mod._read_part = read_part
    return seen


def in_fresh_process(
    scenario: str, tmp_path: Path, key: TestKey, debs: Path, **kwargs: object
) -> None:
    """Run this module's ``scenario`` in a new interpreter, given ``tmp``, ``home``,
    ``fingerprint``, ``inputs`` and ``kwargs`` (each as a string). A forked read needs a
    process with no other thread (a fork copies none, nor a lock one holds), and a pytest
    worker may have some: the session's moto server, xdist's own."""
    kwargs = {"tmp": tmp_path, "home": key.home, "fingerprint": key.fingerprint, **kwargs}
    kwargs["inputs"] = debs
    code = (
        "import sys; import tests.test_apt_fast_paths as t; "
        f"t.{scenario}(**dict(a.split('=', 1) for a in sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *(f"{k}={v}" for k, v in kwargs.items())],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def settings(**kw: object) -> RepoSettings:
    base: dict[str, object] = {"name": "tally", "origin": "o", "label": "l", "contents": False}
    base.update(kw)
    return RepoSettings(**base)  # type: ignore[arg-type]


def tree(root: Path) -> dict[str, str]:
    """Every public file (and directory) with its sha256: the signatures excepted."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel.startswith(STATE_DIR) or p.name in ("InRelease", "Release.gpg"):
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def include(root: Path, signer: Signer, inputs: list[Path], *, workers: int, link: bool) -> None:
    r = Repository(root, settings(), signer, clock=lambda: NOW, workers=workers, link_inputs=link)
    r.include(["bookworm"], inputs)


@pytest.mark.parametrize("child", ["fast", "slow", "slow, reading every one"])
@pytest.mark.parametrize("link", [True, False], ids=["link", "copy"])
def test_a_forked_read_publishes_byte_for_byte_what_one_process_does(
    tmp_path: Path, key: TestKey, debs: Path, link: bool, child: str
) -> None:
    in_fresh_process("forked_read_scenario", tmp_path, key, debs, link=link, child=child)


def forked_read_scenario(
    *, tmp: str, home: str, fingerprint: str, inputs: str, link: str, child: str
) -> None:
    tmp_path, debs, linked = Path(tmp), Path(inputs), link == "True"
    signer = Signer(gnupghome=Path(home), key=fingerprint, passphrase=None)
    forks = count_forks(
        slow_child=child != "fast", child_ignores_claims=child == "slow, reading every one"
    )
    include(tmp_path / "one", signer, [debs], workers=1, link=linked)
    assert forks.child == []  # one worker: no fork
    if child == "slow":  # and the pipe's descriptor numbered past select()'s 1024
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, 2048))
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
        assert max(held) > 1024
    include(tmp_path / "two", signer, [debs], workers=2, link=linked)
    if child == "fast":
        assert forks.child == [COUNT]  # the child read them all (fewer than two batches)
        assert forks.parent == 0
    elif child == "slow":
        assert forks.child[0] < COUNT - 2  # this process read the rest, from the last one
        assert forks.child[0] + forks.parent == COUNT
    else:
        assert forks.child == [COUNT]  # this process read some of them too: the child's count
        assert forks.parent > 0
    assert tree(tmp_path / "two") == tree(tmp_path / "one")
    report = check_repository(tmp_path / "two")
    assert report.problems == []
    pool = sorted((tmp_path / "two" / "pool").rglob("*.deb"))
    assert len(pool) == COUNT
    for p in pool:  # a copy is a file of its own; a link is the input itself
        assert (p.stat().st_ino == (debs / p.name).stat().st_ino) == linked
    incoming = tmp_path / "two" / STATE_DIR / "incoming"
    assert not incoming.exists() or not any(incoming.rglob("*"))  # no copy left behind


@pytest.mark.parametrize("child", ["fast", "slow"])
@pytest.mark.parametrize("where", ["first part", "second part"])
def test_a_refused_input_in_either_part_is_one_line_and_leaves_no_pool_directory(
    tmp_path: Path, key: TestKey, debs: Path, where: str, child: str
) -> None:
    in_fresh_process("refused_input_scenario", tmp_path, key, debs, where=where, child=child)


def refused_input_scenario(
    *, tmp: str, home: str, fingerprint: str, inputs: str, where: str, child: str
) -> None:
    """With a slow child, this process reads from the last one: it meets the refused last
    one first, or has made the directories of several packages when the child meets the
    refused first one."""
    tmp_path, debs = Path(tmp), Path(inputs)
    signer = Signer(gnupghome=Path(home), key=fingerprint, passphrase=None)
    forks = count_forks(slow_child=child == "slow")
    r = Repository(tmp_path / "repo", settings(), signer, clock=lambda: NOW, workers=2)
    r.include(["bookworm"], [make_deb(tmp_path, "existing", "1.0")])
    before = tree(r.root)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for p in debs.glob("*.deb"):
        os.link(p, inputs / p.name)
    name = "aa-nover.deb" if where == "first part" else "zz-nover.deb"  # sorted: first or last
    raw_deb(inputs, name, "Package: nover\nArchitecture: all\n")
    with pytest.raises(RelengError) as err:
        r.include(["bookworm"], [inputs])
    assert str(err.value).startswith(f"{inputs / name}: the control file has no Version")
    assert "\n" not in str(err.value)
    # Read forked: the child stopped at the refused one (the first), or read the 12 before it.
    assert forks.child == [0 if where == "first part" else COUNT]
    if child == "slow" and where == "first part":
        assert forks.parent > 2  # and made their directories, which the failed include removed
    assert tree(r.root) == before  # no pool directory of the new packages is left
    r.include(["bookworm"], [inputs / p.name for p in debs.glob("*.deb")])
    assert check_repository(r.root).problems == []


def test_the_syncfs_comes_after_every_file_the_release_names_and_before_the_release(
    tmp_path: Path, signer: Signer, debs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush now runs while gpg signs; what it must cover is unchanged."""
    root = tmp_path / "repo"
    seen: list[tuple[set[str], bool]] = []
    real = switch_mod.sync_filesystem

    def sync(path: Path) -> None:
        files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
        seen.append((files, any(f.endswith("/InRelease") for f in files)))
        real(path)

    monkeypatch.setattr(switch_mod, "sync_filesystem", sync)
    r = Repository(root, settings(sync_before_switch=True), signer, clock=lambda: NOW)
    for i, deb in enumerate(sorted(debs.glob("*.deb"))[:2]):
        r.include(["bookworm"], [deb])
        assert len(seen) == i + 1
        files, had_inrelease = seen[-1]
        assert had_inrelease == (i > 0)  # the first publish's InRelease came after the flush
        release = (root / "dists" / "bookworm" / "Release").read_text()
        named = [ln.split()[2] for ln in release.split("SHA256:\n", 1)[1].splitlines()]
        staging = "dists/.staging-bookworm" if i == 0 else "dists/bookworm"
        for name in named:  # each index, by its hash and by its name, was there to flush
            sha = next(ln.split()[0] for ln in release.splitlines() if ln.endswith(f" {name}"))
            assert f"{staging}/{name}" in files
            assert f"{staging}/{name.rsplit('/', 1)[0]}/by-hash/SHA256/{sha}" in files
        assert any(f.startswith("pool/") and f.endswith(f"/{deb.name}") for f in files)
    assert check_repository(root).problems == []


def test_members_load_from_their_marshalled_copy_only_while_it_is_a_copy_of_the_file(
    tmp_path: Path, signer: Signer, debs: Path
) -> None:
    """One include into a large suite parses its members (8 ms for 10,000) or loads the copy
    the last save made (2.7 ms); a members file another publisher wrote (an S3 pull), or a
    damaged copy, is parsed."""
    from releng.apt.state import RepoState, dump_members, parse_members

    r = Repository(tmp_path / "repo", settings(), signer, clock=lambda: NOW)
    r.include(["bookworm"], sorted(debs.glob("*.deb"))[:3])
    state = RepoState(r.root)
    data = state.suite_path("bookworm").read_bytes()
    cache = state.members_cache_path("bookworm")
    assert cache.is_file()
    assert state._cached_members("bookworm", data) == parse_members(data)
    assert RepoState(r.root).load_suite("bookworm").members == parse_members(data)[1]
    # Another publisher's members (a new tag): the file is read, not the copy.
    _tag, members = parse_members(data)
    path, member = next(iter(members.items()))
    theirs = dump_members(b"\x01" * 8, {path: member})
    state.suite_path("bookworm").write_bytes(theirs)
    assert state._cached_members("bookworm", theirs) is None
    loaded = RepoState(r.root).load_suite("bookworm")
    assert (loaded.tag, loaded.members) == (b"\x01" * 8, {path: member})
    # The same tag, other content (a damaged file keeps its first line): not the copy either.
    state.suite_path("bookworm").write_bytes(data[:-1])
    assert state._cached_members("bookworm", data[:-1]) is None
    state.suite_path("bookworm").write_bytes(data)
    cache.write_bytes(b"garbage")  # a damaged copy: parsed instead
    assert RepoState(r.root).load_suite("bookworm").members == members
    r.include(["bookworm"], sorted(debs.glob("*.deb"))[3:4])  # the next save writes it anew
    assert (
        RepoState(r.root).load_suite("bookworm").members
        == parse_members(state.suite_path("bookworm").read_bytes())[1]
    )
    assert state._cached_members("bookworm", state.suite_path("bookworm").read_bytes())
    assert check_repository(r.root).problems == []
