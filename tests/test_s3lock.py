"""releng.publish.lock against moto: If-None-Match: * creation, holder named, expiry takeover logged."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid

import pytest

from releng.errors import LockError
from releng.publish.lock import LockInfo, S3Lock
from releng.publish.sync import LOCK, S3Url, s3_client

pytestmark = pytest.mark.aws


@pytest.fixture
def dest(moto_server, monkeypatch) -> S3Url:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    bucket = f"lock-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=bucket)
    return S3Url(bucket, "apt")


def test_moto_honours_if_none_match(dest) -> None:
    """The premise: S3 (and moto 5.2.1) refuse a second If-None-Match: * write with 412."""
    from botocore.exceptions import ClientError

    client = s3_client()
    client.put_object(Bucket=dest.bucket, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=dest.bucket, Key="k", Body=b"2", IfNoneMatch="*")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert client.get_object(Bucket=dest.bucket, Key="k")["Body"].read() == b"1"


def test_second_publisher_waits_then_fails_naming_the_holder(dest) -> None:
    client = s3_client()
    first = S3Lock(client, dest, owner="alice@host-a pid 1")
    first.acquire(timeout=0)
    try:
        second = S3Lock(client, dest, owner="bob@host-b pid 2", poll=0.1)
        with pytest.raises(LockError, match=r"locked by alice@host-a pid 1 since .* waited 0\.3s"):
            second.acquire(timeout=0.3)
        assert not second.held
    finally:
        first.release()
    body = client.list_objects_v2(Bucket=dest.bucket, Prefix=dest.key(LOCK))
    assert body.get("KeyCount", 0) == 0  # released: the object is gone
    with S3Lock(client, dest, owner="bob@host-b pid 2") as lock:
        assert lock.held


def test_exactly_one_of_many_racing_publishers_wins(dest) -> None:
    client = s3_client()
    locks = [S3Lock(client, dest, owner=f"racer {i}", heartbeat=False) for i in range(8)]
    won: list[str] = []
    barrier = threading.Barrier(len(locks))

    def race(lock: S3Lock) -> None:
        barrier.wait()
        try:
            lock.acquire(timeout=0)
            won.append(lock.owner)
        except LockError:
            pass

    threads = [threading.Thread(target=race, args=(lk,)) for lk in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    holder = S3Lock(client, dest).read()
    assert holder is not None and holder[0].owner == won[0]


def test_an_expired_lock_is_taken_over_and_the_takeover_logged(dest, caplog) -> None:
    client = s3_client()
    now = [dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)]
    dead = S3Lock(
        client,
        dest,
        owner="crashed@worker pid 9",
        ttl=dt.timedelta(minutes=30),
        heartbeat=False,
        clock=lambda: now[0],
    )
    dead.acquire(timeout=0)  # and never released: its worker died
    late = S3Lock(
        client, dest, owner="next@worker pid 10", poll=0.05, clock=lambda: now[0], heartbeat=False
    )
    with pytest.raises(LockError, match="crashed@worker pid 9"):
        late.acquire(timeout=0.2)  # not expired yet
    now[0] += dt.timedelta(minutes=31)
    with caplog.at_level(logging.WARNING, logger="releng.publish.lock"):
        late.acquire(timeout=0)
    assert "took over the expired publisher lock of crashed@worker pid 9" in caplog.text
    info, _etag = late.read()  # type: ignore[misc]
    assert info.owner == "next@worker pid 10"
    # The old holder finds out at its next renewal and stops before writing more.
    dead.refresh()
    with pytest.raises(LockError, match="lost the publisher lock"):
        dead.check()
    dead.release()  # must not delete the new holder's lock
    assert late.read()[0].owner == "next@worker pid 10"  # type: ignore[index]
    late.release()


def test_heartbeat_keeps_a_long_publish_locked(dest) -> None:
    client = s3_client()
    holder = S3Lock(client, dest, owner="slow publisher", ttl=dt.timedelta(seconds=1.5))
    holder.acquire(timeout=0)
    try:
        time.sleep(3)  # twice the TTL: without renewals the lock would have expired
        holder.check()
        other = S3Lock(client, dest, owner="impatient")
        with pytest.raises(LockError, match="slow publisher"):
            other.acquire(timeout=0)
    finally:
        holder.release()


def test_unreadable_lock_counts_as_expired() -> None:
    info = LockInfo.from_bytes(b"garbage")
    assert info.owner == "<unreadable lock>"
    assert info.expires < dt.datetime.now(dt.UTC)


HOLDER = """
import datetime as dt, sys, time
from releng.publish.lock import S3Lock
from releng.publish.sync import S3Url, s3_client
lock = S3Lock(s3_client(), S3Url(sys.argv[1], sys.argv[2]), owner="doomed@worker pid 7",
              renew_every=dt.timedelta(seconds=float(sys.argv[3])))
lock.acquire(timeout=0)
print("locked", flush=True)
time.sleep(3600)
"""


def test_a_killed_publishers_lock_is_taken_over_after_missed_renewals_not_at_expiry(
    dest, caplog
) -> None:
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, dest.bucket, dest.prefix, "0.5"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        client = s3_client()
        info, _ = S3Lock(client, dest).read()  # type: ignore[misc]
        assert info.renewed is not None and info.renew_every == dt.timedelta(seconds=0.5)
        # The 30-minute TTL, counted from the last renewal (renewals every 0.5 s move it on).
        assert dt.timedelta(minutes=30) <= info.expires - info.acquired < dt.timedelta(minutes=31)
        holder.send_signal(signal.SIGKILL)  # mid-publish: its 30-minute lock stays behind
        holder.wait()
        rerun = S3Lock(client, dest, owner="rerun pid 8", poll=0.1)
        with caplog.at_level(logging.WARNING, logger="releng.publish.lock"):
            rerun.acquire(timeout=60)  # far less than the 30 minutes to the expiry
        try:
            assert "took over the abandoned publisher lock of doomed@worker pid 7" in caplog.text
            assert rerun.read()[0].owner == "rerun pid 8"  # type: ignore[index]
        finally:
            rerun.release()
    finally:
        holder.kill()
        holder.wait()


def test_a_live_holder_that_renews_is_never_taken_over(dest) -> None:
    client = s3_client()
    holder = S3Lock(client, dest, owner="busy", renew_every=dt.timedelta(seconds=0.2))
    holder.acquire(timeout=0)
    try:
        other = S3Lock(client, dest, owner="waiter", poll=0.1)
        with pytest.raises(LockError, match="locked by busy"):
            other.acquire(timeout=2)  # ten renewals pass while it watches
        holder.check()
    finally:
        holder.release()


def test_a_lock_whose_recorded_renewal_is_long_past_is_taken_over_at_once(dest, caplog) -> None:
    client = s3_client()
    start = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
    dead = S3Lock(client, dest, owner="gone", heartbeat=False, clock=lambda: start)
    dead.acquire(timeout=0)
    later = start + dt.timedelta(minutes=5)  # 3 renewals of 30 s missed, beyond any skew
    late = S3Lock(client, dest, owner="next", heartbeat=False, clock=lambda: later)
    with caplog.at_level(logging.WARNING, logger="releng.publish.lock"):
        late.acquire(timeout=0)
    assert "took over the abandoned publisher lock of gone" in caplog.text
    assert "last renewed 2026-11-22T12:00:00+00:00" in caplog.text
    late.release()
