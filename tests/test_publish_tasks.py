"""The publish tasks through invoke: real processes, moto over HTTP via AWS_ENDPOINT_URL."""

from __future__ import annotations

import uuid

import pytest

from releng.publish.sync import s3_client
from tests.apt_debs import make_deb
from tests.test_cli import assert_one_error_line, invoke

pytestmark = pytest.mark.aws


@pytest.fixture
def aws_env(moto_server, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    return {"AWS_ENDPOINT_URL": moto_server.endpoint_url}


def test_malformed_destination_is_one_error_line(project_copy, aws_env) -> None:
    result = invoke("sync-repos", "--dest", "s3:/oops/apt", root=project_copy.root, env=aws_env)
    assert_one_error_line(result, "is not an s3:// URL")


def test_missing_bucket_is_one_error_line(project_copy, aws_env, tmp_path) -> None:
    (tmp_path / "repo" / "dists").mkdir(parents=True)
    result = invoke(
        "sync-repos",
        "--repo",
        str(tmp_path / "repo"),
        "--dest",
        "s3://no-such-bucket-xyz/apt",
        root=project_copy.root,
        env=aws_env,
    )
    assert_one_error_line(result, "bucket 'no-such-bucket-xyz' does not exist")


def test_update_repos_dest_and_sync_repos_end_to_end(project_copy, aws_env, tmp_path) -> None:
    """upload-build -> update-repos --dest (its builds gone from scratch) -> sync-repos of the
    same tree is a no-op -> update-indices has nothing left to do."""
    client = s3_client()
    tag = uuid.uuid4().hex[:10]
    public, scratch = f"pub-{tag}", f"scr-{tag}"
    client.create_bucket(Bucket=public)
    client.create_bucket(Bucket=scratch)
    root = project_copy.root
    (root / "product.toml").write_text(
        (root / "product.toml").read_text()
        + f'\n[publish]\nbucket = "{public}"\nprefix = "apt"\nscratch_bucket = "{scratch}"\n'
    )
    build = root / "out" / "2026.11.20" / "debian-12-bookworm"
    build.mkdir(parents=True)
    make_deb(build, "tally-nightly", "2026.11.20-1~bookworm")
    done = invoke(
        "upload-build", "debian-12-bookworm", "--version", "2026.11.20", root=root, env=aws_env
    )
    assert done.returncode == 0, done.stderr
    assert (
        f"uploaded 1 file(s) to s3://{scratch}/2026.11.20/debian-12-bookworm/amd64/" in done.stdout
    )
    done = invoke(
        "update-repos",
        "--version",
        "2026.11.20",
        "--dest",
        f"s3://{public}/apt",
        root=root,
        env=aws_env,
    )
    assert done.returncode == 0, done.stderr
    assert "debian-12-bookworm: bookworm" in done.stdout
    assert "removed 2 published object(s) from scratch" in done.stdout
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=public)["Contents"]}
    assert "apt/pool/main/t/tally-nightly/tally-nightly_2026.11.20-1~bookworm_amd64.deb" in keys
    assert "apt/dists/bookworm/InRelease" in keys
    # The publisher's work directory is a copy of the bucket's repository: syncing it changes nothing.
    work = root / ".releng" / "publish" / public / "apt"
    again = invoke("sync-repos", "--repo", str(work), root=root, env=aws_env)
    assert again.returncode == 0, again.stderr
    assert "nothing to do: the bucket is up to date" in again.stdout
    pages = invoke("update-indices", root=root, env=aws_env)
    assert pages.returncode == 0, pages.stderr
    assert "0 index page(s) updated" in pages.stdout
    assert client.list_objects_v2(Bucket=scratch).get("KeyCount", 0) == 0, (
        "published builds stay in scratch"
    )
