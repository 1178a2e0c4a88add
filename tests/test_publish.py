"""releng.publish against moto over HTTP, with the real apt library, real .debs and real gpg."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.error
import urllib.request
import uuid

import pytest

from releng.errors import LockError, PublishError
from releng.gpg import Signer
from releng.project import Project
from releng.publish.flows import (
    COMPLETE,
    Destination,
    LockOptions,
    public_read_policy,
    publish_source,
    scratch_builds,
    sync_repo,
    update_indices,
    update_repos,
    upload_build,
)
from releng.publish.lock import S3Lock
from releng.publish.sync import S3Url, SyncOptions, s3_client
from releng.rebuild.policy import RebuildRequired
from releng.version import Version
from tests.apt_debs import make_deb
from tests.fixtures.moto import create_distribution
from tests.fixtures.s3repo import apt_problems, fetch, packages_served

pytestmark = pytest.mark.aws

DISTRO = "debian-12-bookworm"
SUITE = "bookworm"


@pytest.fixture
def buckets(moto_server, monkeypatch):
    """A public bucket with its policy, and a private scratch bucket."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    client = s3_client()
    tag = uuid.uuid4().hex[:10]
    public, scratch = f"pub-{tag}", f"scratch-{tag}"
    client.create_bucket(Bucket=public)
    client.create_bucket(Bucket=scratch)
    client.put_bucket_policy(
        Bucket=public, Policy=json.dumps(public_read_policy(public, "apt", name="tally"))
    )
    return S3Url(public, "apt"), scratch


@pytest.fixture
def signer(gpg_key) -> Signer:
    return Signer(gnupghome=gpg_key.home, key=gpg_key.fingerprint, passphrase=gpg_key.passphrase)


def dest_for(url: S3Url, **kw) -> Destination:
    lock = kw.pop("lock", LockOptions(timeout=60, poll=0.2))
    return Destination(
        s3=s3_client(), url=url, lock=lock, sync=SyncOptions(grace=dt.timedelta(0)), **kw
    )


def build(project, version: str, *packages: str) -> None:
    """Real .debs in out/<version>/<distro>/, as make-package leaves them."""
    out = project.build_dir(Version.parse(version), DISTRO)
    out.mkdir(parents=True, exist_ok=True)
    for name in packages:
        make_deb(out, name, f"{version}-1~{SUITE}")


def base(moto_server, url: S3Url) -> str:
    return f"{moto_server.endpoint_url}/{url.bucket}/{url.prefix}"


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_update_repos_from_an_empty_disk(
    moto_server, buckets, project_copy, signer, tmp_path
) -> None:
    url, scratch = buckets
    client = s3_client()
    build(project_copy, "1.0.0", "tally", "tally-doc")
    upload_build(client, project_copy, Version.parse("1.0.0"), DISTRO, scratch=scratch)
    assert set(scratch_builds(client, scratch, Version.parse("1.0.0"))) == {DISTRO}
    marker = f"{moto_server.endpoint_url}/{scratch}/1.0.0/{DISTRO}/amd64/{COMPLETE}"
    assert status(marker) == 403  # scratch is private: no policy, no anonymous read

    result = update_repos(
        project_copy,
        signer,
        version=Version.parse("1.0.0"),
        dest=dest_for(url),
        scratch=scratch,
        work=tmp_path / "empty-disk",
    )
    assert result.included == {DISTRO: (SUITE, f"{SUITE}-1.0")}
    http = base(moto_server, url)
    keyring = tmp_path / "tally.gpg"
    keyring.write_bytes(fetch(f"{http}/tally-archive-keyring.gpg"))
    for suite in (SUITE, f"{SUITE}-1.0"):
        assert apt_problems(http, suite=suite, keyring=keyring) == []
        served = packages_served(http, suite)
        assert served.pop("tally-archive-keyring")  # every suite carries the keyring package
        assert served == {"tally": "1.0.0-1~bookworm", "tally-doc": "1.0.0-1~bookworm"}
    # scratch is emptied only after success; it was never public; neither is the control area
    assert client.list_objects_v2(Bucket=scratch).get("KeyCount", 0) == 0
    assert status(f"{http}/.releng/manifest.json.gz") == 403
    assert status(f"{http}/.releng/state/suites/{SUITE}.members") == 403
    assert status(f"{http}/index.html") == 200
    root_page = fetch(f"{http}/index.html").decode()
    assert "dists/" in root_page and "pool/" in root_page and ".releng" not in root_page
    # the front page, written in the work directory and synced with the state
    assert root_page == (tmp_path / "empty-disk/index.html").read_text()
    assert "<h3>Debian 12 (bookworm)</h3>" in root_page


