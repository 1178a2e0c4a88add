"""Promote, remove and roll back on S3 (moto over HTTP), each from an empty disk, with the
real apt library and gpg; what a client reads is checked the way apt reads it."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.apt import PublishResult, RepoSettings, Repository, lifecycle
from releng.apt.lifecycle import Spec
from releng.errors import RepoError
from releng.gpg import Signer
from releng.publish.flows import (
    Destination,
    LockOptions,
    open_destination,
    public_read_policy,
    sync_repo,
)
from releng.publish.sync import RequestStats, S3Url, SyncOptions, s3_client
from tests.apt_debs import make_deb, raw_deb
from tests.fixtures.s3repo import apt_problems, fetch, packages_served

pytestmark = pytest.mark.aws

SETTINGS = RepoSettings(
    name="tally",
    origin="tests",
    label="tests",
    suite_patterns=("bookworm", "bookworm-staging"),
    sync_before_switch=False,
)


@pytest.fixture
def public(moto_server, monkeypatch) -> S3Url:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    client = s3_client()
    bucket = f"life-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps(public_read_policy(bucket, "apt", name="tally"))
    )
    return S3Url(bucket, "apt")


@pytest.fixture
def signer(gpg_key) -> Signer:
    return Signer(gnupghome=gpg_key.home, key=gpg_key.fingerprint, passphrase=gpg_key.passphrase)


def dest_for(url: S3Url, client=None) -> Destination:
    return Destination(
        s3=client or s3_client(),
        url=url,
        lock=LockOptions(timeout=60, poll=0.2, heartbeat=False),
        sync=SyncOptions(grace=dt.timedelta(0)),
    )


def on_s3(
    url: S3Url, work: Path, signer: Signer, op: Callable[[Repository], PublishResult], client=None
) -> PublishResult:
    with open_destination(dest_for(url, client), work):
        return op(Repository(work, SETTINGS, signer))


def seed(url: S3Url, tmp_path: Path, signer: Signer, *debs: Path) -> None:
    """A repository with ``debs`` in bookworm-staging, synced to the bucket; no local copy."""
    local = tmp_path / "seed"
    Repository(local, SETTINGS, signer).include(["bookworm-staging"], list(debs))
    sync_repo(dest_for(url), local, indices=False)


def test_promote_and_roll_back_on_s3_from_empty_disks(
    moto_server, public, signer, tmp_path
) -> None:
    seed(
        public,
        tmp_path,
        signer,
        make_deb(tmp_path, "tally", "1.0-1"),
        make_deb(tmp_path, "tally", "2.0-1"),
    )
    http = f"{moto_server.endpoint_url}/{public.bucket}/{public.prefix}"
    keyring = tmp_path / "tally.gpg"
    keyring.write_bytes(fetch(f"{http}/tally-archive-keyring.gpg"))

    def promote(spec: str) -> Callable[[Repository], PublishResult]:
        return lambda r: lifecycle.copy(
            r, source="bookworm-staging", target="bookworm", specs=[Spec.parse(spec)]
        )

    on_s3(public, tmp_path / "empty-1", signer, promote("tally=1.0-1"))
    assert apt_problems(http, suite="bookworm", keyring=keyring) == []
    assert packages_served(http, "bookworm") == {"tally": "1.0-1"}
    on_s3(public, tmp_path / "empty-2", signer, promote("tally"))  # the newest: 2.0-1
    assert packages_served(http, "bookworm") == {"tally": "2.0-1"}
    # One pool object per .deb: the suites share it.
    listing = s3_client().list_objects_v2(Bucket=public.bucket, Prefix="apt/pool/")["Contents"]
    debs = sorted(k for o in listing if (k := o["Key"].rsplit("/", 1)[1]).endswith(".deb"))
    assert debs == ["tally_1.0-1_amd64.deb", "tally_2.0-1_amd64.deb"]

    # History and rollback from yet another empty disk: the history lives in the bucket.
    work = tmp_path / "empty-3"
    with open_destination(dest_for(public), work, read_only=True):
        pass
    assert [e.note for e in lifecycle.history(work, "bookworm")] == [
        "copy from bookworm-staging",
        "copy from bookworm-staging",
    ]
    on_s3(
        public,
        tmp_path / "empty-4",
        signer,
        lambda r: lifecycle.rollback(r, suite="bookworm", to=1),
    )
    assert apt_problems(http, suite="bookworm", keyring=keyring) == []
    served = fetch(f"{http}/dists/bookworm/main/binary-amd64/Packages").decode()
    assert "Version: 1.0-1\n" in served and "Version: 2.0-1\n" not in served

    # Remove, then bad input: one error, the bucket unchanged.
    on_s3(
        public,
        tmp_path / "empty-5",
        signer,
        lambda r: lifecycle.remove(r, suite="bookworm", specs=[Spec.parse("tally")]),
    )
    assert packages_served(http, "bookworm") == {}
    assert apt_problems(http, suite="bookworm", keyring=keyring) == []
    before = fetch(f"{http}/dists/bookworm/InRelease")
    with pytest.raises(RepoError, match="has no publish 9"):
        on_s3(
            public,
            tmp_path / "empty-6",
            signer,
            lambda r: lifecycle.rollback(r, suite="bookworm", to=9),
        )
    assert fetch(f"{http}/dists/bookworm/InRelease") == before


def _promotion_requests(public: S3Url, tmp_path: Path, signer: Signer, size: int) -> int:
    """Requests of one promotion into a suite of ``size`` packages (the work directory kept,
    as a publisher keeps it between runs)."""
    debs = tmp_path / f"debs-{size}"
    debs.mkdir()
    inputs = [
        raw_deb(
            debs,
            f"pkg{i}_1.0_amd64.deb",
            f"Package: pkg{i}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: t <t@t.invalid>\n"
            "Description: x\n x\n",
        )
        for i in range(size)
    ]
    url = S3Url(public.bucket, f"size-{size}")
    local = tmp_path / f"seed-{size}"
    repo = Repository(local, SETTINGS, signer)
    repo.include(["bookworm"], inputs)
    repo.include(["bookworm-staging"], [make_deb(tmp_path, "tally", f"{size}.0")])
    sync_repo(dest_for(url), local, indices=False)
    work = tmp_path / f"work-{size}"
    promote = lambda r: lifecycle.copy(  # noqa: E731
        r, source="bookworm-staging", target="bookworm", specs=[Spec.parse("tally")]
    )
    on_s3(url, work, signer, promote)  # fills the work directory, as a first run does
    on_s3(
        url,
        work,
        signer,
        lambda r: lifecycle.remove(r, suite="bookworm", specs=[Spec.parse("tally")]),
    )
    client = s3_client()
    stats = RequestStats().attach(client)
    on_s3(url, work, signer, promote, client=client)
    assert f"Version: {size}.0" in (work / "dists/bookworm/main/binary-amd64/Packages").read_text()
    return stats.total


def test_a_promotions_s3_requests_do_not_grow_with_the_suite(public, signer, tmp_path) -> None:
    small = _promotion_requests(public, tmp_path, signer, 10)
    large = _promotion_requests(public, tmp_path, signer, 300)
    assert small == large, (small, large)
