"""One publisher per bucket and prefix: a lock object written with an S3 conditional write.

The lock is ``PREFIX/.releng/lock.json``. It is created with ``If-None-Match: *``
(S3 answers 412 when it already exists), so exactly one of two racing
publishers gets it. It names its owner (user, host, pid), an expiry, when it
was last renewed and how often it is renewed; the holder renews it in the
background (every 30 s by default) with ``If-Match: <its ETag>``. A lock whose
owner died stops changing: a waiting publisher takes it over once its owner has
missed a few renewals (``MISSED_RENEWALS``), seen either in the recorded last
renewal or in its own observation of an unchanged ETag (which no clock skew
affects), and at the latest at its expiry -- with the same ``If-Match`` on the
ETag it read, so two of them cannot both take it over -- and logs that it did.
A holder whose renewal fails (taken over after a stall) learns it at the next
:meth:`S3Lock.check` and stops before writing more.

Expiry and renewal times are wall-clock time of the writer; a reader allows
``CLOCK_SKEW`` for the difference between the clocks of two publishers.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from releng.errors import LockError
from releng.publish.sync import LOCK, S3Url, error_code, http_status, is_not_found, s3_errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

DEFAULT_TTL = dt.timedelta(minutes=30)
DEFAULT_RENEW_EVERY = dt.timedelta(seconds=30)
MISSED_RENEWALS = 3  # renewals a holder may miss (a stalled network) before it counts as dead
CLOCK_SKEW = dt.timedelta(seconds=60)  # allowed between the holder's and a waiter's clock
DEFAULT_TIMEOUT = 600.0  # seconds to wait for another publisher
_CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


def default_owner() -> str:
    """``user@host pid N``: enough for a human to find the holder."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True, kw_only=True)
class LockInfo:
    owner: str
    token: str
    acquired: dt.datetime
    expires: dt.datetime
    renewed: dt.datetime | None = None  # None: a lock from before renewals were recorded
    renew_every: dt.timedelta | None = None

    def to_bytes(self) -> bytes:
        body = {
            "owner": self.owner,
            "token": self.token,
            "acquired": self.acquired.isoformat(timespec="seconds"),
            "expires": self.expires.isoformat(timespec="seconds"),
        }
        if self.renewed is not None and self.renew_every is not None:
            body["renewed"] = self.renewed.isoformat(timespec="milliseconds")
            body["renew_every_seconds"] = f"{self.renew_every.total_seconds():g}"
        return json.dumps(body).encode()

    def missed_renewals(self, now: dt.datetime) -> bool:
        """Whether the owner has missed MISSED_RENEWALS renewals by the recorded times."""
        if self.renewed is None or self.renew_every is None:
            return False
        return now >= self.renewed + MISSED_RENEWALS * self.renew_every + CLOCK_SKEW

    @classmethod
    def from_bytes(cls, data: bytes) -> LockInfo:
        try:
            body = json.loads(data)
            renewed = body.get("renewed")
            every = body.get("renew_every_seconds")
            return cls(
                owner=str(body["owner"]),
                token=str(body["token"]),
                acquired=dt.datetime.fromisoformat(body["acquired"]),
                expires=dt.datetime.fromisoformat(body["expires"]),
                renewed=dt.datetime.fromisoformat(renewed) if renewed else None,
                renew_every=dt.timedelta(seconds=float(every)) if every else None,
            )
        except (ValueError, KeyError, TypeError):
            # Unreadable: treat as expired long ago, so it can be taken over (and logged).
            epoch = dt.datetime.fromtimestamp(0, dt.UTC)
            return cls(owner="<unreadable lock>", token="", acquired=epoch, expires=epoch)


def _conflict(exc: BaseException) -> bool:
    return error_code(exc) in _CONFLICT or http_status(exc) in (409, 412)


