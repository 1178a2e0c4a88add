"""Versions: nightlies are real dates, releases are X.Y.Z; anything else is refused."""

from __future__ import annotations

import datetime as dt

import pytest

from releng.errors import VersionError
from releng.version import Version, VersionKind


def test_nightly_and_release() -> None:
    n = Version.parse("2026.11.22")
    r = Version.parse("4.172.0")
    assert n.kind is VersionKind.NIGHTLY and n.release_line is None
    assert r.kind is VersionKind.RELEASE and r.release_line == "4.172"
    assert (r.major, r.minor) == ("4", "172")


def test_default_is_todays_nightly_in_utc() -> None:
    assert Version.nightly(dt.date(2026, 2, 3)).text == "2026.02.03"
    assert Version.parse_or_nightly(None).text == dt.datetime.now(dt.UTC).strftime("%Y.%m.%d")


@pytest.mark.parametrize(
    "bad", ["1.2", "v1.2.3", "1.2.3-rc1", "2026.13.01", "2026.02.30", "01.2.3", "", "latest"]
)
def test_bad_versions_are_refused_with_both_forms_named(bad: str) -> None:
    with pytest.raises(VersionError) as err:
        Version.parse(bad)
    assert "YYYY.MM.DD" in str(err.value)
    assert "X.Y.Z" in str(err.value)
