"""Publishing: repositories and release artifacts from scratch to the public bucket.

Layout of the scratch bucket (private)::

    s3://<scratch>/<version>/<distro>/...      one build's outputs (upload-build)
    s3://<scratch>/<version>/source/...        the source tarball, .asc, SHA256SUMS(.asc)

Layout of the public destination ``s3://<bucket>/<prefix>/``::

    dists/ pool/                the apt repository (sync-repo, update-repos)
    source/                     release source tarballs (publish-source)
    index.html ...              browsable pages (update-indices)
    .releng/                    control area, private (see releng.publish.sync): manifest, intent,
                                lock, changes.json, and state/ -- the apt repository's
                                own state directory, so a publisher with an empty disk
                                (an EC2 worker) rebuilds the repository from the bucket

Every write to the destination happens with its lock held (releng.publish.lock), and
the repository state is read *after* the lock is taken: two concurrent
``update-repos`` never lose a package.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from releng.errors import PublishError
from releng.publish import cloudfront as cf
from releng.publish.index_pages import IndexPages
from releng.publish.layout import LONG_TTL, cached_by_name, content_type
from releng.publish.lock import DEFAULT_TIMEOUT, DEFAULT_TTL, S3Lock
from releng.publish.manifest import clear_changes, read_changes, record_changes
from releng.publish.pull import REPO_STATE_DIR, pull_repository, remote_only
from releng.publish.s3 import S3Url, is_not_found, s3_errors
from releng.publish.scratch import (
    COMPLETE,
    SCRATCH_SOURCE,
    build_files,
    delete_scratch,
    fetch_builds,
    scratch_builds,
    scratch_url,
    source_files,
    upload_build,
)
from releng.publish.sync import SyncOptions, SyncResult, sync_tree
from releng.version import Version

if TYPE_CHECKING:
    from mypy_boto3_cloudfront import CloudFrontClient
    from mypy_boto3_s3 import S3Client

    from releng.apt import PublishResult as RepoChange
    from releng.gpg import Signer
    from releng.project import Project

# The scratch contract lives in releng.publish.scratch; these names stay importable from here.
__all__ = [
    "COMPLETE",
    "SCRATCH_SOURCE",
    "build_files",
    "scratch_builds",
    "scratch_url",
    "source_files",
    "upload_build",
]

log = logging.getLogger(__name__)

SOURCE_DIR = "source"


@dataclass(frozen=True, kw_only=True)
class LockOptions:
    timeout: float = DEFAULT_TIMEOUT
    ttl: dt.timedelta = DEFAULT_TTL
    owner: str | None = None
    poll: float = 5.0
    heartbeat: bool = True


@dataclass(frozen=True, kw_only=True)
class IndicesResult:
    pages: tuple[str, ...] = ()
    invalidated: tuple[str, ...] = ()
    invalidation_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class PublishResult:
    sync: SyncResult
    indices: IndicesResult = field(default_factory=IndicesResult)


def public_objects(name: str = "") -> list[str]:
    """The key patterns, relative to the prefix, that anonymous clients may read: the
    published trees and the archive keyring files (any keyring without the product
    ``name``, as for a stack made before any product is known)."""
    keyrings = [f"{name or '*'}-archive-keyring.{ext}" for ext in ("gpg", "asc")]
    return ["index.html", "dists/*", "pool/*", f"{SOURCE_DIR}/*", "attestations/*", *keyrings]


def public_read_policy(bucket: str, prefix: str = "", *, name: str = "") -> dict[str, object]:
    """The bucket policy of a public destination: anonymous GetObject on the published
    trees (and, with the product ``name``, its archive keyring files) only. The control
    area (``.releng/``: manifest, lock, repository state) stays private because no
    statement names it; no ListBucket for anyone anonymous.
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
                "Resource": [f"{base}{pattern}" for pattern in public_objects(name)],
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
    changed = list(changes.get("invalidate", [])) + [p for p in written if cached_by_name(p)]
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
    # The wait between back-to-back switches (sync.RepoSyncer); tests whose readers send no
    # If-Modified-Since pass a no-op.
    sleep: Callable[[float], None] = time.sleep

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
            heartbeat=self.lock.heartbeat,
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
    """``sync-repo``: bring the destination to the repository at ``root``, under its lock."""
    if not root.is_dir():
        raise PublishError(f"{root} is not a directory; pass the repository directory (--repo)")
    if dest.sync.dry_run:
        result = sync_tree(dest.s3, root, dest.url, state_dir=REPO_STATE_DIR, options=dest.sync)
        return PublishResult(sync=result)
    lock = dest.new_lock()
    lock.acquire(timeout=dest.lock.timeout)
    try:
        return _publish_locked(dest, root, lock, indices=indices)
    finally:
        lock.release()


