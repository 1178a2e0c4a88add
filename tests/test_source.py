"""Source tarballs: reproducible bytes, git refs and submodules, url sources, signatures."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from releng.errors import SigningError, SourceError
from releng.project import Project
from releng.source import ensure_source_tarball, make_source_tarball
from releng.version import Version
from tests.fixtures.gpg import TestKey
from tests.fixtures.http import StaticServer
from tests.fixtures.project import git

NIGHTLY = Version.parse("2026.01.02")
RELEASE = Version.parse("1.0.0")


def signing_toml(key: TestKey, *, extra: str = "") -> str:
    return (
        f'[signing]\nkey = "{key.fingerprint}"\ngnupghome = "{key.home}"\n'
        'passphrase_env = "TEST_PASSPHRASE"\n' + extra
    )


def env_for(key: TestKey) -> dict[str, str]:
    return {"TEST_PASSPHRASE": key.passphrase}


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def gpgv(keyring: Path, signature: Path, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gpgv", "--keyring", str(keyring), str(signature), str(data)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_nightly_tarball_layout_and_normalisation(project_copy: Project) -> None:
    result = make_source_tarball(project_copy, NIGHTLY, env={})
    assert result.tarball == project_copy.out_dir / "tally-nightly-2026.01.02.tar.gz"
    found = members(result.tarball)
    assert "tally-nightly-2026.01.02/tally.c" in found
    assert "tally-nightly-2026.01.02/tests/run-tests.sh" in found
    script = found["tally-nightly-2026.01.02/tests/run-tests.sh"]
    assert script.mode == 0o755
    assert found["tally-nightly-2026.01.02/tally.c"].mode == 0o644
    commit_time = int(git(project_copy.root, "show", "-s", "--format=%ct", "HEAD"))
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in found.values()} == {
        (0, 0, "", "", commit_time)
    }
    names = list(found)
    assert names == sorted(names)
    raw = result.tarball.read_bytes()
    assert raw[4:8] == b"\0\0\0\0", "gzip header must carry no timestamp"
    assert hashlib.sha256(raw).hexdigest() == result.sha256
    assert result.sums.read_text() == f"{result.sha256}  {result.tarball.name}\n"


@pytest.mark.slow
def test_two_runs_give_identical_bytes_even_in_another_checkout(
    project_copy: Project, tmp_path: Path
) -> None:
    first = make_source_tarball(project_copy, NIGHTLY, env={}).sha256
    second = make_source_tarball(project_copy, NIGHTLY, env={}).sha256
    from tests.fixtures.project import copy_repo

    elsewhere = Project.load(copy_repo(tmp_path / "elsewhere"))
    third = make_source_tarball(elsewhere, NIGHTLY, env={}).sha256
    assert first == second == third


@pytest.mark.slow
def test_a_different_commit_gives_different_bytes(project_copy: Project) -> None:
    before = make_source_tarball(project_copy, NIGHTLY, env={}).sha256
    readme = project_copy.root / "demo" / "tally" / "README"
    readme.write_text(readme.read_text() + "one more line\n")
    git(project_copy.root, "commit", "-qam", "change", date="2026-01-03T00:00:00Z")
    after = make_source_tarball(project_copy, NIGHTLY, env={}).sha256
    assert before != after


@pytest.mark.slow
def test_source_date_epoch_overrides_commit_time(project_copy: Project) -> None:
    result = make_source_tarball(project_copy, NIGHTLY, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert {m.mtime for m in members(result.tarball).values()} == {1700000000}


def test_release_comes_from_its_tag_not_from_head(make_project, gpg_key: TestKey) -> None:  # type: ignore[no-untyped-def]
    project = make_project(signing_toml(gpg_key))
    # HEAD moves past the tag: the release must still hold the tagged content.
    (project.root / "demo" / "tally" / "NEWS").write_text("after the release\n")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-qm", "post-release work")
    result = make_source_tarball(project, RELEASE, env=env_for(gpg_key))
    assert result.tarball.name == "tally-1.0.0.tar.gz"
    names = members(result.tarball)
    assert "tally-1.0.0/tally.c" in names
    assert "tally-1.0.0/NEWS" not in names
    nightly = make_source_tarball(project, NIGHTLY, env=env_for(gpg_key))
    assert "tally-nightly-2026.01.02/NEWS" in members(nightly.tarball)


def test_a_release_with_a_tilde_comes_from_its_mapped_tag(make_project, gpg_key: TestKey) -> None:  # type: ignore[no-untyped-def]
    project = make_project(signing_toml(gpg_key))
    rc = Version.parse("1.1~rc1")
    with pytest.raises(SourceError, match=r"release tag 'tally-v1\.1-rc1' for version 1\.1~rc1"):
        make_source_tarball(project, rc, env=env_for(gpg_key))
    git(project.root, "tag", "tally-v1.1-rc1")  # git refuses "tally-v1.1~rc1"
    result = make_source_tarball(project, rc, env=env_for(gpg_key))
    assert result.tarball.name == "tally-1.1~rc1.tar.gz"
    assert "tally-1.1~rc1/tally.c" in members(result.tarball)


def test_missing_release_tag_is_refused_and_nothing_written(make_project, gpg_key: TestKey) -> None:  # type: ignore[no-untyped-def]
    project = make_project(signing_toml(gpg_key))
    with pytest.raises(
        SourceError,
        match=r"release tag 'tally-v9\.9\.9' for version 9\.9\.9 does not exist.*tally-v1\.0\.0",
    ):
        make_source_tarball(project, Version.parse("9.9.9"), env=env_for(gpg_key))
    assert not list(project.out_dir.glob("*"))


@pytest.mark.slow
def test_submodules_are_included_and_prune_applies(make_project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sub = tmp_path / "libfoo"
    sub.mkdir()
    (sub / "foo.c").write_text("int foo;\n")
    (sub / "tests").mkdir()
    (sub / "tests" / "huge.dat").write_text("x" * 1000)
    git(sub, "init", "-q", "-b", "main")
    git(sub, "add", "-A")
    git(sub, "commit", "-qm", "libfoo")
    project = make_project(
        '[source]\nrepository = "."\nprune = ["demo/tally/tests", "third-party/*/tests", "distros"]\n'
    )
    git(project.root, "submodule", "add", "-q", str(sub), "third-party/libfoo")
    git(project.root, "commit", "-qm", "add submodule")
    result = make_source_tarball(project, NIGHTLY, env={})
    names = set(members(result.tarball))
    prefix = "tally-nightly-2026.01.02"
    assert f"{prefix}/third-party/libfoo/foo.c" in names
    assert f"{prefix}/demo/tally/tally.c" in names
    assert not any("/tests" in n for n in names), sorted(names)
    assert not any(n.startswith(f"{prefix}/distros") for n in names)


def test_signatures_verify_with_gpgv(make_project, gpg_key: TestKey, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = make_project(signing_toml(gpg_key))
    result = make_source_tarball(project, RELEASE, env=env_for(gpg_key))
    keyring = gpg_key.public_keyring(tmp_path / "keyring.gpg")
    assert gpgv(keyring, result.signature, result.tarball).returncode == 0
    assert gpgv(keyring, result.sums_signature, result.sums).returncode == 0
    assert result.signature.read_text().startswith("-----BEGIN PGP SIGNATURE-----")
    # A tampered tarball no longer verifies.
    tampered = tmp_path / result.tarball.name
    tampered.write_bytes(result.tarball.read_bytes() + b"\0")
    assert gpgv(keyring, result.signature, tampered).returncode != 0


def test_wrong_passphrase_is_refused_and_nothing_written(make_project, gpg_key: TestKey) -> None:  # type: ignore[no-untyped-def]
    project = make_project(signing_toml(gpg_key))
    with pytest.raises(SigningError, match=r"wrong passphrase|no passphrase"):
        make_source_tarball(project, RELEASE, env={"TEST_PASSPHRASE": "not it"})
    assert not list(project.out_dir.glob("*"))


def test_passphrase_from_a_file(make_project, gpg_key: TestKey, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "passphrase"
    secret.write_text(gpg_key.passphrase + "\n")
    project = make_project(
        f'[signing]\nkey = "{gpg_key.fingerprint}"\ngnupghome = "{gpg_key.home}"\n'
        f'passphrase_env = ""\npassphrase_file = "{secret}"\n'
    )
    assert make_source_tarball(project, RELEASE, env={}).signature.exists()


def test_signing_key_missing_from_the_keyring(make_project, gpg_key: TestKey) -> None:  # type: ignore[no-untyped-def]
    project = make_project(
        f'[signing]\nkey = "0123456789ABCDEF0123456789ABCDEF01234567"\ngnupghome = "{gpg_key.home}"\n'
    )
    with pytest.raises(SigningError, match=r"is not in the keyring at .*import it with"):
        make_source_tarball(project, RELEASE, env={})
    assert not project.out_dir.exists() or not list(project.out_dir.glob("*"))


@pytest.mark.slow
def test_release_refuses_the_development_key(project_copy: Project) -> None:
    with pytest.raises(SigningError, match="release cannot be signed with the development key"):
        make_source_tarball(project_copy, RELEASE, env={})
    nightly = make_source_tarball(project_copy, NIGHTLY, env={})
    assert nightly.signature.exists()
    assert (project_copy.state_dir / "dev-gnupg").is_dir()


@pytest.mark.slow
def test_ensure_reuses_an_intact_tarball_and_remakes_a_moved_nightly(project_copy: Project) -> None:
    first = ensure_source_tarball(project_copy, NIGHTLY, env={})
    signature = first.signature.read_bytes()
    again = ensure_source_tarball(project_copy, NIGHTLY, env={})
    assert again.signature.read_bytes() == signature, "an up-to-date tarball is not re-signed"
    (project_copy.root / "demo" / "tally" / "NEWS").write_text("news\n")
    git(project_copy.root, "add", "-A")
    git(project_copy.root, "commit", "-qm", "news")
    moved = ensure_source_tarball(project_copy, NIGHTLY, env={})
    assert moved.sha256 != first.sha256


# --- url sources ----------------------------------------------------------------------------


def upstream_tarball(root: Path, name: str = "hello-2.0") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for path, data in [("configure", b"#!/bin/sh\n"), ("src/hello.c", b"int main(){}\n")]:
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size, info.mtime = len(data), 1600000000
            info.mode = 0o755 if path == "configure" else 0o600
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    (root / f"{name}.tar.xz").write_bytes(data)
    return data


@pytest.mark.slow
def test_url_source_is_upstreams_file_byte_for_byte_and_cached(
    make_project, http_server: StaticServer
) -> None:  # type: ignore[no-untyped-def]
    data = upstream_tarball(http_server.root, "hello-2026.01.02")
    project = make_project(
        f'[source]\nkind = "url"\nurl = "{http_server.url}/hello-{{version}}.tar.xz"\n'
        f'[source.sha256]\n"2026.01.02" = "{hashlib.sha256(data).hexdigest()}"\n'
    )
    made = make_source_tarball(project, NIGHTLY, env={})
    assert made.tarball.name == "tally-nightly-2026.01.02.tar.xz"
    assert made.tarball.read_bytes() == data
    assert made.upstream_signature is None
    assert http_server.requests == ["/hello-2026.01.02.tar.xz"]
    again = make_source_tarball(project, NIGHTLY, env={})
    assert again.sha256 == made.sha256
    assert http_server.requests == ["/hello-2026.01.02.tar.xz"], "the second run must not download"
    assert project.tarball_name(Version.parse("2.10")) == "tally-2.10.tar.xz"


def _cache_files(project: Project) -> list[Path]:
    cache = project.root / project.config.source.cache_dir
    return sorted(cache.iterdir()) if cache.exists() else []


def test_url_sha256_mismatch_is_refused_and_nothing_left(
    make_project, http_server: StaticServer
) -> None:  # type: ignore[no-untyped-def]
    upstream_tarball(http_server.root, "hello-2026.01.02")
    project = make_project(
        f'[source]\nkind = "url"\nurl = "{http_server.url}/hello-{{version}}.tar.xz"\n'
        f'[source.sha256]\n"2026.01.02" = "{"0" * 64}"\n'
    )
    with pytest.raises(SourceError, match="does not match the pinned 0000") as err:
        make_source_tarball(project, NIGHTLY, env={})
    assert "nothing was cached" in str(err.value)
    assert "run the same command again" in str(err.value)
    assert not project.out_dir.exists() or not list(project.out_dir.iterdir())
    assert _cache_files(project) == [], "a bad download must not be cached"


@pytest.mark.slow
def test_a_download_that_is_not_a_tarball_is_not_cached_and_a_retry_works(
    make_project, http_server: StaticServer
) -> None:  # type: ignore[no-untyped-def]
    served = http_server.root / "hello-2026.01.02.tar.xz"
    served.write_text("<html>mirror maintenance, try later</html>\n")
    project = make_project(
        f'[source]\nkind = "url"\nurl = "{http_server.url}/hello-{{version}}.tar.xz"\n'
    )
    with pytest.raises(SourceError, match=r"not a compressed tarball .*<html>") as err:
        make_source_tarball(project, NIGHTLY, env={})
    assert "nothing was cached" in str(err.value) and "\n" not in str(err.value)
    assert _cache_files(project) == []
    upstream_tarball(http_server.root, "hello-2026.01.02")  # the mirror is back
    made = make_source_tarball(project, NIGHTLY, env={})
    assert made.tarball.read_bytes() == served.read_bytes()
    assert len(_cache_files(project)) == 1


@pytest.mark.slow
def test_url_upstream_signature_is_checked_and_kept(
    make_project, http_server: StaticServer, gpg_key: TestKey, other_gpg_key: TestKey
) -> None:  # type: ignore[no-untyped-def]
    import gnupg

    upstream_tarball(http_server.root, "hello-2026.01.02")
    archive = http_server.root / "hello-2026.01.02.tar.xz"
    signer = gnupg.GPG(gnupghome=str(other_gpg_key.home))
    sig = signer.sign_file(
        str(archive),
        keyid=other_gpg_key.fingerprint,
        passphrase=other_gpg_key.passphrase,
        detach=True,
        extra_args=["--pinentry-mode", "loopback"],
    )
    (http_server.root / "hello-2026.01.02.tar.xz.asc").write_bytes(sig.data)
    trusted = other_gpg_key.public_keyring(http_server.root.parent / "upstream.gpg")
    wrong = gpg_key.public_keyring(http_server.root.parent / "wrong.gpg")
    base = f'[source]\nkind = "url"\nurl = "{http_server.url}/hello-{{version}}.tar.xz"\nsignature_url = "{http_server.url}/hello-{{version}}.tar.xz.asc"\n'
    good = make_project(base + f'keyring = "{trusted}"\n', name="good")
    made = make_source_tarball(good, NIGHTLY, env={})
    assert made.upstream_signature is not None
    assert made.upstream_signature.name == "tally-nightly-2026.01.02.tar.xz.upstream.asc"
    assert made.upstream_signature.read_bytes() == sig.data
    assert gpgv(trusted, made.upstream_signature, made.tarball).returncode == 0
    bad = make_project(base + f'keyring = "{wrong}"\n', name="bad")
    with pytest.raises(SourceError, match="does not verify") as err:
        make_source_tarball(bad, NIGHTLY, env={})
    assert "nothing was cached" in str(err.value)
    assert not bad.out_dir.exists() or not list(bad.out_dir.iterdir())
    assert _cache_files(bad) == []


def test_prune_repacks_reproducibly_with_a_suffix_keeping_hard_links_and_dotfiles(
    make_project, http_server: StaticServer
) -> None:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, data in [
            ("./hello-3.1/.gitignore", b"*.o\n"),
            ("./hello-3.1/a.txt", b"same\n"),
            ("./hello-3.1/doc/big.pdf", b"%PDF"),
        ]:
            info = tarfile.TarInfo(path)
            info.size, info.mtime = len(data), 1600000000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./hello-3.1/b.txt")
        link.type, link.linkname, link.mtime = tarfile.LNKTYPE, "./hello-3.1/a.txt", 1600000000
        tar.addfile(link)
    (http_server.root / "hello-3.1.tgz").write_bytes(buf.getvalue())
    project = make_project(
        f'[source]\nkind = "url"\nurl = "{http_server.url}/hello-{{version}}.tgz"\n'
        'prune = ["doc"]\nrepack_suffix = "+dfsg"\n'
    )
    version = Version.parse("2026.01.02")
    (http_server.root / "hello-2026.01.02.tgz").write_bytes(buf.getvalue())
    made = make_source_tarball(project, version, env={})
    assert made.tarball.name == "tally-nightly-2026.01.02+dfsg.tar.gz"
    with tarfile.open(made.tarball) as tar:
        found = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("tally-nightly-2026.01.02+dfsg/b.txt").read() == b"same\n"  # type: ignore[union-attr]
    assert "tally-nightly-2026.01.02+dfsg/.gitignore" in found
    assert not any("doc" in n for n in found)
    assert make_source_tarball(project, version, env={}).sha256 == made.sha256
