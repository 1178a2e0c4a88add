"""releng.publish.sync: URL parsing, classification and planning (pure), and the sync against moto over HTTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path

import pytest

from releng.errors import PublishError
from releng.publish.sync import (
    INTENT,
    MANAGED_TREES,
    MANIFEST,
    FileClass,
    Intent,
    LocalFile,
    Manifest,
    RepoSyncer,
    RequestStats,
    S3Url,
    SyncOptions,
    cache_control,
    classify,
    content_type,
    dirty_directories,
    parse_s3_url,
    plan_sync,
    s3_client,
    scan_tree,
    sync_tree,
)
from tests.fixtures.s3repo import apt_problems, packages_served, read_inrelease, write_tree

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)

# ----------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("text", "bucket", "prefix"),
    [
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/", "my-bucket", ""),
        ("s3://my-bucket/apt", "my-bucket", "apt"),
        ("s3://my.bucket-1/apt/nightly/", "my.bucket-1", "apt/nightly"),
    ],
)
def test_parse_s3_url(text: str, bucket: str, prefix: str) -> None:
    url = parse_s3_url(text)
    assert (url.bucket, url.prefix) == (bucket, prefix)
    assert url.key("dists/x/InRelease") == (f"{prefix}/" if prefix else "") + "dists/x/InRelease"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("my-bucket/apt", "not an s3:// URL"),
        ("https://my-bucket/apt", "not an s3:// URL"),
        ("s3://", "not a valid S3 bucket name"),
        ("s3://My_Bucket/apt", "not a valid S3 bucket name"),
        ("s3://ab/apt", "not a valid S3 bucket name"),
        ("s3://192.168.1.1/apt", "not a valid S3 bucket name"),
        ("s3://my-bucket/apt//x", "empty, '.' or '..'"),
        ("s3://my-bucket/../x", "empty, '.' or '..'"),
        ("s3://my-bucket/.releng/x", "control area"),
        ("s3://my-bucket/t\tab", "control character"),
        ("s3://my-bucket/apt\nx", "control character"),
    ],
)
def test_parse_s3_url_refuses(text: str, complaint: str) -> None:
    with pytest.raises(PublishError, match="s3://") as exc:
        parse_s3_url(text)
    assert complaint in str(exc.value)


def test_classify_orders_a_publish_the_way_apt_reads_it_backwards() -> None:
    paths = {
        "dists/s/InRelease": FileClass.INRELEASE,
        "dists/s/Release": FileClass.RELEASE,
        "dists/s/Release.gpg": FileClass.RELEASE,
        "dists/s/main/binary-amd64/Release": FileClass.INDEX,
        "dists/s/main/binary-amd64/Packages.xz": FileClass.INDEX,
        "dists/s/main/source/Sources.gz": FileClass.INDEX,
        "dists/s/main/binary-amd64/by-hash/SHA256/" + "a" * 64: FileClass.BYHASH,
        "pool/main/t/tally/tally_1.0_amd64.deb": FileClass.POOL,
        "source/tally-1.0.tar.gz": FileClass.OTHER,
        ".releng/state/pool.jsonl": FileClass.STATE,
    }
    assert {p: classify(p) for p in paths} == paths
    order = sorted(paths, key=classify)
    assert order[0].startswith("pool/")
    assert order.index("dists/s/InRelease") > order.index("dists/s/Release.gpg")
    assert max(order.index(p) for p in paths if "by-hash" in p) < order.index(
        "dists/s/main/binary-amd64/Packages.xz"
    )


def test_content_type_and_cache_control() -> None:
    assert content_type("pool/main/t/t/t_1_amd64.deb") == "application/vnd.debian.binary-package"
    assert content_type("dists/s/InRelease").startswith("text/plain")
    assert (
        content_type("dists/s/main/binary-amd64/by-hash/SHA256/ab", b"\xfd7zXZ\x00..")
        == "application/x-xz"
    )
    assert content_type("dists/s/main/binary-amd64/by-hash/SHA256/ab", b"Package: x\n").startswith(
        "text/plain"
    )
    assert content_type("source/x.tar.gz.asc") == "application/pgp-signature"
    assert "immutable" in cache_control("pool/main/t/t/t_1_amd64.deb")
    assert "immutable" in cache_control("dists/s/main/binary-amd64/by-hash/SHA256/ab")
    assert cache_control("dists/s/InRelease", short_ttl=30) == "public, max-age=30"
    assert cache_control(".releng/state/pool.jsonl") == "private, no-store"


def test_plan_uploads_only_what_changed_and_deletes_only_after_grace() -> None:
    manifest = Manifest(
        files={"pool/a.deb": "1", "pool/b.deb": "2", "pool/c.deb": "3", "dists/s/InRelease": "x"},
        pending={"pool/c.deb": (T0 - dt.timedelta(hours=2)).isoformat()},
    )
    local = {"pool/a.deb": "1", "pool/d.deb": "4", "dists/s/InRelease": "y"}
    plan = plan_sync(_local_paths(local), manifest, None, now=T0, grace=dt.timedelta(hours=1))
    assert [u.rel for u in plan.uploads] == ["pool/d.deb", "dists/s/InRelease"]
    assert plan.deletes == ("pool/c.deb",)  # unreferenced for 2 h > 1 h grace
    assert set(plan.kept) == {"pool/b.deb"}  # unreferenced from now on: kept for the grace period
    assert plan.already_pending == {}


def _local_paths(files: dict[str, str]) -> dict[str, LocalFile]:
    return {rel: LocalFile(Path("/nonexistent"), sha, 1) for rel, sha in files.items()}


def test_plan_takes_a_dead_runs_intent_into_account() -> None:
    manifest = Manifest(files={"pool/a.deb": "1"}, run="r1")
    intent = Intent(run="r2", files={"pool/a.deb": "1", "pool/half.deb": "9"})
    plan = plan_sync(
        _local_paths({"pool/a.deb": "1"}), manifest, intent, now=T0, grace=dt.timedelta(0)
    )
    assert plan.uploads == ()
    assert plan.kept == {"pool/half.deb": "9"}  # unreferenced from now: deleted after the grace
    assert plan.carried == {"pool/half.deb": "9"}


def test_dirty_directories() -> None:
    old = ["pool/main/a/a/a_1.deb", "dists/s/InRelease", "dists/s/main/binary-amd64/Packages"]
    new = [*old[1:], "pool/main/b/b/b_1.deb"]
    dirty = dirty_directories(
        old, new, ["pool/main/a/a/a_1.deb", "pool/main/b/b/b_1.deb", "dists/s/InRelease"]
    )
    # a/ and a/a/ disappeared, b/ and b/b/ appeared: their parents change too; the
    # component's directory did not change.
    assert dirty == {
        "pool/main/a/a",
        "pool/main/a",
        "pool/main",
        "pool/main/b/b",
        "pool/main/b",
        "dists/s",
    }


def test_manifest_round_trip_and_corruption() -> None:
    m = Manifest(files={"a": "1"}, pending={"b": T0.isoformat()}, run="r", written="w")
    assert Manifest.from_bytes(m.to_bytes(), where="x") == m
    with pytest.raises(PublishError, match="delete it and publish again"):
        Manifest.from_bytes(b"not gzip", where="s3://b/p/.releng/manifest.json.gz")


def test_scan_tree_skips_dot_files_but_maps_the_state_dir(tmp_path: Path) -> None:
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "a.deb").write_bytes(b"a")
    (tmp_path / "pool" / ".a.deb.tmp").write_bytes(b"partial")
    (tmp_path / ".releng-repo" / "suites").mkdir(parents=True)
    (tmp_path / ".releng-repo" / "suites" / "s.json").write_text("{}")
    found = scan_tree(tmp_path, state_dir=".releng-repo")
    assert sorted(found) == [".releng/state/suites/s.json", "pool/a.deb"]
    assert found["pool/a.deb"].sha256 == hashlib.sha256(b"a").hexdigest()


# ----------------------------------------------------------------------------- against moto


@pytest.fixture
def dest(moto_server, monkeypatch) -> S3Url:
    """A fresh public bucket (policy as published) on the session's moto server."""
    from releng.publish.flows import public_read_policy

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    bucket = f"pub-{uuid.uuid4().hex[:12]}"
    client = s3_client()
    client.create_bucket(Bucket=bucket)
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public_read_policy(bucket, "apt")))
    return S3Url(bucket, "apt")


