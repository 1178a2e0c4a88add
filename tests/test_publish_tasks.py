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
    result = invoke("sync-repo", "--repo", "s3:/oops/apt", root=project_copy.root, env=aws_env)
    assert_one_error_line(result, "is not an s3:// URL")


@pytest.mark.parametrize(
    "task", ["update-repos", "copy-packages", "list-packages", "sync-repo", "update-indices"]
)
def test_dest_is_gone_with_one_line_naming_repo(project_copy, aws_env, task) -> None:
    """--dest is refused before anything happens, pointing to --repo s3://..."""
    extra = ["x", "--from", "a", "--to", "b"] if task == "copy-packages" else []
    result = invoke(task, *extra, "--dest", "s3://b-x/apt", root=project_copy.root, env=aws_env)
    assert_one_error_line(result, "--dest is gone")
    assert "--repo 's3://b-x/apt'" in result.stderr


def test_a_control_character_in_url_is_one_error_line(project_copy, tmp_path) -> None:
    """A newline in --url would inject lines (Suites: evil) into the printed .sources."""
    deb = make_deb(tmp_path / "in", "tally", "1.0-1")
    result = invoke(
        "include-packages",
        str(deb),
        "--dist",
        "bookworm",
        "--repo",
        str(tmp_path / "apt-repo"),
        "--url",
        "https://example.org/apt\nSuites: evil",
        root=project_copy.root,
    )
    assert_one_error_line(result, "--url")
    assert "Suites: evil" not in result.stdout
    assert not (tmp_path / "apt-repo").exists(), "refused, yet the repository was made"


def test_sync_repos_with_a_directory_as_repo_says_to_pass_source(project_copy, tmp_path) -> None:
    result = invoke("sync-repo", "--repo", str(tmp_path), root=project_copy.root)
    assert_one_error_line(result, f"--source {tmp_path} --repo s3://")


def test_missing_bucket_is_one_error_line(project_copy, aws_env, tmp_path) -> None:
    (tmp_path / "repo" / "dists").mkdir(parents=True)
    result = invoke(
        "sync-repo",
        "--source",
        str(tmp_path / "repo"),
        "--repo",
        "s3://no-such-bucket-xyz/apt",
        root=project_copy.root,
        env=aws_env,
    )
    assert_one_error_line(result, "bucket 'no-such-bucket-xyz' does not exist")


def test_update_repos_dest_and_sync_repos_end_to_end(project_copy, aws_env, tmp_path) -> None:
    """upload-build -> update-repos --repo s3://... (its builds gone from scratch) -> sync-repo of the
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
        "--repo",
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
    again = invoke("sync-repo", "--source", str(work), root=root, env=aws_env)
    assert again.returncode == 0, again.stderr
    assert "nothing to do: the bucket is up to date" in again.stdout
    pages = invoke("update-indices", root=root, env=aws_env)
    assert pages.returncode == 0, pages.stderr
    assert "0 index page(s) updated" in pages.stdout
    assert client.list_objects_v2(Bucket=scratch).get("KeyCount", 0) == 0, (
        "published builds stay in scratch"
    )


def test_repo_tasks_work_on_a_bucket_through_repo(project_copy, aws_env, tmp_path) -> None:
    """--repo s3://... is the same repository operations as a directory: include from an empty
    disk, list, remove (dry run changes nothing), check with apt's rules."""
    client = s3_client()
    public = f"pub-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=public)
    root = project_copy.root
    repo = f"s3://{public}/apt"
    deb = make_deb(tmp_path / "in", "tally", "1.0-1")
    done = invoke(
        "include-packages", str(deb), "--dist", "bookworm", "--repo", repo, root=root, env=aws_env
    )
    assert done.returncode == 0, done.stderr
    assert f"{repo}: upload" in done.stdout
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=public)["Contents"]}
    assert "apt/pool/main/t/tally/tally_1.0-1_amd64.deb" in keys
    assert "apt/dists/bookworm/InRelease" in keys
    # product.toml's [repositories] location is the default --repo.
    toml = root / "product.toml"
    toml.write_text(
        toml.read_text().replace("[repositories]\n", f'[repositories]\nlocation = "{repo}"\n', 1)
    )
    listed = invoke("list-packages", root=root, env=aws_env)
    assert listed.returncode == 0, listed.stderr
    assert "tally" in listed.stdout and "1 package file(s)" in listed.stdout
    dry = invoke(
        "remove-packages", "tally", "--dist", "bookworm", "--repo", repo, "--dry-run",
        root=root, env=aws_env,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "would republish bookworm" in dry.stdout
    checked = invoke("check-repo", "--repo", repo, root=root, env=aws_env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "all good" in checked.stdout
    keys_after = {o["Key"] for o in client.list_objects_v2(Bucket=public)["Contents"]}
    assert "apt/pool/main/t/tally/tally_1.0-1_amd64.deb" in keys_after, "a dry run removed it"


def test_a_bad_repository_location_in_product_toml_is_one_error_line(project_copy) -> None:
    toml = project_copy.root / "product.toml"
    toml.write_text(
        toml.read_text().replace(
            "[repositories]\n", '[repositories]\nlocation = "s3://Bad_Bucket/apt"\n', 1
        )
    )
    result = invoke("list-packages", root=project_copy.root)
    assert_one_error_line(result, "[repositories] location = 's3://Bad_Bucket/apt'")
