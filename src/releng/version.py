"""Product versions: nightlies (``YYYY.MM.DD``) and releases (any Debian upstream version).

A release is any upstream version of Debian's shape that starts with a digit:
``2.10``, ``1.2.3``, ``1.2.3~rc1``, ``5.0+ds1``, ``2024.1``. releng adds the
Debian revision itself, so ``-`` (the revision separator) and ``:`` (the epoch)
are not part of it. Versions compare as dpkg compares them
(``1.2.3~rc1 < 1.2.3 < 1.10.0``), never as text.

A version shaped like a date (``YYYY.MM.DD``) is a nightly unless the caller
says it is a release (``--release``): upstreams that number releases by date
then say so explicitly.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re
from dataclasses import dataclass

from releng.errors import VersionError

_NIGHTLY = re.compile(r"(?P<y>\d{4})\.(?P<m>\d{2})\.(?P<d>\d{2})")  # fullmatch
# dpkg's upstream_version alphabet, without '-' and ':' (releng adds the revision, no epoch).
_UPSTREAM = re.compile(r"[0-9][A-Za-z0-9.+~]*")  # fullmatch
_NUMBERS = re.compile(r"^(?P<major>\d+)(?:\.(?P<minor>\d+))?(?:\.(?P<patch>\d+))?")
_FORMS = (
    "use a nightly YYYY.MM.DD (e.g. 2026.11.22) or a release: an upstream version that "
    "starts with a digit, then letters, digits, '.', '+' or '~' (e.g. 2.10, 1.2.3~rc1, 5.0+ds1)"
)
DEFAULT_RELEASE_LINE = "{major}.{minor}"
RELEASE_LINE_FIELDS = frozenset({"major", "minor", "patch", "version"})
# A nightly dated later than this many days after today (UTC) is refused without --force.
NIGHTLY_DAYS_AHEAD = 1


class VersionKind(enum.Enum):
    NIGHTLY = "nightly"
    RELEASE = "release"


def dpkg_compare(a: str, b: str) -> int:
    """<0, 0, >0 as Debian version ``a`` sorts before, equal to or after ``b`` (dpkg's rules)."""
    from debian.debian_support import Version as DebianVersion  # 0.1 s: only when comparing

    return (DebianVersion(a) > DebianVersion(b)) - (DebianVersion(a) < DebianVersion(b))


def _refuse(text: str, why: str) -> VersionError:
    return VersionError(f"version {text!r} {why}; {_FORMS}")


@functools.total_ordering
@dataclass(frozen=True, eq=True)
class Version:
    """A validated product version; ordered as dpkg orders versions."""

    text: str
    kind: VersionKind

    @classmethod
    def parse(cls, text: str, *, release: bool = False) -> Version:
        """A nightly (a real date ``YYYY.MM.DD``) or a release; anything else is a VersionError.

        ``release``: the text is a release even when it looks like a date.
        """
        text = text.strip()
        if not text:
            raise _refuse(text, "is empty")
        if "/" in text or "\\" in text:
            raise _refuse(text, "contains a path separator")
        if not text[0].isdigit():
            raise _refuse(text, "does not start with a digit")
        bad = sorted({c for c in text if not (c.isascii() and (c.isalnum() or c in ".+~"))})
        if bad:
            raise _refuse(text, f"contains {' '.join(repr(c) for c in bad)}, which is not allowed")
        assert _UPSTREAM.fullmatch(text)  # what the checks above leave
        m = _NIGHTLY.fullmatch(text)
        if m and not release:
            try:
                dt.date(int(m["y"]), int(m["m"]), int(m["d"]))
            except ValueError:
                raise _refuse(
                    text,
                    "looks like a nightly but is not a real date (a release shaped like a "
                    "date needs --release)",
                ) from None
            return cls(text, VersionKind.NIGHTLY)
        return cls(text, VersionKind.RELEASE)

    @classmethod
    def nightly(cls, today: dt.date | None = None) -> Version:
        """Tonight's nightly: today's date in UTC unless ``today`` is given."""
        day = today or dt.datetime.now(dt.UTC).date()
        return cls(day.strftime("%Y.%m.%d"), VersionKind.NIGHTLY)

    @classmethod
    def parse_or_nightly(cls, text: str | None, *, release: bool = False) -> Version:
        if text:
            return cls.parse(text, release=release)
        if release:
            raise VersionError("--release needs --version: name the release to build")
        return cls.nightly()

    @classmethod
    def requested(
        cls,
        text: str | None,
        *,
        release: bool = False,
        force: bool = False,
        today: dt.date | None = None,
    ) -> Version:
        """A version asked for on the command line of a task that makes something.

        Like :meth:`parse_or_nightly`, and a nightly more than a day ahead of today (UTC)
        is refused unless ``force``: it would sort above every real nightly for years.
        """
        version = cls.parse_or_nightly(text, release=release)
        if version.is_nightly and not force:
            day = today or dt.datetime.now(dt.UTC).date()
            ahead = (version.date - day).days
            if ahead > NIGHTLY_DAYS_AHEAD:
                raise VersionError(
                    f"nightly {version} is {ahead} days ahead of today ({day:%Y.%m.%d} UTC); "
                    "omit --version for tonight's nightly, or pass --force to make it anyway"
                )
        return version

    @property
    def date(self) -> dt.date:
        """A nightly's date."""
        if not self.is_nightly:
            raise VersionError(f"version {self.text} is a release, not a dated nightly")
        y, m, d = (int(x) for x in self.text.split("."))
        return dt.date(y, m, d)

    @property
    def is_nightly(self) -> bool:
        return self.kind is VersionKind.NIGHTLY

    @property
    def is_release(self) -> bool:
        return self.kind is VersionKind.RELEASE

    def _number(self, part: str) -> str:
        m = _NUMBERS.match(self.text)
        return (m[part] or "") if m else ""

    @property
    def major(self) -> str:
        """The leading number (``1`` of ``1.2.3~rc1``)."""
        return self._number("major")

    @property
    def minor(self) -> str:
        """The second number when there is one (``2`` of ``1.2.3~rc1``), else empty."""
        return self._number("minor")

    @property
    def patch(self) -> str:
        """The third number when there is one (``3`` of ``1.2.3~rc1``), else empty."""
        return self._number("patch")

    def release_line(self, template: str = DEFAULT_RELEASE_LINE) -> str:
        """The release line (``1.2`` of ``1.2.3``; the ``bookworm-1.2`` suites) of a release.

        ``template`` uses {major}, {minor}, {patch} and {version}; a field the version does
        not have is a VersionError naming what to set instead.
        """
        if not self.is_release:
            raise VersionError(f"nightly {self.text} has no release line")
        values = {"major": self.major, "minor": self.minor, "patch": self.patch}
        for name in sorted(set(re.findall(r"{(\w*)}", template)) & set(values)):
            if not values[name]:
                raise VersionError(
                    f"release {self.text} has no {name} number for the release line "
                    f"{template!r}; set [repositories] release_line, e.g. '{{major}}'"
                )
        return template.format(version=self.text, **values)

    def tag_text(self, tilde: str = "-") -> str:
        """The version as it appears in a git tag: git refuses ``~``, which becomes ``tilde``."""
        return self.text.replace("~", tilde)

    def package_name(self, base: str) -> str:
        """``<base>-nightly`` for nightlies (it conflicts with ``<base>``), ``<base>`` otherwise."""
        return f"{base}-nightly" if self.is_nightly else base

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return dpkg_compare(self.text, other.text) < 0

    def __str__(self) -> str:
        return self.text
