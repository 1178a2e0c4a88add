"""Publishing: repositories and release artifacts from scratch to the public bucket.

Layout of the scratch bucket (private)::

    s3://<scratch>/<version>/<distro>/...      one build's outputs (upload-build)
    s3://<scratch>/<version>/source/...        the source tarball, .asc, SHA256SUMS(.asc)

Layout of the public destination ``s3://<bucket>/<prefix>/``::

    dists/ pool/                the apt repository (sync-repos, update-repos)
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

import datetime as dt
import gzip
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from releng.errors import PublishError
from releng.publish import cloudfront as cf
from releng.publish.index_pages import IndexPages
from releng.publish.lock import DEFAULT_TIMEOUT, DEFAULT_TTL, S3Lock
from releng.publish.sync import (
    LONG_TTL,
    STATE,
    STATE_SKIP,
    Manifest,
    RepoSyncer,
    S3Url,
    SyncOptions,
    SyncResult,
    clear_changes,
    content_type,
    delete_keys,
    get_bytes,
    is_not_found,
    list_keys,
    read_changes,
    record_changes,
    s3_errors,
    sha256_file,
    sync_tree,
)
from releng.version import Version

if TYPE_CHECKING:
    from mypy_boto3_cloudfront import CloudFrontClient
    from mypy_boto3_s3 import S3Client

    from releng.apt import PublishResult as RepoChange
    from releng.distro import Distro
    from releng.gpg import Signer
    from releng.project import Project

log = logging.getLogger(__name__)

REPO_STATE_DIR = ".releng-repo"  # the apt library's state directory inside a repository
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
    return ["index.html", "dists/*", "pool/*", f"{SOURCE_DIR}/*", *keyrings]


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
    """``sync-repos``: bring the destination to the repository at ``root``, under its lock."""
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


# --------------------------------------------------------------------------- scratch bucket

SCRATCH_SOURCE = "source"  # s3://<scratch>/<version>/source/: not a distro id
COMPLETE = ".releng-complete.json"  # written last by upload-build: the build's file list


def scratch_url(bucket: str, version: Version, part: str, arch: str = "") -> S3Url:
    """``s3://<scratch>/<version>/source`` or one architecture's build of a distro,
    ``s3://<scratch>/<version>/<distro>/<arch>``: each architecture's part has its own files
    and completion marker, so builds of one distro on two machines never overwrite each
    other, and the publish collects every complete part."""
    return S3Url(bucket, f"{version.text}/{part}" + (f"/{arch}" if arch else ""))


def build_files(project: Project, version: Version, distro: str, arch: str) -> dict[str, Path]:
    """The files of ``arch``'s build in ``out/<version>/<distro>/`` (which may hold other
    architectures' builds too): its stamp (``build.json`` for the primary architecture,
    ``build-<arch>.json`` for the others: releng.build.Target.stamp), its log and the files
    the stamp lists. A directory with no stamp at all (packages put there by hand) is the
    primary architecture's as a whole."""
    architectures = project.config.repositories.architectures
    if arch not in architectures:
        raise PublishError(
            f"architecture {arch} is not in [repositories] architectures of product.toml "
            f"({', '.join(architectures)})"
        )
    primary = arch == architectures[0]
    build = project.build_dir(version, distro)
    stamp, log_name = (
        ("build.json", "build.log") if primary else (f"build-{arch}.json", f"build-{arch}.log")
    )
    made = f"run `invoke make-package {distro} --version {version} --arch {arch}` first"
    if not build.is_dir():
        raise PublishError(f"no build output in {build}; {made}")
    if not any(build.glob("build*.json")) and primary:
        return {
            p.relative_to(build).as_posix(): p
            for p in sorted(build.rglob("*"))
            if p.is_file() and not any(s.startswith(".") for s in p.relative_to(build).parts)
        }
    try:
        listed = json.loads((build / stamp).read_text(encoding="utf-8")).get("files") or []
    except (OSError, ValueError, AttributeError):
        raise PublishError(f"no complete {arch} build in {build} (no {stamp}); {made}") from None
    names = [stamp, *([log_name] if (build / log_name).is_file() else []), *map(str, listed)]
    missing = [n for n in names if not (build / n).is_file()]
    if missing:
        raise PublishError(f"the {arch} build in {build} lacks {', '.join(missing)}; {made}")
    return {n: build / n for n in names}


def source_files(project: Project, version: Version) -> list[Path]:
    tarball = project.tarball_path(version)
    sums = tarball.with_name(f"{project.source_stem(version)}.SHA256SUMS")
    return [
        tarball,
        tarball.with_name(tarball.name + ".asc"),
        sums,
        sums.with_name(sums.name + ".asc"),
    ]


