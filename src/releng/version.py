"""Product versions: nightlies (``YYYY.MM.DD``) and releases (``X.Y.Z``)."""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass

from releng.errors import VersionError

_NIGHTLY = re.compile(r"^(?P<y>\d{4})\.(?P<m>\d{2})\.(?P<d>\d{2})$")
_RELEASE = re.compile(r"^(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)$")


class VersionKind(enum.Enum):
    NIGHTLY = "nightly"
    RELEASE = "release"


@dataclass(frozen=True, order=True)
class Version:
    """A validated product version."""

    text: str
    kind: VersionKind

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``YYYY.MM.DD`` (a real date) or ``X.Y.Z``; anything else is a VersionError."""
        text = text.strip()
        m = _NIGHTLY.fullmatch(text)
        if m:
            try:
                dt.date(int(m["y"]), int(m["m"]), int(m["d"]))
            except ValueError:
                raise VersionError(
                    f"version {text!r} looks like a nightly but is not a real date; "
                    "use YYYY.MM.DD (e.g. 2026.11.22) or X.Y.Z (e.g. 1.2.3)"
                ) from None
            return cls(text, VersionKind.NIGHTLY)
        if _RELEASE.fullmatch(text):
            return cls(text, VersionKind.RELEASE)
        raise VersionError(
            f"version {text!r} is neither a nightly YYYY.MM.DD (e.g. 2026.11.22) "
            "nor a release X.Y.Z (e.g. 1.2.3)"
        )

    @classmethod
    def nightly(cls, today: dt.date | None = None) -> Version:
        """Tonight's nightly: today's date in UTC unless ``today`` is given."""
        day = today or dt.datetime.now(dt.UTC).date()
        return cls(day.strftime("%Y.%m.%d"), VersionKind.NIGHTLY)

    @classmethod
    def parse_or_nightly(cls, text: str | None) -> Version:
        return cls.parse(text) if text else cls.nightly()

    @property
    def is_nightly(self) -> bool:
        return self.kind is VersionKind.NIGHTLY

    @property
    def is_release(self) -> bool:
        return self.kind is VersionKind.RELEASE

    @property
    def major(self) -> str:
        return self.text.split(".")[0]

    @property
    def minor(self) -> str:
        return self.text.split(".")[1]

    @property
    def release_line(self) -> str | None:
        """``X.Y`` for a release (the ``bookworm-X.Y`` suites), None for a nightly."""
        return f"{self.major}.{self.minor}" if self.is_release else None

    def package_name(self, base: str) -> str:
        """``<base>-nightly`` for nightlies (it conflicts with ``<base>``), ``<base>`` otherwise."""
        return f"{base}-nightly" if self.is_nightly else base

    def __str__(self) -> str:
        return self.text
