"""publish tasks: repositories and release artifacts to S3 and CloudFront.

``update-repos --repo s3://...`` lives with the repo tasks (releng/tasks/repo.py): every
repository operation takes ``--repo DIR|s3://BUCKET/PREFIX`` (releng.publish.location).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from releng import aws_clients
from releng.cli import Context, out, project, task
from releng.version import Version

if TYPE_CHECKING:
    from releng.project import Project

_S3 = (
    "s3://BUCKET/PREFIX (default: [repositories] location when it is on S3, else [publish] "
    "bucket and prefix in product.toml)"
)
_DEST_GONE = "gone: use --repo s3://BUCKET/PREFIX"


def _s3_repo(proj: Project, repo: str, dest: str, *, what: str) -> str:
    """The S3 repository ``--repo`` names (or the default), as text for destination_for."""
    from releng.errors import PublishError
    from releng.publish.location import RepoLocation

    if dest:
        raise PublishError(f"--dest is gone: pass --repo {dest!r}")
    if not repo:
        default = RepoLocation.of(proj)
        return str(default.url) if default.url is not None else ""
    location = RepoLocation.of(proj, repo)
    if location.url is None:
        raise PublishError(f"{what} works on a repository on S3: pass --repo s3://BUCKET/PREFIX")
    return str(location.url)


@task(
    help={
        "repo": _S3,
        "source": "the local repository directory to copy (default: [repositories] location "
        "when it is a directory, else out/repo)",
        "dest": _DEST_GONE,
        "dry_run": "show what would be uploaded and deleted, change nothing",
        "grace_seconds": "keep unreferenced objects this long after the new Release is live "
        "(default 3600)",
        "lock_timeout": "seconds to wait for another publisher (default 600)",
        "no_indices": "do not update index pages and CloudFront now (update-indices does later)",
    }
)
def sync_repo(  # noqa: PLR0917  (invoke passes task arguments positionally)
    c: Context,
    repo: str = "",
    source: str = "",
    dest: str = "",
    dry_run: bool = False,
    grace_seconds: float = -1,
    lock_timeout: float = -1,
    no_indices: bool = False,
) -> None:
    """Bring a repository on S3 to a local repository's state: ordered, incremental, locked."""
    from releng.errors import PublishError
    from releng.publish import flows as publish
    from releng.publish.location import RepoLocation

    proj = project(c)
    if repo and not dest and not RepoLocation.of(proj, repo).is_s3:
        raise PublishError(
            f"sync-repo copies a local repository to S3: pass --source {repo} "
            "--repo s3://BUCKET/PREFIX"
        )
    url = _s3_repo(proj, repo, dest, what="sync-repo")
    local = RepoLocation.of(proj, source) if source else RepoLocation.of(proj)
    root = local.path if local.path is not None else proj.root / "out" / "repo"
    destination = publish.destination_for(
        proj,
        url,
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
        "release": "VERSION is a release even though it looks like a date (YYYY.MM.DD)",
        "repo": _S3,
        "dest": _DEST_GONE,
    }
)
def publish_source(
    c: Context, version: str, repo: str = "", dest: str = "", release: bool = False
) -> None:
    """Copy a version's source tarball, .asc and SHA256SUMS from scratch to the public source/."""
    from releng.publish import flows as publish
    from releng.publish.sync import s3_client

    proj = project(c)
    destination = publish.destination_for(proj, _s3_repo(proj, repo, dest, what="publish-source"))
    published = publish.publish_source(
        s3_client(region=aws_clients.region(os.environ, proj.config.aws.region)),
        proj,
        Version.parse(version, release=release),
        scratch=proj.config.publish.scratch_bucket,
        dest=destination,
    )
    for rel in published:
        out(f"published {destination.url}/{rel}")


@task(
    help={
        "version": "the release whose source goes public (a nightly has nothing to push)",
        "repo": "DIR or s3://BUCKET/PREFIX: the repository the packages must be live in (default: "
        "[repositories] location); on S3 the source goes from the scratch bucket to its source/",
        "dest": _DEST_GONE,
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
    from releng.publish.location import RepoLocation

    proj = project(c)
    if dest:
        from releng.errors import PublishError

        raise PublishError(f"--dest is gone: pass --repo {dest!r}")
    location = RepoLocation.of(proj, repo)
    destination = (
        publish.destination_for(proj, str(location.url), dry_run=dry_run)
        if location.url is not None
        else None
    )
    result = release_source.publish_release_source(
        proj,
        Version.parse(version, release=release),
        env=os.environ,
        repo=location.path if location.path is not None else proj.root / "out" / "repo",
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
        "rebuild": "upload the build's verify-rebuild result (out/<V>/<DISTRO>/rebuild/) "
        "beside it instead (the AWS verify step)",
    }
)
def upload_build(  # noqa: PLR0917  (invoke maps each parameter to a --flag)
    c: Context,
    distro: str,
    version: str = "",
    arch: str = "",
    dry_run: bool = False,
    release: bool = False,
    rebuild: bool = False,
) -> None:
    """Put one build's outputs into the private scratch bucket (workers run this)."""
    from releng.arch import host_architecture
    from releng.publish import flows as publish
    from releng.publish.sync import s3_client

    proj = project(c)
    ver = Version.parse_or_nightly(version or None, release=release)
    scratch = proj.config.publish.scratch_bucket
    arch = "" if distro == publish.SCRATCH_SOURCE else arch or host_architecture()
    if rebuild:
        from releng.publish.scratch import rebuild_url, upload_rebuild

        files = upload_rebuild(
            s3_client(region=aws_clients.region(os.environ, proj.config.aws.region)),
            proj, ver, distro, scratch=scratch, arch=arch, dry_run=dry_run,
        )  # fmt: skip
        where = rebuild_url(scratch or "SCRATCH", ver, distro, arch)
        out(f"{'would upload' if dry_run else 'uploaded'} {len(files)} file(s) to {where}/")
        return
    files = publish.upload_build(
        s3_client(region=aws_clients.region(os.environ, proj.config.aws.region)),
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
        "repo": _S3,
        "dest": _DEST_GONE,
        "all": "remake every directory's page (one full listing), not only the changed ones",
        "dry_run": "show what would be written and invalidated",
    }
)
def update_indices(
    c: Context, repo: str = "", dest: str = "", all: bool = False, dry_run: bool = False
) -> None:
    """Regenerate index.html pages where contents changed and invalidate CloudFront's dists/."""
    from releng.publish import flows as publish

    proj = project(c)
    url = _s3_repo(proj, repo, dest, what="update-indices")
    destination = publish.destination_for(proj, url, dry_run=dry_run)
    result = publish.update_indices(destination, full=all)
    out(f"{destination.url}: {len(result.pages)} index page(s) updated")
    if result.invalidation_id:
        out(f"CloudFront invalidation {result.invalidation_id}: {len(result.invalidated)} path(s)")
