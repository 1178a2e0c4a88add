"""repo tasks: include packages into signed apt suites, update them from builds, check them;
list, copy (promote), remove, history and rollback."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from releng.cli import Context, out, out_json, project, task
from releng.version import Version

if TYPE_CHECKING:
    from releng.project import Project
    from releng.rebuild.check import AttestationReport

_REPO = "DIR or s3://BUCKET/PREFIX: the repository (default: [repositories] location in product.toml, else out/repo)"
_DEST_GONE = "gone: use --repo s3://BUCKET/PREFIX"


def _location(proj: Project, repo: str, dest: str = "") -> Any:
    """The repository ``--repo`` names (a RepoLocation); ``--dest`` is refused with the new way."""
    from releng.errors import RepoError
    from releng.publish.location import RepoLocation

    if dest:
        raise RepoError(
            f"--dest is gone: the repository is --repo, a directory or s3://BUCKET/PREFIX "
            f"(here: --repo {dest!r})"
        )
    return RepoLocation.of(proj, repo)


def _check_url(url: str) -> None:
    """``--url`` goes into the printed .sources snippet: one line, no control characters."""
    from releng.errors import RepoError
    from releng.textcheck import check_one_line

    check_one_line(
        url,
        what="--url",
        error=RepoError,
        advice="pass the URL clients use without control characters, e.g. https://example.org/apt",
    )


@task(
    help={
        "path": "a .deb, .dsc, .changes (with the files it lists) or a directory of them",
        "also": "another such path (repeatable)",
        "dist": "the suite to add them to, e.g. bookworm or bookworm-1.2",
        "repo": _REPO,
        "component": "the component (default: the first in product.toml)",
        "url": "the URL clients will use, for the printed .sources snippet",
        "link": "hard-link the files into the pool instead of copying them (only for files "
        "that are replaced, never rewritten in place)",
    },
    iterable=["also"],
)
def include_packages(  # noqa: PLR0917  (invoke passes task arguments positionally)
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
    from releng.publish.location import open_repository

    _check_url(url)
    proj = project(c)
    location = _location(proj, repo)
    signer = gpg.signer_for(proj, os.environ, release=False)
    paths = [Path(p) for p in [path, *(also or [])]]
    settings = apt.settings_for(proj)  # it reads every distro directory: once
    with open_repository(proj, location, signer=signer, link_inputs=link, url=url) as opened:
        result = apt.include(
            opened.root,
            settings,
            signer,
            suites=[dist],
            paths=paths,
            component=component or None,
            link=link,
        )
    out(f"{dist}: {len(result.added)} new package file(s); {len(result.written)} file(s) written")
    _published(opened)
    _snippets(proj, location, url, {dist: [dist]}, list(settings.components))


@task(
    help={
        "version": "the version whose builds to include (default: tonight's nightly)",
        "release": "VERSION is a release even though it looks like a date (YYYY.MM.DD)",
        "repo": _REPO + "; on S3 the builds come from [publish] scratch_bucket when it is set",
        "url": "the URL clients will use, for the printed .sources snippet",
        "dest": _DEST_GONE,
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
    from releng import gpg
    from releng.publish import location as locations

    _check_url(url)
    proj = project(c)
    location = _location(proj, repo, dest)
    ver = Version.parse_or_nightly(version or None, release=release)
    signer = gpg.signer_for(proj, os.environ, release=ver.is_release)
    done = locations.update_repos(proj, signer, version=ver, location=location, url=url)
    for distro, result in done.results.items():
        out(f"{distro}: {', '.join(result.suites)} ({len(result.added)} new package file(s))")
    if done.published is not None:
        from releng.publish import flows

        for line in flows.describe(done.published):
            out(line)
    if location.is_s3 and proj.config.publish.scratch_bucket:
        out(f"removed {done.scratch_deleted} published object(s) from scratch")
    clients = {distro: list(result.suites) for distro, result in done.results.items()}
    _snippets(proj, location, url, clients, proj.config.repositories.components)


@task(
    help={
        "repo": _REPO,
        "dist": "the suite to republish (repeatable; default: every suite)",
    },
    iterable=["dist"],
)
def republish_repo(c: Context, repo: str = "", dist: list[str] | None = None) -> None:
    """Republish suites: apply retention, re-sign (a fresh Date and Valid-Until), finish a killed run."""
    from releng import gpg
    from releng.publish.location import open_repository

    proj = project(c)
    signer = gpg.signer_for(proj, os.environ, release=False)
    with open_repository(proj, _location(proj, repo), signer=signer) as opened:
        result = opened.repository().publish(dist or None)
    out(
        f"republished {', '.join(result.suites) or 'nothing'}; {len(result.removed)} file(s) removed"
    )
    _published(opened)


@task(
    help={
        "repo": _REPO + " (on S3 every file is downloaded to be checked)",
        "keyring": "the public keyring to verify with (default: the one in the repository)",
        "json": "print the report as one JSON object (problems, warnings, suites, files checked)",
        "attestations": "also check each package's rebuild attestation against the rebuilder "
        "key of [verify] (docs/rebuild.md): a bad one fails; a missing one fails when [verify] "
        'rebuild = "require"',
    }
)
def check_repo(
    c: Context, repo: str = "", keyring: str = "", json: bool = False, attestations: bool = False
) -> None:
    """Verify every signature, checksum and referenced file of a repository."""
    from releng import apt
    from releng.errors import RepoError
    from releng.publish.location import open_repository

    proj = project(c)
    location = _location(proj, repo)
    attested = None
    with open_repository(proj, location, read_only=True, with_pool=True) as opened:
        report = apt.check_repository(
            opened.root,
            keyring=Path(keyring) if keyring else None,
            warn_days=proj.config.signing.warn_days,
        )
        if attestations:
            attested = _check_attestations(proj, opened.root)
    problems = list(report.problems)
    unverified_fails = proj.config.verify.rebuild == "require"
    if attested is not None:
        problems += [f"attestation: {line}" for line in attested.bad]
        if unverified_fails:
            problems += [f"unverified: {line}" for line in attested.unverified]
    if json:
        out_json(
            {
                "repository": str(location),
                "ok": not problems,
                **asdict(report),
                "problems": problems,
                **({"attestations": asdict(attested)} if attested is not None else {}),
            }
        )
    else:
        for warning in report.warnings:
            out(f"warning: {warning}")
        for line in [] if attested is None or unverified_fails else attested.unverified:
            out(f"unverified: {line}")
        for problem in problems:
            out(f"problem: {problem}")
    if problems:
        raise RepoError(f"{location}: {len(problems)} problem(s) found (listed above)")
    if not json:
        out(
            f"{location}: {len(report.suites)} suite(s), {report.files_checked} file(s) verified, all good"
            + (
                f"; counted per suite, {len(attested.verified)} package(s) rebuilt and attested, "
                f"{len(attested.unverified)} unverified"
                if attested is not None
                else ""
            )
        )


def _check_attestations(proj: Project, root: Path) -> AttestationReport:
    """check-repo --attestations: against the public key of the rebuilder [verify] names."""
    import tempfile

    from releng.rebuild import rebuilder_signer
    from releng.rebuild.check import check_attestations
    from releng.rebuild.policy import not_rebuilt

    signer = rebuilder_signer(proj, os.environ)
    with tempfile.TemporaryDirectory(prefix="releng-rebuilder-") as tmp:
        keyring = Path(tmp) / "rebuilder.gpg"
        keyring.write_bytes(signer.public_keys())
        return check_attestations(root, keyring=keyring, exempt=not_rebuilt(proj))


_LIFE_HELP = {
    "repo": _REPO,
    "dest": _DEST_GONE,
    "dry_run": "show what would change, change nothing",
    "json": "print JSON",
    "spec": "NAME or NAME=VERSION, several separated by commas or spaces; NAME may be a glob: "
    "'*' is every package",
    "no_related": "only the packages named: not a source's binaries, nor a binary's source",
}


def _life_help(*names: str, **more: str) -> dict[str, str]:
    return {**{n: _LIFE_HELP[n] for n in names}, **more}


def _specs(spec: str) -> list[Any]:
    from releng.apt.lifecycle import Spec

    return [Spec.parse(s) for s in spec.replace(",", " ").split()]


def _lifecycle(
    c: Context,
    *,
    repo: str,
    dest: str,
    dry_run: bool,
    operate: Callable[[Any], Any],
) -> Any:
    """Run ``operate(repository)`` on the repository ``--repo`` names, wherever it lives;
    print what changed. Returns the apt library's result."""
    from releng import gpg
    from releng.publish.location import open_repository

    proj = project(c)
    location = _location(proj, repo, dest)
    signer = gpg.signer_for(proj, os.environ, release=False)
    with open_repository(proj, location, signer=signer, dry_run=dry_run) as opened:
        result = operate(opened.repository())
    _report(result, dry_run=dry_run)
    _published(opened)
    return result


