"""The S3 seam: ``s3://`` URLs, clients, and the ordered, incremental repository sync.

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

Clients come from :func:`s3_client`: boto3's standard credentials chain and
endpoint resolution (``AWS_ENDPOINT_URL`` points it at moto or another S3), and
botocore's ``standard`` retry mode with exponential backoff.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import gzip
import hashlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from releng.errors import PublishError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

CONTROL_DIR = ".releng"
MANIFEST = f"{CONTROL_DIR}/manifest.json.gz"
INTENT = f"{CONTROL_DIR}/intent.json"
CHANGES = f"{CONTROL_DIR}/changes.json"
LOCK = f"{CONTROL_DIR}/lock.json"
STATE = f"{CONTROL_DIR}/state"
# One record per release whose source went public (publish-release-source writes it last).
RELEASES = f"{CONTROL_DIR}/releases"


def release_record_key(version: str) -> str:
    """The bucket-relative path of a release's record (see :data:`RELEASES`)."""
    return f"{RELEASES}/{version}.json"


INDEX_PAGE = "index.html"
# Local-only parts of the repository's state directory: its flock file, and its cache of
# compressed index chunks (a publisher without it recompresses; the indexes are the same).
STATE_SKIP = ("lock", "chunks")
# What a sync owns when there is no manifest yet (source/ and index pages are not its own).
MANAGED_TREES = ("dists/", "pool/", f"{STATE}/")

LONG_TTL = "public, max-age=31536000, immutable"
DEFAULT_SHORT_TTL = 60
DEFAULT_GRACE = dt.timedelta(hours=1)
DEFAULT_WORKERS = 8
MULTIPART_THRESHOLD = 8 * 1024 * 1024
_CHUNK = 1 << 20
_MANIFEST_FORMAT = 1

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


# --------------------------------------------------------------------------- URLs


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


# --------------------------------------------------------------------------- clients


