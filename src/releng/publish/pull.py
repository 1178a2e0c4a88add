"""Pulling a published repository's state from its bucket, so that a publisher with an
empty disk (an EC2 worker, a laptop) can change it: the state, ``dists/`` and keys (and,
for a check, the pool), each verified against the manifest."""

from __future__ import annotations

import gzip
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from releng.digest import file_sha256
from releng.errors import PublishError
from releng.publish.layout import STATE, STATE_SKIP
from releng.publish.manifest import Manifest
from releng.publish.s3 import S3Url
from releng.publish.sync import RepoSyncer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

REPO_STATE_DIR = ".releng-repo"  # the apt library's state directory inside a repository


def _state_rel(rel: str) -> str:
    """Bucket path (relative to the prefix) -> path in the local repository directory."""
    if rel.startswith(f"{STATE}/"):
        return f"{REPO_STATE_DIR}/{rel[len(STATE) + 1 :]}"
    return rel


def _skipped_state(path: Path, work: Path) -> bool:
    parts = path.relative_to(work).parts
    return len(parts) > 1 and parts[0] == REPO_STATE_DIR and parts[1] in STATE_SKIP


def pull_repository(
    client: S3Client, dest: S3Url, work: Path, *, with_pool: bool = False
) -> Manifest:
    """Make ``work`` hold the published repository's state, ``dists/`` and keys (and with
    ``with_pool`` the pool files too, e.g. to check every file).

    Only what the manifest lists; files whose sha256 already matches are kept, so a
    publisher that keeps its work directory downloads only what changed. Local
    ``dists/`` and state files the bucket does not have are removed: the bucket is
    the truth, read after the lock was taken.
    """
    manifest, _intent = RepoSyncer(client, dest).read_manifest()
    wanted: dict[Path, tuple[str, str]] = {}
    for rel, sha in manifest.files.items():
        if rel.startswith("pool/") and not with_pool:
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
        if path.is_file() and sha and file_sha256(path) == sha:
            continue
        response = client.get_object(Bucket=dest.bucket, Key=dest.key(rel))
        body = response["Body"].read()
        if response.get("Metadata", {}).get("encoding") == "gzip":
            body = gzip.decompress(body)
        if sha and hashlib.sha256(body).hexdigest() != sha:
            raise PublishError(
                f"{dest}/{rel} does not match the manifest's sha256; another tool changed the "
                "bucket: publish again from a full copy of the repository (sync-repo)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.download")
        tmp.write_bytes(body)
        tmp.replace(path)
        fetched += 1
    # The pool is in the bucket: the apt library must not take a pool file it lacks here as
    # missing (the sync checks it against the manifest instead).
    marker = work / REPO_STATE_DIR / "remote-pool"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{dest}\n")
    log.info("pulled %d file(s) of %s into %s", fetched, dest, work)
    return manifest


def remote_only(work: Path) -> dict[str, str]:
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
