"""Where a repository lives, and the one way to open it: a directory or ``s3://BUCKET/PREFIX``.

Every repository operation (include, update-repos, copy, remove, rollback, list,
history, check, publish) is written once against :func:`open_repository`:

* a directory: the repository is that directory; each :class:`releng.apt.Repository`
  operation takes its file lock (``.releng-repo/lock``) itself;
* ``s3://BUCKET/PREFIX``: the bucket's lock is taken, the repository's state, ``dists/``
  and keys are pulled into a work directory (an empty disk works), the operation runs
  there, then the ordered sync, the index pages and the CloudFront invalidation follow
  (:func:`releng.publish.flows.open_destination`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from releng.errors import RepoError
from releng.publish.front_page import write_front_page
from releng.publish.s3 import S3Url, parse_s3_url
from releng.textcheck import check_one_line

if TYPE_CHECKING:
    from releng.apt import PublishResult as RepoChange
    from releng.apt import Repository
    from releng.gpg import Signer
    from releng.project import Project
    from releng.publish.flows import PublishResult
    from releng.version import Version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepoLocation:
    """A repository's place: exactly one of ``path`` (a directory) and ``url`` (S3)."""

    path: Path | None = None
    url: S3Url | None = None

    @classmethod
    def parse(cls, text: str, *, base: Path) -> RepoLocation:
        """``--repo DIR|s3://BUCKET/PREFIX``; a relative directory is under ``base``."""
        advice = "name a directory or s3://BUCKET/PREFIX, without control characters"
        check_one_line(text, what="--repo", error=RepoError, advice=advice)
        if not text.strip():
            raise RepoError(f"--repo {text!r} is not a repository; {advice}")
        if text.lower().startswith("s3:"):
            return cls(url=parse_s3_url(text))
        if "://" in text:
            raise RepoError(
                f"--repo {text!r}: a repository is a directory or s3://BUCKET/PREFIX; "
                "serve a directory over HTTP yourself, or publish it to S3"
            )
        path = Path(text)
        return cls(path=path if path.is_absolute() else base / path)

    @classmethod
    def of(cls, project: Project, text: str = "") -> RepoLocation:
        """``text``, else product.toml's ``[repositories] location`` (default ``out/repo``)."""
        return cls.parse(text or project.config.repositories.location, base=project.root)

    @property
    def is_s3(self) -> bool:
        return self.url is not None

    def __str__(self) -> str:
        return str(self.url) if self.url is not None else str(self.path)


@dataclass(kw_only=True)
class OpenedRepository:
    """A repository while it is open: ``root`` is the directory to work on (the repository
    itself, or the work directory holding a bucket's state); ``published``: what the sync
    to S3 did, once closed."""

    location: RepoLocation
    root: Path
    signer: Signer | None
    project: Project
    published: PublishResult | None = None
    link_inputs: bool = False

    def repository(self) -> Repository:
        """The apt library's :class:`~releng.apt.Repository` on ``root``."""
        from releng import apt

        return apt.Repository(
            self.root,
            apt.settings_for(self.project),
            self.signer,
            link_inputs=self.link_inputs,
        )


@contextlib.contextmanager
def open_repository(
    project: Project,
    location: RepoLocation,
    *,
    signer: Signer | None = None,
    read_only: bool = False,
    dry_run: bool = False,
    with_pool: bool = False,
    link_inputs: bool = False,
    url: str = "",
) -> Iterator[OpenedRepository]:
    """Open the repository at ``location`` for one operation (see the module docstring).

    ``read_only``: nothing is synced back (list, history, check); ``dry_run``: the operation
    changes nothing and nothing is synced; ``with_pool``: an S3 repository's pool files are
    pulled too (a check reads them); ``link_inputs``: see :class:`releng.apt.Repository`;
    ``url``: where clients reach it, for the front page (default: the page's own address).
    """
    changes = not read_only and not dry_run
    if location.path is not None:
        yield OpenedRepository(
            location=location,
            root=location.path,
            signer=signer,
            project=project,
            link_inputs=link_inputs,
        )
        if changes:
            # the URL the keyring package's source names, when one is configured
            write_front_page(location.path, project, url=url or project.config.publish.public_url)
        return
    from releng.publish import flows

    assert location.url is not None  # one of the two
    dest = flows.destination_for(project, str(location.url), dry_run=dry_run)
    work = flows.work_dir_for(project, location.url)
    opened = OpenedRepository(location=location, root=work, signer=signer, project=project)
    with flows.open_destination(dest, work, read_only=read_only, with_pool=with_pool) as remote:
        yield opened
        if changes:
            public = url or project.config.publish.public_url
            write_front_page(work, project, url=public)  # synced with the state; put at /
    opened.published = remote.published


@dataclass(frozen=True, kw_only=True)
class UpdateOutcome:
    """What ``update-repos`` did: per distro its result; the sync (S3); scratch objects removed."""

    results: dict[str, RepoChange]
    published: PublishResult | None
    scratch_deleted: int


def update_repos(
    project: Project,
    signer: Signer,
    *,
    version: Version,
    location: RepoLocation,
    url: str = "",
) -> UpdateOutcome:
    """Include every distro's build of ``version`` into its suites of the repository at
    ``location`` (:func:`releng.apt.include_builds`, under ``[verify] rebuild``:
    :func:`releng.rebuild.policy.include_builds_with_policy`). The builds come from ``out/`` or, for
    a repository on S3 when ``[publish] scratch_bucket`` is set, from the scratch bucket
    (:func:`releng.publish.flows.update_repos`, which removes them once published)."""
    from releng import apt
    from releng.rebuild.policy import include_builds_with_policy

    if location.url is not None and not (url or project.config.publish.public_url):
        log.warning(
            "[publish] public_url is not set: the keyring package's apt source and the front "
            "page name this machine's work directory, which no client reaches; set it to the "
            "address clients use (e.g. the CloudFront domain)"
        )
    scratch = project.config.publish.scratch_bucket
    if location.url is not None and scratch:
        from releng.publish import flows

        done = flows.update_repos(
            project,
            signer,
            version=version,
            dest=flows.destination_for(project, str(location.url)),
            scratch=scratch,
            work=flows.work_dir_for(project, location.url),
        )
        return UpdateOutcome(
            results=done.results, published=done.publish, scratch_deleted=done.scratch_deleted
        )
    builds = apt.local_builds(project, version)
    # Builds are renamed into out/ whole and never rewritten in place: link, don't copy.
    with open_repository(project, location, signer=signer, link_inputs=True, url=url) as opened:
        # [verify] rebuild first: "require" refuses before anything is included or written
        results = include_builds_with_policy(
            opened.repository(), project, version=version, builds=builds, url=url
        )
    return UpdateOutcome(results=results, published=opened.published, scratch_deleted=0)