def upload_build(
    client: S3Client,
    project: Project,
    version: Version,
    part: str,
    *,
    scratch: str,
    arch: str = "",
    dry_run: bool = False,
) -> list[str]:
    """``upload-build``: put one architecture's build (``arch``, default: the primary one)
    or, for ``source``, the source tarball and its signature and checksums, into the private
    scratch bucket.

    The file list with sha256s goes last (``.releng-complete.json``): update-repos takes
    only complete builds, and checks every file it downloads against that list.
    """
    if not scratch:
        raise PublishError("no scratch bucket: set [publish] scratch_bucket in product.toml")
    if part == SCRATCH_SOURCE:
        files = {p.name: p for p in source_files(project, version)}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise PublishError(
                f"no complete source tarball for {version}: missing {', '.join(missing)}; "
                f"run `invoke make-source-tarball --version {version}` first"
            )
    else:
        project.distro(part)  # a DistroError names the known distros
        arch = arch or project.config.repositories.architectures[0]
        files = build_files(project, version, part, arch)
        if not files:
            raise PublishError(
                f"no build output in {project.build_dir(version, part)}; run "
                f"`invoke make-package {part} --version {version} --arch {arch}` first"
            )
    dest = scratch_url(scratch, version, part, "" if part == SCRATCH_SOURCE else arch)
    listing = {rel: sha256_file(path) for rel, path in files.items()}
    if dry_run:
        return sorted(listing)
    with s3_errors("upload the build to scratch", dest):
        client.delete_object(Bucket=dest.bucket, Key=dest.key(COMPLETE))  # incomplete from here on
        for rel, path in files.items():
            client.put_object(
                Bucket=dest.bucket,
                Key=dest.key(rel),
                Body=path.read_bytes(),
                ContentType=content_type(rel, path.read_bytes()[:512]),
                Metadata={"sha256": listing[rel]},
            )
        client.put_object(
            Bucket=dest.bucket,
            Key=dest.key(COMPLETE),
            Body=json.dumps({"files": listing}, indent=1).encode(),
            ContentType="application/json",
        )
    log.info("uploaded %d file(s) to %s", len(files), dest)
    return sorted(listing)


def scratch_builds(
    client: S3Client, scratch: str, version: Version
) -> dict[str, dict[str, dict[str, str]]]:
    """The complete builds of ``version`` in scratch: distro id -> arch -> {file: sha256}."""
    root = S3Url(scratch, version.text)
    builds: dict[str, dict[str, dict[str, str]]] = {}
    with s3_errors("look for builds in scratch", root):
        for obj in list_keys(client, scratch, root.key_prefix):
            parts = root.rel(obj["Key"]).split("/")
            if len(parts) != 3 or parts[2] != COMPLETE or parts[0] == SCRATCH_SOURCE:
                continue
            data = get_bytes(client, scratch, obj["Key"]) or b"{}"
            files = dict(json.loads(data).get("files", {}))
            builds.setdefault(parts[0], {})[parts[1]] = files
    return {d: dict(sorted(arches.items())) for d, arches in sorted(builds.items())}


def _download_verified(client: S3Client, src: S3Url, files: dict[str, str], dest_dir: Path) -> None:
    for rel, sha in files.items():
        target = dest_dir / rel
        if not target.resolve().is_relative_to(dest_dir.resolve()):
            raise PublishError(f"refusing to write {rel!r} outside {dest_dir}")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(src.bucket, src.key(rel), str(target))
        if sha256_file(target) != sha:
            raise PublishError(
                f"{src}/{rel} does not match the sha256 its build recorded; upload the build again"
            )


# --------------------------------------------------------------------------- the whole publish


def _state_rel(rel: str) -> str:
    """Bucket path (relative to the prefix) -> path in the local repository directory."""
    if rel.startswith(f"{STATE}/"):
        return f"{REPO_STATE_DIR}/{rel[len(STATE) + 1 :]}"
    return rel


def _skipped_state(path: Path, work: Path) -> bool:
    parts = path.relative_to(work).parts
    return len(parts) > 1 and parts[0] == REPO_STATE_DIR and parts[1] in STATE_SKIP


