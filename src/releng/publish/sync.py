"""The ordered, incremental repository sync (on the S3 seam, :mod:`releng.publish.s3`).

A published apt repository must never be seen half-updated. :func:`sync_tree`
brings ``s3://BUCKET/PREFIX`` to the state of a local directory tree:

1. read the manifest (``PREFIX/.releng/manifest.json``: every object this
   publisher put there, with its sha256) -- no listing of the bucket, except
   once when there is no manifest yet;
2. plan: upload what is new or changed, in the order a client reads it
   backwards -- pool files, other files, ``by-hash`` indexes, plain indexes,
   ``Release``/``Release.gpg``, ``InRelease`` last -- each phase finished before
   the next starts, files within a phase in parallel (multipart above a size);
3. write an *intent* record before the first upload, so that objects of a run
   that died halfway are known to the next run and cleaned up;
4. delete what the tree no longer has only once the new ``InRelease`` is live
   and a grace period has passed since it went live (clients that fetched the
   old ``InRelease`` still find every file it names: no 404, no hash-sum
   mismatch);
5. write the new manifest.

A failure at any request leaves the old repository (old ``InRelease``, every
file it names) or the new one in place; a rerun converges, because uploads are
idempotent and the manifest is written last.

The ``.releng/`` control area under the prefix holds the manifest, the intent,
the lock (:mod:`releng.publish.lock`), the apt repository's state (``state/``) and the
changes not yet turned into index pages and invalidations (``changes.json``).
It is never listed in index pages and :func:`public_read_policy` leaves it
private.

Its parts: :mod:`releng.publish.layout` (control area keys, upload phases, headers),
:mod:`releng.publish.manifest` (manifest, intent, change record), :mod:`releng.publish.plan`
(the plan, as data) and this module (executing it: the transfer).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from releng.digest import file_sha256 as sha256_file
from releng.errors import PublishError
from releng.publish.layout import (
    CHANGES,
    CONTROL_DIR,
    DEFAULT_SHORT_TTL,
    FRONT_PAGE,
    INDEX_PAGE,
    INTENT,
    LOCK,
    LONG_TTL,
    MANAGED_TREES,
    MANIFEST,
    RELEASES,
    STATE,
    STATE_SKIP,
    FileClass,
    cache_control,
    cached_by_name,
    classify,
    content_type,
    public,
    release_record_key,
)
from releng.publish.manifest import Intent, Manifest, clear_changes, read_changes, record_changes
from releng.publish.plan import (
    LocalFile,
    SyncPlan,
    Upload,
    dirty_directories,
    iso,
    plan_sync,
    scan_tree,
)
from releng.publish.s3 import (
    DEFAULT_WORKERS,
    RequestStats,
    S3Url,
    delete_keys,
    error_code,
    get_bytes,
    http_status,
    is_not_found,
    list_keys,
    parse_s3_url,
    s3_client,
    s3_errors,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# The names other modules imported from here before the split (releng.publish.s3, .layout,
# .manifest, .plan own them now).
__all__ = [
    "CHANGES",
    "CONTROL_DIR",
    "DEFAULT_GRACE",
    "DEFAULT_SHORT_TTL",
    "DEFAULT_WORKERS",
    "FRONT_PAGE",
    "INDEX_PAGE",
    "INTENT",
    "LOCK",
    "LONG_TTL",
    "MANAGED_TREES",
    "MANIFEST",
    "MULTIPART_THRESHOLD",
    "RELEASES",
    "STATE",
    "STATE_SKIP",
    "FileClass",
    "Intent",
    "LocalFile",
    "Manifest",
    "RepoSyncer",
    "RequestStats",
    "S3Url",
    "SyncOptions",
    "SyncPlan",
    "SyncResult",
    "Upload",
    "cache_control",
    "classify",
    "clear_changes",
    "content_type",
    "delete_keys",
    "dirty_directories",
    "error_code",
    "get_bytes",
    "http_status",
    "is_not_found",
    "list_keys",
    "parse_s3_url",
    "plan_sync",
    "read_changes",
    "record_changes",
    "release_record_key",
    "s3_client",
    "s3_errors",
    "scan_tree",
    "sha256_file",
    "sync_tree",
]

log = logging.getLogger(__name__)

DEFAULT_GRACE = dt.timedelta(hours=1)
MULTIPART_THRESHOLD = 8 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class SyncResult:
    dest: S3Url
    plan: SyncPlan
    uploaded: tuple[str, ...]
    deleted: tuple[str, ...]
    dirty_dirs: frozenset[str]  # public directories whose index page must be remade
    # changed or deleted paths a CDN caches by name (layout.cached_by_name): to invalidate
    to_invalidate: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.uploaded or self.deleted)


@dataclass(frozen=True, kw_only=True)
class SyncOptions:
    grace: dt.timedelta = DEFAULT_GRACE
    workers: int = DEFAULT_WORKERS
    short_ttl: int = DEFAULT_SHORT_TTL
    multipart_threshold: int = MULTIPART_THRESHOLD
    dry_run: bool = False


class RepoSyncer:
    """Syncs local trees to one destination through one client (the seam)."""

    def __init__(
        self,
        client: S3Client,
        dest: S3Url,
        *,
        options: SyncOptions | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        checkpoint: Callable[[], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.dest = dest
        self.options = options or SyncOptions()
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._sleep = sleep
        # Called between phases: the lock's "still mine?" check raises there.
        self._checkpoint = checkpoint or (lambda: None)

    # -- reading

    def read_manifest(self) -> tuple[Manifest, Intent | None]:
        """The manifest and a dead run's intent; bootstraps from one listing if there is none."""
        data = get_bytes(self.client, self.dest.bucket, self.dest.key(MANIFEST))
        intent_data = get_bytes(self.client, self.dest.bucket, self.dest.key(INTENT))
        if data is None:
            manifest = self._bootstrap()
        else:
            manifest = Manifest.from_bytes(data, where=f"{self.dest}/{MANIFEST}")
        intent = Intent.from_bytes(intent_data) if intent_data is not None else None
        if intent is not None and intent.run == manifest.run:
            intent = None  # that run finished and wrote the manifest
        if intent is not None:
            log.warning("run %s did not finish; its uploads are checked again", intent.run)
        return manifest, intent

    def _bootstrap(self) -> Manifest:
        """No manifest: list the prefix once; objects found are 'present, content unknown'."""
        files: dict[str, str] = {}
        for tree in MANAGED_TREES:
            for obj in list_keys(self.client, self.dest.bucket, self.dest.key(tree)):
                rel = self.dest.rel(obj["Key"])
                if not rel.endswith(INDEX_PAGE):
                    files[rel] = ""
        if files:
            log.info("no manifest in %s: found %d objects by listing once", self.dest, len(files))
        return Manifest(files=files)

    # -- writing

    def _put_file(self, up: Upload, path: Path, copy_from: str | None = None) -> None:
        with path.open("rb") as fh:
            head = fh.read(512)
        extra: dict[str, Any] = {
            "ContentType": content_type(up.rel, head),
            "CacheControl": cache_control(up.rel, short_ttl=self.options.short_ttl),
            "Metadata": {"sha256": up.sha256},
        }
        key = self.dest.key(up.rel)
        if copy_from is not None:
            # A plain index is its by-hash file under another name: copy it in S3, no bytes sent.
            self.client.copy_object(
                Bucket=self.dest.bucket,
                Key=key,
                CopySource={"Bucket": self.dest.bucket, "Key": self.dest.key(copy_from)},
                MetadataDirective="REPLACE",
                **extra,
            )
            return
        if up.size >= self.options.multipart_threshold and up.cls is not FileClass.STATE:
            from boto3.s3.transfer import TransferConfig

            config = TransferConfig(
                multipart_threshold=self.options.multipart_threshold,
                multipart_chunksize=max(self.options.multipart_threshold, 5 * 1024 * 1024),
                max_concurrency=4,
            )
            self.client.upload_file(
                str(path), self.dest.bucket, key, ExtraArgs=extra, Config=config
            )
            return
        body = path.read_bytes()
        if hashlib.sha256(body).hexdigest() != up.sha256:
            raise PublishError(f"{path} changed while it was being published; publish again")
        if up.cls is FileClass.STATE:
            # Private, and read back only by releng: stored gzipped when that is smaller.
            packed = gzip.compress(body, compresslevel=6, mtime=0)
            if len(packed) < len(body):
                body = packed
                extra["Metadata"]["encoding"] = "gzip"
                extra["ContentType"] = "application/gzip"
        self.client.put_object(Bucket=self.dest.bucket, Key=key, Body=body, **extra)

    def _put_control(self, rel: str, body: bytes, ctype: str) -> None:
        self.client.put_object(
            Bucket=self.dest.bucket,
            Key=self.dest.key(rel),
            Body=body,
            ContentType=ctype,
            CacheControl="private, no-store",
        )

    def _run_phase(
        self,
        pool: ThreadPoolExecutor,
        ups: list[Upload],
        local: Mapping[str, LocalFile],
        desired: Mapping[str, str],
    ) -> None:
        futures: list[Future[None]] = []
        for up in ups:
            source: str | None = None
            if up.cls is FileClass.INDEX:
                twin = f"{PurePosixPath(up.rel).parent}/by-hash/SHA256/{up.sha256}"
                source = twin if desired.get(twin) == up.sha256 else None
            futures.append(pool.submit(self._put_file, up, local[up.rel].path, source))
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for fut in pending:
            fut.cancel()
        wait(pending)
        for fut in done:
            exc = fut.exception()
            if exc is not None:
                raise exc

    def _wait_out_last_switch(self, written: str) -> None:
        """Let a whole second pass since the last publish went live before the next Release.

        S3's Last-Modified (like every HTTP server's) has whole seconds. An apt that
        fetched InRelease between two publishes in the same second would send that second
        as If-Modified-Since, be told "304 Not Modified", and stay a publish behind until
        the next one. Waiting at most a second between back-to-back publishes closes it
        whatever the skew between this clock and S3's (``written`` is taken after the last
        upload finished)."""
        try:
            last = dt.datetime.fromisoformat(written)
        except ValueError:
            return  # no earlier publish (or a manifest from before this was recorded)
        wait_s = (last + dt.timedelta(seconds=1) - self._clock()).total_seconds()
        if 0 < wait_s <= 1:
            log.debug("waiting %.2f s: the last publish went live in this second", wait_s)
            self._sleep(wait_s)

    def apply_plan(
        self, plan: SyncPlan, local: Mapping[str, LocalFile], manifest: Manifest
    ) -> SyncResult:
        run = f"{iso(self._clock())}-{uuid.uuid4().hex[:8]}"
        uploaded: list[str] = []
        if plan.uploads:
            # Keep a dead run's intent in ours: if we die too, the next run still knows.
            announced = dict(plan.carried)
            announced.update({u.rel: u.sha256 for u in plan.uploads})
            intent = Intent(run=run, files=announced)
            self._put_control(INTENT, intent.to_bytes(), "application/json")
            with ThreadPoolExecutor(max_workers=self.options.workers) as pool:
                for cls, ups in plan.phases():
                    self._checkpoint()
                    if cls in (FileClass.RELEASE, FileClass.INRELEASE):
                        self._wait_out_last_switch(manifest.written)
                    log.info("uploading %d %s file(s) to %s", len(ups), cls.name.lower(), self.dest)
                    self._run_phase(pool, ups, local, plan.desired)
                    uploaded.extend(u.rel for u in ups)
        # The new InRelease is live from here on.
        now = self._clock()
        live = iso(now)
        if plan.deletes:
            self._checkpoint()
            log.info("deleting %d unreferenced object(s) from %s", len(plan.deletes), self.dest)
            delete_keys(self.client, self.dest.bucket, (self.dest.key(r) for r in plan.deletes))
        files = dict(plan.kept)
        files.update(plan.desired)
        pending = {rel: plan.already_pending.get(rel, live) for rel in plan.kept}
        new_manifest = Manifest(
            files=files,
            pending=pending,
            run=run,
            written=now.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
        )
        self._checkpoint()
        self._put_control(MANIFEST, new_manifest.to_bytes(), "application/gzip")
        changed = [rel for rel in uploaded if public(rel)] + list(plan.deletes)
        dirty = dirty_directories(
            [r for r in manifest.files if public(r)],
            [r for r in files if public(r)],
            changed,
        )
        if FRONT_PAGE in uploaded:
            dirty.add("")  # the root's page is the front page: put it even if nothing else changed
        to_invalidate = tuple(sorted(r for r in changed if cached_by_name(r)))
        return SyncResult(
            dest=self.dest,
            plan=plan,
            uploaded=tuple(uploaded),
            deleted=plan.deletes,
            dirty_dirs=frozenset(d for d in dirty if public(d + "/")),
            to_invalidate=to_invalidate,
        )

    def sync(
        self, local: Mapping[str, LocalFile], *, remote: Mapping[str, str] | None = None
    ) -> SyncResult:
        """Bring the destination to ``local`` (see the module docstring for the order)."""
        with s3_errors("sync", self.dest):
            manifest, intent = self.read_manifest()
            plan = plan_sync(
                local,
                manifest,
                intent,
                now=self._clock(),
                grace=self.options.grace,
                remote=remote,
            )
            for line in plan.describe():
                log.info("%s: %s", self.dest, line)
            nothing_to_do = (
                plan.empty and intent is None and set(manifest.pending) == set(plan.kept)
            )
            if self.options.dry_run or nothing_to_do:
                return SyncResult(
                    dest=self.dest,
                    plan=plan,
                    uploaded=(),
                    deleted=(),
                    dirty_dirs=frozenset(),
                    to_invalidate=(),
                )
            result = self.apply_plan(plan, local, manifest)
            if result.changed:
                self.record_changes(result)
            return result

    # -- changes not yet turned into index pages and invalidations

    def record_changes(self, result: SyncResult) -> None:
        """Merge this run's dirty directories and paths to invalidate into ``.releng/changes.json``."""
        record_changes(
            self.client, self.dest, dirs=result.dirty_dirs, invalidate=result.to_invalidate
        )


def sync_tree(
    client: S3Client,
    root: Path,
    dest: S3Url,
    *,
    state_dir: str | None = None,
    options: SyncOptions | None = None,
    clock: Callable[[], dt.datetime] | None = None,
    checkpoint: Callable[[], None] | None = None,
    remote: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncResult:
    """Scan ``root`` and bring ``dest`` to it (call with the destination's lock held)."""
    local = scan_tree(root, state_dir=state_dir)
    syncer = RepoSyncer(
        client, dest, options=options, clock=clock, checkpoint=checkpoint, sleep=sleep
    )
    return syncer.sync(local, remote=remote)
