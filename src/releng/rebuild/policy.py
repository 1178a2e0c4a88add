"""``[verify] rebuild``: whether a build may be published without a matching rebuild.

:func:`check_rebuild_policy` is what a publishing step calls before it includes a
build: "off" asks nothing; "report" returns one line per unverified package (to
show on the front page and in list-packages); "require" refuses the first unverified
build with one line naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from releng.digest import file_sha256
from releng.rebuild.attest import (
    ATTESTATIONS_DIR,
    INDEX,
    SUFFIX,
    has_attestations,
    read_index,
    write_attestations,
)
from releng.rebuild.buildinfo import RebuildError
from releng.rebuild.summary import read_summary, reproduced

if TYPE_CHECKING:
    from releng.apt import PublishResult, Repository
    from releng.project import Project
    from releng.version import Version

log = logging.getLogger(__name__)

BINARY_SUFFIXES = (".deb", ".udeb", ".ddeb")


class RebuildRequired(RebuildError):
    """[verify] rebuild = "require" and a build has no matching rebuild."""


def unverified(build_dir: Path) -> list[str]:
    """The packages in ``build_dir`` that no reproducing rebuild attested, as they are now
    (a package changed after its rebuild counts as unverified)."""
    debs = sorted(p for p in build_dir.glob("*") if p.name.endswith(BINARY_SUFFIXES))
    summary = read_summary(build_dir / "rebuild") or {}
    verified = reproduced(summary)
    packages = summary.get("packages") or {}
    missing = []
    for deb in debs:
        attested = packages.get(deb.name, {}).get("first") if verified else None
        statement = build_dir / "rebuild" / ATTESTATIONS_DIR / f"{deb.name}{SUFFIX}"
        if attested != file_sha256(deb) or not statement.is_file():
            missing.append(deb.name)
    return missing


def check_rebuild_policy(mode: str, build_dirs: Iterable[Path], *, version: str = "") -> list[str]:
    """``mode`` is ``[verify] rebuild``. Returns "unverified: ..." lines ("report"); raises
    RebuildRequired for the first unverified build ("require"); "off": nothing.

    ``version``: the builds' version (default: the name of each build directory's parent, as
    in ``out/<V>/<DISTRO>/``)."""
    if mode == "off":
        return []
    lines: list[str] = []
    for build_dir in build_dirs:
        names = unverified(build_dir)
        if not names:
            continue
        of = version or build_dir.parent.name
        where = f"{of}/{build_dir.name}"
        if mode == "require":
            raise RebuildRequired(
                f"{where} has no matching rebuild ({', '.join(names)}); [verify] rebuild = "
                f'"require": run invoke verify-rebuild {build_dir.name} --version {of} first'
            )
        lines.extend(f"unverified: {where}/{name}" for name in names)
    return lines


def include_builds_with_policy(
    repository: Repository,
    project: Project,
    *,
    version: Version,
    builds: Mapping[str, Path],
    url: str = "",
) -> dict[str, PublishResult]:
    """update-repos's include, local and S3: ``[verify] rebuild`` checked for every build
    first (under "require" an unverified build raises RebuildRequired before anything is
    included, so the caller publishes nothing), then :func:`releng.apt.include_builds`, then
    the builds' attestations beside the repository (:func:`write_attestations`)."""
    from releng import apt

    mode = project.config.verify.rebuild
    for line in check_rebuild_policy(mode, builds.values(), version=version.text):
        log.warning("%s", line)
    results = apt.include_builds(repository, project, version=version, builds=builds, url=url)
    if has_attestations(builds.values()):
        write_attestations(repository.root, builds.values())
    return results


UNVERIFIED = "unverified"


def not_rebuilt(project: Project) -> frozenset[str]:
    """Packages no rebuild is asked of: the keyring package, which releng makes from the
    archive keys in every suite (no source package, no build to repeat)."""
    return frozenset({f"{project.config.name}-archive-keyring"})  # KeyringPackage.package


def show_rebuild_status(project: Project, repo_root: Path) -> bool:
    """Whether list-packages and the front page show a rebuild status: ``[verify] rebuild``
    is not "off", or the repository has attestations."""
    return (
        project.config.verify.rebuild != "off" or (repo_root / ATTESTATIONS_DIR / INDEX).is_file()
    )


def rebuild_status(entry: Mapping[str, str] | None) -> str:
    """One package's status from its ``attestations/index.json`` entry (None: it has none):
    "verified by <rebuilder's fingerprint> on <date>" or "unverified". What the publisher
    placed, not a signature check: ``check-repo --attestations`` and ``verify-package`` do
    that."""
    if entry is None:
        return UNVERIFIED
    who = entry.get("rebuilder") or "a rebuilder"
    when = (entry.get("finished") or "")[:10]
    return f"verified by {who}" + (f" on {when}" if when else "")


def rebuild_statuses(repo_root: Path) -> dict[str, str]:
    """Pool path -> :func:`rebuild_status` of each attested package of the repository."""
    return {path: rebuild_status(entry) for path, entry in read_index(repo_root).items()}
