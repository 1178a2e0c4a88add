"""A repository's lifecycle after include: list, copy (promote), remove, history, rollback.

Every change goes through :meth:`Repository.change`: the publisher lock, the state read
after it, members saved with a pending marker, each changed suite republished (by-hash
first, ``InRelease``/``Release`` last, after one syncfs), history recorded, pool garbage
collected. A copy never touches the pool: both suites name the same pool file.

A SPEC is ``name`` or ``name=version``; ``name`` may be a glob (``tally*``, ``*``). ``name`` matches a binary package of that name and
the binaries and source package of a source of that name. Unless ``related`` is false, a
match brings its relatives of the same version: a source package its binaries, a binary its
source package (and the source's other binaries); without them, ``name`` matches only
packages (binary or source) of that name. ``copy`` without a version takes the
newest version the source suite has; ``remove`` without a version takes every version.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from releng.apt import index as _index
from releng.apt.history import Entry, History
from releng.apt.repository import PublishResult, Repository
from releng.apt.state import Member, RepoState, SuiteState
from releng.errors import RepoError

_SPEC_RE = re.compile(r"^([a-z0-9*?\[][a-z0-9+.*?\[\]-]*)(?:=([A-Za-z0-9.+~:_-]+))?$")


class Listed(NamedTuple):
    """One package version in a suite, for ``list-packages``. (NamedTuples, not dataclasses, here:
    ``copy-packages`` runs this module at every start, where the dataclasses import costs.)"""

    suite: str
    package: str
    version: str
    arch: str  # "source" for a source package
    size: int
    added: str  # ISO 8601, UTC
    path: str


class Spec(NamedTuple):
    """``NAME`` or ``NAME=VERSION``; NAME may be a glob."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Spec:
        m = _SPEC_RE.match(text)
        if not m:
            raise RepoError(
                f"{text!r} is not a package SPEC; use NAME or NAME=VERSION (e.g. tally=1.0.0-1; "
                "NAME may be a glob such as 'tally*' or '*')"
            )
        return cls(name=m[1], version=m[2])

    @property
    def is_glob(self) -> bool:
        return any(c in self.name for c in "*?[")

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}={self.version}"


def check_suite_name(suite: str) -> None:
    """Refuse a suite name that could be a path (a slash, ``..``) or is not a suite name."""
    if (
        not suite
        or "/" in suite
        or ".." in suite
        or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+~_-]*", suite)
    ):
        raise RepoError(
            f"suite name {suite!r} is not valid; use letters, digits, '.', '-', '_' "
            "(no '/' and no '..')"
        )


def _existing(state: RepoState, suite: str, root: Path) -> SuiteState:
    check_suite_name(suite)
    suites = state.suites()
    if suite not in suites:
        raise RepoError(
            f"unknown suite {suite!r} in {root}; it has: {', '.join(suites) or 'none'} "
            "(see invoke list-packages)"
        )
    return state.load_suite(suite)


def _source_of(path: str, member: Member) -> str:
    """The source package: a dsc's own name, else the pool directory's (pool/<c>/<p>/<source>/)."""
    return member[2] if member[1] == "dsc" else path.split("/")[3]


def select(
    members: dict[str, Member],
    specs: Sequence[Spec],
    *,
    suite: str,
    newest: bool,
    related: bool = True,
) -> dict[str, Member]:
    """The members ``specs`` name (see the module's docstring); an error when one names none."""
    chosen: dict[str, Member] = {}
    for spec in specs:
        hits = _hits(members, spec, by_source=related)
        if not hits:
            raise RepoError(
                f"{spec} matches nothing in suite {suite!r}; "
                f"see invoke list-packages --dist {suite} --package '{spec.name}*'"
            )
        if newest and spec.version is None:  # the newest version of each package matched
            top: dict[tuple[str, str, str], str] = {}
            for m in hits.values():
                k = (m[1], m[2], m[4])
                if k not in top or _VersionKey(top[k]) < _VersionKey(m[3]):
                    top[k] = m[3]
            hits = {p: m for p, m in hits.items() if top[(m[1], m[2], m[4])] == m[3]}
        chosen.update(hits)
    if related:
        wanted = {(_source_of(p, m), m[3]) for p, m in chosen.items()}
        versions = {v for _s, v in wanted}
        chosen.update(
            {
                p: m
                for p, m in members.items()
                if m[3] in versions and (_source_of(p, m), m[3]) in wanted
            }
        )
    return chosen


