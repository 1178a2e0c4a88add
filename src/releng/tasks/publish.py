"""publish tasks: repositories and release artifacts to S3 and CloudFront.

``update-repos --dest s3://...`` lives with the repo tasks (releng/tasks/repo.py)
and calls releng.publish as well.
"""

from __future__ import annotations

import os
from pathlib import Path

from releng.cli import Context, out, project, task
from releng.version import Version

_DEST = "s3://BUCKET/PREFIX (default: [publish] bucket and prefix in product.toml)"


@task(
    help={
        "repo": "the repository directory (default out/repo)",
        "dest": _DEST,
        "dry_run": "show what would be uploaded and deleted, change nothing",
        "grace_seconds": "keep unreferenced objects this long after the new Release is live "
        "(default 3600)",
        "lock_timeout": "seconds to wait for another publisher (default 600)",
        "no_indices": "do not update index pages and CloudFront now (update-indices does later)",
    }
)
def sync_repos(  # noqa: PLR0917  (invoke passes task arguments positionally)
    c: Context,
    repo: str = "",
    dest: str = "",
    dry_run: bool = False,
    grace_seconds: float = -1,
    lock_timeout: float = -1,
    no_indices: bool = False,
) -> None:
    """Bring an S3 destination to a local repository's state: ordered, incremental, locked."""
    from releng.publish import flows as publish

    proj = project(c)
    root = Path(repo or "out/repo")
    root = root if root.is_absolute() else proj.root / root
    destination = publish.destination_for(
        proj,
        dest,
        dry_run=dry_run,
        grace_seconds=grace_seconds if grace_seconds >= 0 else None,
        lock_timeout=lock_timeout if lock_timeout >= 0 else None,
    )
    result = publish.sync_repo(destination, root, indices=not no_indices)
    for line in publish.describe(result):
        out(line)


@task(
    help={
        "version": "the release or nightly whose source to publish",
        "dest": _DEST,
    }
)
def publish_source(c: Context, version: str, dest: str = "") -> None:
    """Copy a version's source tarball, .asc and SHA256SUMS from scratch to the public source/."""
    from releng.publish import flows as publish
    from releng.publish.sync import s3_client

    proj = project(c)
    destination = publish.destination_for(proj, dest)
    published = publish.publish_source(
        s3_client(region=proj.config.publish.region or None),
        proj,
        Version.parse(version),
        scratch=proj.config.publish.scratch_bucket,
        dest=destination,
    )
    for rel in published:
        out(f"published {destination.url}/{rel}")


@task(
    help={
        "version": "the release whose source goes public (a nightly has nothing to push)",
        "repo": "the local repository the packages must be live in (default out/repo)",
        "dest": "check the bucket s3://BUCKET/PREFIX instead, and copy the source from the "
        "scratch bucket to its source/",
        "distros": "whose suites must serve the release, comma-separated (default: the targets)",
        "release": "VERSION is a release even though it looks like a date (YYYY.MM.DD)",
        "force": "go public even if some suites do not serve the release yet (loudly)",
        "dry_run": "say what would be copied and pushed; change nothing",
    }
)
def publish_release_source(  # noqa: PLR0917  (invoke passes task arguments positionally)
    c: Context,
    version: str,
    repo: str = "",
    dest: str = "",
    distros: str = "",
    release: bool = False,
    force: bool = False,
    dry_run: bool = False,
) -> None:
    """After a release's packages are live: its source to source/, its tag and branch to public."""
    from releng.gitrefs import redact
    from releng.publish import flows as publish
    from releng.publish import release_source

    proj = project(c)
    destination = publish.destination_for(proj, dest, dry_run=dry_run) if dest else None
    root = Path(repo or "out/repo")
    result = release_source.publish_release_source(
        proj,
        Version.parse(version, release=release),
        env=os.environ,
        repo=root if root.is_absolute() else proj.root / root,
        dest=destination,
        scratch=proj.config.publish.scratch_bucket,
        distros=[proj.distro(d).id for d in distros.split(",") if d] or None,
        force=force,
        dry_run=dry_run,
    )
    public = redact(proj.config.source.public_repository)
    for line in release_source.describe(result, public=public):
        out(line)


@task(
    help={
        "distro": "the distro id whose build to upload (distros/<id>), or 'source' for the "
        "source tarball",
        "version": "the version that was built (default: tonight's nightly)",
        "arch": "the architecture whose build to upload (default: the host's, as make-package)",
        "dry_run": "list the files, upload nothing",
        "release": "VERSION is a release even though it looks like a date (YYYY.MM.DD)",
    }
)
def upload_build(  # noqa: PLR0917  (invoke maps each parameter to a --flag)
    c: Context,
    distro: str,
    version: str = "",
    arch: str = "",
    dry_run: bool = False,
    release: bool = False,
) -> None:
    """Put one build's outputs into the private scratch bucket (workers run this)."""
    from releng.arch import host_architecture
    from releng.publish import flows as publish
    from releng.publish.sync import s3_client

    proj = project(c)
    ver = Version.parse_or_nightly(version or None, release=release)
    scratch = proj.config.publish.scratch_bucket
    arch = "" if distro == publish.SCRATCH_SOURCE else arch or host_architecture()
    files = publish.upload_build(
        s3_client(region=proj.config.publish.region or None),
        proj,
        ver,
        distro,
        scratch=scratch,
        arch=arch,
        dry_run=dry_run,
    )
    where = publish.scratch_url(scratch or "SCRATCH", ver, distro, arch)
    out(f"{'would upload' if dry_run else 'uploaded'} {len(files)} file(s) to {where}/")


@task(
    help={
        "dest": _DEST,
        "all": "remake every directory's page (one full listing), not only the changed ones",
        "dry_run": "show what would be written and invalidated",
    }
)
def update_indices(c: Context, dest: str = "", all: bool = False, dry_run: bool = False) -> None:
    """Regenerate index.html pages where contents changed and invalidate CloudFront's dists/."""
    from releng.publish import flows as publish

    proj = project(c)
    destination = publish.destination_for(proj, dest, dry_run=dry_run)
    result = publish.update_indices(destination, full=all)
    out(f"{destination.url}: {len(result.pages)} index page(s) updated")
    if result.invalidation_id:
        out(f"CloudFront invalidation {result.invalidation_id}: {len(result.invalidated)} path(s)")
