"""The layout of a destination ``s3://BUCKET/PREFIX``: the private control area's keys, the
upload phases (:class:`FileClass`), Content-Type and Cache-Control of each published file."""

from __future__ import annotations

import enum
from pathlib import PurePosixPath

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
# The front page as synced (releng.publish.front_page.STATE_COPY in the state): private; the
# index pages step puts it at the root's index.html.
FRONT_PAGE = f"{STATE}/front-page.html"
# Local-only parts of the repository's state directory: its flock file, its cache of
# compressed index chunks (a publisher without it recompresses; the indexes are the same),
# the marker of a directory pulled from a bucket (releng.apt.state.REMOTE_POOL), and the
# copies an include makes while reading its inputs (releng.apt.incoming.INCOMING).
STATE_SKIP = ("lock", "chunks", "remote-pool", "incoming")
# What a sync owns when there is no manifest yet (source/ and index pages are not its own).
MANAGED_TREES = ("dists/", "pool/", f"{STATE}/")

LONG_TTL = "public, max-age=31536000, immutable"
DEFAULT_SHORT_TTL = 60


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


def cached_by_name(rel: str) -> bool:
    """Whether a CDN's copy of ``rel`` must be dropped when it changes: what clients fetch
    by a name whose content changes -- ``dists/`` files other than by-hash (apt reads
    InRelease and the plain indexes by name) and the files at the repository's root (the
    front page, which pins the key file's SHA-256, and the key files themselves)."""
    if rel.startswith("dists/"):
        return classify(rel) is not FileClass.BYHASH and not rel.endswith("/")
    return "/" not in rel and public(rel)


def public(rel: str) -> bool:
    return not rel.startswith(f"{CONTROL_DIR}/")