def base_url(moto_server, dest: S3Url) -> str:
    return f"{moto_server.endpoint_url}/{dest.bucket}/{dest.prefix}"


def keys_in(client, dest: S3Url) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=dest.bucket, Prefix=dest.key_prefix
    )
    return {dest.rel(o["Key"]) for p in pages for o in p.get("Contents", [])}


def put_order(client) -> list[str]:
    """Records the keys of PutObject requests, in the order they are sent."""
    order: list[str] = []

    def on_send(request, **_):
        if request.method == "PUT":
            order.append(request.url.split("?")[0])

    client.meta.events.register("before-send.s3", on_send)  # PutObject and CopyObject
    return order


@pytest.mark.aws
def test_first_sync_uploads_in_phase_order_and_serves_a_repo(moto_server, dest, tmp_path) -> None:
    tree = tmp_path / "repo"
    write_tree(tree, {f"pkg{i}": "1.0" for i in range(5)})
    client = s3_client()
    order = put_order(client)
    stats = RequestStats().attach(client)
    result = sync_tree(client, tree, dest, options=SyncOptions(workers=4))
    # The plain indexes are copies of their by-hash files, made in S3: no bytes sent twice.
    assert stats.count("CopyObject") == 2
    assert len(result.uploaded) == len(scan_tree(tree))
    classes = [
        classify(dest.rel(u.split(f"/{dest.bucket}/", 1)[1])) for u in order if "/.releng/" not in u
    ]
    assert classes == sorted(classes), "a later phase started before an earlier one finished"
    assert classes[-1] is FileClass.INRELEASE
    url = base_url(moto_server, dest)
    assert apt_problems(url) == []
    assert packages_served(url) == {f"pkg{i}": "1.0" for i in range(5)}
    head = client.head_object(
        Bucket=dest.bucket, Key=dest.key("pool/main/p/pkg0/pkg0_1.0_amd64.deb")
    )
    assert head["ContentType"] == "application/vnd.debian.binary-package"
    assert "immutable" in head["CacheControl"]
    assert (
        head["Metadata"]["sha256"]
        == hashlib.sha256((tree / "pool/main/p/pkg0/pkg0_1.0_amd64.deb").read_bytes()).hexdigest()
    )
    head = client.head_object(Bucket=dest.bucket, Key=dest.key("dists/stable/InRelease"))
    assert head["CacheControl"] == "public, max-age=60"


