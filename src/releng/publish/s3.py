"""The S3 seam: ``s3://`` URLs, the client, error mapping ("not found", access denied, no
bucket) and the few object operations everything else is built on (get, list, delete).

Clients come from :func:`s3_client`, built on :func:`releng.aws_clients.client`: boto3's
standard credentials chain and endpoint resolution (``AWS_ENDPOINT_URL`` points it at moto
or another S3), and botocore's ``standard`` retry mode with exponential backoff.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from releng.errors import PublishError
from releng.publish.layout import CONTROL_DIR
from releng.textcheck import check_one_line

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_WORKERS = 8

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, order=True)
class S3Url:
    """``s3://bucket/prefix``; ``prefix`` has no leading or trailing slash (may be empty)."""

    bucket: str
    prefix: str = ""

    def key(self, rel: str) -> str:
        """The object key of ``rel`` (a path relative to the prefix)."""
        rel = rel.lstrip("/")
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def rel(self, key: str) -> str:
        """The path of ``key`` relative to the prefix."""
        if not self.prefix:
            return key
        if not key.startswith(self.prefix + "/"):
            raise ValueError(f"{key!r} is not under {self}")  # a bug in the caller
        return key[len(self.prefix) + 1 :]

    def child(self, rel: str) -> S3Url:
        return S3Url(self.bucket, self.key(rel).rstrip("/"))

    @property
    def key_prefix(self) -> str:
        """The prefix as a key prefix for listings: ``prefix/`` or empty."""
        return f"{self.prefix}/" if self.prefix else ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_s3_url(text: str) -> S3Url:
    """Parse ``s3://BUCKET[/PREFIX]``; anything else is a PublishError naming what is wrong."""
    example = "e.g. s3://my-bucket/apt"
    check_one_line(
        text,
        what="the S3 URL",
        error=PublishError,
        advice=f"write s3://BUCKET/PREFIX without control characters ({example})",
    )
    if not text.startswith("s3://"):
        raise PublishError(f"{text!r} is not an s3:// URL; write s3://BUCKET/PREFIX ({example})")
    rest = text[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket or re.fullmatch(r"[\d.]+", bucket):
        raise PublishError(
            f"{text!r}: {bucket!r} is not a valid S3 bucket name (3-63 lower-case letters, "
            f"digits, '.' and '-', starting and ending with a letter or digit); {example}"
        )
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if any(p in ("", ".", "..") for p in parts) or "\\" in prefix:
        raise PublishError(
            f"{text!r}: the prefix {prefix!r} has an empty, '.' or '..' segment; "
            f"use plain names separated by single slashes ({example})"
        )
    if parts and parts[0] == CONTROL_DIR:
        raise PublishError(f"{text!r}: {CONTROL_DIR}/ is releng's control area, not a destination")
    return S3Url(bucket, prefix)


def s3_client(*, region: str | None = None, workers: int = DEFAULT_WORKERS) -> S3Client:
    """A thread-safe S3 client (:func:`releng.aws_clients.client`) with a connection per worker.

    boto3 resolves ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_S3``) itself, so tests
    and other S3 implementations need no plumbing here.
    """
    from releng.aws_clients import client

    s3: S3Client = client("s3", region_name=region or "", pool=max(10, workers * 2))
    return s3


@dataclass
class RequestStats:
    """Counts the HTTP requests a client sends, by operation, and the bytes in their bodies.

    Attach with :meth:`attach`; it listens on botocore's ``before-send`` event, so
    retries and every part of a multipart upload count.
    """

    requests: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def attach(self, client: S3Client) -> RequestStats:
        client.meta.events.register("before-send.s3", self._on_send)
        return self

    def _on_send(self, request: Any, event_name: str = "", **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        length = int(request.headers.get("Content-Length", 0) or 0)
        with self._lock:
            self.requests[operation] = self.requests.get(operation, 0) + 1
            self.bytes_sent += length

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def count(self, *operations: str) -> int:
        return sum(self.requests.get(op, 0) for op in operations)

    @property
    def writes(self) -> int:
        """Requests that write: PUTs, multipart parts, deletes."""
        return self.count(
            "PutObject",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "DeleteObjects",
            "DeleteObject",
            "CopyObject",
        )

    def summary(self) -> str:
        ops = ", ".join(f"{op} {n}" for op, n in sorted(self.requests.items()))
        return f"{self.total} requests ({ops}), {self.bytes_sent} bytes sent"


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in ("NoSuchKey", "404", "NotFound") or (
        http_status(exc) == 404 and error_code(exc) != "NoSuchBucket"
    )


@contextlib.contextmanager
def s3_errors(what: str, url: S3Url) -> Iterator[None]:
    """Turn botocore failures into one-line PublishErrors (never with credentials in them)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        if code == "NoSuchBucket" or (code == "404" and not url.prefix):
            raise PublishError(
                f"{what}: bucket {url.bucket!r} does not exist; create it or fix the "
                "destination (--dest or [publish] bucket in product.toml)"
            ) from None
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
            raise PublishError(
                f"{what}: access denied to {url}; the credentials from boto3's standard chain "
                "lack the permission (s3:GetObject/PutObject/DeleteObject/ListBucket) -- "
                "check the role or profile in use"
            ) from None
        message = exc.response.get("Error", {}).get("Message", "")
        raise PublishError(
            f"{what}: S3 refused the request on {url}: {code} {message}".strip()
        ) from None
    except NoCredentialsError:
        raise PublishError(
            f"{what}: no AWS credentials found by boto3's standard chain; set a profile, "
            "role or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        ) from None
    except EndpointConnectionError as exc:
        raise PublishError(
            f"{what}: cannot reach the S3 endpoint ({exc}); check AWS_ENDPOINT_URL and the network"
        ) from None
    except BotoCoreError as exc:
        raise PublishError(f"{what}: {exc}") from None


def get_bytes(client: S3Client, bucket: str, key: str) -> bytes | None:
    """An object's body, or None when there is no such key."""
    from botocore.exceptions import ClientError

    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    return response["Body"].read()


def list_keys(client: S3Client, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every object under ``prefix`` (ListObjectsV2 pages)."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])  # type: ignore[misc]


def delete_keys(client: S3Client, bucket: str, keys: Iterable[str]) -> None:
    """DeleteObjects in batches of 1000; a per-key error is a PublishError."""
    batch: list[str] = []

    def flush() -> None:
        if not batch:
            return
        response = client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            raise PublishError(
                f"could not delete {len(errors)} object(s) from s3://{bucket}, e.g. "
                f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
            )
        batch.clear()

    for key in keys:
        batch.append(key)
        if len(batch) == 1000:
            flush()
    flush()
