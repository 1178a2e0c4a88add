"""Publishing: repositories and release artifacts from scratch to the public bucket.

Layout of the scratch bucket (private)::

    s3://<scratch>/<version>/<distro>/...      one build's outputs (upload-build)
    s3://<scratch>/<version>/source/...        the source tarball, .asc, SHA256SUMS(.asc)

Layout of the public destination ``s3://<bucket>/<prefix>/``::

    dists/ pool/                the apt repository (sync-repos, update-repos)
    source/                     release source tarballs (publish-source)
    index.html ...              browsable pages (update-indices)
    .releng/                    control area, private (see releng.s3): manifest, intent,
                                lock, changes.json, and state/ -- the apt repository's
                                own state directory, so a publisher with an empty disk
                                (an EC2 worker) rebuilds the repository from the bucket

Every write to the destination happens with its lock held (releng.s3lock), and
the repository state is read *after* the lock is taken: two concurrent
``update-repos`` never lose a package.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from releng import cloudfront as cf
from releng.errors import PublishError
from releng.index_pages import IndexPages
from releng.s3 import (
    S3Url,
    SyncOptions,
    SyncResult,
    clear_changes,
    read_changes,
    s3_errors,
    sync_tree,
)
from releng.s3lock import DEFAULT_TIMEOUT, DEFAULT_TTL, S3Lock

if TYPE_CHECKING:
    from mypy_boto3_cloudfront import CloudFrontClient
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

REPO_STATE_DIR = ".releng-repo"  # the apt library's state directory inside a repository
SOURCE_DIR = "source"


@dataclass(frozen=True, kw_only=True)
class LockOptions:
    timeout: float = DEFAULT_TIMEOUT
    ttl: dt.timedelta = DEFAULT_TTL
    owner: str | None = None
    poll: float = 5.0


@dataclass(frozen=True, kw_only=True)
class IndicesResult:
    pages: tuple[str, ...] = ()
    invalidated: tuple[str, ...] = ()
    invalidation_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class PublishResult:
    sync: SyncResult
    indices: IndicesResult = field(default_factory=IndicesResult)


def public_read_policy(bucket: str, prefix: str = "") -> dict[str, object]:
    """The bucket policy of a public destination: anonymous GetObject on the published
    trees only. The control area (``.releng/``: manifest, lock, repository state) stays
    private because no statement names it; no ListBucket for anyone anonymous.
    """
    base = f"arn:aws:s3:::{bucket}/" + (f"{prefix}/" if prefix else "")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicReadOfPublishedTrees",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": [
                    f"{base}index.html",
                    f"{base}dists/*",
                    f"{base}pool/*",
                    f"{base}{SOURCE_DIR}/*",
                ],
            }
        ],
    }


def apply_changes(
    client: S3Client,
    dest: S3Url,
    *,
    invalidator: cf.Invalidator | None = None,
    full: bool = False,
    title: str = "",
    origin_path: str = "",
    clock: Callable[[], dt.datetime] | None = None,
    dry_run: bool = False,
) -> IndicesResult:
    """Index pages and one CloudFront invalidation for what changed since the last call.

    The sync records dirty directories and changed ``dists/`` paths in
    ``.releng/changes.json``; this consumes them (and clears the record only on
    success, so a failure here is retried by the next call). ``full``: every
    directory's page, from one full listing. Call with the destination's lock held.
    """
    changes = read_changes(client, dest)
    pages = IndexPages(client, dest, title=title, clock=clock, dry_run=dry_run)
    dirs = pages.all_directories() if full else set(changes.get("dirs", []))
    written = pages.update(dirs) if dirs else []
    changed = list(changes.get("dists", [])) + [p for p in written if p.startswith("dists/")]
    paths = cf.invalidation_paths(dest, changed, origin_path=origin_path)
    inval_id = invalidator.invalidate(paths) if invalidator is not None else None
    if changes and not dry_run:
        with s3_errors("clear the change record", dest):
            clear_changes(client, dest)
    return IndicesResult(pages=tuple(written), invalidated=tuple(paths), invalidation_id=inval_id)


@dataclass(frozen=True, kw_only=True)
class Destination:
    """Where and how to publish: the seams (clients) and the knobs."""

    s3: S3Client
    url: S3Url
    cloudfront: CloudFrontClient | None = None
    distribution_id: str = ""
    sync: SyncOptions = field(default_factory=SyncOptions)
    lock: LockOptions = field(default_factory=LockOptions)
    title: str = ""
    clock: Callable[[], dt.datetime] | None = None

    def invalidator(self) -> cf.Invalidator | None:
        if not self.distribution_id:
            return None
        client = self.cloudfront if self.cloudfront is not None else cf.cloudfront_client()
        return cf.Invalidator(client, self.distribution_id, dry_run=self.sync.dry_run)

    def new_lock(self) -> S3Lock:
        return S3Lock(
            self.s3,
            self.url,
            owner=self.lock.owner,
            ttl=self.lock.ttl,
            poll=self.lock.poll,
            clock=self.clock,
        )


def _after_sync(dest: Destination, *, indices: bool) -> IndicesResult:
    if not indices:
        return IndicesResult()
    return apply_changes(
        dest.s3,
        dest.url,
        invalidator=dest.invalidator(),
        title=dest.title,
        clock=dest.clock,
        dry_run=dest.sync.dry_run,
    )


def sync_repo(dest: Destination, root: Path, *, indices: bool = True) -> PublishResult:
    """``sync-repos``: bring the destination to the repository at ``root``, under its lock."""
    if not root.is_dir():
        raise PublishError(f"{root} is not a directory; pass the repository directory (--repo)")
    if dest.sync.dry_run:
        result = sync_tree(dest.s3, root, dest.url, state_dir=REPO_STATE_DIR, options=dest.sync)
        return PublishResult(sync=result)
    lock = dest.new_lock()
    lock.acquire(timeout=dest.lock.timeout)
    try:
        result = sync_tree(
            dest.s3,
            root,
            dest.url,
            state_dir=REPO_STATE_DIR,
            options=dest.sync,
            clock=dest.clock,
            checkpoint=lock.check,
        )
        lock.check()
        return PublishResult(sync=result, indices=_after_sync(dest, indices=indices))
    finally:
        lock.release()


def update_indices(dest: Destination, *, full: bool = False) -> IndicesResult:
    """``update-indices``: pages and invalidation for recorded changes (or everything)."""
    if dest.sync.dry_run:
        return apply_changes(dest.s3, dest.url, full=full, title=dest.title, dry_run=True)
    with dest.new_lock() as lock:
        lock.check()
        return apply_changes(
            dest.s3,
            dest.url,
            invalidator=dest.invalidator(),
            full=full,
            title=dest.title,
            clock=dest.clock,
        )


def describe(result: PublishResult) -> list[str]:
    """Lines for the user: what the publish did."""
    sync = result.sync
    lines = [f"{sync.dest}: " + line for line in sync.plan.describe()]
    if result.indices.pages:
        lines.append(f"{sync.dest}: {len(result.indices.pages)} index page(s) updated")
    if result.indices.invalidation_id:
        lines.append(
            f"CloudFront invalidation {result.indices.invalidation_id}: "
            f"{len(result.indices.invalidated)} path(s)"
        )
    return lines
