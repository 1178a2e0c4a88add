"""[verify] rebuild wired end to end: update-repos refuses an unverified build under "require"
(nothing written), says "unverified" under "report" (list-packages, the front page), changes
nothing under "off"; check-repo --attestations checks a whole repository with real gpg.

The cheap half uses real .debs made on the spot (no rebuild: unverified by construction); the
other half the session's one real rebuilt demo (tests/fixtures/rebuild.py)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from releng.gpg import Signer, armored
from releng.project import Project
from releng.publish.flows import public_read_policy
from releng.publish.location import RepoLocation, update_repos
from releng.publish.s3 import S3Url
from releng.publish.sync import s3_client
from releng.rebuild.check import verify_package
from releng.rebuild.policy import RebuildRequired
from releng.version import Version
from tests.apt_debs import make_deb
from tests.fixtures.gpg import TestKey, make_key
from tests.fixtures.project import copy_repo, git
from tests.rebuild_helpers import BOOKWORM, Rebuilt
from tests.test_cli import invoke

VERSION = Version.parse("1.0.0")


def _project(
    root: Path, mode: str, *, archive: TestKey, rebuilder: TestKey | None = None
) -> Project:
    """A copy of this repository with ``[verify] rebuild = mode``, signed with ``archive``
    (a release needs a real key), and the rebuilder's key."""
    product = root / "product.toml"
    text = product.read_text()
    assert "[verify]" not in text
    text = text.replace('key = ""', f'key = "{archive.fingerprint}"', 1)
    text = text.replace('gnupghome = ""', f'gnupghome = "{archive.home}"', 1)
    text += f'\n[verify]\nrebuild = "{mode}"\n'
    if rebuilder is not None:
        text += f'key = "{rebuilder.fingerprint}"\ngnupghome = "{rebuilder.home}"\n'
    product.write_text(text)
    git(root, "commit", "-q", "-am", f"[verify] rebuild = {mode}")
    return Project.load(root)


@pytest.fixture(scope="module")
def archive_key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    return make_key(tmp_path_factory.mktemp("archive"), name="policy archive", passphrase=None)


@pytest.fixture
def archive(archive_key: TestKey) -> Signer:
    return Signer(gnupghome=archive_key.home, key=archive_key.fingerprint, passphrase=None)


def _made_debs(project: Project) -> Path:
    """Real .debs in out/1.0.0/<bookworm>/, as make-package leaves them, never rebuilt."""
    out = project.build_dir(VERSION, BOOKWORM)
    out.mkdir(parents=True)
    for name in ("tally", "tally-doc"):
        make_deb(out, name, "1.0.0-1~bookworm")
    return out


def _listed(root: Path, repo: Path) -> dict[str, str]:
    result = invoke("list-packages", "--repo", str(repo), "--dist", "bookworm", "--json", root=root)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all(r.get("rebuild", "") == "" for r in rows if r["arch"] == "source")
    return {r["package"]: r.get("rebuild", "-") for r in rows if r["arch"] != "source"}


# -- unverified builds: no engine -------------------------------------------------------------


def test_require_refuses_an_unverified_build_and_writes_nothing(
    tmp_path: Path, archive: Signer, archive_key: TestKey
) -> None:
    project = _project(copy_repo(tmp_path / "repo"), "require", archive=archive_key)
    _made_debs(project)
    repo = tmp_path / "www"
    with pytest.raises(RebuildRequired) as caught:
        update_repos(project, archive, version=VERSION, location=RepoLocation(path=repo))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"1.0.0/{BOOKWORM} has no matching rebuild (tally-doc_1.0.0")
    assert f"run invoke verify-rebuild {BOOKWORM} --version 1.0.0 first" in message
    assert not repo.exists()  # nothing of it: no pool, no dists, no front page


def test_the_cli_refuses_in_one_error_line(tmp_path: Path, archive_key: TestKey) -> None:
    project = _project(copy_repo(tmp_path / "repo"), "require", archive=archive_key)
    _made_debs(project)
    repo = tmp_path / "www"
    result = invoke("update-repos", "--version", "1.0.0", "--repo", str(repo), root=project.root)
    assert result.returncode != 0
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "has no matching rebuild" in errors[0]
    assert "Traceback" not in result.stderr
    assert not repo.exists()


def test_report_publishes_and_says_unverified(
    tmp_path: Path, archive: Signer, archive_key: TestKey
) -> None:
    project = _project(copy_repo(tmp_path / "repo"), "report", archive=archive_key)
    _made_debs(project)
    repo = tmp_path / "www"
    update_repos(project, archive, version=VERSION, location=RepoLocation(path=repo))
    assert (repo / "dists" / "bookworm" / "InRelease").is_file()
    listed = _listed(project.root, repo)
    assert listed["tally"] == listed["tally-doc"] == "unverified"
    page = (repo / "index.html").read_text()
    assert '<th scope="col">Independent rebuild</th>' in page
    assert "<td>tally</td>" in page
    assert page.count("<td>unverified</td>") >= 2


def test_off_is_todays_behaviour(tmp_path: Path, archive: Signer, archive_key: TestKey) -> None:
    project = _project(copy_repo(tmp_path / "repo"), "off", archive=archive_key)
    _made_debs(project)
    repo = tmp_path / "www"
    update_repos(project, archive, version=VERSION, location=RepoLocation(path=repo))
    assert set(_listed(project.root, repo).values()) == {"-"}  # no rebuild field at all
    page = (repo / "index.html").read_text()
    assert "<td>tally</td>" in page
    assert "Independent rebuild" not in page
    assert "unverified" not in page
    assert not (repo / "attestations").exists()


# -- the real rebuilt demo ---------------------------------------------------------------------