def test_two_publishers_with_empty_disks_never_lose_a_package(  # noqa: PLR0917  (fixtures)
    moto_server, buckets, project_copy, signer, gpg_key, tmp_path
) -> None:
    url, scratch = buckets
    client = s3_client()
    for version, pkg in (("2026.11.20", "alpha"), ("2026.11.21", "beta")):
        build(project_copy, version, pkg)
        upload_build(client, project_copy, Version.parse(version), DISTRO, scratch=scratch)
    errors: list[BaseException] = []

    def publisher(version: str) -> None:
        try:
            own = Signer(
                gnupghome=gpg_key.home, key=gpg_key.fingerprint, passphrase=gpg_key.passphrase
            )
            update_repos(
                project_copy,
                own,
                version=Version.parse(version),
                dest=dest_for(
                    url, lock=LockOptions(timeout=120, poll=0.1, owner=f"publisher {version}")
                ),
                scratch=scratch,
                work=tmp_path / f"disk-{version}",
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(v,)) for v in ("2026.11.20", "2026.11.21")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    http = base(moto_server, url)
    served = packages_served(http, SUITE)
    assert served.pop("tally-archive-keyring")  # every suite carries the keyring package
    assert served == {"alpha": "2026.11.20-1~bookworm", "beta": "2026.11.21-1~bookworm"}
    assert apt_problems(http, suite=SUITE) == []


def test_no_builds_in_scratch_changes_nothing(buckets, project_copy, signer, tmp_path) -> None:
    url, scratch = buckets
    client = s3_client()
    with pytest.raises(PublishError, match=r"no complete builds of 1\.2\.3 in s3://scratch-"):
        update_repos(
            project_copy,
            signer,
            version=Version.parse("1.2.3"),
            dest=dest_for(url),
            scratch=scratch,
            work=tmp_path / "w",
        )
    assert client.list_objects_v2(Bucket=url.bucket).get("KeyCount", 0) == 0


def test_a_lock_held_by_another_publisher(buckets, project_copy, signer, tmp_path) -> None:
    url, scratch = buckets
    client = s3_client()
    build(project_copy, "1.0.0", "tally")
    upload_build(client, project_copy, Version.parse("1.0.0"), DISTRO, scratch=scratch)
    other = S3Lock(client, url, owner="ci@worker-7 pid 42", heartbeat=False)
    other.acquire(timeout=0)
    try:
        with pytest.raises(LockError, match="locked by ci@worker-7 pid 42 since"):
            update_repos(
                project_copy,
                signer,
                version=Version.parse("1.0.0"),
                dest=dest_for(url, lock=LockOptions(timeout=0.5, poll=0.1)),
                scratch=scratch,
                work=tmp_path / "w",
            )
    finally:
        other.release()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=url.bucket).get("Contents", [])}
    assert keys == set()  # nothing published; the lock is gone too
    assert f"1.0.0/{DISTRO}/amd64/{COMPLETE}" in {
        o["Key"] for o in client.list_objects_v2(Bucket=scratch)["Contents"]
    }


def _verify_mode(project: Project, mode: str) -> Project:
    (project.root / "product.toml").write_text(
        (project.root / "product.toml").read_text() + f'\n[verify]\nrebuild = "{mode}"\n'
    )
    return Project.load(project.root)


