"""Release day: a release's source goes public only after its packages are live.

``invoke publish-release-source VERSION`` (and the AWS publish step, for
releases) does three things in order, and each is safe to rerun:

1. **The embargo check.** For every target distro, every suite that
   product.toml names for the version must serve the product's source package
   at ``<version>-<PKGVER>``, as apt would see it: the signed suite's
   ``Release`` lists the ``Packages``/``Sources`` files, whose sha256 must
   match, and one of them must carry the package. Locally the repository is
   ``out/repo``; with ``--dest`` it is the bucket. Anything missing refuses
   the whole step (``--force`` overrides, with a warning per missing suite).
2. **The source tarball** with its ``.asc`` and ``SHA256SUMS``: to the public
   ``source/`` (from the scratch bucket with ``--dest``, else from ``out/``
   into ``<repo>/source/``).
3. **The release tag and branch** from the staging repository (``[source]
   repository``) to ``[source] public_repository``: fast-forward only, one
   atomic push, the same commit a no-op (:mod:`releng.gitrefs`).

Nightlies are cut from the public main branch: nothing to push.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import lzma
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from releng import gitrefs
from releng.deb822 import parse_paragraphs, parse_release_sha256
from releng.errors import ReleaseSourceError
from releng.publish.flows import SOURCE_DIR, publish_source, source_files
from releng.publish.sync import get_bytes, release_record_key

if TYPE_CHECKING:
    from releng.project import Project
    from releng.publish.flows import Destination
    from releng.version import Version

log = logging.getLogger(__name__)

Reader = Callable[[str], bytes | None]  # a repository-relative path -> its bytes, None if absent
_INDEX = re.compile(r"^[^/]+/(?:binary-[^/]+/Packages|source/Sources)$")


@dataclass(frozen=True, kw_only=True)
class Expected:
    """One suite that must serve the release before its source goes public."""

    suite: str
    distro: str
    package: str  # the source package name
    version: str  # <upstream>-<PKGVER>


@dataclass(frozen=True, kw_only=True)
class ReleaseSourceResult:
    version: str
    nightly: bool = False
    dry_run: bool = False
    missing: tuple[Expected, ...] = ()  # suites not yet serving it (only with force)
    copied: tuple[str, ...] = ()  # source/ paths written (or that would be)
    pushed: tuple[gitrefs.RefUpdate, ...] = ()  # refs pushed (or that would be)
    present: tuple[gitrefs.RefUpdate, ...] = ()  # refs public already had
    push_skipped: str = ""  # why nothing was pushed, when nothing was to push


def expected_publications(
    project: Project, version: Version, distros: Sequence[str] | None = None
) -> list[Expected]:
    """Every (suite, package, version) the builds of ``version`` for ``distros`` (default:
    the targets) go into."""
    package = project.config.package_name(version)
    expected = []
    for distro_id in distros or project.targets():
        distro = project.distro(distro_id)
        if not distro.is_debianish:
            continue
        upstream = project.config.source.upstream_version(version)  # 2.10+ds when repacked
        debian_version = f"{upstream}-{distro.pkgver}" if distro.pkgver else upstream
        for suite in project.config.suites_for(
            codename=distro.codename, distro=distro.id, version=version
        ):
            expected.append(
                Expected(suite=suite, distro=distro.id, package=package, version=debian_version)
            )
    return expected


def local_reader(root: Path) -> Reader:
    def read(rel: str) -> bytes | None:
        path = root / rel
        return path.read_bytes() if path.is_file() else None

    return read


def bucket_reader(dest: Destination) -> Reader:
    def read(rel: str) -> bytes | None:
        return get_bytes(dest.s3, dest.url.bucket, dest.url.key(rel))

    return read


def _index_text(read: Reader, suite: str, name: str, listed: Mapping[str, str]) -> str | None:
    """An index's text, from its plain, .gz or .xz file, checked against Release's sha256."""
    for suffix, unpack in (("", bytes), (".gz", gzip.decompress), (".xz", lzma.decompress)):
        if name + suffix not in listed:
            continue
        data = read(f"dists/{suite}/{name}{suffix}")
        if data is None or hashlib.sha256(data).hexdigest() != listed[name + suffix]:
            return None  # listed but missing or stale: apt would refuse it too
        return unpack(data).decode("utf-8", "replace")
    return None


def published_sources(read: Reader, suite: str) -> set[tuple[str, str]]:
    """(source package, version) pairs a suite serves, as apt would read them."""
    release = read(f"dists/{suite}/Release")
    if release is None:
        return set()
    listed = {e.path: e.sha256 for e in parse_release_sha256(release.decode("utf-8", "replace"))}
    bases = {re.sub(r"\.(gz|xz)$", "", name) for name in listed}
    served: set[tuple[str, str]] = set()
    for name in sorted(b for b in bases if _INDEX.match(b)):
        text = _index_text(read, suite, name, listed)
        if text is None:
            continue
        for para in parse_paragraphs(text, where=f"dists/{suite}/{name}"):
            if "Package" not in para or "Version" not in para:
                continue
            if name.endswith("/Sources"):
                served.add((para["Package"], para["Version"]))
                continue
            source, _, rest = para.get("Source", para["Package"]).partition(" ")
            version = rest.strip("() ") or para["Version"]
            served.add((source, version))
    return served


def check_embargo(read: Reader, expected: list[Expected]) -> list[Expected]:
    """The expected publications that are not live yet."""
    cache: dict[str, set[tuple[str, str]]] = {}
    missing = []
    for item in expected:
        if item.suite not in cache:
            cache[item.suite] = published_sources(read, item.suite)
        if (item.package, item.version) not in cache[item.suite]:
            missing.append(item)
    return missing


def _describe_missing(missing: list[Expected]) -> str:
    shown = ", ".join(f"{m.suite} ({m.package} {m.version})" for m in missing[:4])
    more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
    return shown + more


def _copy_local_source(
    project: Project, version: Version, repo: Path, *, dry_run: bool
) -> list[str]:
    files = source_files(project, version)
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise ReleaseSourceError(
            f"{absent[0]} does not exist; make it first: invoke make-source-tarball "
            f"--version {version}"
        )
    target = repo / SOURCE_DIR
    copied = [f"{SOURCE_DIR}/{f.name}" for f in files]
    if dry_run:
        return copied
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".tmp-source-") as tmp:
        for f in files:  # the tarball, then its signature, then the checksums: renamed in order
            staged = Path(tmp) / f.name
            shutil.copyfile(f, staged)
            staged.replace(target / f.name)
    return copied


def release_branch(project: Project, version: Version) -> str:
    """``[source] release_branch`` for ``version`` ("" when unset); `~` as in tags."""
    src = project.config.source
    if not src.release_branch:
        return ""
    return src.release_branch.format(
        name=project.name,
        version=version.tag_text(src.tag_tilde),
        major=version.major,
        minor=version.minor,
        release_line=version.release_line(project.config.repositories.release_line),
    )


@dataclass(frozen=True, kw_only=True)
class _Push:
    """What step 3 will do, planned (read-only) before anything is written."""

    gitdir: Path
    public: gitrefs.GitRemote
    plan: gitrefs.RefPlan


def _plan_push(project: Project, version: Version, env: Mapping[str, str]) -> _Push | str:
    """The push of the release tag and branch; a string says why there is none.

    Everything git can refuse is refused here, before any write: the public repository
    being staging itself, a missing tag or branch, a bad signature, a conflict in public,
    an unreachable public repository.
    """
    from releng.source import git_origin

    src = project.config.source
    if not src.public_repository:
        return "no [source] public_repository is set"
    if src.kind != "git":
        return "the source is an upstream URL, not a git repository"
    public = gitrefs.GitRemote(url=src.public_repository, token_env=src.public_token_env)
    gitdir, _ = git_origin(project, src, env)
    if public.same_as(gitrefs.GitRemote(url=str(gitdir))) or public.same_as(
        gitrefs.GitRemote(url=src.repository)
    ):
        raise ReleaseSourceError(
            f"[source] public_repository {public} is the staging repository itself; "
            "name the public repository the release goes to"
        )
    tag = src.tag_for(version)
    if src.tag_keyring:
        keyring = Path(src.tag_keyring)
        signer = gitrefs.verify_tag(
            gitdir, tag, keyring if keyring.is_absolute() else project.root / keyring, env=env
        )
        log.info("tag %s is signed by %s", tag, signer)
    plan = gitrefs.plan_ref_copy(
        gitdir, src.repository, public, tag=tag, branch=release_branch(project, version), env=env
    )
    return _Push(gitdir=gitdir, public=public, plan=plan)


def _hold_embargo(
    read: Reader,
    project: Project,
    version: Version,
    distros: Sequence[str] | None,
    *,
    where: str,
    bucket: bool,
    force: bool,
) -> list[Expected]:
    """Step 1: refuse unless every target suite serves the release (``force``: warn instead)."""
    missing = check_embargo(read, expected_publications(project, version, distros))
    if missing and not force:
        raise ReleaseSourceError(
            f"the embargo holds: {version} is not yet published in {_describe_missing(missing)} "
            f"of {where}; publish the packages first (invoke update-repos --version {version}"
            f"{' --dest ' + where if bucket else ''}), or pass --force to go public anyway"
        )
    for item in missing:
        log.warning(
            "--force: %s goes public although %s %s is not in %s of %s",
            version,
            item.package,
            item.version,
            item.suite,
            where,
        )
    return missing


def publish_release_source(
    project: Project,
    version: Version,
    *,
    env: Mapping[str, str],
    repo: Path,
    dest: Destination | None = None,
    scratch: str = "",
    distros: Sequence[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> ReleaseSourceResult:
    """The three steps of the module docstring; see there. ``distros``: whose suites the
    embargo covers (default: the targets)."""
    if version.is_nightly:
        return ReleaseSourceResult(version=version.text, nightly=True, dry_run=dry_run)
    # Every refusal comes before any write: the push is planned (read-only) first.
    push = _plan_push(project, version, env)
    read = bucket_reader(dest) if dest is not None else local_reader(repo)
    where = str(dest.url) if dest is not None else str(repo)
    missing = _hold_embargo(
        read, project, version, distros, where=where, bucket=dest is not None, force=force
    )

    # 2. The source tarball, its signature and checksums.
    if dest is None:
        copied = _copy_local_source(project, version, repo, dry_run=dry_run)
    elif dry_run:
        copied = [f"{SOURCE_DIR}/{f.name}" for f in source_files(project, version)]
    else:
        copied = publish_source(dest.s3, project, version, scratch=scratch, dest=dest)

    # 3. The tag and the release branch, staging -> public.
    base = ReleaseSourceResult(
        version=version.text, dry_run=dry_run, missing=tuple(missing), copied=tuple(copied)
    )
    if isinstance(push, str):
        result = dataclasses.replace(base, push_skipped=push)
    else:
        plan = push.plan
        pushed = (
            plan.to_push if dry_run else gitrefs.push_refs(push.gitdir, push.public, plan, env=env)
        )
        present = tuple(u for u in plan.updates if u not in plan.to_push)
        result = dataclasses.replace(base, pushed=pushed, present=present)
    if dest is not None and not dry_run:
        _record_release(dest, version, result, None if isinstance(push, str) else push.plan)
    return result


def _record_release(
    dest: Destination,
    version: Version,
    result: ReleaseSourceResult,
    plan: gitrefs.RefPlan | None,
) -> None:
    """Say in the bucket that the release is public (what the AWS publish step's rerun checks)."""
    record = {
        "version": result.version,
        "source": list(result.copied),
        "refs": {u.ref: u.commit for u in plan.updates} if plan is not None else {},
        "missing": [f"{m.suite} {m.package} {m.version}" for m in result.missing],
    }
    dest.s3.put_object(
        Bucket=dest.url.bucket,
        Key=dest.url.key(release_record_key(version.text)),
        Body=json.dumps(record, indent=1).encode(),
        ContentType="application/json",
    )


def describe(result: ReleaseSourceResult, *, public: str) -> list[str]:
    """What the task prints."""
    if result.nightly:
        return [f"{result.version} is a nightly: its source is already public; nothing to push"]
    would = "would " if result.dry_run else ""
    lines = [f"{would}copy {rel}" if result.dry_run else f"copied {rel}" for rel in result.copied]
    for u in result.pushed:
        verb = "push" if result.dry_run else "pushed"
        lines.append(f"{would}{verb} {u.ref} ({u.action.value}, commit {u.commit}) to {public}")
    lines += [f"{u.ref} already at commit {u.commit} in {public}" for u in result.present]
    if result.push_skipped:
        lines.append(f"nothing pushed: {result.push_skipped}")
    return lines
