"""repo tasks: include packages into signed apt suites, update them from builds, check them."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from releng.cli import Context, out, out_json, project, task
from releng.version import Version

DEFAULT_REPO = "out/repo"


def _repo_dir(c: Context, repo: str) -> Path:
    path = Path(repo or DEFAULT_REPO)
    return path if path.is_absolute() else project(c).root / path


@task(
    help={
        "path": "a .deb, .dsc, .changes (with the files it lists) or a directory of them",
        "also": "another such path (repeatable)",
        "dist": "the suite to add them to, e.g. bookworm or bookworm-1.2",
        "repo": f"the repository directory (default {DEFAULT_REPO})",
        "component": "the component (default: the first in product.toml)",
        "url": "the URL clients will use, for the printed .sources snippet",
        "link": "hard-link the files into the pool instead of copying them (only for files "
        "that are replaced, never rewritten in place)",
    },
    iterable=["also"],
)
def repo_include(  # noqa: PLR0917  (invoke passes task arguments positionally)
    c: Context,
    path: str,
    dist: str,
    repo: str = "",
    component: str = "",
    also: list[str] | None = None,
    url: str = "",
    link: bool = False,
) -> None:
    """Add packages to an apt suite and publish it signed."""
    from releng import apt, gpg

    proj = project(c)
    root = _repo_dir(c, repo)
    signer = gpg.signer_for(proj, os.environ, release=False)
    paths = [Path(p) for p in [path, *(also or [])]]
    result = apt.include(
        root,
        apt.settings_for(proj),
        signer,
        suites=[dist],
        paths=paths,
        component=component or None,
    )
    out(f"{dist}: {len(result.added)} new package file(s); {len(result.written)} file(s) written")
    _snippets(proj.name, root, url, {dist: [dist]}, list(apt.settings_for(proj).components))


@task(
    help={
        "version": "the version whose builds to include (default: tonight's nightly)",
        "release": "VERSION is a release even though it looks like a date (YYYY.MM.DD)",
        "repo": f"the repository directory (default {DEFAULT_REPO})",
        "url": "the URL clients will use, for the printed .sources snippet",
        "dest": "publish to s3://BUCKET/PREFIX instead: builds come from the scratch bucket, "
        "then ordered sync, index pages, CloudFront (see releng.publish)",
    }
)
def update_repos(  # noqa: PLR0917  (invoke maps each parameter to a --flag)
    c: Context,
    version: str = "",
    repo: str = "",
    url: str = "",
    dest: str = "",
    release: bool = False,
) -> None:
    """Include every distro's build output for a version into the suites product.toml names."""
    from releng import apt, gpg

    proj = project(c)
    ver = Version.parse_or_nightly(version or None, release=release)
    if dest:
        from releng.publish import flows as publish

        done = publish.update_repos_to(proj, os.environ, version=ver, dest=dest)
        for distro, suites in done.included.items():
            out(f"{distro}: {', '.join(suites)}")
        for line in publish.describe(done.publish):
            out(line)
        out(f"removed {done.scratch_deleted} published object(s) from scratch")
        return
    root = _repo_dir(c, repo)
    signer = gpg.signer_for(proj, os.environ, release=ver.is_release)
    results = apt.update_repos(proj, signer, version=ver, repo=root)
    for distro, result in results.items():
        out(f"{distro}: {', '.join(result.suites)} ({len(result.added)} new package file(s))")
    clients = {distro: list(result.suites) for distro, result in results.items()}
    _snippets(proj.name, root, url, clients, proj.config.repositories.components)


@task(
    help={
        "repo": f"the repository directory (default {DEFAULT_REPO})",
        "dist": "the suite to republish (repeatable; default: every suite)",
    },
    iterable=["dist"],
)
def repo_publish(c: Context, repo: str = "", dist: list[str] | None = None) -> None:
    """Republish suites: apply retention, re-sign (a fresh Date and Valid-Until), finish a killed run."""
    from releng import apt, gpg

    proj = project(c)
    root = _repo_dir(c, repo)
    signer = gpg.signer_for(proj, os.environ, release=False)
    repository = apt.Repository(root, apt.settings_for(proj), signer)
    result = repository.publish(dist or None)
    out(
        f"republished {', '.join(result.suites) or 'nothing'}; {len(result.removed)} file(s) removed"
    )


@task(
    help={
        "repo": f"the repository directory (default {DEFAULT_REPO})",
        "keyring": "the public keyring to verify with (default: the one in the repository)",
        "json": "print the report as one JSON object (problems, warnings, suites, files checked)",
    }
)
def repo_check(c: Context, repo: str = "", keyring: str = "", json: bool = False) -> None:
    """Verify every signature, checksum and referenced file of a repository."""
    from releng import apt
    from releng.errors import RepoError

    root = _repo_dir(c, repo)
    report = apt.check_repository(root, keyring=Path(keyring) if keyring else None)
    if json:
        out_json({"repository": str(root), "ok": not report.problems, **asdict(report)})
    else:
        for warning in report.warnings:
            out(f"warning: {warning}")
        for problem in report.problems:
            out(f"problem: {problem}")
    if report.problems:
        raise RepoError(f"{root}: {len(report.problems)} problem(s) found (listed above)")
    if not json:
        out(
            f"{root}: {len(report.suites)} suite(s), {report.files_checked} file(s) verified, all good"
        )


def _snippets(
    name: str, root: Path, url: str, clients: dict[str, list[str]], components: list[str]
) -> None:
    """Per kind of client (a distro), a .sources naming one suite: a machine runs one
    release; the other suites it could follow instead are named after it."""
    from releng import apt

    out(f"public key: {root / f'{name}-archive-keyring.gpg'} (and .asc)")
    for client, suites in clients.items():
        out(f"clients on {client}: /etc/apt/sources.list.d/{name}.sources")
        out(
            apt.sources_snippet(
                name=name,
                url=url or root.resolve().as_uri(),
                suites=suites[:1],
                components=components,
            ).rstrip("\n")
        )
        if suites[1:]:
            out(f"(or, in Suites, one of: {', '.join(suites[1:])})")