def _hits(members: dict[str, Member], spec: Spec, *, by_source: bool) -> dict[str, Member]:
    """The members ``spec`` matches; a plain name without calls per member (10,000 members)."""
    if spec.is_glob:
        return {p: m for p, m in members.items() if _matches(spec, p, m, by_source=by_source)}
    name, version = spec.name, spec.version
    # A binary's source is its pool directory: pool/<component>/<prefix>/<source>/<file>.
    directory = f"/{_index.pool_prefix(name)}/{name}/"
    return {
        p: m
        for p, m in members.items()
        if (m[2] == name or (by_source and directory in p and _source_of(p, m) == name))
        and (version is None or m[3] == version)
    }


def _matches(spec: Spec, path: str, m: Member, *, by_source: bool = True) -> bool:
    """``by_source``: a source's name matches its binaries too."""
    if spec.is_glob:
        named = fnmatch.fnmatchcase(m[2], spec.name) or (
            by_source and fnmatch.fnmatchcase(_source_of(path, m), spec.name)
        )
    else:
        named = m[2] == spec.name or (by_source and _source_of(path, m) == spec.name)
    return named and (spec.version is None or m[3] == spec.version)


class _VersionKey:
    """Debian version order, as a sort key."""

    __slots__ = ("v",)

    def __init__(self, v: str) -> None:
        self.v = v

    def __lt__(self, other: _VersionKey) -> bool:
        return _index.version_compare(self.v, other.v) < 0


# -- read-only ------------------------------------------------------------------------------


