"""The records a sync keeps in the control area: the manifest (every object it put, with its
sha256), the intent of a run in progress, and the changes not yet turned into index pages
and invalidations (``changes.json``)."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from releng.errors import PublishError
from releng.publish.layout import CHANGES
from releng.publish.s3 import S3Url, get_bytes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

_MANIFEST_FORMAT = 1


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What this publisher knows to be in the bucket under the prefix.

    ``files``: path -> sha256 of every object it put and has not deleted
    (``""``: present, content unknown -- found by the one-time bootstrap listing).
    ``pending``: path -> ISO time since which the live repository no longer
    needs it; deleted once the grace period has passed.
    """

    files: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    run: str = ""
    written: str = ""

    def to_bytes(self) -> bytes:
        body = {
            "format": _MANIFEST_FORMAT,
            "run": self.run,
            "written": self.written,
            "files": dict(sorted(self.files.items())),
            "pending": dict(sorted(self.pending.items())),
        }
        return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), mtime=0)

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> Manifest:
        try:
            body = json.loads(gzip.decompress(data))
            if body.get("format") != _MANIFEST_FORMAT:
                raise ValueError(f"unknown format {body.get('format')!r}")
            return cls(
                files=dict(body["files"]),
                pending=dict(body["pending"]),
                run=str(body.get("run", "")),
                written=str(body.get("written", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PublishError(
                f"the manifest {where} is unreadable ({exc}); delete it and publish again "
                "(the next publish then lists the bucket once and re-uploads what differs)"
            ) from None


@dataclass(frozen=True, kw_only=True)
class Intent:
    """Written before the first upload of a run: the paths it may put there."""

    run: str
    files: dict[str, str]

    def to_bytes(self) -> bytes:
        return json.dumps({"run": self.run, "files": self.files}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Intent | None:
        try:
            body = json.loads(data)
            return cls(run=str(body["run"]), files=dict(body["files"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable intent record")
            return None


def record_changes(
    client: S3Client, dest: S3Url, *, dirs: Iterable[str], invalidate: Iterable[str]
) -> None:
    """Merge directories whose page is stale and changed paths a CDN caches by name
    (:func:`releng.publish.layout.cached_by_name`) into ``changes.json``."""
    current = read_changes(client, dest)
    body = {
        "dirs": sorted(set(current.get("dirs", [])) | set(dirs)),
        "invalidate": sorted(set(current.get("invalidate", [])) | set(invalidate)),
    }
    client.put_object(
        Bucket=dest.bucket,
        Key=dest.key(CHANGES),
        Body=json.dumps(body, separators=(",", ":")).encode(),
        ContentType="application/json",
        CacheControl="private, no-store",
    )


def read_changes(client: S3Client, dest: S3Url) -> dict[str, list[str]]:
    data = get_bytes(client, dest.bucket, dest.key(CHANGES))
    if data is None:
        return {}
    try:
        body = json.loads(data)
        # "dists": the name an earlier releng gave the paths to invalidate (dists/ only)
        invalidate = list(body.get("invalidate", [])) + list(body.get("dists", []))
        return {"dirs": list(body.get("dirs", [])), "invalidate": invalidate}
    except (ValueError, AttributeError):
        log.warning("ignoring an unreadable %s", CHANGES)
        return {}


def clear_changes(client: S3Client, dest: S3Url) -> None:
    client.delete_object(Bucket=dest.bucket, Key=dest.key(CHANGES))
