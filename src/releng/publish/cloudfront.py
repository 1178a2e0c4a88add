"""CloudFront invalidation of the paths that changed in place, in one batch.

Pool files and ``by-hash`` files never change under their name (long TTL,
immutable), so they are never invalidated; index pages have a short TTL.
What changes in place is ``dists/<suite>/InRelease``, ``Release``, the plain
``Packages`` files, and the files at the root: the front page (which pins the key
file's SHA-256) and the key files. Those, and only those that changed, go into one
invalidation. Past :data:`MAX_PATHS` paths, one wildcard per suite replaces
them (CloudFront counts a wildcard as one path).

Paths are ``/`` + the object key: the distribution's origin is the bucket's
root. When the origin has an origin path, pass it as ``origin_path`` and it is
stripped.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from releng.errors import PublishError
from releng.publish.layout import INDEX_PAGE, cached_by_name
from releng.publish.sync import S3Url

if TYPE_CHECKING:
    from mypy_boto3_cloudfront import CloudFrontClient

log = logging.getLogger(__name__)

MAX_PATHS = 1000


def cloudfront_client() -> CloudFrontClient:
    """CloudFront is global: no region (:func:`releng.aws_clients.client`)."""
    from releng.aws_clients import client

    cloudfront: CloudFrontClient = client("cloudfront")
    return cloudfront


def invalidation_paths(dest: S3Url, changed: Iterable[str], *, origin_path: str = "") -> list[str]:
    """Pure: the CloudFront paths for changed repository paths (relative to the prefix).

    Keeps what clients fetch by a name whose content changes
    (:func:`releng.publish.layout.cached_by_name`: ``dists/`` paths except ``by-hash``, the
    files at the root); never a pool path. The front page is also cached as its directory
    (``/``). Batches the ``dists/`` paths into per-suite wildcards when there are more than
    :data:`MAX_PATHS`.
    """
    wanted = sorted({rel for rel in changed if cached_by_name(rel)})
    dists = [rel for rel in wanted if rel.startswith("dists/")]
    if len(wanted) > MAX_PATHS:
        wanted = sorted(
            {"/".join(rel.split("/")[:2]) + "/*" for rel in dists}
            | {rel for rel in wanted if not rel.startswith("dists/")}
        )
    if INDEX_PAGE in wanted:
        wanted.insert(0, "")  # the directory itself: CloudFront's default root object
    origin = origin_path.strip("/")
    paths: list[str] = []
    for rel in wanted:
        key = dest.key(rel)
        if origin:
            if not key.startswith(origin + "/"):
                continue
            key = key[len(origin) + 1 :]
        paths.append("/" + urllib.parse.quote(key, safe="/*~+"))
    return paths


class Invalidator:
    """Creates invalidations on one distribution through one CloudFront client."""

    def __init__(
        self, client: CloudFrontClient, distribution_id: str, *, dry_run: bool = False
    ) -> None:
        self.client = client
        self.distribution_id = distribution_id
        self.dry_run = dry_run

    def invalidate(self, paths: list[str], *, reference: str = "") -> str | None:
        """One invalidation for ``paths``; its id (None when there is nothing to do)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if not paths:
            log.info("CloudFront: nothing to invalidate")
            return None
        if any(p.startswith("/pool/") or "/pool/" in p for p in paths):
            raise PublishError(f"refusing to invalidate pool paths on CloudFront: {paths[:3]}")
        # Unique per call: CloudFront answers a CallerReference it has seen with the old
        # invalidation, so a hash of the paths alone invalidated nothing the next time.
        digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:20]
        ref = reference or f"{digest}-{uuid.uuid4().hex[:12]}"
        log.info("CloudFront %s: invalidating %d path(s)", self.distribution_id, len(paths))
        if self.dry_run:
            return None
        try:
            response = self.client.create_invalidation(
                DistributionId=self.distribution_id,
                InvalidationBatch={
                    "Paths": {"Quantity": len(paths), "Items": paths},
                    "CallerReference": ref,
                },
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchDistribution":
                raise PublishError(
                    f"CloudFront distribution {self.distribution_id!r} does not exist; fix "
                    "[publish] cloudfront_distribution in product.toml"
                ) from None
            if code == "AccessDenied":
                raise PublishError(
                    f"access denied creating an invalidation on {self.distribution_id}; the "
                    "credentials lack cloudfront:CreateInvalidation"
                ) from None
            raise PublishError(
                f"CloudFront refused the invalidation on {self.distribution_id}: {exc}"
            ) from None
        except BotoCoreError as exc:
            raise PublishError(
                f"CloudFront invalidation on {self.distribution_id} failed: {exc}"
            ) from None
        return str(response["Invalidation"]["Id"])