@pytest.mark.aws
def test_resync_is_incremental_and_deletes_after_the_grace_period(
    moto_server, dest, tmp_path
) -> None:
    tree = tmp_path / "repo"
    packages = {f"pkg{i}": "1.0" for i in range(20)}
    write_tree(tree, packages)
    client = s3_client()
    now = [T0]
    opts = SyncOptions(grace=dt.timedelta(hours=1))
    sync_tree(client, tree, dest, options=opts, clock=lambda: now[0])

    stats = RequestStats().attach(client)
    assert not sync_tree(client, tree, dest, options=opts, clock=lambda: now[0]).changed
    assert stats.writes == 0, stats.summary()
    assert stats.count("ListObjectsV2") == 0, "a publish with a manifest never lists the bucket"

    # A client reads the old InRelease, then the publisher replaces pkg0 by pkg0 2.0.
    url = base_url(moto_server, dest)
    old = read_inrelease(url)
    packages["pkg0"] = "2.0"
    write_tree(tree, packages)
    stats = RequestStats().attach(client)
    result = sync_tree(client, tree, dest, options=opts, clock=lambda: now[0])
    assert [u for u in result.uploaded if u.startswith("pool/")] == [
        "pool/main/p/pkg0/pkg0_2.0_amd64.deb"
    ]
    assert result.deleted == ()
    # The client in the middle of its update still finds everything the old InRelease names.
    assert apt_problems(url, old) == []
    assert apt_problems(url) == []
    assert packages_served(url)["pkg0"] == "2.0"
    assert "pool/main/p/pkg0/pkg0_1.0_amd64.deb" in keys_in(client, dest)

    # Within the grace period nothing goes; after it, the unreferenced files do.
    now[0] = T0 + dt.timedelta(minutes=30)
    assert sync_tree(client, tree, dest, options=opts, clock=lambda: now[0]).deleted == ()
    now[0] = T0 + dt.timedelta(hours=2)
    result = sync_tree(client, tree, dest, options=opts, clock=lambda: now[0])
    assert "pool/main/p/pkg0/pkg0_1.0_amd64.deb" in result.deleted
    published = {k for k in keys_in(client, dest) if not k.startswith(".releng/")}
    assert published == set(scan_tree(tree))
    assert apt_problems(url) == []