def s3_client(*, region: str | None = None, workers: int = DEFAULT_WORKERS) -> S3Client:
    """A thread-safe S3 client: standard credentials chain, ``AWS_ENDPOINT_URL``, standard retries.

    boto3 resolves ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_S3``) itself, so tests
    and other S3 implementations need no plumbing here.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max(10, workers * 2),
        connect_timeout=10,
        read_timeout=120,
    )
    session = boto3.session.Session()
    return session.client("s3", region_name=region or None, config=config)


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


# --------------------------------------------------------------------------- classification


class FileClass(enum.IntEnum):
    """Upload phases, in order. A phase finishes before the next one starts."""

    POOL = 0  # pool/...: .deb, .dsc, .tar.*: immutable, versioned names
    OTHER = 1  # source/, keys, anything outside pool/ and dists/
    BYHASH = 2  # dists/.../by-hash/SHA256/<digest>: content-addressed
    INDEX = 3  # dists/.../Packages(.gz|.xz), Sources, Contents, component Release
    RELEASE = 4  # dists/<suite>/Release and Release.gpg
    INRELEASE = 5  # dists/<suite>/InRelease: the switch, last
    STATE = 6  # the repository's own state, under .releng/state/


def classify(rel: str) -> FileClass:  # noqa: PLR0911  (one return per phase reads best)
    """Which upload phase a path (relative to the repository root) belongs to."""
    if rel.startswith(f"{STATE}/"):
        return FileClass.STATE
    parts = rel.split("/")
    if parts[0] == "pool":
        return FileClass.POOL
    if parts[0] != "dists":
        return FileClass.OTHER
    if "by-hash" in parts[:-1]:
        return FileClass.BYHASH
    name = parts[-1]
    parent = parts[-2] if len(parts) > 2 else ""
    in_component = parent.startswith("binary-") or parent in ("source", "i18n", "dep11")
    if name == "InRelease":
        return FileClass.INRELEASE
    if name in ("Release", "Release.gpg") and not in_component:
        return FileClass.RELEASE
    return FileClass.INDEX


_CONTENT_TYPES = {
    ".deb": "application/vnd.debian.binary-package",
    ".udeb": "application/vnd.debian.binary-package",
    ".ddeb": "application/vnd.debian.binary-package",
    ".dsc": "text/plain; charset=utf-8",
    ".changes": "text/plain; charset=utf-8",
    ".buildinfo": "text/plain; charset=utf-8",
    ".gz": "application/gzip",
    ".tgz": "application/gzip",
    ".xz": "application/x-xz",
    ".bz2": "application/x-bzip2",
    ".zst": "application/zstd",
    ".lz4": "application/x-lz4",
    ".gpg": "application/pgp-signature",
    ".asc": "application/pgp-signature",
    ".sig": "application/pgp-signature",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".SHA256SUMS": "text/plain; charset=utf-8",
}
_MAGIC = (
    (b"\x1f\x8b", "application/gzip"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"BZh", "application/x-bzip2"),
    (b"\x28\xb5\x2f\xfd", "application/zstd"),
)


def content_type(rel: str, head: bytes = b"") -> str:
    """The Content-Type of a file: by suffix, else (by-hash names) by its first bytes."""
    name = PurePosixPath(rel).name
    suffix = PurePosixPath(rel).suffix
    if suffix in _CONTENT_TYPES:
        return _CONTENT_TYPES[suffix]
    if name in ("Release", "InRelease", "Packages", "Sources", "Index") or name.startswith(
        ("Contents-", "Translation-")
    ):
        return "text/plain; charset=utf-8"
    for magic, ctype in _MAGIC:
        if head.startswith(magic):
            return ctype
    if head and b"\x00" not in head[:512]:
        try:
            head[:512].decode("utf-8")
        except UnicodeDecodeError:
            return "application/octet-stream"
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def cache_control(rel: str, *, short_ttl: int = DEFAULT_SHORT_TTL) -> str:
    """Pool and by-hash files never change under their name; everything else expires soon."""
    cls = classify(rel)
    if cls in (FileClass.POOL, FileClass.BYHASH):
        return LONG_TTL
    if cls is FileClass.STATE:
        return "private, no-store"
    return f"public, max-age={short_ttl}"


# --------------------------------------------------------------------------- local tree


@dataclass(frozen=True)
class LocalFile:
    path: Path
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def scan_tree(root: Path, *, state_dir: str | None = None) -> dict[str, LocalFile]:
    """Every file to publish under ``root``, by path relative to the destination prefix.

    Names starting with a dot (temporary files, the repository's state directory)
    are not published, except ``state_dir`` (a top-level dot-directory of
    ``root``), which goes to ``.releng/state/``. Symlinks are followed; a
    dangling one is an error.
    """
    if not root.is_dir():
        raise PublishError(f"{root} is not a directory; pass the repository directory (--repo)")
    found: dict[str, LocalFile] = {}

    def add(base: Path, path: Path, rel_prefix: str) -> None:
        for child in sorted(path.iterdir()):
            if child.name.startswith(".") or child.name == INDEX_PAGE:
                continue
            if rel_prefix and path == base and child.name in STATE_SKIP:
                continue
            if child.is_dir():
                add(base, child, rel_prefix)
            elif child.is_file():
                rel = rel_prefix + child.relative_to(base).as_posix()
                stat = child.stat()
                found[rel] = LocalFile(child, sha256_file(child), stat.st_size)
            else:
                raise PublishError(f"{child} is neither a file nor a directory (dangling link?)")

    add(root, root, "")
    if state_dir:
        state = root / state_dir
        if state.is_dir():
            add(state, state, f"{STATE}/")
    return found


# --------------------------------------------------------------------------- manifest and plan


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


@dataclass(frozen=True)
class Upload:
    rel: str
    cls: FileClass
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True)
class SyncPlan:
    """What one sync does, as data (shown by --dry-run, executed by :func:`apply_plan`)."""

    uploads: tuple[Upload, ...]
    deletes: tuple[str, ...]  # due now: unreferenced for longer than the grace period
    kept: dict[str, str]  # path -> sha256: unreferenced, still within the grace period
    already_pending: dict[str, str]  # of `kept`: path -> since (the rest start now)
    desired: dict[str, str]  # path -> sha256 of the tree being published
    carried: dict[str, str] = field(default_factory=dict)  # a dead run's intent, not yet settled

    @property
    def empty(self) -> bool:
        return not self.uploads and not self.deletes

    def phases(self) -> list[tuple[FileClass, list[Upload]]]:
        by_class: dict[FileClass, list[Upload]] = {}
        for up in self.uploads:
            by_class.setdefault(up.cls, []).append(up)
        return [(cls, by_class[cls]) for cls in sorted(by_class)]

    def describe(self) -> list[str]:
        lines = [f"upload {len(ups)} {cls.name.lower()} file(s)" for cls, ups in self.phases()]
        if self.deletes:
            lines.append(f"delete {len(self.deletes)} unreferenced object(s)")
        if self.kept:
            lines.append(
                f"keep {len(self.kept)} unreferenced object(s) until the grace period ends"
            )
        return lines or ["nothing to do: the bucket is up to date"]


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


def _parse_iso(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)


def plan_sync(
    local: Mapping[str, LocalFile],
    manifest: Manifest,
    intent: Intent | None,
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    remote: Mapping[str, str] | None = None,
) -> SyncPlan:
    """Pure: compare the tree with the manifest (and a dead run's intent).

    ``remote``: path -> sha256 of files the repository has that are not on the local
    disk (a publisher that pulled only the state and ``dists/``): they must already be
    in the bucket with that content, and they are kept.
    """
    kept_remote: dict[str, str] = {}
    for rel, sha in (remote or {}).items():
        if rel in local:
            continue
        have = manifest.files.get(rel)
        if have is None or have not in ("", sha):
            raise PublishError(
                f"the repository names {rel} (sha256 {sha}) but it is neither on the local disk "
                "nor, with that content, in the bucket; publish from a full copy of the repository"
            )
        kept_remote[rel] = have or sha
    uploads = tuple(
        sorted(
            (
                Upload(rel, classify(rel), f.sha256, f.size)
                for rel, f in local.items()
                if manifest.files.get(rel) != f.sha256
            ),
            key=lambda u: (u.cls, u.rel),
        )
    )
    # Objects that may exist: the manifest's, and those a dead run announced.
    maybe: dict[str, str] = dict(intent.files) if intent else {}
    maybe.update(manifest.files)
    unreferenced = {
        rel: sha for rel, sha in maybe.items() if rel not in local and rel not in kept_remote
    }
    deletes: list[str] = []
    kept: dict[str, str] = {}
    already: dict[str, str] = {}
    for rel, sha in sorted(unreferenced.items()):
        since = manifest.pending.get(rel)
        if since is not None and _parse_iso(since) + grace <= now:
            deletes.append(rel)
        else:
            kept[rel] = sha
            if since is not None:
                already[rel] = since
    return SyncPlan(
        uploads=uploads,
        deletes=tuple(deletes),
        kept=kept,
        already_pending=already,
        desired={**kept_remote, **{rel: f.sha256 for rel, f in local.items()}},
        carried={
            r: s for r, s in (intent.files if intent else {}).items() if r not in manifest.files
        },
    )


def dirty_directories(old: Iterable[str], new: Iterable[str], changed: Iterable[str]) -> set[str]:
    """Pure: directories (relative, '' for the root) whose listing differs between two key sets.

    A directory is dirty when a file directly in it was added, removed or changed,
    or when a sub-directory appeared or disappeared.
    """

    def dirs_of(paths: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for p in paths:
            parent = PurePosixPath(p).parent
            while True:
                out.add("" if str(parent) == "." else str(parent))
                if str(parent) in (".", ""):
                    break
                parent = parent.parent
        return out

    def parent_of(p: str) -> str:
        parent = str(PurePosixPath(p).parent)
        return "" if parent == "." else parent

    dirty = {parent_of(p) for p in changed}
    old_dirs, new_dirs = dirs_of(old), dirs_of(new)
    for d in old_dirs ^ new_dirs:
        if d:
            dirty.add(parent_of(d))
    return dirty


def _public(rel: str) -> bool:
    return not rel.startswith(f"{CONTROL_DIR}/")


# --------------------------------------------------------------------------- execution


@dataclass(frozen=True, kw_only=True)
class SyncResult:
    dest: S3Url
    plan: SyncPlan
    uploaded: tuple[str, ...]
    deleted: tuple[str, ...]
    dirty_dirs: frozenset[str]  # public directories whose index page must be remade
    changed_dists: tuple[str, ...]  # changed or deleted dists/ paths, by-hash excepted

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
    ) -> None:
        self.client = client
        self.dest = dest
        self.options = options or SyncOptions()
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
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

    def apply_plan(
        self, plan: SyncPlan, local: Mapping[str, LocalFile], manifest: Manifest
    ) -> SyncResult:
        run = f"{_iso(self._clock())}-{uuid.uuid4().hex[:8]}"
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
                    log.info("uploading %d %s file(s) to %s", len(ups), cls.name.lower(), self.dest)
                    self._run_phase(pool, ups, local, plan.desired)
                    uploaded.extend(u.rel for u in ups)
        # The new InRelease is live from here on.
        live = _iso(self._clock())
        if plan.deletes:
            self._checkpoint()
            log.info("deleting %d unreferenced object(s) from %s", len(plan.deletes), self.dest)
            delete_keys(self.client, self.dest.bucket, (self.dest.key(r) for r in plan.deletes))
        files = dict(plan.kept)
        files.update(plan.desired)
        pending = {rel: plan.already_pending.get(rel, live) for rel in plan.kept}
        new_manifest = Manifest(files=files, pending=pending, run=run, written=live)
        self._checkpoint()
        self._put_control(MANIFEST, new_manifest.to_bytes(), "application/gzip")
        changed = [rel for rel in uploaded if _public(rel)] + list(plan.deletes)
        dirty = dirty_directories(
            [r for r in manifest.files if _public(r)],
            [r for r in files if _public(r)],
            changed,
        )
        changed_dists = tuple(
            sorted(
                r for r in changed if r.startswith("dists/") and classify(r) is not FileClass.BYHASH
            )
        )
        return SyncResult(
            dest=self.dest,
            plan=plan,
            uploaded=tuple(uploaded),
            deleted=plan.deletes,
            dirty_dirs=frozenset(d for d in dirty if _public(d + "/")),
            changed_dists=changed_dists,
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
                    changed_dists=(),
                )
            result = self.apply_plan(plan, local, manifest)
            if result.changed:
                self.record_changes(result)
            return result

    # -- changes not yet turned into index pages and invalidations

    def record_changes(self, result: SyncResult) -> None:
        """Merge this run's dirty directories and dists/ paths into ``.releng/changes.json``."""
        record_changes(self.client, self.dest, dirs=result.dirty_dirs, dists=result.changed_dists)


def record_changes(
    client: S3Client, dest: S3Url, *, dirs: Iterable[str], dists: Iterable[str]
) -> None:
    """Merge directories whose page is stale and changed dists/ paths into ``changes.json``."""
    current = read_changes(client, dest)
    body = {
        "dirs": sorted(set(current.get("dirs", [])) | set(dirs)),
        "dists": sorted(set(current.get("dists", [])) | set(dists)),
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
        return {"dirs": list(body.get("dirs", [])), "dists": list(body.get("dists", []))}
    except (ValueError, AttributeError):
        log.warning("ignoring an unreadable %s", CHANGES)
        return {}


def clear_changes(client: S3Client, dest: S3Url) -> None:
    client.delete_object(Bucket=dest.bucket, Key=dest.key(CHANGES))


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
) -> SyncResult:
    """Scan ``root`` and bring ``dest`` to it (call with the destination's lock held)."""
    local = scan_tree(root, state_dir=state_dir)
    syncer = RepoSyncer(client, dest, options=options, clock=clock, checkpoint=checkpoint)
    return syncer.sync(local, remote=remote)


def download_prefix(client: S3Client, src: S3Url, dest_dir: Path) -> list[Path]:
    """Download every object under ``src`` into ``dest_dir`` (keys relative to the prefix)."""
    written: list[Path] = []
    with s3_errors("download", src):
        for obj in list_keys(client, src.bucket, src.key_prefix):
            rel = src.rel(obj["Key"])
            if not rel or rel.endswith("/"):
                continue
            target = dest_dir / rel
            if not target.resolve().is_relative_to(dest_dir.resolve()):
                raise PublishError(f"refusing to write {obj['Key']!r} outside {dest_dir}")
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(src.bucket, obj["Key"], str(target))
            written.append(target)
    return written