def pull_repository(client: S3Client, dest: S3Url, work: Path) -> Manifest:
    """Make ``work`` hold the published repository's state, ``dists/`` and keys (not the pool).

    Only what the manifest lists; files whose sha256 already matches are kept, so a
    publisher that keeps its work directory downloads only what changed. Local
    ``dists/`` and state files the bucket does not have are removed: the bucket is
    the truth, read after the lock was taken.
    """
    manifest, _intent = RepoSyncer(client, dest).read_manifest()
    wanted: dict[Path, tuple[str, str]] = {}
    for rel, sha in manifest.files.items():
        if rel.startswith("pool/"):
            continue
        wanted[work / _state_rel(rel)] = (rel, sha)
    work.mkdir(parents=True, exist_ok=True)
    for tree in (work / "dists", work / REPO_STATE_DIR):
        if tree.is_dir():
            for path in sorted(tree.rglob("*")):
                if path.is_file() and path not in wanted and not _skipped_state(path, work):
                    path.unlink()
    fetched = 0
    for path, (rel, sha) in sorted(wanted.items()):
        if path.is_file() and sha and sha256_file(path) == sha:
            continue
        response = client.get_object(Bucket=dest.bucket, Key=dest.key(rel))
        body = response["Body"].read()
        if response.get("Metadata", {}).get("encoding") == "gzip":
            body = gzip.decompress(body)
        if sha and hashlib.sha256(body).hexdigest() != sha:
            raise PublishError(
                f"{dest}/{rel} does not match the manifest's sha256; another tool changed the "
                "bucket: publish again from a full copy of the repository (sync-repos)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.download")
        tmp.write_bytes(body)
        tmp.replace(path)
        fetched += 1
    log.info("pulled %d file(s) of %s into %s", fetched, dest, work)
    return manifest


def _remote_only(work: Path) -> dict[str, str]:
    """Pool files the repository's records name, that the work directory does not hold;
    and local pool files nobody names any more are removed (a stale cache)."""
    from releng.apt.state import RepoState

    known: dict[str, str] = {}
    for rec in RepoState(work).pool().values():
        known[rec.path] = rec.sha256
        for other, _size, sha in rec.files:  # a source package's other files
            known[other] = sha
    pool = work / "pool"
    if pool.is_dir():
        for path in sorted(pool.rglob("*")):
            if path.is_file() and path.relative_to(work).as_posix() not in known:
                path.unlink()
    return {rel: sha for rel, sha in known.items() if not (work / rel).is_file()}


def _builds_to_include(
    project: Project, client: S3Client, scratch: str, version: Version
) -> tuple[dict[str, dict[str, dict[str, str]]], dict[str, Distro]]:
    """The complete Debian builds of ``version`` in scratch; an error when there are none."""
    if not scratch:
        raise PublishError("no scratch bucket: set [publish] scratch_bucket in product.toml")
    builds = scratch_builds(client, scratch, version)
    if not builds:
        raise PublishError(
            f"no complete builds of {version} in s3://{scratch}/{version.text}/; "
            f"upload them first (invoke upload-build --version {version} DISTRO)"
        )
    distros = {d: project.distro(d) for d in sorted(builds)}  # unknown ids fail here
    for distro_id, distro in list(distros.items()):
        if not distro.is_debianish:
            log.warning("%s builds no Debian packages; its scratch build is left alone", distro_id)
            del distros[distro_id], builds[distro_id]
    if not builds:
        raise PublishError(f"no Debian builds of {version} in s3://{scratch}/{version.text}/")
    return builds, distros


def _delete_scratch(
    client: S3Client, scratch: str, version: Version, parts: list[tuple[str, str]]
) -> int:
    """Remove the published (distro, arch) builds; a part uploaded meanwhile stays."""
    deleted = 0
    for distro_id, arch in parts:
        src = scratch_url(scratch, version, distro_id, arch)
        with s3_errors("remove published builds from scratch", src):
            keys = [o["Key"] for o in list_keys(client, scratch, src.key_prefix)]
            # the completion marker first: a half-deleted build is never taken again
            keys.sort(key=lambda k: not k.endswith(COMPLETE))
            delete_keys(client, scratch, keys)
            deleted += len(keys)
    return deleted