class S3Lock:
    """The publisher lock of one destination. Use as a context manager after :meth:`acquire`,
    or with :func:`locked`."""

    def __init__(
        self,
        client: S3Client,
        dest: S3Url,
        *,
        owner: str | None = None,
        ttl: dt.timedelta = DEFAULT_TTL,
        renew_every: dt.timedelta = DEFAULT_RENEW_EVERY,
        poll: float = 5.0,
        heartbeat: bool = True,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.client = client
        self.dest = dest
        self.key = dest.key(LOCK)
        self.owner = owner or default_owner()
        self.ttl = ttl
        # At least three renewals per TTL: one missed renewal must not let the lock expire.
        self.renew_every = min(renew_every, ttl / 3)
        self.poll = poll
        self._acquired: dt.datetime | None = None
        self._heartbeat_enabled = heartbeat
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._token = uuid.uuid4().hex
        self._etag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Lock({self.dest}, owner={self.owner!r}, held={self.held})"

    @property
    def held(self) -> bool:
        return self._etag is not None and self._lost is None

    def _info(self) -> LockInfo:
        now = self._clock()
        return LockInfo(
            owner=self.owner,
            token=self._token,
            acquired=self._acquired or now,
            expires=now + self.ttl,
            renewed=now,
            renew_every=self.renew_every,
        )

    def _dead(self, holder: LockInfo, etag: str, seen: dict[str, float]) -> str | None:
        """Why the holder counts as gone (None: it does not): expired, or it stopped renewing
        (by its recorded last renewal, or by this waiter's watch of an unchanged ETag)."""
        now = self._clock()
        if now >= holder.expires:
            return f"expired {holder.expires.isoformat(timespec='seconds')}"
        if holder.missed_renewals(now) and holder.renewed is not None:
            return f"last renewed {holder.renewed.isoformat(timespec='seconds')}"
        every = holder.renew_every or self.renew_every
        watched = time.monotonic() - seen.setdefault(etag, time.monotonic())
        if watched >= MISSED_RENEWALS * every.total_seconds():
            return f"not renewed in the {watched:.0f} s this publisher watched it"
        return None

    def _put(self, info: LockInfo, **condition: str) -> str:
        response = self.client.put_object(
            Bucket=self.dest.bucket,
            Key=self.key,
            Body=info.to_bytes(),
            ContentType="application/json",
            CacheControl="private, no-store",
            **condition,  # type: ignore[arg-type]
        )
        return str(response["ETag"])

    def read(self) -> tuple[LockInfo, str] | None:
        """The current lock and its ETag, or None when nobody holds it."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.dest.bucket, Key=self.key)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        return LockInfo.from_bytes(response["Body"].read()), str(response["ETag"])

    def acquire(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Take the lock, waiting up to ``timeout`` seconds for its holder; LockError after that."""
        from botocore.exceptions import ClientError

        deadline = time.monotonic() + timeout
        seen: dict[str, float] = {}  # ETag -> when this waiter first saw it (monotonic)
        self._acquired = None
        with s3_errors("take the publisher lock", self.dest):
            while True:
                try:
                    self._etag = self._put(self._info(), IfNoneMatch="*")
                    log.info("took the publisher lock %s/%s as %s", self.dest, LOCK, self.owner)
                    break
                except ClientError as exc:
                    if not _conflict(exc):
                        raise
                current = self.read()
                if current is None:
                    continue  # released between our two requests: try again at once
                holder, etag = current
                why = self._dead(holder, etag, seen)
                if why is not None:
                    try:
                        self._etag = self._put(self._info(), IfMatch=etag)
                    except ClientError as exc:
                        if not _conflict(exc):
                            raise
                        continue  # someone else took it over first
                    expired = why.startswith("expired")
                    log.warning(
                        "took over the %s publisher lock of %s at %s (held since %s, %s)",
                        "expired" if expired else "abandoned",
                        holder.owner,
                        self.dest,
                        holder.acquired.isoformat(timespec="seconds"),
                        why,
                    )
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockError(
                        f"{self.dest} is locked by {holder.owner} since "
                        f"{holder.acquired.isoformat(timespec='seconds')} (expires "
                        f"{holder.expires.isoformat(timespec='seconds')}); waited {timeout:g}s. "
                        "Wait for that publish to finish; a publisher that died is taken over once it "
                        f"misses {MISSED_RENEWALS} renewals"
                    )
                log.info("%s is locked by %s; waiting", self.dest, holder.owner)
                time.sleep(min(self.poll, remaining))
        self._acquired = self._clock()
        self._lost = None
        if self._heartbeat_enabled:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._renew_loop, name="s3lock-heartbeat", daemon=True
            )
            self._thread.start()

    def refresh(self) -> None:
        """Push the expiry forward; marks the lock lost if someone else holds it now."""
        from botocore.exceptions import BotoCoreError, ClientError

        with self._mutex:
            if self._etag is None or self._lost is not None:
                return
            try:
                self._etag = self._put(self._info(), IfMatch=self._etag)
            except ClientError as exc:
                if _conflict(exc) or is_not_found(exc):
                    self._lost = "another publisher took it over"
                    log.error("lost the publisher lock of %s: %s", self.dest, self._lost)
                else:
                    log.warning("could not renew the publisher lock of %s: %s", self.dest, exc)
            except BotoCoreError as exc:
                log.warning("could not renew the publisher lock of %s: %s", self.dest, exc)

    def _renew_loop(self) -> None:
        interval = max(self.renew_every.total_seconds(), 0.1)
        while not self._stop.wait(interval):
            self.refresh()

    def check(self) -> None:
        """Raise LockError unless we still hold the lock (call between write phases)."""
        if self._etag is None:
            raise LockError(f"the publisher lock of {self.dest} is not held; this is a bug")
        if self._lost is not None:
            raise LockError(
                f"lost the publisher lock of {self.dest} ({self._lost}); stopped before writing "
                "more. Publish again: the rerun converges"
            )

    def release(self) -> None:
        """Stop renewing and delete the lock object if it is still ours."""
        from botocore.exceptions import BotoCoreError, ClientError

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._mutex:
            if self._etag is None:
                return
            try:
                # Delete only our version of the lock (If-Match on our ETag)...
                self.client.delete_object(Bucket=self.dest.bucket, Key=self.key, IfMatch=self._etag)
                log.info("released the publisher lock of %s", self.dest)
            except ClientError as exc:
                if _conflict(exc) or is_not_found(exc):
                    log.warning("the publisher lock of %s was no longer ours at release", self.dest)
                else:  # ...or, where conditional deletes are not supported, check then delete
                    self._release_unconditionally()
            except BotoCoreError as exc:
                log.warning(
                    "could not release the publisher lock of %s (%s); it expires at its TTL",
                    self.dest,
                    exc,
                )
            finally:
                self._etag = None

    def _release_unconditionally(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            current = self.read()
            if current is not None and current[0].token == self._token:
                self.client.delete_object(Bucket=self.dest.bucket, Key=self.key)
                log.info("released the publisher lock of %s", self.dest)
            else:
                log.warning("the publisher lock of %s was no longer ours at release", self.dest)
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "could not release the publisher lock of %s (%s); it expires at its TTL",
                self.dest,
                exc,
            )

    def __enter__(self) -> S3Lock:
        if self._etag is None:
            self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
