"""Each suite's publishes, numbered, for ``show-history`` and ``rollback-repo``.

Layout, under ``.releng-repo/history/<suite>/`` (synced to S3 with the rest of the state, so
a publisher with an empty disk can roll back)::

    <n>.json        publish n: {"n", "date" (the Release's Date, ISO 8601), "release_sha256",
                    "tag" (of the members file it published), "note", "added", "removed"},
                    where added and removed are what changed since publish n-1, as lists of
                    [pool path, time added, kind, package, version, arch]
    head.members    the members at the newest entry, in the ``.members`` format (a hard
                    link to the members file it published, so it costs no copy)
    next-note.json  what the next entry's change was ("copy from X", "rollback to N"), with
                    the tag of the members it is for

An entry is written after the suite's ``InRelease``/``Release`` switched and before its
pending marker goes: a run killed in between republishes the suite and records it then. A
publish that leaves the members as they were (a re-sign) adds no entry. Entries are written
before ``head.members`` is linked: a ``head.members`` whose tag is not the newest entry's is
the one before it, brought forward with the newest entry's changes.

Members at publish k are the newest members with the changes of k+1..newest undone, so the
pool files that the kept entries need are the current members and what entries after the
oldest kept one removed (:func:`needed_paths`): garbage collection keeps exactly those.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from releng.apt.state import (
    MEMBERS_MAGIC,
    Member,
    RepoState,
    SuiteState,
    dump_members,
    parse_members,
    write_atomic,
)
from releng.deb822 import parse_date, release_field
from releng.errors import RepoError

HEAD = "head.members"
NOTE = "next-note.json"


class Entry(NamedTuple):
    """One publish of a suite that changed its members."""

    n: int
    date: str
    release_sha256: str
    tag: str
    note: str
    added: dict[str, Member]
    removed: dict[str, Member]

    def to_json(self) -> bytes:
        data = {
            "n": self.n,
            "date": self.date,
            "release_sha256": self.release_sha256,
            "tag": self.tag,
            "note": self.note,
            "added": [[p, *m] for p, m in sorted(self.added.items())],
            "removed": [[p, *m] for p, m in sorted(self.removed.items())],
        }
        return json.dumps(data, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, *, where: Path) -> Entry:
        try:
            raw: dict[str, Any] = json.loads(data)

            def members(rows: list[list[Any]]) -> dict[str, Member]:
                return {str(r[0]): (int(r[1]), r[2], r[3], r[4], r[5]) for r in rows}

            return cls(
                n=int(raw["n"]),
                date=str(raw["date"]),
                release_sha256=str(raw["release_sha256"]),
                tag=str(raw["tag"]),
                note=str(raw.get("note", "")),
                added=members(raw["added"]),
                removed=members(raw["removed"]),
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise RepoError(
                f"{where} is corrupt ({exc}); remove it (the suite's history loses that entry)"
            ) from None


class History:
    """One suite's history directory; callers hold the repository lock."""

    def __init__(self, state: RepoState, suite: str) -> None:
        self.state = state
        self.suite = suite
        self.dir = state.dir / "history" / suite

    def numbers(self) -> list[int]:
        """The kept entries' numbers, oldest first."""
        if not self.dir.is_dir():
            return []
        names = [p.name for p in self.dir.iterdir()]
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def entry(self, n: int) -> Entry:
        path = self.dir / f"{n}.json"
        return Entry.from_json(path.read_bytes(), where=path)

    def entries(self) -> list[Entry]:
        return [self.entry(n) for n in self.numbers()]

    def head(self, newest: Entry | None) -> dict[str, Member]:
        """The members at the newest entry."""
        if newest is None:
            return {}
        try:
            tag, members = parse_members((self.dir / HEAD).read_bytes())
        except FileNotFoundError:
            tag, members = None, {}
        except ValueError as exc:
            raise RepoError(f"{self.dir / HEAD} is corrupt ({exc})") from None
        if (tag or b"").hex() != newest.tag:
            # Killed after the newest entry was written, before its head was linked.
            for path in newest.added:
                members.pop(path, None)
            members.update(newest.removed)
        return members

    def members_at(self, n: int) -> dict[str, Member]:
        """The suite's members as publish ``n`` published them."""
        numbers = self.numbers()
        if n not in numbers:
            kept = f"{numbers[0]} to {numbers[-1]}" if numbers else "none"
            raise RepoError(
                f"suite {self.suite!r} has no publish {n} in its history (kept: {kept}); "
                f"see invoke show-history --dist {self.suite}"
            )
        newer = [self.entry(k) for k in numbers if k >= n]
        members = self.head(newer[-1])
        for e in reversed(newer[1:]):  # undo n+1 .. newest
            for path in e.added:
                members.pop(path, None)
            members.update(e.removed)
        return members

    def record(
        self,
        st: SuiteState,
        *,
        release: bytes,
        keep: int,
        crash: Callable[[str], None] = lambda _p: None,
    ) -> Entry | None:
        """Add an entry for the publish that just switched, when it changed the members."""
        tag = (st.saved_tag or b"").hex()
        note = self._read_note(tag)
        numbers = self.numbers()
        newest_tag = self._peek_tag(numbers[-1]) if numbers else None
        if newest_tag is not None and tag and newest_tag == tag:
            self._link_head(st)  # recorded by a run killed before it linked the head
            return None
        delta = self._delta_from_run(st, newest_tag) if newest_tag is not None else None
        if delta is None:  # compare every member with the newest entry's
            before = self.head(self.entry(numbers[-1]) if numbers else None)
            members = st.members
            added = {p: m for p, m in members.items() if before.get(p) != m}
            removed = {p: m for p, m in before.items() if members.get(p) != m}
        else:
            added, removed = delta
        if numbers and not added and not removed:
            return None
        entry = Entry(
            n=numbers[-1] + 1 if numbers else 1,
            date=_release_date(release),
            release_sha256=hashlib.sha256(release).hexdigest(),
            tag=tag,
            note=note,
            added=added,
            removed=removed,
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / f"{entry.n}.json", entry.to_json())
        crash("history-written")
        self._link_head(st)
        (self.dir / NOTE).unlink(missing_ok=True)
        kept = [*numbers, entry.n]
        pruned = kept[:-keep] if keep > 0 else []
        if pruned and (keep < 2 or self.entry(kept[-keep]).removed):
            # The new oldest entry's removals are needed no longer (see needed_paths).
            self.state.mark_gc_needed()
            self.state.history_freed = True
        for old in pruned:
            (self.dir / f"{old}.json").unlink(missing_ok=True)
        return entry

    def _peek_tag(self, n: int) -> str | None:
        """Entry ``n``'s members tag, from its first bytes (a first entry may list 10,000)."""
        path = self.dir / f"{n}.json"
        with path.open("rb") as f:
            m = re.search(rb'"tag":"([0-9a-f]*)"', f.read(512))
        return m[1].decode() if m else self.entry(n).tag

    def _delta_from_run(
        self, st: SuiteState, newest_tag: str
    ) -> tuple[dict[str, Member], dict[str, Member]] | None:
        """What changed since the newest entry, from what this run added and dropped, when the
        run read the members that entry published (else None). Only the changed members'
        lines of ``head.members`` are read, not all of them."""
        try:
            data = (self.dir / HEAD).read_bytes()
        except FileNotFoundError:
            return None
        first = data[: data.find(b"\n")]
        head_tag = first[len(MEMBERS_MAGIC) :].decode() if first.startswith(MEMBERS_MAGIC) else None
        if head_tag != newest_tag or st.tag is None or st.tag.hex() != head_tag:
            return None

        def before(path: str) -> Member | None:
            start = data.find(b"\n" + path.encode() + b"\t")
            if start < 0:
                return None
            end = data.find(b"\n", start + 1)
            _tag, one = parse_members(first + data[start:end] + b"\n")
            return one.get(path)

        added: dict[str, Member] = {}
        removed: dict[str, Member] = {}
        for path in st.added:
            now = st.members.get(path)
            old = before(path)
            if now is not None and now != old:
                added[path] = now
                if old is not None:
                    removed[path] = old
        for path in st.dropped:
            old = before(path)
            if old is not None and path not in st.members:
                removed[path] = old
        return added, removed

    def set_note(self, note: str) -> None:
        """What the next entry says the change was (``copy from X``, ``rollback to N``), for
        the members just saved (the note names their tag: it outlives a killed run, and
        never labels another change)."""
        st = self.state.load_suite(self.suite)
        if not note or st.saved_tag is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(
            self.dir / NOTE, json.dumps({"tag": st.saved_tag.hex(), "note": note}).encode()
        )

    def _read_note(self, tag: str) -> str:
        try:
            data = json.loads((self.dir / NOTE).read_bytes())
        except (OSError, ValueError):
            return ""
        return (
            str(data.get("note", "")) if isinstance(data, dict) and data.get("tag") == tag else ""
        )

    def _link_head(self, st: SuiteState) -> None:
        """``head.members``: the members file just published (a hard link), else a copy."""
        head = self.dir / HEAD
        tmp = head.with_name(f".{HEAD}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(self.state.suite_path(st.name), tmp)
        except OSError:
            write_atomic(head, dump_members(st.saved_tag, st.members))
            return
        tmp.replace(head)
        # rename(2) does nothing when both names are links to one file (head was already this
        # members file): the temporary name would stay behind.
        tmp.unlink(missing_ok=True)

    def needed_paths(self) -> set[str]:
        """Pool paths that kept entries other than the newest members need (see the docstring)."""
        out: set[str] = set()
        for n in self.numbers()[1:]:
            with contextlib.suppress(FileNotFoundError):
                out.update(self.entry(n).removed)
        return out


def needed_paths(state: RepoState) -> set[str]:
    """Every pool path some suite's kept history needs beyond its current members."""
    out: set[str] = set()
    base = state.dir / "history"
    if base.is_dir():
        for d in base.iterdir():
            if d.is_dir():
                out |= History(state, d.name).needed_paths()
    return out


def _release_date(release: bytes) -> str:
    """The Release's ``Date`` field, as ISO 8601 in UTC."""
    value = release_field(release, "Date")
    when = None if value is None else parse_date(value)
    return "" if when is None else when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
