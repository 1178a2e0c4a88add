"""Distro directories: the shipped ones load; every malformed one is refused clearly."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from releng.distro import (
    distro_ids,
    family_revision_warnings,
    load_all,
    load_distro,
    load_distro_dir,
    read_targets,
    revision_order_warnings,
)
from releng.errors import DistroError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {
    "debian-11-bullseye": ("debian:bullseye", "bullseye", "1~deb11u1"),
    "debian-12-bookworm": ("debian:bookworm", "bookworm", "1~deb12u1"),
    "debian-13-trixie": ("debian:trixie", "trixie", "1~deb13u1"),
    "ubuntu-22.04-jammy": ("ubuntu:jammy", "jammy", "1~ubuntu22.04.1"),
    "ubuntu-24.04-noble": ("ubuntu:noble", "noble", "1~ubuntu24.04.1"),
    "debian-9-stretch": ("debian:stretch", "stretch", "1~deb9u1"),
    "ubuntu-16.04-xenial": ("ubuntu:xenial", "xenial", "1~ubuntu16.04.1"),
}


def test_shipped_distros_load() -> None:
    distros = {d.id: d for d in load_all(REPO_ROOT)}
    assert set(distros) == set(SHIPPED)
    for name, (base, codename, pkgver) in SHIPPED.items():
        d = distros[name]
        assert (d.docker_base, d.codename, d.pkgver) == (base, codename, pkgver)
        assert d.debian_dir is not None and (d.debian_dir / "control").is_file()
        assert d.debian_dir.is_relative_to(REPO_ROOT / "packaging")
    assert distros["debian-9-stretch"].apt_sources is not None
    assert "archive.debian.org" in (distros["debian-9-stretch"].apt_sources or "")
    # xenial is still on the main archive: it comes from [images] ubuntu_mirror.
    assert distros["ubuntu-16.04-xenial"].apt_sources is None


def test_targets_are_the_bootstrappable_debian_and_ubuntu_ones() -> None:
    targets = read_targets(REPO_ROOT)
    assert targets == [
        "debian-11-bullseye",
        "debian-12-bookworm",
        "debian-13-trixie",
        "ubuntu-16.04-xenial",
        "ubuntu-22.04-jammy",
        "ubuntu-24.04-noble",
    ]
    assert all(load_distro(REPO_ROOT, t).bootstrappable for t in targets)
    assert not load_distro(REPO_ROOT, "debian-9-stretch").bootstrappable
    # xenial exercises the legacy debian/ tree (debhelper compat 9).
    assert load_distro(REPO_ROOT, "ubuntu-16.04-xenial").debian_dir == (
        REPO_ROOT / "packaging" / "debian-legacy"
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "distros").mkdir()
    shared = tmp_path / "packaging" / "debian"
    shared.mkdir(parents=True)
    (shared / "control").write_text("Source: x\n")
    return tmp_path


def make(repo: Path, name: str, **files: str) -> Path:
    d = repo / "distros" / name
    d.mkdir()
    for key, value in files.items():
        (d / key).write_text(value)
    if "debian" not in files:
        os.symlink("../../packaging/debian", d / "debian")
    return d


GOOD = {"DOCKER_BASE": "debian:bookworm\n", "DISTRIBUTION": "bookworm\n", "PKGVER": "1~bookworm\n"}


def test_a_good_directory(repo: Path) -> None:
    d = load_distro_dir(make(repo, "debian-12-bookworm", **GOOD), repo_root=repo)
    assert (d.family, d.number, d.codename) == ("debian", "12", "bookworm")
    assert d.debian_dir == (repo / "packaging" / "debian").resolve()


def test_unknown_distro_lists_the_valid_ones(repo: Path) -> None:
    make(repo, "debian-12-bookworm", **GOOD)
    make(repo, "debian-13-trixie", **{**GOOD, "DISTRIBUTION": "trixie", "PKGVER": "1~trixie"})
    with pytest.raises(
        DistroError,
        match=r"unknown distro 'debian-14'; valid distros: debian-12-bookworm, debian-13-trixie",
    ):
        load_distro(repo, "debian-14")


@pytest.mark.parametrize(
    "name", ["debian", "Debian-12", "debian_12_bookworm", "debian-twelve", "debian-12-"]
)
def test_malformed_directory_name(repo: Path, name: str) -> None:
    with pytest.raises(
        DistroError, match="is not a distro directory name; expected DISTRO-NUMERIC_VERSION"
    ):
        load_distro_dir(make(repo, name, **GOOD), repo_root=repo)
    assert name in distro_ids(repo)


@pytest.mark.parametrize(
    ("docker_base", "message"),
    [
        (None, "DOCKER_BASE is missing"),
        ("", "DOCKER_BASE is empty"),
        ("  \n", "DOCKER_BASE is empty"),
        ("debian bookworm", "is not a valid image reference"),
        ("Debian:Bookworm", "is not a valid image reference"),
        ("debian:book:worm", "is not a valid image reference"),
    ],
)
def test_bad_docker_base(repo: Path, docker_base: str | None, message: str) -> None:
    files = dict(GOOD)
    if docker_base is None:
        del files["DOCKER_BASE"]
    else:
        files["DOCKER_BASE"] = docker_base
    with pytest.raises(DistroError, match=message):
        load_distro_dir(make(repo, "debian-12-bookworm", **files), repo_root=repo)


@pytest.mark.parametrize("missing", ["PKGVER", "DISTRIBUTION"])
def test_missing_pkgver_or_distribution(repo: Path, missing: str) -> None:
    files = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(DistroError, match=f"{missing} is missing"):
        load_distro_dir(make(repo, "debian-12-bookworm", **files), repo_root=repo)


def test_debian_symlink_leaving_the_repository(
    repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "debian"
    outside.mkdir()
    (outside / "control").write_text("Source: evil\n")
    d = repo / "distros" / "debian-12-bookworm"
    d.mkdir()
    for k, v in GOOD.items():
        (d / k).write_text(v)
    os.symlink(outside, d / "debian")
    with pytest.raises(DistroError, match="is a symlink that leaves the repository"):
        load_distro_dir(d, repo_root=repo)


def test_registry_references_are_accepted(repo: Path) -> None:
    files = {**GOOD, "DOCKER_BASE": "127.0.0.1:5000/library/debian:bookworm-slim"}
    d = load_distro_dir(make(repo, "debian-12-bookworm", **files), repo_root=repo)
    assert d.docker_base == "127.0.0.1:5000/library/debian:bookworm-slim"


def test_non_debian_distro_with_its_own_builder(repo: Path) -> None:
    d = repo / "distros" / "centos-9"
    d.mkdir()
    (d / "DOCKER_BASE").write_text("quay.io/centos/centos:stream9\n")
    builder = d / "make-package"
    builder.write_text("#!/bin/sh\nrpmbuild ...\n")
    builder.chmod(0o755)
    loaded = load_distro_dir(d, repo_root=repo)
    assert loaded.make_package == builder and not loaded.is_debianish


def test_targets_naming_an_unknown_distro(repo: Path) -> None:
    make(repo, "debian-12-bookworm", **GOOD)
    (repo / "distros" / "TARGETS").write_text("# default\ndebian-12-bookworm\ndebian-99-nope\n")
    with pytest.raises(DistroError, match=r"TARGETS:3: unknown distro 'debian-99-nope'"):
        read_targets(repo)


def _dpkg_lt(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0


def test_shipped_revisions_sort_in_release_order_per_family() -> None:
    shipped = load_all(REPO_ROOT)
    families: dict[str, list[tuple[tuple[int, ...], str]]] = {}
    for d in shipped:
        if d.pkgver:
            key = tuple(int(n) for n in d.number.split("."))
            families.setdefault(d.family, []).append((key, d.pkgver))
    assert set(families) == {"debian", "ubuntu"}
    for members in families.values():
        revisions = [pkgver for _key, pkgver in sorted(members)]
        for older, newer in itertools.pairwise(revisions):
            for upstream in ("1.0", "2026.11.30"):
                assert _dpkg_lt(f"{upstream}-{older}", f"{upstream}-{newer}"), (older, newer)
    assert revision_order_warnings(shipped) == []


def test_codename_revisions_are_warned_about_in_distros_and_the_build(repo: Path) -> None:
    # What the seed shipped: codenames, which do not sort by release (dpkg says so too).
    assert not _dpkg_lt("1.0-1~bullseye", "1.0-1~bookworm")
    make(repo, "debian-11-bullseye", **{**GOOD, "DISTRIBUTION": "bullseye", "PKGVER": "1~bullseye"})
    make(repo, "debian-12-bookworm", **GOOD)
    make(repo, "ubuntu-22.04-jammy", **{**GOOD, "DISTRIBUTION": "jammy", "PKGVER": "1~jammy"})
    make(repo, "ubuntu-24.04-noble", **{**GOOD, "DISTRIBUTION": "noble", "PKGVER": "1~noble"})
    (repo / "distros" / "TARGETS").write_text("debian-12-bookworm\n")
    warnings = revision_order_warnings(load_all(repo))
    assert len(warnings) == 1  # jammy < noble happens to sort; bullseye > bookworm does not
    assert warnings[0].startswith("debian-11-bullseye PKGVER 1~bullseye does not sort below")
    bookworm = load_distro(repo, "debian-12-bookworm")
    assert family_revision_warnings(repo, bookworm) == warnings
    listed = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO_ROOT), "list-distros"],
        env={**os.environ, "RELENG_ROOT": str(repo)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"warning: {warnings[0]}" in listed.stderr
    # A user's own revisions that sort keep working, with no warning.
    (repo / "distros" / "debian-11-bullseye" / "PKGVER").write_text("0.1\n")
    assert revision_order_warnings(load_all(repo)) == []


@pytest.mark.parametrize("name", ["DOCKER_BASE", "PKGVER"])
def test_binary_bytes_in_a_one_line_file_are_refused(repo: Path, name: str) -> None:
    d = make(repo, "debian-12-bookworm", **GOOD)
    (d / name).write_bytes(b"\x89PNG\r\n\x1a\n\xff")
    with pytest.raises(DistroError, match=rf"{name}: not UTF-8 text \(byte 0 is b'\\x89'\)"):
        load_distro_dir(d, repo_root=repo)


@pytest.mark.parametrize("link", ["debian", "make-package"])
def test_a_symlink_loop_is_refused_naming_it(repo: Path, link: str) -> None:
    d = make(repo, "debian-12-bookworm", **GOOD)
    (d / link).unlink(missing_ok=True)
    os.symlink(link + ".loop", d / link)
    os.symlink(link, d / (link + ".loop"))
    with pytest.raises(DistroError, match=rf"{link} is a symlink that cannot be followed"):
        load_distro_dir(d, repo_root=repo)