def test_require_publishes_nothing_of_an_unverified_build(
    buckets, project_copy, signer, tmp_path
) -> None:
    """[verify] rebuild = "require": a scratch build no rebuild verified is refused in one line;
    the bucket stays empty and the build stays in scratch (docs/rebuild.md)."""
    url, scratch = buckets
    client = s3_client()
    project = _verify_mode(project_copy, "require")
    build(project, "1.0.0", "tally")
    upload_build(client, project, Version.parse("1.0.0"), DISTRO, scratch=scratch)
    with pytest.raises(RebuildRequired, match=rf"^1\.0\.0/{DISTRO} has no matching rebuild"):
        update_repos(
            project,
            signer,
            version=Version.parse("1.0.0"),
            dest=dest_for(url),
            scratch=scratch,
            work=tmp_path / "w",
        )
    assert client.list_objects_v2(Bucket=url.bucket).get("KeyCount", 0) == 0
    assert f"1.0.0/{DISTRO}/amd64/{COMPLETE}" in {
        o["Key"] for o in client.list_objects_v2(Bucket=scratch)["Contents"]
    }


def test_report_publishes_and_the_front_page_says_unverified(
    moto_server, buckets, project_copy, signer, tmp_path
) -> None:
    url, scratch = buckets
    client = s3_client()
    project = _verify_mode(project_copy, "report")
    build(project, "1.0.0", "tally")
    upload_build(client, project, Version.parse("1.0.0"), DISTRO, scratch=scratch)
    update_repos(
        project,
        signer,
        version=Version.parse("1.0.0"),
        dest=dest_for(url),
        scratch=scratch,
        work=tmp_path / "w",
    )
    page = fetch(f"{base(moto_server, url)}/index.html").decode()
    assert "<td>tally</td>" in page
    assert "<td>unverified</td>" in page


def test_upload_build_refuses_a_missing_build(buckets, project_copy) -> None:
    _url, scratch = buckets
    with pytest.raises(PublishError, match=r"no build output in .*invoke make-package"):
        upload_build(s3_client(), project_copy, Version.parse("1.0.0"), DISTRO, scratch=scratch)


def test_upload_build_takes_one_architectures_part(buckets, project_copy) -> None:
    """out/<V>/<DISTRO>/ holds every architecture's build; upload-build --arch takes one:
    its stamp and the files it lists, into <V>/<DISTRO>/<arch>/ with its own marker."""
    _url, scratch = buckets
    client = s3_client()
    product = project_copy.root / "product.toml"
    product.write_text(
        product.read_text().replace(
            'architectures = ["amd64"]', 'architectures = ["amd64", "arm64"]', 1
        )
    )
    project = Project.load(project_copy.root)
    version = Version.parse("1.0.0")
    out = project.build_dir(version, DISTRO)
    out.mkdir(parents=True)
    amd64 = make_deb(out, "tally", f"1.0.0-1~{SUITE}")
    (out / "build.json").write_text(json.dumps({"files": [amd64.name]}))
    (out / "build.log").write_text("the amd64 build\n")
    arm64 = make_deb(out, "tally", f"1.0.0-1~{SUITE}", arch="arm64")  # no stamp yet
    with pytest.raises(
        PublishError,
        match=r"no complete arm64 build in .* \(no build-arm64\.json\); run `invoke "
        rf"make-package {DISTRO} --version 1\.0\.0 --arch arm64` first",
    ):
        upload_build(client, project, version, DISTRO, scratch=scratch, arch="arm64")
    with pytest.raises(PublishError, match=r"architecture riscv64 is not in \[repositories\]"):
        upload_build(client, project, version, DISTRO, scratch=scratch, arch="riscv64")
    assert upload_build(client, project, version, DISTRO, scratch=scratch, arch="amd64") == sorted(
        ["build.json", "build.log", amd64.name]
    )
    (out / "build-arm64.json").write_text(json.dumps({"files": [arm64.name]}))
    assert upload_build(client, project, version, DISTRO, scratch=scratch, arch="arm64") == [
        "build-arm64.json",
        arm64.name,
    ]
    parts = scratch_builds(client, scratch, version)[DISTRO]
    assert {a: sorted(f) for a, f in parts.items()} == {
        "amd64": sorted(["build.json", "build.log", amd64.name]),
        "arm64": ["build-arm64.json", arm64.name],
    }


