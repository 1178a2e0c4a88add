"""Signed apt repositories: an incremental indexer with by-hash, retention and atomic publishes.

A repository is a plain directory: ``pool/``, ``dists/<suite>/`` and the public
keys ``<name>-archive-keyring.gpg`` / ``.asc`` in its root. Stable contract for
code that mirrors it (e.g. S3 sync):

* ``.releng-repo/`` in the root is private state (lock, pool records, suite
  members, chunk caches). Never publish it.
* Indexes live at ``dists/<suite>/<component>/binary-<arch>/Packages{,.gz,.xz}``
  and ``dists/<suite>/<component>/source/Sources{,.gz,.xz}``; each is also stored,
  by content, at ``<same dir>/by-hash/SHA256/<sha256 hex>`` (``Acquire-By-Hash:
  yes``). Locally the last ``byhash_keep`` versions of each index are kept.
* Pool files are immutable: ``pool/<component>/<prefix>/<source>/<file>``.
* :meth:`Repository.include` / :meth:`Repository.publish` return a
  :class:`PublishResult`: ``written`` (in a safe upload order: pool, by-hash,
  plain indexes, then InRelease, Release, Release.gpg) and ``removed`` (old by-hash
  and unreferenced pool files, to delete remotely after a grace period). The last
  result is also kept in ``.releng-repo/last-publish.json``.

The package's modules, along the steps of a publish: :mod:`~releng.apt.repository` (the
public operations and their order), :mod:`~releng.apt.pool` (inputs and pool files),
:mod:`~releng.apt.retention` (members, keep_versions, nightly age),
:mod:`~releng.apt.switch` (render, sign and switch one suite), :mod:`~releng.apt.gc`
(unreferenced pool files, stale temporary files), :mod:`~releng.apt.state` and
:mod:`~releng.apt.history` (the private state), :mod:`~releng.apt.lifecycle` (list, copy,
remove, history, rollback), :mod:`~releng.apt.index` (index and Release text).
A repository on S3 is opened through :mod:`releng.publish.location`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from releng.apt.repository import CRASH_POINTS, PublishResult, RepoSettings, Repository
from releng.apt.state import STATE_DIR, write_atomic
from releng.errors import RepoError

if TYPE_CHECKING:
    from releng.apt.check import CheckReport
    from releng.gpg import Signer
    from releng.project import Project
    from releng.version import Version

__all__ = [
    "CRASH_POINTS",
    "STATE_DIR",
    "CheckReport",
    "PublishResult",
    "RepoSettings",
    "Repository",
    "check_repository",
    "include",
    "include_builds",
    "local_builds",
    "settings_for",
    "sources_snippet",
    "update_repos",
]

log = logging.getLogger(__name__)


def check_repository(
    root: Path, *, keyring: Path | None = None, warn_days: int = 60
) -> CheckReport:
    """See :func:`releng.apt.check.check_repository` (imported on use: it is not on the hot path)."""
    from releng.apt.check import check_repository as check

    return check(root, keyring=keyring, warn_days=warn_days)


def _template_regex(template: str, values: Mapping[str, str]) -> str:
    out = []
    for literal, name in re.findall(r"([^{]*)(?:\{(\w*)\})?", template):
        out.append(re.escape(literal))
        if name:
            out.append(values[name])
    return "".join(out)


def _alternatives(values: Iterable[str]) -> str:
    return "(?:" + "|".join(re.escape(x) for x in sorted(set(values))) + ")"


def settings_for(project: Project) -> RepoSettings:
    """The repository settings product.toml gives, with the suites its templates allow."""
    repos = project.config.repositories
    distros = [d for d in project.distros() if d.is_debianish]
    values = {
        "codename": _alternatives(d.codename for d in distros) if distros else "[a-z][a-z0-9-]*",
        "distro": _alternatives(d.id for d in distros) if distros else "[a-z0-9.-]+",
        "major": r"\d+",
        "minor": r"\d+",
        "version": r"[0-9][A-Za-z0-9.+~]*",  # releng.version: any upstream version
        "release_line": r"[0-9][A-Za-z0-9.+~]*",
    }
    templates = [
        *repos.suites,
        *repos.release_suites,
        *repos.nightly_suites,
        *repos.promotion_suites,
    ]
    name = project.config.name
    return RepoSettings(
        name=name,
        origin=repos.origin or name,
        label=repos.label or name,
        components=tuple(repos.components),
        architectures=tuple(repos.architectures),
        keep_versions=repos.keep_versions,
        nightly_max_age_days=repos.nightly_max_age_days,
        valid_for_days=repos.valid_for_days,
        byhash_keep=repos.byhash_keep,
        keep_history=repos.keep_history,
        contents=repos.contents,
        index_xz=repos.index_xz,
        suite_patterns=tuple(_template_regex(t, values) for t in templates),
    )


def sources_snippet(
    *, name: str, url: str, suites: Sequence[str], components: Sequence[str]
) -> str:
    """A deb822 ``/etc/apt/sources.list.d/<name>.sources`` for clients."""
    return (
        "Types: deb\n"
        f"URIs: {url}\n"
        f"Suites: {' '.join(suites)}\n"
        f"Components: {' '.join(components)}\n"
        f"Signed-By: /usr/share/keyrings/{name}-archive-keyring.gpg\n"
    )


def _remember(repo: Path, result: PublishResult) -> None:
    data = {
        "suites": list(result.suites),
        "added": list(result.added),
        "written": list(result.written),
        "removed": list(result.removed),
    }
    write_atomic(repo / STATE_DIR / "last-publish.json", json.dumps(data, indent=1).encode())


def include(
    repo: Path,
    settings: RepoSettings,
    signer: Signer,
    *,
    suites: Sequence[str],
    paths: Sequence[Path],
    component: str | None = None,
    lock_timeout: float = 300.0,
    link: bool = False,
) -> PublishResult:
    """Include ``paths`` into ``suites`` of the repository at ``repo`` and publish them.

    ``link``: hard-link the inputs into the pool instead of copying them (see
    :class:`Repository`: only for files that are never rewritten in place).
    """
    repository = Repository(repo, settings, signer, lock_timeout=lock_timeout, link_inputs=link)
    result = repository.include(suites, paths, component=component)
    _remember(repo, result)
    return result


def local_builds(project: Project, version: Version) -> dict[str, Path]:
    """Each Debian-like distro's build output for ``version`` under ``out/``: distro id ->
    ``out/<version>/<distro>/``. None at all is an error."""
    builds = {
        distro.id: project.build_dir(version, distro.id)
        for distro in project.distros()
        if distro.is_debianish and project.build_dir(version, distro.id).is_dir()
    }
    if not builds:
        raise RepoError(
            f"no build output for version {version} under {project.out_dir / version.text}/; "
            f"build it first: invoke make-package DISTRO --version {version}"
        )
    return builds


def include_builds(
    repository: Repository,
    project: Project,
    *,
    version: Version,
    builds: Mapping[str, Path],
    url: str = "",
) -> dict[str, PublishResult]:
    """``update-repos``, wherever the repository lives: include each distro's build directory
    (distro id -> directory) into the suites product.toml names for ``version``. Returns
    the result per distro id; the combined one is kept in ``last-publish.json``. ``url``: where
    clients reach the repository, for the keyring package's source (default: see
    :func:`releng.keyring_package.client_url`)."""
    results: dict[str, PublishResult] = {}
    for distro_id, build in builds.items():
        distro = project.distro(distro_id)
        suites = project.config.suites_for(
            codename=distro.codename, distro=distro.id, version=version
        )
        log.info("including %s into %s", build, ", ".join(suites))
        results[distro_id] = repository.include(suites, [build])
    # Every suite carries the keyring package, so that clients follow a key rotation.
    # (Imported here: tarfile, gzip and dataclasses are not on an include's start-up path.)
    from releng import keyring_package

    keyring_package.add_for_project(project, repository, url=url)
    last = list(results.values())
    _remember(
        repository.root,
        PublishResult(
            suites=tuple(s for r in last for s in r.suites),
            added=tuple(p for r in last for p in r.added),
            written=tuple(p for r in last for p in r.written),
            removed=tuple(p for r in last for p in r.removed),
        ),
    )
    return results


def update_repos(
    project: Project,
    signer: Signer,
    *,
    version: Version,
    repo: Path,
    lock_timeout: float = 300.0,
) -> dict[str, PublishResult]:
    """Include every distro's build output for ``version`` (under ``out/``) into its
    product.toml suites of the repository directory ``repo``.

    Returns the result per distro id. A distro with no build output is skipped; none
    at all is an error.
    """
    builds = local_builds(project, version)
    # Builds are renamed into out/ as a whole and never rewritten in place: link, don't copy.
    repository = Repository(
        repo, settings_for(project), signer, lock_timeout=lock_timeout, link_inputs=True
    )
    return include_builds(repository, project, version=version, builds=builds)