def _publish_locked(
    dest: Destination,
    root: Path,
    lock: S3Lock,
    *,
    remote: Mapping[str, str] | None = None,
    indices: bool = True,
) -> PublishResult:
    """Sync ``root`` to the destination while ``lock`` is held (checked before, during and
    after), then update the index pages and invalidations for what changed."""
    lock.check()
    sync = sync_tree(
        dest.s3,
        root,
        dest.url,
        state_dir=REPO_STATE_DIR,
        options=dest.sync,
        clock=dest.clock,
        checkpoint=lock.check,
        remote=remote,
        sleep=dest.sleep,
    )
    lock.check()
    return PublishResult(sync=sync, indices=_after_sync(dest, indices=indices))


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


# --------------------------------------------------------------------------- a repository on S3


@dataclass(kw_only=True)
class OpenedDestination:
    """A repository on S3 while it is open: its state pulled into ``work`` under the lock;
    ``published``: what the sync did when it was closed (None: read only, a dry run, or not
    closed yet)."""

    dest: Destination
    work: Path
    published: PublishResult | None = None


@contextlib.contextmanager
def open_destination(
    dest: Destination,
    work: Path,
    *,
    read_only: bool = False,
    with_pool: bool = False,
    indices: bool = True,
) -> Iterator[OpenedDestination]:
    """Under the destination's lock: pull the repository's state and ``dists/`` into ``work``
    (so an empty disk works, and a concurrent publisher's packages are never lost), let the
    caller change it with the apt library (which needs no pool file it does not add), then,
    unless ``read_only`` or a dry run, sync, ordered, and update index pages and CloudFront.

    A run killed anywhere leaves the bucket old or new; the next run pulls the bucket's state
    again (the bucket is the truth) and completes. The sync runs even when nothing changed,
    so that it also finishes what a killed sync left. An error inside the block syncs nothing.
    """
    opened = OpenedDestination(dest=dest, work=work)
    lock = dest.new_lock()
    lock.acquire(timeout=dest.lock.timeout)
    try:
        lock.check()
        with s3_errors("pull the published repository", dest.url):
            pull_repository(dest.s3, dest.url, work, with_pool=with_pool)
        yield opened
        if not read_only and not dest.sync.dry_run:
            opened.published = _publish_locked(
                dest, work, lock, remote=remote_only(work), indices=indices
            )
    finally:
        lock.release()


@dataclass(frozen=True, kw_only=True)
class UpdateResult:
    publish: PublishResult
    results: dict[str, RepoChange]  # distro -> what including its build did
    included: dict[str, tuple[str, ...]]  # distro -> suites
    added: tuple[str, ...]
    scratch_deleted: int


def update_repos(
    project: Project,
    signer: Signer,
    *,
    version: Version,
    dest: Destination,
    scratch: str,
    work: Path,
    keep_scratch: bool = False,
) -> UpdateResult:
    """``update-repos --repo s3://...``: scratch builds of ``version`` -> the public repository.

    1. find the complete builds in ``s3://<scratch>/<version>/<distro>/<arch>/`` (none: error,
       nothing changed) and download them, verified; 2. open the repository
       (:func:`open_destination`); 3. include the builds with the apt library
       (:func:`releng.apt.include_builds`, as for a local repository, under ``[verify]
       rebuild``: :func:`releng.rebuild.policy.include_builds_with_policy`); 4. sync, ordered;
       index pages and CloudFront; 5. only after all that succeeded, remove those builds
       from scratch.
    """
    from releng import apt
    from releng.publish import front_page  # not in the Lambda bundle: publishers only
    from releng.rebuild.policy import include_builds_with_policy

    if dest.sync.dry_run:
        raise PublishError("update-repos has no dry run (it must sign); use sync-repo --dry-run")
    with tempfile.TemporaryDirectory(prefix="releng-builds-") as tmp:
        builds, parts = fetch_builds(project, dest.s3, scratch, version, Path(tmp))
        with open_destination(dest, work) as opened:
            repository = apt.Repository(work, apt.settings_for(project), signer)
            # [verify] rebuild first: "require" refuses before anything is included or synced
            results = include_builds_with_policy(
                repository,
                project,
                version=version,
                builds=builds,
                url=project.config.publish.public_url,
            )
            # synced with the state; index pages put it at /
            front_page.write_front_page(work, project, url=project.config.publish.public_url)
    assert opened.published is not None  # not a dry run: synced
    deleted = 0 if keep_scratch else delete_scratch(dest.s3, scratch, version, parts)
    return UpdateResult(
        publish=opened.published,
        results=results,
        included={d: r.suites for d, r in results.items()},
        added=tuple(p for r in results.values() for p in r.added),
        scratch_deleted=deleted,
    )