@pytest.mark.aws
def test_back_to_back_publishes_get_different_last_modified_seconds(
    moto_server, dest, tmp_path
) -> None:
    """An apt that fetched InRelease between two publishes in one second would send that
    second as If-Modified-Since and be told 304: the second publish waits the second out."""
    tree = tmp_path / "repo"
    client = s3_client()
    seen: list[dt.datetime] = []
    for version in ("1.0", "2.0", "3.0"):
        write_tree(tree, {"pkg": version})
        sync_tree(client, tree, dest)
        head = client.head_object(Bucket=dest.bucket, Key=dest.key("dists/stable/InRelease"))
        seen.append(head["LastModified"])
    assert seen[0] < seen[1] < seen[2], seen


@pytest.mark.aws
def test_the_wait_is_at_most_the_rest_of_the_last_publishs_second(dest, tmp_path) -> None:
    tree = tmp_path / "repo"
    write_tree(tree, {"pkg": "1.0"})
    client = s3_client()
    sync_tree(client, tree, dest, clock=lambda: T0)
    waits: list[float] = []
    syncer = RepoSyncer(
        client, dest, clock=lambda: T0 + dt.timedelta(milliseconds=300), sleep=waits.append
    )
    write_tree(tree, {"pkg": "2.0"})
    syncer.sync(scan_tree(tree))
    # Release then InRelease: each phase checks; the fake clock does not move.
    assert waits and all(abs(w - 0.7) < 1e-6 for w in waits), waits
    waits.clear()
    later = RepoSyncer(client, dest, clock=lambda: T0 + dt.timedelta(hours=1), sleep=waits.append)
    write_tree(tree, {"pkg": "3.0"})
    later.sync(scan_tree(tree))
    assert waits == []


@pytest.mark.aws
def test_large_files_go_multipart(dest, tmp_path) -> None:
    tree = tmp_path / "repo"
    write_tree(
        tree,
        {"small": "1"},
        extra_pool={"pool/main/b/big/big_1_amd64.deb": b"\x01" * (6 * 1024 * 1024)},
    )
    client = s3_client()
    stats = RequestStats().attach(client)
    sync_tree(client, tree, dest, options=SyncOptions(multipart_threshold=5 * 1024 * 1024))
    assert stats.count("CreateMultipartUpload") == 1
    assert stats.count("UploadPart") == 2
    body = client.get_object(Bucket=dest.bucket, Key=dest.key("pool/main/b/big/big_1_amd64.deb"))
    assert body["ContentType"] == "application/vnd.debian.binary-package"
    assert body["Body"].read() == b"\x01" * (6 * 1024 * 1024)


@pytest.mark.aws
def test_no_manifest_bootstraps_from_one_listing(moto_server, dest, tmp_path) -> None:
    """A bucket filled by something else (aws s3 sync): listed once, stale objects retired."""
    client = s3_client()
    client.put_object(
        Bucket=dest.bucket, Key=dest.key("pool/main/o/old/old_1_amd64.deb"), Body=b"old"
    )
    tree = tmp_path / "repo"
    write_tree(tree, {"new": "1"})
    stats = RequestStats().attach(client)
    result = sync_tree(client, tree, dest, options=SyncOptions(grace=dt.timedelta(0)))
    assert stats.count("ListObjectsV2") == len(MANAGED_TREES)  # one listing of each tree, once
    assert "pool/main/o/old/old_1_amd64.deb" not in result.deleted  # not before the grace period...
    result = sync_tree(client, tree, dest, options=SyncOptions(grace=dt.timedelta(0)))
    assert result.deleted == ("pool/main/o/old/old_1_amd64.deb",)  # ...which has passed now
    assert apt_problems(base_url(moto_server, dest)) == []