def test_publish_source(moto_server, buckets, project_copy) -> None:
    url, scratch = buckets
    client = s3_client()
    version = Version.parse("1.0.0")
    out = project_copy.out_dir
    out.mkdir()
    for name in (
        "tally-1.0.0.tar.gz",
        "tally-1.0.0.tar.gz.asc",
        "tally-1.0.0.SHA256SUMS",
        "tally-1.0.0.SHA256SUMS.asc",
    ):
        (out / name).write_bytes(name.encode())
    with pytest.raises(PublishError, match="upload the source first"):
        publish_source(client, project_copy, version, scratch=scratch, dest=dest_for(url))
    upload_build(client, project_copy, version, "source", scratch=scratch)
    published = publish_source(client, project_copy, version, scratch=scratch, dest=dest_for(url))
    assert published == [
        "source/tally-1.0.0.tar.gz",
        "source/tally-1.0.0.tar.gz.asc",
        "source/tally-1.0.0.SHA256SUMS",
        "source/tally-1.0.0.SHA256SUMS.asc",
    ]
    http = base(moto_server, url)
    assert fetch(f"{http}/source/tally-1.0.0.tar.gz") == b"tally-1.0.0.tar.gz"
    head = client.head_object(Bucket=url.bucket, Key=url.key("source/tally-1.0.0.tar.gz"))
    assert head["ContentType"] == "application/gzip"
    assert "immutable" in head["CacheControl"]
    # the pages follow on update-indices
    pages = update_indices(dest_for(url))
    assert "source/index.html" in pages.pages
    assert "tally-1.0.0.tar.gz.asc" in fetch(f"{http}/source/index.html").decode()


def test_sync_repo_pages_and_one_invalidation_of_dists_only(
    moto_server, buckets, project_copy, signer, tmp_path
) -> None:
    from releng import apt

    url, _scratch = buckets
    cf = moto_server.client("cloudfront")
    dist_id = create_distribution(cf, f"{url.bucket}.s3.amazonaws.com")
    repo = tmp_path / "repo"
    debs = tmp_path / "debs"
    debs.mkdir()
    settings = apt.settings_for(project_copy)
    apt.include(repo, settings, signer, suites=[SUITE], paths=[make_deb(debs, "tally", "1.0-1")])
    dest = dest_for(url, cloudfront=cf, distribution_id=dist_id)
    first = sync_repo(dest, repo)
    assert first.indices.invalidation_id is not None
    apt.include(repo, settings, signer, suites=[SUITE], paths=[make_deb(debs, "tally", "1.1-1")])
    second = sync_repo(dest, repo)
    paths = cf.get_invalidation(DistributionId=dist_id, Id=second.indices.invalidation_id)[
        "Invalidation"
    ]["InvalidationBatch"]["Paths"]["Items"]
    assert f"/apt/dists/{SUITE}/InRelease" in paths
    assert f"/apt/dists/{SUITE}/main/binary-amd64/Packages.xz" in paths
    assert not [p for p in paths if "/pool/" in p or "/by-hash/" in p]
    assert len(cf.list_invalidations(DistributionId=dist_id)["InvalidationList"]["Items"]) == 2
    # pages only where something changed: the new package's directory, not pool/ itself
    assert "pool/main/t/tally/index.html" in second.indices.pages
    assert "pool/index.html" not in second.indices.pages
    http = base(moto_server, url)
    assert "tally_1.1-1_amd64.deb" in fetch(f"{http}/pool/main/t/tally/index.html").decode()
    # nothing changed: no writes, no invalidation
    third = sync_repo(dest, repo)
    assert not third.sync.changed and third.indices.invalidation_id is None
    # a new front page (after a key rotation it pins another key file): it and its directory
    (repo / ".releng-repo" / "front-page.html").write_text("<!doctype html><title>t</title>\n")
    fourth = sync_repo(dest, repo)
    paths = cf.get_invalidation(DistributionId=dist_id, Id=fourth.indices.invalidation_id)[
        "Invalidation"
    ]["InvalidationBatch"]["Paths"]["Items"]
    assert sorted(paths) == ["/apt/", "/apt/index.html"]
