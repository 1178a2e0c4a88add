"""Planning a sync, as plain data: the local tree to publish, what to upload in which
phase, what to delete once the grace period has passed, and which directories' index
pages changed. Pure except :func:`scan_tree`, which reads the tree."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from releng.digest import file_sha256
from releng.errors import PublishError
from releng.publish.layout import INDEX_PAGE, STATE, STATE_SKIP, FileClass, classify
from releng.publish.manifest import Intent, Manifest


@dataclass(frozen=True)
class LocalFile:
    path: Path
    sha256: str
    size: int


def scan_tree(root: Path, *, state_dir: str | None = None) -> dict[str, LocalFile]:
    """Every file to publish under ``root``, by path relative to the destination prefix.

    Names starting with a dot (temporary files, the repository's state directory)
    are not published, except ``state_dir`` (a top-level dot-directory of
    ``root``), which goes to ``.releng/state/``. Symlinks are followed; a
    dangling one is an error.
    """
    if not root.is_dir():
        raise PublishError(f"{root} is not a directory; pass the repository directory (--repo)")
    found: dict[str, LocalFile] = {}

    def add(base: Path, path: Path, rel_prefix: str) -> None:
        for child in sorted(path.iterdir()):
            if child.name.startswith(".") or child.name == INDEX_PAGE:
                continue
            if rel_prefix and path == base and child.name in STATE_SKIP:
                continue
            if child.is_dir():
                add(base, child, rel_prefix)
            elif child.is_file():
                rel = rel_prefix + child.relative_to(base).as_posix()
                stat = child.stat()
                found[rel] = LocalFile(child, file_sha256(child), stat.st_size)
            else:
                raise PublishError(f"{child} is neither a file nor a directory (dangling link?)")

    add(root, root, "")
    if state_dir:
        state = root / state_dir
        if state.is_dir():
            add(state, state, f"{STATE}/")
    return found


@dataclass(frozen=True)
class Upload:
    rel: str
    cls: FileClass
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True)
class SyncPlan:
    """What one sync does, as data (shown by --dry-run, executed by :func:`apply_plan`)."""

    uploads: tuple[Upload, ...]
    deletes: tuple[str, ...]  # due now: unreferenced for longer than the grace period
    kept: dict[str, str]  # path -> sha256: unreferenced, still within the grace period
    already_pending: dict[str, str]  # of `kept`: path -> since (the rest start now)
    desired: dict[str, str]  # path -> sha256 of the tree being published
    carried: dict[str, str] = field(default_factory=dict)  # a dead run's intent, not yet settled

    @property
    def empty(self) -> bool:
        return not self.uploads and not self.deletes

    def phases(self) -> list[tuple[FileClass, list[Upload]]]:
        by_class: dict[FileClass, list[Upload]] = {}
        for up in self.uploads:
            by_class.setdefault(up.cls, []).append(up)
        return [(cls, by_class[cls]) for cls in sorted(by_class)]

    def describe(self) -> list[str]:
        lines = [f"upload {len(ups)} {cls.name.lower()} file(s)" for cls, ups in self.phases()]
        if self.deletes:
            lines.append(f"delete {len(self.deletes)} unreferenced object(s)")
        if self.kept:
            lines.append(
                f"keep {len(self.kept)} unreferenced object(s) until the grace period ends"
            )
        return lines or ["nothing to do: the bucket is up to date"]


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


def _parse_iso(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)


def plan_sync(
    local: Mapping[str, LocalFile],
    manifest: Manifest,
    intent: Intent | None,
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    remote: Mapping[str, str] | None = None,
) -> SyncPlan:
    """Pure: compare the tree with the manifest (and a dead run's intent).

    ``remote``: path -> sha256 of files the repository has that are not on the local
    disk (a publisher that pulled only the state and ``dists/``): they must already be
    in the bucket with that content, and they are kept.
    """
    kept_remote: dict[str, str] = {}
    for rel, sha in (remote or {}).items():
        if rel in local:
            continue
        have = manifest.files.get(rel)
        if have is None or have not in ("", sha):
            raise PublishError(
                f"the repository names {rel} (sha256 {sha}) but it is neither on the local disk "
                "nor, with that content, in the bucket; publish from a full copy of the repository"
            )
        kept_remote[rel] = have or sha
    uploads = tuple(
        sorted(
            (
                Upload(rel, classify(rel), f.sha256, f.size)
                for rel, f in local.items()
                if manifest.files.get(rel) != f.sha256
            ),
            key=lambda u: (u.cls, u.rel),
        )
    )
    # Objects that may exist: the manifest's, and those a dead run announced.
    maybe: dict[str, str] = dict(intent.files) if intent else {}
    maybe.update(manifest.files)
    unreferenced = {
        rel: sha for rel, sha in maybe.items() if rel not in local and rel not in kept_remote
    }
    deletes: list[str] = []
    kept: dict[str, str] = {}
    already: dict[str, str] = {}
    for rel, sha in sorted(unreferenced.items()):
        since = manifest.pending.get(rel)
        if since is not None and _parse_iso(since) + grace <= now:
            deletes.append(rel)
        else:
            kept[rel] = sha
            if since is not None:
                already[rel] = since
    return SyncPlan(
        uploads=uploads,
        deletes=tuple(deletes),
        kept=kept,
        already_pending=already,
        desired={**kept_remote, **{rel: f.sha256 for rel, f in local.items()}},
        carried={
            r: s for r, s in (intent.files if intent else {}).items() if r not in manifest.files
        },
    )


def dirty_directories(old: Iterable[str], new: Iterable[str], changed: Iterable[str]) -> set[str]:
    """Pure: directories (relative, '' for the root) whose listing differs between two key sets.

    A directory is dirty when a file directly in it was added, removed or changed,
    or when a sub-directory appeared or disappeared.
    """

    def dirs_of(paths: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for p in paths:
            parent = PurePosixPath(p).parent
            while True:
                out.add("" if str(parent) == "." else str(parent))
                if str(parent) in (".", ""):
                    break
                parent = parent.parent
        return out

    def parent_of(p: str) -> str:
        parent = str(PurePosixPath(p).parent)
        return "" if parent == "." else parent

    dirty = {parent_of(p) for p in changed}
    old_dirs, new_dirs = dirs_of(old), dirs_of(new)
    for d in old_dirs ^ new_dirs:
        if d:
            dirty.add(parent_of(d))
    return dirty
