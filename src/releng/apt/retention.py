"""Suite membership and retention: add members, keep the newest ``keep_versions`` of each
package and drop nightlies past ``nightly_max_age_days``."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

from releng.apt import index as _index
from releng.apt.state import PoolRecord, SuiteState
from releng.apt.steps import RepoBase, Run

log = logging.getLogger(__name__)

NIGHTLY_SUFFIX = "-nightly"  # what releng.version names a nightly's packages
_NIGHTLY_RE = re.compile(r"^(?:\d+:)?(\d{4})\.(\d{2})\.(\d{2})")


class Retention(RepoBase):
    """Members and retention (a part of :class:`~releng.apt.repository.Repository`)."""

    def _add_members(
        self, st: SuiteState, records: Sequence[PoolRecord], now: int, run: Run
    ) -> bool:
        """Add ``records`` to the suite; True when members were replaced (dropped)."""
        new = {
            (r.kind, r.package, r.version, r.arch): r for r in records if r.path not in st.members
        }
        if not new:
            return False
        names = {r.package for r in new.values()}
        replaced = [
            p for p, m in st.members.items() if m[2] in names and (m[1], m[2], m[3], m[4]) in new
        ]
        for path in replaced:
            st.drop(path)  # the same package from another component: replaced
        for r in new.values():
            st.add(r.path, (now, r.kind, r.package, r.version, r.arch))
            run.added.append(r.path)
        return bool(replaced)

    def _retain(self, st: SuiteState) -> bool:
        """Apply keep_versions and the nightly age limit; True when members were dropped."""
        members = st.members
        drop: list[str] = []
        max_age = self.settings.nightly_max_age_days
        if max_age > 0:
            today = self._clock().date()
            drop += [
                path
                for path, m in members.items()
                # Nightlies are the renamed <name>-nightly packages: a release whose version
                # looks like a date (made with --release) keeps its own name, and is kept.
                if m[2].endswith(NIGHTLY_SUFFIX) and _too_old(m[3], today, max_age)
            ]
        keep = self.settings.keep_versions
        # Groups of (kind, package, arch) with more than ``keep`` versions. Package names are
        # counted in C first: in most suites no name has that many members.
        counts = Counter([m[2] for m in members.values()])
        names = {name for name, n in counts.items() if n > keep}
        if names:
            groups: dict[tuple[str, str, str], list[tuple[str, str]]] = defaultdict(list)
            for path, m in members.items():
                if m[2] in names:
                    groups[(m[1], m[2], m[4])].append((path, m[3]))
            for versions in groups.values():
                if len(versions) <= keep:
                    continue
                versions.sort(key=_newest_first)
                drop += [path for path, _v in versions[keep:]]
        for path in drop:
            if st.drop(path):
                log.info("suite %s: retention drops %s", st.name, path)
        return bool(drop)


def _newer(a: tuple[str, str], b: tuple[str, str]) -> int:
    """``(path, version)`` pairs, newest first."""
    return _index.version_compare(b[1], a[1])


_newest_first = functools.cmp_to_key(_newer)


def _too_old(version: str, today: dt.date, max_age: int) -> bool:
    """Whether ``version`` is a nightly (``YYYY.MM.DD...``) more than ``max_age`` days old."""
    m = _NIGHTLY_RE.match(version)
    if not m:
        return False
    try:
        built = dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return False
    return (today - built).days > max_age
