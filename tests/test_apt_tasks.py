"""The repo tasks end to end: include-packages, update-repos and check-repo through invoke."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.digest import file_sha256
from releng.project import Project
from tests.apt_debs import make_deb
from tests.fixtures.gpg import TestKey
from tests.test_cli import assert_one_error_line, invoke


def signing_toml(key: TestKey) -> str:
    return (
        f'[signing]\nkey = "{key.fingerprint}"\ngnupghome = "{key.home}"\n'
        'passphrase_env = "TEST_PASSPHRASE"\n'
    )


@pytest.mark.slow
def test_repo_include_publishes_checks_and_prints_a_sources_snippet(
    project_copy: Project, tmp_path: Path
) -> None:
    root = project_copy.root
    deb = make_deb(tmp_path, "tally", "1.0.0-1~bookworm")
    result = invoke("include-packages", "--dist", "bookworm", str(deb), root=root)
    assert result.returncode == 0, result.stderr
    assert "Types: deb\n" in result.stdout
    assert "Suites: bookworm\n" in result.stdout
    assert "Signed-By: /usr/share/keyrings/tally-archive-keyring.gpg\n" in result.stdout
    repo = root / "out" / "repo"
    assert (repo / "dists/bookworm/InRelease").is_file()
    assert (repo / "tally-archive-keyring.gpg").is_file()
    check = invoke("check-repo", root=root)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "all good" in check.stdout
    release = (repo / "dists/bookworm/InRelease").read_bytes()
    again = invoke("republish-repo", root=root)
    assert "republished bookworm" in again.stdout, again.stderr
    assert (repo / "dists/bookworm/InRelease").read_bytes() != release  # signed anew
    good = invoke("check-repo", "--json", root=root)
    assert good.returncode == 0, good.stderr
    report = json.loads(good.stdout)
    assert (report["ok"], report["suites"], report["problems"]) == (True, ["bookworm"], [])
    assert report["files_checked"] > 0
    # Tampering is found and reported as one error line.
    (repo / "pool/main/t/tally/tally_1.0.0-1~bookworm_amd64.deb").write_bytes(b"tampered")
    broken = invoke("check-repo", root=root)
    assert "problem: pool/main/t/tally/tally_1.0.0-1~bookworm_amd64.deb" in broken.stdout
    assert_one_error_line(broken, "1 problem(s) found")
    broken_json = invoke("check-repo", "--json", root=root)
    report = json.loads(broken_json.stdout)
    assert not report["ok"]
    assert [p.split(":")[0] for p in report["problems"]] == [
        "pool/main/t/tally/tally_1.0.0-1~bookworm_amd64.deb"
    ]
    assert_one_error_line(broken_json, "1 problem(s) found")


@pytest.mark.slow
def test_repo_include_refuses_an_unknown_suite_and_writes_nothing(
    project_copy: Project, tmp_path: Path
) -> None:
    deb = make_deb(tmp_path, "tally", "1.0.0-1")
    result = invoke("include-packages", "--dist", "no-such-suite", str(deb), root=project_copy.root)
    assert_one_error_line(result, "unknown suite 'no-such-suite'")
    assert not (project_copy.root / "out" / "repo").exists()


def test_a_missing_signing_key_is_one_error_and_no_repository(
    make_project: Callable[[str], Project], tmp_path: Path
) -> None:
    empty = tmp_path / "empty-gnupg"
    empty.mkdir(mode=0o700)
    project = make_project(
        f'[signing]\nkey = "0123456789ABCDEF0123456789ABCDEF01234567"\ngnupghome = "{empty}"\n'
    )
    deb = make_deb(tmp_path, "tally", "1.0.0-1")
    result = invoke("include-packages", "--dist", "bookworm", str(deb), root=project.root)
    assert_one_error_line(result, "is not in the keyring")
    assert not (project.root / "out" / "repo").exists()


def test_update_repos_includes_each_build_into_its_codename_and_release_line(
    make_project: Callable[[str], Project], gpg_key: TestKey, tmp_path: Path
) -> None:
    project = make_project(signing_toml(gpg_key))
    for distro, codename in (("debian-12-bookworm", "bookworm"), ("debian-13-trixie", "trixie")):
        out = project.root / "out" / "1.2.3" / distro
        out.mkdir(parents=True)
        make_deb(out, "tally", f"1.2.3-1~{codename}")
    env = {"TEST_PASSPHRASE": gpg_key.passphrase}
    result = invoke("update-repos", "--version", "1.2.3", root=project.root, env=env)
    assert result.returncode == 0, result.stderr
    repo = project.root / "out" / "repo"
    for suite, version in (
        ("bookworm", "1.2.3-1~bookworm"),
        ("bookworm-1.2", "1.2.3-1~bookworm"),
        ("trixie", "1.2.3-1~trixie"),
        ("trixie-1.2", "1.2.3-1~trixie"),
    ):
        text = (repo / "dists" / suite / "main/binary-amd64/Packages").read_text()
        assert f"Version: {version}\n" in text, suite
    assert "debian-12-bookworm: bookworm, bookworm-1.2" in result.stdout
    # One .sources snippet per client distro, each naming one suite.
    suites_lines = [ln for ln in result.stdout.splitlines() if ln.startswith("Suites:")]
    assert suites_lines == ["Suites: bookworm", "Suites: trixie"]
    bookworm_part = result.stdout.split("clients on debian-12-bookworm: ")[1]
    assert bookworm_part.split("clients on")[0].count("Suites: bookworm\n") == 1
    assert "(or, in Suites, one of: bookworm-1.2)" in bookworm_part
    # The install commands of the front page (releng.keyring_package.install_instructions):
    # the key file checked by its SHA-256, then the keyring package with the product.
    digest = file_sha256(repo / "tally-archive-keyring.gpg")
    assert f"/tmp/tally-archive-keyring.gpg \\\n  SHA256:{digest}\n" in bookworm_part
    assert "apt-get update && apt-get install -y tally-archive-keyring tally\n" in bookworm_part
    assert f"URIs: {repo.resolve().as_uri()}\n" in bookworm_part  # what the package names
    assert invoke("check-repo", root=project.root).returncode == 0
    # A version with no builds is one clear error.
    missing = invoke("update-repos", "--version", "1.2.4", root=project.root, env=env)
    assert_one_error_line(missing, "no build output for version 1.2.4")


def included(project: Project, tmp_path: Path) -> Path:
    deb = make_deb(tmp_path, "tally", "1.0.0-1~bookworm")
    result = invoke("include-packages", "--dist", "bookworm", str(deb), root=project.root)
    assert result.returncode == 0, result.stderr
    return project.root / "out" / "repo"


@pytest.mark.slow
def test_repo_check_into_a_closed_pipe_ends_quietly(project_copy: Project, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.test_cli import REPO_ROOT

    included(project_copy, tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -0`: the reader is gone before the first line
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "check-repo"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RELENG_ROOT": str(project_copy.root)},
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr  # as SIGPIPE would end it
    assert "Traceback" not in proc.stderr
    assert "BrokenPipe" not in proc.stderr and "Exception ignored" not in proc.stderr


@pytest.mark.slow
def test_an_immutable_repository_is_one_error_line_and_stays_unchanged(
    project_copy: Project, tmp_path: Path
) -> None:
    import subprocess

    repo = included(project_copy, tmp_path)
    before = sorted((p.relative_to(repo), p.stat().st_mtime_ns) for p in repo.rglob("*"))
    subprocess.run(["chattr", "-R", "+i", str(repo)], check=True)
    try:
        deb = make_deb(tmp_path, "tally", "1.0.1-1~bookworm")
        result = invoke("include-packages", "--dist", "bookworm", str(deb), root=project_copy.root)
    finally:
        subprocess.run(["chattr", "-R", "-i", str(repo)], check=True)
    assert_one_error_line(result, "Operation not permitted; check its permissions and attributes")
    assert str(repo / ".releng-repo") in result.stderr.strip().splitlines()[-1]
    assert sorted((p.relative_to(repo), p.stat().st_mtime_ns) for p in repo.rglob("*")) == before


@pytest.mark.slow
def test_a_repo_option_naming_a_file_is_one_error_line(
    project_copy: Project, tmp_path: Path
) -> None:
    afile = tmp_path / "not-a-repo"
    afile.write_text("x\n")
    deb = make_deb(tmp_path, "tally", "1.0.0-1~bookworm")
    for args in (
        ("include-packages", "--dist", "bookworm", "--repo", str(afile), str(deb)),
        ("include-packages", "--dist", "bookworm", "--repo", str(afile / "repo"), str(deb)),
        ("republish-repo", "--repo", str(afile)),
        ("check-repo", "--repo", str(afile)),
    ):
        assert_one_error_line(invoke(*args, root=project_copy.root), str(afile))
    assert afile.read_text() == "x\n"
