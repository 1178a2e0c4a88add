"""releng.publish.index_pages: the pure renderer, and pages on S3 only where contents changed."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from releng.publish.index_pages import Entry, IndexPages, directories_of, human_size, render_index
from releng.publish.sync import S3Url, s3_client

GENERATED = dt.datetime(2026, 11, 22, 3, 4, 5, tzinfo=dt.UTC)


def test_render_lists_folders_then_files_with_size_and_date() -> None:
    page = render_index(
        "pool/main",
        [
            Entry("zeta_1.0_amd64.deb", False, 2048, dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)),
            Entry("t", True),
            Entry("a<b>.deb", False, 10, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ],
        generated=GENERATED,
    )
    assert "<title>Index of /pool/main/</title>" in page
    assert page.index('href="../"') < page.index('href="t/"') < page.index("a&lt;b&gt;.deb")
    assert page.index("a&lt;b&gt;.deb") < page.index("zeta_1.0_amd64.deb")
    assert 'href="a%3Cb%3E.deb"' in page  # escaped in the link too
    assert "2.0 KiB" in page and 'title="2048 bytes"' in page
    assert "2026-01-02 03:04 UTC" in page
    assert "Generated 2026-11-22 03:04:05 UTC." in page


def test_root_page_has_no_parent_link() -> None:
    assert 'href="../"' not in render_index("", [Entry("dists", True)], generated=GENERATED)


def test_helpers() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1536) == "1.5 KiB"
    assert directories_of(["pool/main/t/x.deb", "index.html"]) == {
        "",
        "pool",
        "pool/main",
        "pool/main/t",
    }


@pytest.mark.aws
def test_pages_on_s3_only_for_changed_dirs_never_the_control_area(moto_server, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    client = s3_client()
    bucket = f"pages-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    dest = S3Url(bucket, "apt")
    for key in (
        "pool/main/t/tally/tally_1_amd64.deb",
        "dists/s/InRelease",
        ".releng/manifest.json.gz",
    ):
        client.put_object(Bucket=bucket, Key=dest.key(key), Body=b"x" * 100)
    pages = IndexPages(client, dest, clock=lambda: GENERATED)
    everything = pages.all_directories()
    assert everything == {
        "",
        "pool",
        "pool/main",
        "pool/main/t",
        "pool/main/t/tally",
        "dists",
        "dists/s",
    }
    # one listing of everything gives every directory the same entries as one listing each
    full = pages.full_listing(everything)
    for directory in everything:
        assert sorted(full[directory], key=lambda e: e.name) == sorted(
            pages.listing(directory), key=lambda e: e.name
        ), directory
    assert pages.update(["pool/main/t/tally"]) == ["pool/main/t/tally/index.html"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "apt/pool/main/t/tally/index.html" in keys
    assert "apt/pool/index.html" not in keys  # not changed: not written
    page = client.get_object(Bucket=bucket, Key="apt/pool/main/t/tally/index.html")
    assert page["ContentType"] == "text/html; charset=utf-8"
    assert "tally_1_amd64.deb" in page["Body"].read().decode()
    monkeypatch.setattr("releng.publish.index_pages.FULL_LISTING_ABOVE", 0)  # the one-listing path
    pages.update(everything)
    root = client.get_object(Bucket=bucket, Key="apt/index.html")["Body"].read().decode()
    assert "dists/" in root and "pool/" in root and ".releng" not in root
    # a directory that emptied loses its page
    client.delete_object(Bucket=bucket, Key=dest.key("pool/main/t/tally/tally_1_amd64.deb"))
    assert pages.update(["pool/main/t/tally"]) == ["pool/main/t/tally/index.html"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "apt/pool/main/t/tally/index.html" not in keys


@pytest.mark.aws
def test_the_root_page_is_the_front_page_from_the_state_with_a_short_ttl(
    moto_server, monkeypatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    client = s3_client()
    bucket = f"front-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    dest = S3Url(bucket, "apt")
    client.put_object(Bucket=bucket, Key=dest.key("dists/s/InRelease"), Body=b"x")
    pages = IndexPages(client, dest, clock=lambda: GENERATED, short_ttl=30)
    pages.update([""])  # no front page in the state yet: the listing
    root = client.get_object(Bucket=bucket, Key="apt/index.html")["Body"].read().decode()
    assert "Index of /" in root
    front = b"<!DOCTYPE html>\n<title>tally packages</title>"
    client.put_object(Bucket=bucket, Key=dest.key(".releng/state/front-page.html"), Body=front)
    # a publish that changed only dists/s still refreshes the front page
    assert pages.update(["dists/s"]) == ["dists/s/index.html", "index.html"]
    got = client.get_object(Bucket=bucket, Key="apt/index.html")
    assert got["Body"].read() == front
    assert got["CacheControl"] == "public, max-age=30"
    assert got["ContentType"] == "text/html; charset=utf-8"
    assert pages.update([""]) == ["index.html"]
    assert client.get_object(Bucket=bucket, Key="apt/index.html")["Body"].read() == front