def _published(opened: Any) -> None:
    """What the sync to S3 did, when the repository lives there."""
    if opened.published is not None:
        from releng.publish import flows

        for line in flows.describe(opened.published):
            out(line)


def _report(result: Any, *, dry_run: bool) -> None:
    if not result.suites:
        out("nothing to do: the suites already hold that")
        return
    would = "would " if dry_run else ""
    for path in result.added:
        out(f"{would}add {path.rsplit('/', 1)[-1]}")
    if dry_run:
        for path in result.removed:
            out(f"{would}drop {path.rsplit('/', 1)[-1]}")
        out(f"would republish {', '.join(result.suites)}")
        return
    out(
        f"republished {', '.join(result.suites)}; {len(result.written)} file(s) written, "
        f"{len(result.removed)} removed"
    )


def _read_root(proj: Project, repo: str, dest: str) -> Path:
    """The repository's directory for reading: itself, or its state pulled from S3."""
    from releng.publish.location import open_repository

    with open_repository(proj, _location(proj, repo, dest), read_only=True) as opened:
        return opened.root


@task(
    help=_life_help(
        "repo",
        "dest",
        "json",
        dist="only this suite (default: every suite)",
        package="only packages whose name matches this glob, e.g. 'tally*'",
    )
)
def list_packages(  # noqa: PLR0917  (invoke passes task arguments positionally)
    c: Context,
    dist: str = "",
    package: str = "",
    repo: str = "",
    dest: str = "",
    json: bool = False,
) -> None:
    """List each suite's packages: version, architecture, size, when it was added (and, with
    [verify] rebuild on or attestations published, whether a rebuild verified it)."""
    from releng.apt import lifecycle
    from releng.rebuild.policy import (
        UNVERIFIED,
        not_rebuilt,
        rebuild_statuses,
        show_rebuild_status,
    )

    proj = project(c)
    root = _read_root(proj, repo, dest)
    rows = lifecycle.list_packages(root, suite=dist or None, package=package)
    statuses = rebuild_statuses(root) if show_rebuild_status(proj, root) else None
    exempt = not_rebuilt(proj)

    def status(r: Any) -> str:
        if statuses is None or r.arch == "source" or r.package in exempt:
            return ""
        return statuses.get(r.path, UNVERIFIED)

    if json:
        out_json(
            [
                {**r._asdict(), **({"rebuild": status(r)} if statuses is not None else {})}
                for r in rows
            ]
        )
        return
    for r in rows:
        line = f"{r.suite:<20} {r.package:<28} {r.version:<24} {r.arch:<8} {r.size:>10}  {r.added}"
        out(f"{line}  {status(r)}".rstrip())
    out(f"{len(rows)} package file(s)")


