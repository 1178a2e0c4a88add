"""Contents-<arch>.gz indexes: listed in the Release with by-hash copies, incremental, checked.

apt-file itself reads them in test_front_page_browser.py (bookworm and noble containers).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from releng.apt import RepoSettings, Repository, check_repository
from releng.apt.contents import PACK, PACK_INDEX, file_list, parse_contents
from releng.apt.state import STATE_DIR
from releng.deb822 import parse_release_sha256
from releng.gpg import Signer
from tests.apt_debs import make_deb
from tests.fixtures.gpg import TestKey, make_key


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    return make_key(tmp_path_factory.mktemp("contents-gnupg"), name="contents key", passphrase=None)


@pytest.fixture(scope="module")
def signer(key: TestKey) -> Signer:
    return Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)


def settings(**kw: object) -> RepoSettings:
    base: dict[str, object] = {
        "name": "tally",
        "origin": "releng tests",
        "label": "tally",
        "architectures": ("amd64", "arm64"),
        "sync_before_switch": False,
    }
    base.update(kw)
    return RepoSettings(**base)  # type: ignore[arg-type]


def contents(root: Path, suite: str, arch: str) -> dict[str, set[str]]:
    path = root / "dists" / suite / "main" / f"Contents-{arch}.gz"
    return parse_contents(gzip.decompress(path.read_bytes()), where=str(path))


def release_paths(root: Path, suite: str) -> dict[str, str]:
    text = (root / "dists" / suite / "Release").read_text()
    return {e.path: e.sha256 for e in parse_release_sha256(text)}


def test_contents_per_architecture_with_arch_all_in_each_and_in_contents_all(
    tmp_path: Path, signer: Signer
) -> None:
    root = tmp_path / "repo"
    debs = [
        make_deb(tmp_path, "tally", "1.0-1", extra="Section: utils\n"),
        make_deb(tmp_path, "tally", "1.0-1", arch="arm64", extra="Section: utils\n"),
        make_deb(tmp_path, "tally-doc", "1.0-1", arch="all"),
    ]
    Repository(root, settings(), signer).include(["bookworm"], debs)
    assert contents(root, "bookworm", "amd64") == {
        "usr/bin/tally": {"tally"},
        "usr/bin/tally-doc": {"tally-doc"},
    }
    assert contents(root, "bookworm", "arm64") == contents(root, "bookworm", "amd64")
    assert contents(root, "bookworm", "all") == {"usr/bin/tally-doc": {"tally-doc"}}
    text = gzip.decompress((root / "dists/bookworm/main/Contents-amd64.gz").read_bytes())
    assert b"usr/bin/tally    utils/tally\n" in text  # the section/package location
    listed = release_paths(root, "bookworm")
    for arch in ("amd64", "arm64", "all"):
        for name in (f"main/Contents-{arch}", f"main/Contents-{arch}.gz"):
            digest = listed[name]  # the plain name too: apt finds the target by it
            assert (root / f"dists/bookworm/main/by-hash/SHA256/{digest}").is_file()
        plain = (root / f"dists/bookworm/main/Contents-{arch}").read_bytes()
        assert plain == gzip.decompress(
            (root / f"dists/bookworm/main/Contents-{arch}.gz").read_bytes()
        )
    report = check_repository(root)
    assert report.problems == [] and report.warnings == []


def test_no_contents_all_without_arch_all_packages_and_none_when_turned_off(
    tmp_path: Path, signer: Signer
) -> None:
    root = tmp_path / "repo"
    Repository(root, settings(), signer).include(["bookworm"], [make_deb(tmp_path, "ab", "1")])
    assert "main/Contents-all.gz" not in release_paths(root, "bookworm")
    assert "main/Contents-all" not in release_paths(root, "bookworm")
    assert "main/Contents-amd64.gz" in release_paths(root, "bookworm")
    off = tmp_path / "off"
    Repository(off, settings(contents=False), signer).include(
        ["bookworm"], [make_deb(tmp_path, "ab", "1")]
    )
    assert not [p for p in release_paths(off, "bookworm") if "Contents" in p]
    assert not list((off / "dists/bookworm/main").glob("Contents*"))
    assert not (off / STATE_DIR / PACK).exists()


def test_adding_a_package_reads_only_its_own_file_list(tmp_path: Path, signer: Signer) -> None:
    """The other packages' lines come from the published file: with their pool files and
    cached lists gone, they are still listed after the next include."""
    root = tmp_path / "repo"
    repo = Repository(root, settings(), signer)
    repo.include(["bookworm"], [make_deb(tmp_path, f"p{i}", "1") for i in range(40)])
    (root / STATE_DIR / PACK).unlink()  # the kept file lists
    shutil.rmtree(root / "pool")
    repo.include(["bookworm"], [make_deb(tmp_path, "newcomer", "1")])
    listed = contents(root, "bookworm", "amd64")
    assert set(listed) == {f"usr/bin/p{i}" for i in range(40)} | {"usr/bin/newcomer"}


def test_a_replaced_version_leaves_the_contents(tmp_path: Path, signer: Signer) -> None:
    root = tmp_path / "repo"
    repo = Repository(root, settings(keep_versions=1), signer)
    repo.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0-1")])
    repo.include(["bookworm"], [make_deb(tmp_path, "tally", "1.1-1")])
    text = gzip.decompress((root / "dists/bookworm/main/Contents-amd64.gz").read_bytes())
    assert text.count(b"usr/bin/tally ") == 1
    assert check_repository(root).problems == []


def test_a_lost_cache_is_rebuilt_from_the_pool(tmp_path: Path, signer: Signer) -> None:
    root = tmp_path / "repo"
    repo = Repository(root, settings(), signer)
    repo.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0-1")])
    shutil.rmtree(root / STATE_DIR / "chunks")  # the tables (a cache)
    (root / STATE_DIR / PACK).unlink()
    (root / STATE_DIR / PACK_INDEX).unlink()
    repo.publish()
    assert contents(root, "bookworm", "amd64") == {"usr/bin/tally": {"tally"}}


def test_kept_lists_survive_a_lost_table_and_a_torn_index_line(
    tmp_path: Path, signer: Signer
) -> None:
    """Without the published file's table and the pool, the lists kept in the pack rebuild
    the index; a torn last line (a killed append) is ignored and later lines still count."""
    root = tmp_path / "repo"
    repo = Repository(root, settings(), signer)
    repo.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0-1")])
    with (root / STATE_DIR / PACK_INDEX).open("ab") as f:
        f.write(b"0123")  # a torn line
    repo.include(["bookworm"], [make_deb(tmp_path, "other", "1.0-1")])
    shutil.rmtree(root / STATE_DIR / "chunks")
    shutil.rmtree(root / "pool")
    repo.publish()
    assert set(contents(root, "bookworm", "amd64")) == {"usr/bin/tally", "usr/bin/other"}


def test_file_list_reads_gzip_xz_zstd_and_plain_data_members(tmp_path: Path) -> None:
    for comp in ("gzip", "xz", "zstd", "none"):
        (tmp_path / comp).mkdir()
        deb = make_deb(tmp_path / comp, "tally", "1", compression=comp)
        assert file_list(deb) == ["usr/bin/tally"], comp


def test_repo_check_reports_an_unreadable_contents_file(tmp_path: Path, signer: Signer) -> None:
    root = tmp_path / "repo"
    Repository(root, settings(), signer).include(["bookworm"], [make_deb(tmp_path, "ab", "1")])
    digest = release_paths(root, "bookworm")["main/Contents-amd64.gz"]
    for path in (
        root / "dists/bookworm/main/Contents-amd64.gz",
        root / f"dists/bookworm/main/by-hash/SHA256/{digest}",
    ):
        path.unlink()
        path.write_bytes(b"not gzip")
    problems = check_repository(root).problems
    assert any("Contents-amd64.gz cannot be read" in p for p in problems), problems


@pytest.mark.parametrize("comp", ["gzip", "xz", "zstd", "none"])
def test_file_list_matches_dpkg_deb_with_long_names_links_and_directories(
    tmp_path: Path, comp: str
) -> None:
    """The hand-made reader of small data.tar members and tarfile agree with dpkg-deb."""
    import subprocess

    root = tmp_path / "tree"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        "Package: longnames\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t.invalid>\n"
        "Description: d\n d\n"
    )
    deep = root / "usr/share" / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / ("f" * 90)).write_text("x")  # a path of more than 100 characters
    (root / "usr/share/empty-dir").mkdir()
    (root / "usr/share/link").symlink_to("empty-dir")
    (root / "usr/share/plain file with spaces").write_text("y")
    deb = tmp_path / "longnames.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{comp}", "--build", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True
    ).stdout
    names = subprocess.run(
        ["tar", "-t"], input=listing, check=True, capture_output=True
    ).stdout.decode()
    expected = [n.removeprefix("./") for n in names.splitlines() if not n.endswith("/")]
    assert file_list(deb) == expected
    assert any(len(n) > 100 for n in expected)


def test_incremental_files_equal_a_rebuild_from_scratch(tmp_path: Path, signer: Signer) -> None:
    """Packages added among the old ones, replaced and dropped: the runs sliced out of the
    last files, with the new members put in their place, are what a full rebuild makes."""
    root = tmp_path / "repo"
    repo = Repository(root, settings(keep_versions=1), signer)
    repo.include(["bookworm"], [make_deb(tmp_path, f"p{i:02d}", "1") for i in range(0, 30, 3)])
    repo.include(["bookworm"], [make_deb(tmp_path, f"p{i:02d}", "1") for i in range(1, 30, 7)])
    repo.include(["bookworm"], [make_deb(tmp_path, "p03", "2"), make_deb(tmp_path, "p00", "2")])
    repo.include(["bookworm"], [make_deb(tmp_path, "zz", "1", arch="all")])
    main = root / "dists/bookworm/main"
    incremental = {p.name: p.read_bytes() for p in main.glob("Contents-*")}
    assert set(incremental) == {
        f"Contents-{a}{s}" for a in ("amd64", "arm64", "all") for s in ("", ".gz")
    }
    shutil.rmtree(root / STATE_DIR / "chunks")
    repo.publish()
    assert {p.name: p.read_bytes() for p in main.glob("Contents-*")} == incremental
    lines = gzip.decompress(incremental["Contents-amd64.gz"]).decode().splitlines()
    names = {f"p{i:02d}" for i in [*range(0, 30, 3), *range(1, 30, 7)]} | {"zz"}
    assert sorted(ln.split()[-1] for ln in lines) == sorted(f"misc/{n}" for n in names)
    assert check_repository(root).problems == []
