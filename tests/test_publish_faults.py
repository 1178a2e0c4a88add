"""Failures along a publish: the Nth request fails, for every N; readers during 20 publishes.

The repositories are real (the apt library, dpkg-deb packages, gpg signatures) and the
S3 is moto's server over HTTP. A failure is injected on botocore's ``before-send``
event: the request never leaves the client, exactly as if the connection had dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
import time
import uuid

import pytest

from releng import apt
from releng.gpg import Signer
from releng.publish.flows import Destination, LockOptions, public_read_policy, sync_repo
from releng.publish.sync import S3Url, SyncOptions, s3_client, scan_tree
from tests.apt_debs import make_deb
from tests.fixtures.gpg import make_key
from tests.fixtures.s3repo import apt_problems, follow, packages_served, read_inrelease

pytestmark = [pytest.mark.aws, pytest.mark.slow]

SUITE = "bookworm"


class InjectedFault(Exception):
    """The request that failed on purpose."""


class FailNth:
    """Raises on the Nth request a client sends (counting from 1); counts them all."""

    def __init__(self, n: int, exc: BaseException | None = None) -> None:
        self.n = n
        self.exc = exc
        self.sent = 0
        self.lock = threading.Lock()

    def attach(self, client) -> FailNth:
        client.meta.events.register("before-send.s3", self)
        return self

    def __call__(self, **_) -> None:
        with self.lock:
            self.sent += 1
            if self.sent == self.n:
                raise self.exc or InjectedFault(f"request {self.n} failed on purpose")


@pytest.fixture(scope="module")
def repos(tmp_path_factory, project_copy_module):
    """Two states of one real repository: v1 (tally 1.0) and v2 (tally 1.1 added)."""
    base = tmp_path_factory.mktemp("fault-repos")
    key = make_key(base / "gnupg", name="fault test key")
    signer = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=key.passphrase)
    settings = apt.settings_for(project_copy_module)
    debs = base / "debs"
    debs.mkdir()
    v1 = base / "v1"
    apt.include(
        v1,
        settings,
        signer,
        suites=[SUITE],
        paths=[make_deb(debs, "tally", "1.0-1"), make_deb(debs, "tally-doc", "1.0-1")],
    )
    v2 = base / "v2"
    shutil.copytree(v1, v2)
    apt.include(v2, settings, signer, suites=[SUITE], paths=[make_deb(debs, "tally", "1.1-1")])
    keyring = base / "keyring.gpg"
    key.public_keyring(keyring)
    return v1, v2, keyring, signer, settings, debs


@pytest.fixture(scope="module")
def project_copy_module(tmp_path_factory):
    from releng.project import Project
    from tests.fixtures.project import copy_repo

    return Project.load(copy_repo(tmp_path_factory.mktemp("proj") / "repo"))


@pytest.fixture
def bucket(moto_server, monkeypatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    name = f"faults-{uuid.uuid4().hex[:10]}"
    client = s3_client()
    client.create_bucket(Bucket=name)
    # One prefix per case here, so one statement for all of them.
    policy = public_read_policy(name)
    policy["Statement"][0]["Resource"] = f"arn:aws:s3:::{name}/*"  # type: ignore[index]
    client.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
    return name


_CLIENTS: dict[str, object] = {}


def shared_client():
    """One client for the ordinary publishes (making a client costs ~0.1 s)."""
    if "s3" not in _CLIENTS:
        _CLIENTS["s3"] = s3_client()
    return _CLIENTS["s3"]


def no_wait(_seconds: float) -> None:
    """The publishes here switch back to back, without sync's wait for the next whole second
    (it is for apt's If-Modified-Since; these readers do not send it). The wait sends no
    request, so every request number N is the same with it or without it."""


def dest(url: S3Url, client=None, **lock) -> Destination:
    return Destination(
        s3=client or shared_client(),
        url=url,
        sync=SyncOptions(grace=dt.timedelta(0), workers=4),
        lock=LockOptions(**{"timeout": 30.0, "poll": 0.2, **lock}),
        sleep=no_wait,
    )


def public_objects(client, url: S3Url) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=url.bucket, Prefix=url.key_prefix
    )
    keys = {url.rel(o["Key"]) for p in pages for o in p.get("Contents", [])}
    return {k for k in keys if not k.startswith(".releng/") and not k.endswith("index.html")}


def test_every_failing_request_leaves_a_consistent_repo_and_a_rerun_converges(
    moto_server, bucket, repos
) -> None:
    v1, v2, keyring, *_ = repos
    client = s3_client()
    old = {"tally": "1.0-1", "tally-doc": "1.0-1"}
    new = {"tally": "1.1-1", "tally-doc": "1.0-1"}

    # Every case starts the same way: v1 published again over v2 (an ordinary publish) and
    # v2's files gone (a second sync, after the grace period of 0), so that the publish of
    # v2 that fails must upload everything v2 needs. Count its requests.
    url = S3Url(bucket, "faults")
    http = f"{moto_server.endpoint_url}/{bucket}/{url.prefix}"
    for tree in (v1, v2, v2, v1, v1):
        sync_repo(dest(url), tree)
    counting = s3_client()
    counter = FailNth(0).attach(counting)
    sync_repo(dest(url, counting), v2)
    sync_repo(dest(url), v2)
    total = counter.sent
    assert total > 20
    print(f"a publish of v2 over v1 sends {total} requests")

    faulty = s3_client()
    for n in range(1, total + 1):
        sync_repo(dest(url), v1)
        sync_repo(dest(url), v1)
        assert packages_served(http, SUITE) == old
        assert "pool/main/t/tally/tally_1.1-1_amd64.deb" not in public_objects(client, url)
        fault = FailNth(n).attach(faulty)
        # No heartbeat (its requests would shift N) and a short TTL: a lock left behind by
        # a failure of its own release expires before the rerun gives up waiting.
        with pytest.raises(InjectedFault):
            sync_repo(dest(url, faulty, heartbeat=False, ttl=dt.timedelta(seconds=1)), v2)
        faulty.meta.events.unregister("before-send.s3", fault)
        assert apt_problems(http, suite=SUITE, keyring=keyring) == [], f"after failing request {n}"
        assert packages_served(http, SUITE) in (old, new), f"after failing request {n}"
        sync_repo(dest(url), v2)  # the rerun
        assert packages_served(http, SUITE) == new, f"rerun after failing request {n}"
        assert apt_problems(http, suite=SUITE, keyring=keyring) == []
        sync_repo(dest(url), v2)  # the grace period (0) has passed: leftovers go
        expected = {k for k in scan_tree(v2) if not k.startswith(".releng/")}
        assert public_objects(client, url) == expected, f"rerun after failing request {n}"


def test_transient_failures_are_retried_by_the_standard_retry_mode(
    moto_server, bucket, repos
) -> None:
    from botocore.exceptions import ConnectionClosedError

    v1, _v2, keyring, *_ = repos
    for n in (1, 7, 15):
        url = S3Url(bucket, f"retry{n}")
        flaky = s3_client()
        fault = FailNth(n, ConnectionClosedError(endpoint_url=moto_server.endpoint_url))
        fault.attach(flaky)
        result = sync_repo(dest(url, flaky, heartbeat=False), v1)
        assert result.sync.changed
        http = f"{moto_server.endpoint_url}/{bucket}/{url.prefix}"
        assert apt_problems(http, suite=SUITE, keyring=keyring) == []


def test_readers_during_10_publishes_never_see_a_mismatch_or_a_404(
    moto_server, bucket, repos, tmp_path
) -> None:
    """A reader loop (InRelease, then indexes by hash, then every package: more than
    apt-get update fetches) runs while 10 slowed-down publishes replace the repository;
    the default grace period keeps what older InRelease files name."""
    v1, _v2, keyring, signer, settings, debs = repos
    work = tmp_path / "repo"
    shutil.copytree(v1, work)
    url = S3Url(bucket, "busy")
    http = f"{moto_server.endpoint_url}/{bucket}/{url.prefix}"
    publisher = Destination(s3=s3_client(), url=url, lock=LockOptions(timeout=30, poll=0.2))
    sync_repo(publisher, work)

    def slow_publisher(request, **_) -> None:
        if (
            request.method == "PUT"
            and "Release" not in request.url
            and "/.releng/" not in request.url
        ):
            time.sleep(0.1)

    publisher.s3.meta.events.register("before-send.s3", slow_publisher)
    problems: list[str] = []
    updates = [0]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            snapshot = read_inrelease(http, SUITE)
            problems.extend(follow(http, snapshot))
            updates[0] += 1
            stop.wait(0.02)  # leave the (shared, 2-core) machine some room for the publisher

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(10):
            deb = make_deb(debs, "tally", f"2.{i}-1")
            apt.include(work, settings, signer, suites=[SUITE], paths=[deb])
            sync_repo(publisher, work)
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert updates[0] >= 10
    assert packages_served(http, SUITE)["tally"] == "2.9-1"
    assert apt_problems(http, suite=SUITE, keyring=keyring) == []