@task(
    help=_life_help(
        "repo",
        "dest",
        "dry_run",
        "spec",
        "no_related",
        from_="the suite to copy from, e.g. bookworm-staging",
        to="the suite to copy to (re-signed), e.g. bookworm",
    ),
)
def copy_packages(  # noqa: PLR0917  (invoke passes task arguments positionally)
    c: Context,
    spec: str,
    from_: str = "",
    to: str = "",
    no_related: bool = False,
    repo: str = "",
    dest: str = "",
    dry_run: bool = False,
) -> None:
    """Promote packages from one suite to another without rebuilding (the pool file is shared)."""
    from releng.apt import lifecycle
    from releng.errors import RepoError

    if not from_ or not to:
        raise RepoError("name both suites: --from SUITE --to SUITE")
    specs = _specs(spec)
    _lifecycle(
        c,
        repo=repo,
        dest=dest,
        dry_run=dry_run,
        operate=lambda r: lifecycle.copy(
            r,
            source=from_,
            target=to,
            specs=specs,
            related=not no_related,
            dry_run=dry_run,
        ),
    )


@task(
    help=_life_help(
        "repo", "dest", "dry_run", "spec", "no_related", dist="the suite to remove from"
    ),
)
def remove_packages(  # noqa: PLR0917  (invoke passes task arguments positionally)
    c: Context,
    spec: str,
    dist: str = "",
    no_related: bool = False,
    repo: str = "",
    dest: str = "",
    dry_run: bool = False,
) -> None:
    """Drop packages from a suite; pool files go when no suite and no kept history entry needs them."""
    from releng.apt import lifecycle
    from releng.errors import RepoError

    if not dist:
        raise RepoError("name the suite: --dist SUITE")
    specs = _specs(spec)
    _lifecycle(
        c,
        repo=repo,
        dest=dest,
        dry_run=dry_run,
        operate=lambda r: lifecycle.remove(
            r, suite=dist, specs=specs, related=not no_related, dry_run=dry_run
        ),
    )