def publish_source(
    client: S3Client,
    project: Project,
    version: Version,
    *,
    scratch: str,
    dest: Destination,
) -> list[str]:
    """``publish-source``: copy the source tarball, its ``.asc`` and ``SHA256SUMS`` (and its
    ``.asc``) from ``s3://<scratch>/<version>/source/`` to the public ``source/`` path."""
    from botocore.exceptions import ClientError

    if not scratch:
        raise PublishError("no scratch bucket: set [publish] scratch_bucket in product.toml")
    src = scratch_url(scratch, version, SCRATCH_SOURCE)
    names = [p.name for p in source_files(project, version)]
    with s3_errors("look for the source tarball in scratch", src):
        for name in names:
            try:
                client.head_object(Bucket=scratch, Key=src.key(name))
            except ClientError as exc:
                if is_not_found(exc):
                    raise PublishError(
                        f"{src}/{name} does not exist; upload the source first "
                        f"(invoke upload-build --version {version} source)"
                    ) from None
                raise
    ttl = LONG_TTL if version.is_release else f"public, max-age={dest.sync.short_ttl}"
    published: list[str] = []
    with dest.new_lock() as lock, s3_errors("publish the source tarball", dest.url):
        for name in names:  # the tarball, then its signature, then the checksums
            lock.check()
            rel = f"{SOURCE_DIR}/{name}"
            client.copy_object(
                Bucket=dest.url.bucket,
                Key=dest.url.key(rel),
                CopySource={"Bucket": scratch, "Key": src.key(name)},
                MetadataDirective="REPLACE",
                ContentType=content_type(name),
                CacheControl=ttl,
            )
            published.append(rel)
        record_changes(client, dest.url, dirs=[SOURCE_DIR, ""], invalidate=[])
    log.info(
        "published %d source file(s) of %s to %s/%s/", len(published), version, dest.url, SOURCE_DIR
    )
    return published


# --------------------------------------------------------------------------- for the tasks


def destination_for(
    project: Project,
    dest: str = "",
    *,
    dry_run: bool = False,
    grace_seconds: float | None = None,
    lock_timeout: float | None = None,
) -> Destination:
    """The Destination that ``--dest`` (else ``[publish] bucket``/``prefix``) names."""
    from releng.publish.sync import DEFAULT_GRACE, parse_s3_url, s3_client

    cfg = project.config.publish
    if not dest:
        if not cfg.bucket:
            raise PublishError(
                "no destination: pass --dest s3://BUCKET/PREFIX or set [publish] bucket in product.toml"
            )
        dest = f"s3://{cfg.bucket}/{cfg.prefix}".rstrip("/")
    url = parse_s3_url(dest)
    grace = dt.timedelta(seconds=grace_seconds) if grace_seconds is not None else DEFAULT_GRACE
    return Destination(
        s3=s3_client(region=project.config.aws.region or None),
        url=url,
        distribution_id=cfg.cloudfront_distribution if url.bucket == cfg.bucket else "",
        sync=SyncOptions(grace=grace, dry_run=dry_run),
        lock=LockOptions(timeout=lock_timeout if lock_timeout is not None else DEFAULT_TIMEOUT),
        title=f"{project.name} packages",
    )


def work_dir_for(project: Project, url: S3Url) -> Path:
    """Where update-repos keeps its copy of a destination's state and ``dists/`` between runs
    (empty on a fresh worker: everything needed comes from the bucket)."""
    return project.state_dir / "publish" / url.bucket / (url.prefix or "_root")
