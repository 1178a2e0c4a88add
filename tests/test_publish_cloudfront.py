"""releng.publish.cloudfront: which paths are invalidated (pure), and the call against moto."""

from __future__ import annotations

import pytest

from releng.errors import PublishError
from releng.publish.cloudfront import MAX_PATHS, Invalidator, invalidation_paths
from releng.publish.sync import S3Url
from tests.fixtures.moto import create_distribution


def test_only_changed_dists_paths_never_pool_or_by_hash() -> None:
    changed = [
        "dists/bookworm/InRelease",
        "dists/bookworm/main/binary-amd64/Packages.xz",
        "dists/bookworm/main/binary-amd64/by-hash/SHA256/" + "a" * 64,
        "pool/main/t/tally/tally_1_amd64.deb",
        "pool/main/t/tally/index.html",
        "source/tally-1.0.0.tar.gz",
    ]
    assert invalidation_paths(S3Url("b-x", "apt"), changed) == [
        "/apt/dists/bookworm/InRelease",
        "/apt/dists/bookworm/main/binary-amd64/Packages.xz",
    ]
    assert invalidation_paths(S3Url("b-x", "apt"), changed, origin_path="/apt") == [
        "/dists/bookworm/InRelease",
        "/dists/bookworm/main/binary-amd64/Packages.xz",
    ]


def test_the_front_page_and_key_files_are_invalidated_with_the_page_as_its_directory() -> None:
    """The front page pins the key file's SHA-256: after a key rotation a cached page and a
    fresh key (or the reverse) would fail every new install until the TTL ran out."""
    changed = [
        "index.html",
        "tally-archive-keyring.gpg",
        "tally-archive-keyring.asc",
        "dists/bookworm/InRelease",
        "source/index.html",
        "attestations/index.json",
    ]
    assert invalidation_paths(S3Url("b-x", "apt"), changed, origin_path="/apt") == [
        "/",
        "/dists/bookworm/InRelease",
        "/index.html",
        "/tally-archive-keyring.asc",
        "/tally-archive-keyring.gpg",
    ]
    assert invalidation_paths(S3Url("b-x", "apt"), ["index.html"]) == ["/apt/", "/apt/index.html"]


def test_many_paths_collapse_to_one_wildcard_per_suite() -> None:
    changed = [f"dists/s{i % 2}/main/f{i}" for i in range(MAX_PATHS + 1)]
    assert invalidation_paths(S3Url("b-x", ""), changed) == ["/dists/s0/*", "/dists/s1/*"]


def test_refuses_pool_paths() -> None:
    with pytest.raises(PublishError, match="refusing to invalidate pool"):
        Invalidator(None, "E123").invalidate(["/apt/pool/main/x.deb"])  # type: ignore[arg-type]


@pytest.mark.aws
def test_one_invalidation_batch_on_moto(moto_server) -> None:
    cf = moto_server.client("cloudfront")
    dist = create_distribution(cf, "b.s3.amazonaws.com")
    inv = Invalidator(cf, dist)
    assert inv.invalidate([]) is None
    inv_id = inv.invalidate(["/apt/dists/s/InRelease", "/apt/dists/s/Release"])
    batch = cf.get_invalidation(DistributionId=dist, Id=inv_id)["Invalidation"]["InvalidationBatch"]
    assert batch["Paths"]["Items"] == ["/apt/dists/s/InRelease", "/apt/dists/s/Release"]
    with pytest.raises(PublishError, match="does not exist"):
        Invalidator(cf, "ENOSUCHDIST").invalidate(["/dists/s/InRelease"])