def list_packages(root: Path, *, suite: str | None = None, package: str = "") -> list[Listed]:
    """Every member of every suite (or of ``suite``) whose package matches the glob ``package``."""
    state = RepoState(root)
    # Only what apt can see: a suite whose first publish was killed is not there yet.
    published = [s for s in state.suites() if (root / "dists" / s / "InRelease").is_file()]
    if suite and suite not in published and suite in state.suites():
        raise RepoError(
            f"suite {suite!r} in {root} is not published yet (its first publish did not "
            "finish); run `invoke republish-repo` to finish it"
        )
    names = [_existing(state, suite, root).name] if suite else published
    pool = state.pool()
    out: list[Listed] = []
    for name in names:
        for path, m in state.load_suite(name).members.items():
            if package and not fnmatch.fnmatchcase(m[2], package):
                continue
            rec = pool.get(path)
            out.append(
                Listed(
                    suite=name,
                    package=m[2],
                    version=m[3],
                    arch=m[4],
                    size=rec.size if rec is not None else 0,
                    added=dt.datetime.fromtimestamp(m[0], dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    path=path,
                )
            )
    out.sort(key=lambda x: (x.suite, x.package, x.arch, _VersionKey(x.version)))
    return out


def history(root: Path, suite: str) -> list[Entry]:
    """The suite's kept publishes, oldest first."""
    state = RepoState(root)
    _existing(state, suite, root)
    return History(state, suite).entries()


# -- changes --------------------------------------------------------------------------------


def copy(
    repo: Repository,
    *,
    source: str,
    target: str,
    specs: Sequence[Spec],
    all_packages: bool = False,
    related: bool = True,
    dry_run: bool = False,
) -> PublishResult:
    """Copy (promote) packages from suite ``source`` to suite ``target`` and publish it."""
    check_suite_name(target)
    if source == target:
        raise RepoError(f"--from and --to are both {source!r}; name two suites")
    if not specs and not all_packages:
        raise RepoError(
            "name the packages to copy (SPEC: NAME or NAME=VERSION; '*' is every package)"
        )

    def edit(state: RepoState) -> list[SuiteState]:
        src = _existing(state, source, repo.root)
        repo.settings.check_suite(target, existing=state.suites())
        dst = state.load_suite(target)
        chosen = (
            dict(src.members)
            if all_packages
            else select(src.members, specs, suite=source, newest=True, related=related)
        )
        by_key = {(m[1], m[2], m[3], m[4]): p for p, m in dst.members.items()}
        now = int(dt.datetime.now(dt.UTC).timestamp())
        adds: list[tuple[str, Member]] = []
        for path, m in sorted(chosen.items()):
            if path in dst.members:
                continue  # already there: the same pool file
            have = by_key.get((m[1], m[2], m[3], m[4]))
            if have is not None:
                if state.known_sha256(have) != state.known_sha256(path):
                    raise RepoError(
                        f"suite {target!r} already holds {m[2]} {m[3]} ({m[4]}) as {have}, "
                        f"with other content than {path} in {source!r}; remove it from "
                        f"{target!r} first (invoke remove-packages --dist {target} {m[2]}={m[3]}) "
                        "or give the package a new version"
                    )
                continue  # the same bytes under another component: already there
            adds.append((path, (now, m[1], m[2], m[3], m[4])))
        for path, member in adds:
            dst.add(path, member)
        return [dst]

    return repo.change(edit, note=f"copy from {source}", dry_run=dry_run)


def remove(
    repo: Repository,
    *,
    suite: str,
    specs: Sequence[Spec],
    all_packages: bool = False,
    related: bool = True,
    dry_run: bool = False,
) -> PublishResult:
    """Drop packages from ``suite`` and publish it; pool files go when nothing needs them."""
    if not specs and not all_packages:
        raise RepoError(
            "name the packages to remove (SPEC: NAME or NAME=VERSION; '*' is every package)"
        )

    def edit(state: RepoState) -> list[SuiteState]:
        st = _existing(state, suite, repo.root)
        # A rerun of a remove that a kill interrupted finds it done (its publish finished).
        todo = [s for s in specs if not _removed_last(state, suite, s, st.members)]
        if specs and not todo:
            return []
        chosen = (
            list(st.members)
            if all_packages
            else select(st.members, todo, suite=suite, newest=False, related=related)
        )
        for path in chosen:
            st.drop(path)
        return [st]

    return repo.change(edit, note="remove", retain=False, dry_run=dry_run)


def _removed_last(state: RepoState, suite: str, spec: Spec, members: dict[str, Member]) -> bool:
    """Whether ``spec`` matches no member because the suite's last publish removed it."""
    if _hits(members, spec, by_source=True):
        return False
    history = History(state, suite)
    numbers = history.numbers()
    if not numbers:
        return False
    last = history.entry(numbers[-1])
    return last.note == "remove" and any(_matches(spec, p, m) for p, m in last.removed.items())


def rollback(repo: Repository, *, suite: str, to: int, dry_run: bool = False) -> PublishResult:
    """Republish ``suite`` with the members it had at publish ``to`` (a new, freshly signed
    publish: a new Date and Valid-Until, and a new history entry)."""

    def edit(state: RepoState) -> list[SuiteState]:
        st = _existing(state, suite, repo.root)
        target = History(state, suite).members_at(to)
        missing = [p for p in target if state.known_sha256(p) is None]
        if missing:
            raise RepoError(
                f"cannot roll {suite!r} back to publish {to}: the pool no longer has "
                f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
            )
        for path in [p for p in st.members if p not in target]:
            st.drop(path)
        for path, member in target.items():
            if path not in st.members:
                st.add(path, member)  # with the time it was added then
        return [st]

    return repo.change(edit, note=f"rollback to {to}", retain=False, dry_run=dry_run)