@task(help=_life_help("repo", "dest", "json", dist="the suite"))
def show_history(
    c: Context, dist: str = "", repo: str = "", dest: str = "", json: bool = False
) -> None:
    """A suite's publishes, numbered: date, what changed, the Release's sha256."""
    from releng.apt import lifecycle
    from releng.errors import RepoError

    if not dist:
        raise RepoError("name the suite: --dist SUITE")
    entries = lifecycle.history(_read_root(project(c), repo, dest), dist)
    if json:
        rows = [
            {
                "n": e.n,
                "date": e.date,
                "release_sha256": e.release_sha256,
                "note": e.note,
                "added": [
                    {"path": p, "package": m[2], "version": m[3], "arch": m[4]}
                    for p, m in sorted(e.added.items())
                ],
                "removed": [
                    {"path": p, "package": m[2], "version": m[3], "arch": m[4]}
                    for p, m in sorted(e.removed.items())
                ],
            }
            for e in entries
        ]
        out_json(rows)
        return
    shown = 10
    for e in entries:
        note = f"  ({e.note})" if e.note else ""
        out(f"{e.n:>4}  {e.date}  Release sha256 {e.release_sha256}{note}")
        changes = [("+", m) for m in e.added.values()] + [("-", m) for m in e.removed.values()]
        changes.sort(key=lambda x: (x[1][2], x[1][3], x[1][4], x[0]))
        for sign, m in changes[:shown]:
            out(f"        {sign} {m[2]} {m[3]} {m[4]}")
        if len(changes) > shown:
            out(f"        ... and {len(changes) - shown} more (--json lists all)")
    if not entries:
        out(f"{dist}: no publishes recorded yet")


@task(
    help=_life_help(
        "repo", "dest", "dry_run", dist="the suite", to="the publish number (see show-history)"
    )
)
def rollback_repo(  # noqa: PLR0917  (invoke passes task arguments positionally)
    c: Context, dist: str = "", to: int = 0, repo: str = "", dest: str = "", dry_run: bool = False
) -> None:
    """Republish a suite with the packages it had at an earlier publish (freshly signed)."""
    from releng.apt import lifecycle
    from releng.errors import RepoError

    if not dist or to < 1:
        raise RepoError("name the suite and the publish: --dist SUITE --to N (see show-history)")
    _lifecycle(
        c,
        repo=repo,
        dest=dest,
        dry_run=dry_run,
        operate=lambda r: lifecycle.rollback(r, suite=dist, to=to, dry_run=dry_run),
    )


def _snippets(
    proj: Any, location: Any, url: str, clients: dict[str, list[str]], components: list[str]
) -> None:
    """Per kind of client (a distro), the commands that install from one suite
    (:func:`releng.keyring_package.install_instructions`, as the front page shows them): a
    machine runs one release; the other suites it could follow instead are named after it."""
    from releng import keyring_package
    from releng.digest import file_sha256

    name = proj.name
    keyring = f"{name}-archive-keyring.gpg"
    if location.path is not None:
        key: str = str(location.path / keyring)
        url = keyring_package.client_url(proj, location.path, url)
        sha256 = file_sha256(location.path / keyring) if Path(key).is_file() else ""
    else:
        key = f"{location.url}/{keyring}"
        url = url or proj.config.publish.public_url or "https://PUBLIC-URL-OF-THE-BUCKET"
        sha256 = ""
    out(f"public key: {key} (and .asc)")
    recorded = keyring_package.recorded_urls(location.path) if location.path is not None else {}
    for client, suites in clients.items():
        carries = location.path is None or keyring_package.suite_carries(
            location.path, suites[0], name
        )
        out(f"clients on {client}: run as root")
        out(
            keyring_package.install_instructions(
                name=name,
                url=recorded.get(suites[0], url),  # what the suite's keyring package names
                suite=suites[0],
                components=components,
                sha256=sha256,
                with_package=carries,
            ).rstrip("\n")
        )
        if suites[1:]:
            out(f"(or, in Suites, one of: {', '.join(suites[1:])})")