def _verified_repo(rebuilt: Rebuilt, tmp_path: Path, key: TestKey, mode: str) -> Project:
    """The rebuilt demo published by update-repos (``[verify] rebuild = mode``) in www/."""
    archive = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)
    project = _project(copy_repo(tmp_path / "repo"), mode, archive=key, rebuilder=rebuilt.key)
    shutil.copytree(rebuilt.build_dir, project.build_dir(VERSION, BOOKWORM))
    update_repos(project, archive, version=VERSION, location=RepoLocation(path=tmp_path / "www"))
    return project


@pytest.mark.docker
@pytest.mark.slow
def test_require_publishes_a_rebuilt_build_with_its_attestations(
    rebuilt_demo: Rebuilt, tmp_path: Path, archive_key: TestKey
) -> None:
    project = _verified_repo(rebuilt_demo, tmp_path, archive_key, "require")
    repo = tmp_path / "www"
    debs = sorted(p.name for p in rebuilt_demo.build_dir.glob("*.deb"))
    index = json.loads((repo / "attestations" / "index.json").read_text())["packages"]
    assert sorted(Path(e["path"]).name for e in index) == debs
    for entry in index:
        statement = repo / "attestations" / f"{entry['path']}.intoto.json"
        assert statement.is_file() and Path(f"{statement}.asc").is_file()
        assert (repo / entry["path"]).is_file()  # beside the pool file it attests
    fingerprint = rebuilt_demo.signer.fingerprint
    listed = _listed(project.root, repo)
    assert listed["tally"].startswith(f"verified by {fingerprint} on 20")
    assert listed["tally-archive-keyring"] == ""  # made by releng from the keys: no claim
    page = (repo / "index.html").read_text()
    assert f"<td>verified by {fingerprint} on 20" in page


@pytest.mark.docker
@pytest.mark.slow
def test_check_repo_attestations_good_tampered_and_missing(
    rebuilt_demo: Rebuilt, tmp_path: Path, archive_key: TestKey
) -> None:
    project = _verified_repo(rebuilt_demo, tmp_path, archive_key, "report")
    repo = tmp_path / "www"
    check = ("check-repo", "--repo", str(repo), "--attestations")
    good = invoke(*check, root=project.root)
    assert good.returncode == 0, good.stdout + good.stderr
    n = len(list(rebuilt_demo.build_dir.glob("*.deb")))
    suites = 2  # bookworm and the release line bookworm-1.0
    assert f"per suite, {suites * n} package(s) rebuilt and attested, 0 unverified" in good.stdout

    index = json.loads((repo / "attestations" / "index.json").read_text())["packages"]
    tally = next(e for e in index if e["package"] == "tally")
    statement = repo / "attestations" / f"{tally['path']}.intoto.json"
    statement.write_text(statement.read_text().replace("reproduced", "reproduced "))
    tampered = invoke(*check, root=project.root)
    assert tampered.returncode != 0
    problems = [ln for ln in tampered.stdout.splitlines() if ln.startswith("problem:")]
    assert problems == [
        f"problem: attestation: {suite} tally {tally['version']} amd64: the attestation's "
        "signature is bad (it was altered)"
        for suite in ("bookworm", "bookworm-1.0")
    ]
    assert tampered.stderr.strip().splitlines()[-1].startswith("error: ")

    statement.unlink()
    Path(f"{statement}.asc").unlink()
    missing = invoke(*check, root=project.root)  # "report": listed, not a failure
    assert missing.returncode == 0, missing.stdout + missing.stderr
    assert f"unverified: bookworm tally {tally['version']} amd64: no attestation" in missing.stdout
    text = (project.root / "product.toml").read_text().replace('"report"', '"require"')
    (project.root / "product.toml").write_text(text)
    required = invoke(*check, root=project.root)  # "require": every unverified package fails
    assert required.returncode != 0
    assert f"problem: unverified: bookworm tally {tally['version']} amd64" in required.stdout


@pytest.mark.docker
@pytest.mark.aws
@pytest.mark.slow
def test_on_s3_the_attestations_are_published_and_a_user_verifies_over_http(
    rebuilt_demo: Rebuilt,
    tmp_path: Path,
    archive_key: TestKey,
    moto_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """update-repos --repo s3://... from out/ (no scratch bucket): attestations/ is synced
    with the pool; verify-package over HTTP from the bucket and check-repo --attestations on
    the bucket both verify the demo."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    client = s3_client()
    bucket = f"rebuild-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps(public_read_policy(bucket, "apt", name="tally"))
    )
    archive = Signer(gnupghome=archive_key.home, key=archive_key.fingerprint, passphrase=None)
    project = _project(
        copy_repo(tmp_path / "repo"), "require", archive=archive_key, rebuilder=rebuilt_demo.key
    )
    assert not project.config.publish.scratch_bucket
    shutil.copytree(rebuilt_demo.build_dir, project.build_dir(VERSION, BOOKWORM))
    location = RepoLocation(url=S3Url(bucket, "apt"))
    update_repos(project, archive, version=VERSION, location=location)

    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "apt/attestations/index.json" in keys
    keyring = tmp_path / "rebuilder.asc"
    keyring.write_bytes(armored(rebuilt_demo.signer.public_keys()))
    http = f"{moto_server.endpoint_url}/{bucket}/apt"
    version = next(
        e["version"]
        for e in json.loads(
            client.get_object(Bucket=bucket, Key="apt/attestations/index.json")["Body"].read()
        )["packages"]
        if e["package"] == "tally"
    )
    verdict = verify_package(f"tally={version}", repo=http, keyring=keyring, arch="amd64")
    assert verdict.signer.endswith(f"({rebuilt_demo.signer.fingerprint})")

    check = invoke(
        "check-repo", "--repo", f"s3://{bucket}/apt", "--attestations", root=project.root
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 unverified" in check.stdout