@dataclass(frozen=True, kw_only=True)
class UpdateResult:
    publish: PublishResult
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
    """``update-repos --dest``: scratch builds of ``version`` -> the public repository.

    1. find the complete builds in ``s3://<scratch>/<version>/<distro>/<arch>/`` (none: error,
       nothing changed); 2. take the destination's lock, then pull the repository's
       state and ``dists/`` (so a publisher with an empty disk works, and a concurrent
       publisher's packages are never lost); 3. include the builds with the apt
       library; 4. sync, ordered; index pages and CloudFront; 5. only after all that
       succeeded, remove those builds from scratch.
    """
    from releng import apt
    from releng.publish.front_page import write_front_page

    builds, distros = _builds_to_include(project, dest.s3, scratch, version)
    settings = apt.settings_for(project)
    if dest.sync.dry_run:
        raise PublishError("update-repos has no dry run (it must sign); use sync-repos --dry-run")
    lock = dest.new_lock()
    lock.acquire(timeout=dest.lock.timeout)
    try:
        with s3_errors("pull the published repository", dest.url):
            pull_repository(dest.s3, dest.url, work)
        included: dict[str, tuple[str, ...]] = {}
        added: list[str] = []
        with tempfile.TemporaryDirectory(prefix="releng-builds-") as tmp:
            repository = apt.Repository(work, settings, signer)
            for distro_id, arches in builds.items():
                # every architecture's part into one directory, as out/<V>/<DISTRO>/ locally
                build_dir = Path(tmp) / distro_id
                for arch, files in arches.items():
                    src = scratch_url(scratch, version, distro_id, arch)
                    with s3_errors("download a build from scratch", src):
                        _download_verified(dest.s3, src, files, build_dir)
                d = distros[distro_id]
                suites = project.config.suites_for(
                    codename=d.codename, distro=d.id, version=version
                )
                log.info(
                    "including %s (%s) of %s into %s",
                    distro_id, ", ".join(arches), version, ", ".join(suites),
                )  # fmt: skip
                result = repository.include(suites, [build_dir])
                included[distro_id] = tuple(suites)
                added += result.added
            repository.export_keys()
            write_front_page(work, project)  # synced with the state; index pages put it at /
        publish = _publish_locked(dest, work, lock, remote=_remote_only(work))
    finally:
        lock.release()
    parts = [(d, a) for d, arches in builds.items() for a in arches]
    deleted = 0 if keep_scratch else _delete_scratch(dest.s3, scratch, version, parts)
    return UpdateResult(
        publish=publish, included=included, added=tuple(added), scratch_deleted=deleted
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
        record_changes(client, dest.url, dirs=[SOURCE_DIR, ""], dists=[])
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
        s3=s3_client(region=cfg.region or None),
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


def update_repos_to(
    project: Project,
    env: Mapping[str, str],
    *,
    version: Version,
    dest: str,
    keep_scratch: bool = False,
    grace_seconds: float | None = None,
    lock_timeout: float | None = None,
) -> UpdateResult:
    """``invoke update-repos --dest s3://...``: everything from the configuration."""
    from releng.gpg import signer_for

    destination = destination_for(
        project, dest, grace_seconds=grace_seconds, lock_timeout=lock_timeout
    )
    signer = signer_for(project, env, release=version.is_release)
    return update_repos(
        project,
        signer,
        version=version,
        dest=destination,
        scratch=project.config.publish.scratch_bucket,
        work=work_dir_for(project, destination.url),
        keep_scratch=keep_scratch,
    )


# --------------------------------------------------------------------------- lifecycle on S3


@dataclass(frozen=True, kw_only=True)
class ChangeResult:
    """A repository change (copy, remove, rollback) made on the bucket's state and synced."""

    change: RepoChange
    publish: PublishResult | None  # None: a dry run


def change_repository(
    dest: Destination,
    work: Path,
    operate: Callable[[Path], RepoChange],
) -> ChangeResult:
    """Under the destination's lock: pull the repository's state into ``work`` (so an empty
    disk works), ``operate`` on it (a lifecycle change with the apt library, which needs no
    pool file), then sync, ordered, and update index pages and CloudFront.

    A run killed anywhere leaves the bucket old or new; the next run pulls the bucket's state
    again (the bucket is the truth) and completes. The sync runs even when the change was
    already made, so that it also finishes what a killed sync left.
    """
    lock = dest.new_lock()
    lock.acquire(timeout=dest.lock.timeout)
    try:
        with s3_errors("pull the published repository", dest.url):
            pull_repository(dest.s3, dest.url, work)
        change = operate(work)
        if dest.sync.dry_run:
            return ChangeResult(change=change, publish=None)
        return ChangeResult(
            change=change, publish=_publish_locked(dest, work, lock, remote=_remote_only(work))
        )
    finally:
        lock.release()


def read_repository(dest: Destination, work: Path) -> Path:
    """Pull the repository's state and ``dists/`` into ``work`` for reading (list, history),
    under the lock so that no publish is half-way through."""
    with dest.new_lock() as lock, s3_errors("pull the published repository", dest.url):
        lock.check()
        pull_repository(dest.s3, dest.url, work)
    return work