@pytest.mark.aws
def test_a_dead_runs_uploads_are_cleaned_up(dest, tmp_path) -> None:
    """A run dies after its pool upload; the tree then drops that package; the orphan goes."""
    client = s3_client()
    tree = tmp_path / "repo"
    write_tree(tree, {"a": "1"})
    sync_tree(client, tree, dest, options=SyncOptions(grace=dt.timedelta(0)))
    write_tree(tree, {"a": "1", "doomed": "1"})

    class Died(Exception):
        pass

    def die_on_index(request, **_):
        if "/dists/" in request.url:
            raise Died

    client.meta.events.register("before-send.s3.PutObject", die_on_index)
    with pytest.raises(Died):
        sync_tree(client, tree, dest, options=SyncOptions(grace=dt.timedelta(0), workers=1))
    client.meta.events.unregister("before-send.s3.PutObject", die_on_index)
    assert "pool/main/d/doomed/doomed_1_amd64.deb" in keys_in(client, dest)
    assert INTENT in keys_in(client, dest)

    write_tree(tree, {"a": "1"})
    for _ in range(2):  # the first sync marks it unreferenced; the next (grace 0) deletes it
        sync_tree(client, tree, dest, options=SyncOptions(grace=dt.timedelta(0)))
    assert "pool/main/d/doomed/doomed_1_amd64.deb" not in keys_in(client, dest)
    manifest = Manifest.from_bytes(
        client.get_object(Bucket=dest.bucket, Key=dest.key(MANIFEST))["Body"].read(), where="test"
    )
    assert set(manifest.files) == set(scan_tree(tree))


@pytest.mark.aws
def test_dry_run_writes_nothing(dest, tmp_path) -> None:
    tree = tmp_path / "repo"
    write_tree(tree, {"a": "1"})
    client = s3_client()
    result = RepoSyncer(client, dest, options=SyncOptions(dry_run=True)).sync(scan_tree(tree))
    assert len(result.plan.uploads) == len(scan_tree(tree))
    assert keys_in(client, dest) == set()


@pytest.mark.aws
def test_missing_bucket_and_access_denied_are_clear_errors(
    moto_server, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    tree = tmp_path / "repo"
    write_tree(tree, {"a": "1"})
    client = s3_client()
    with pytest.raises(PublishError, match="bucket 'no-such-bucket-here' does not exist"):
        sync_tree(client, tree, S3Url("no-such-bucket-here", "apt"))

    bucket = f"denied-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny))
    with pytest.raises(PublishError, match="access denied to s3://denied-") as exc:
        sync_tree(client, tree, S3Url(bucket, "apt"))
    assert "testing" not in str(exc.value)  # the (fake) credentials never appear
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


@pytest.mark.parametrize("text", ["s3://my-bucket/t\tab", "out/re\npo", "  "])
def test_a_repository_location_with_control_characters_is_refused(
    text: str, tmp_path: Path
) -> None:
    """Issue 23.2: a tab made an S3 prefix 't\tab'; every --repo is refused in one line."""
    from releng.errors import RelengError
    from releng.publish.location import RepoLocation

    with pytest.raises(RelengError) as exc:
        RepoLocation.parse(text, base=tmp_path)
    assert "\n" not in str(exc.value)


def test_a_repository_location_is_a_directory_or_a_bucket(tmp_path: Path) -> None:
    from releng.errors import RelengError
    from releng.publish.location import RepoLocation

    assert RepoLocation.parse("out/repo", base=tmp_path).path == tmp_path / "out/repo"
    assert RepoLocation.parse("/srv/apt", base=tmp_path).path == Path("/srv/apt")
    s3 = RepoLocation.parse("s3://my-bucket/apt", base=tmp_path)
    assert s3.is_s3 and str(s3) == "s3://my-bucket/apt"
    with pytest.raises(RelengError, match="directory or s3://"):
        RepoLocation.parse("https://example.org/apt", base=tmp_path)
