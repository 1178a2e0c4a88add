"""Versions: nightlies are real dates, releases any Debian upstream version; dpkg's order."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import subprocess

import pytest

from releng.config import parse_product
from releng.errors import ConfigError, VersionError
from releng.version import Version, VersionKind, dpkg_compare


def dpkg_lt(a: str, b: str) -> bool:
    """The oracle: dpkg itself."""
    return subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0


def test_nightly_and_release() -> None:
    n = Version.parse("2026.11.22")
    r = Version.parse("4.172.0")
    assert n.kind is VersionKind.NIGHTLY
    assert r.kind is VersionKind.RELEASE and r.release_line() == "4.172"
    assert (r.major, r.minor) == ("4", "172")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("2.10", "2.10"),
        ("1.2.3", "1.2"),
        ("1.2.3~rc1", "1.2"),
        ("5.0+ds1", "5.0"),
        ("2024.1", "2024.1"),
    ],
)
def test_any_upstream_version_is_a_release_with_its_line(text: str, line: str) -> None:
    v = Version.parse(text)
    assert v.is_release and v.text == text
    assert v.release_line() == line


def test_release_line_template_and_a_missing_field() -> None:
    assert Version.parse("7.3.1").release_line("{major}") == "7"
    assert Version.parse("7.3.1").release_line("{major}.{minor}.{patch}") == "7.3.1"
    with pytest.raises(VersionError, match=r"no minor number .* release_line"):
        Version.parse("7").release_line()
    cfg = parse_product(
        '[repositories]\nrelease_line = "{major}"\n', path=None, where="product.toml"
    )
    assert cfg.suites_for(codename="bookworm", distro="d", version=Version.parse("7")) == [
        "bookworm",
        "bookworm-7",
    ]
    with pytest.raises(ConfigError, match="release_line"):
        parse_product('[repositories]\nrelease_line = "{codename}"\n', path=None, where="p")


def test_a_date_shaped_release_needs_release() -> None:
    assert Version.parse("2024.01.15").is_nightly
    assert Version.parse("2024.01.15", release=True).is_release
    assert Version.parse("2024.13.45", release=True).is_release
    with pytest.raises(VersionError, match="--release"):
        Version.parse("2024.13.45")


CASES = [
    "1.2.3~rc1",
    "1.2.3",
    "1.10.0",
    "1.9.0",
    "2.10",
    "2.9",
    "5.0+ds1",
    "5.0",
    "2024.1",
    "1.0~~a",
]


def test_ordering_is_dpkgs() -> None:
    pairs = list(itertools.permutations(CASES, 2))
    for a, b in pairs:
        assert (Version.parse(a) < Version.parse(b)) == dpkg_lt(a, b), (a, b)
    assert [v.text for v in sorted(Version.parse(t) for t in ["1.10.0", "1.2.3", "1.2.3~rc1"])] == [
        "1.2.3~rc1",
        "1.2.3",
        "1.10.0",
    ]
    key = functools.cmp_to_key(dpkg_compare)
    assert sorted(["1.0-1~deb12u1", "1.0-1~deb11u1"], key=key) == ["1.0-1~deb11u1", "1.0-1~deb12u1"]


def test_git_tags_map_tilde() -> None:
    cfg = parse_product('[source]\nrelease_tag = "v{version}"\n', path=None, where="p")
    assert cfg.source.tag_for(Version.parse("1.2.3~rc1")) == "v1.2.3-rc1"
    cfg = parse_product(
        '[source]\nrelease_tag = "v{version}"\ntag_tilde = "_"\n', path=None, where="p"
    )
    assert cfg.source.tag_for(Version.parse("1.2.3~rc1")) == "v1.2.3_rc1"
    with pytest.raises(ConfigError, match="tag_tilde"):
        parse_product('[source]\ntag_tilde = "~"\n', path=None, where="p")
    ok = subprocess.run(
        ["git", "check-ref-format", f"refs/tags/{cfg.source.tag_for(Version.parse('1~rc1'))}"],
        check=False,
    )
    assert ok.returncode == 0


def test_default_is_todays_nightly_in_utc() -> None:
    assert Version.nightly(dt.date(2026, 2, 3)).text == "2026.02.03"
    assert Version.parse_or_nightly(None).text == dt.datetime.now(dt.UTC).strftime("%Y.%m.%d")


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "is empty"),
        ("v1.2.3", "does not start with a digit"),
        ("latest", "does not start with a digit"),
        ("1.2.3-rc1", "'-'"),
        ("1:2.3", "':'"),
        ("1.2_3", "'_'"),
        ("1.2 3", "' '"),
        ("1.2/../3", "path separator"),
        ("1\\2", "path separator"),
        ("2026.13.01", "not a real date"),
        ("2026.02.30", "not a real date"),
    ],
)
def test_bad_versions_are_refused_in_one_line(bad: str, why: str) -> None:
    with pytest.raises(VersionError) as err:
        Version.parse(bad)
    message = str(err.value)
    assert why in message and "\n" not in message
    assert "YYYY.MM.DD" in message and "starts with a digit" in message


def test_bad_characters_are_what_dpkg_refuses() -> None:
    for text in ["1.2_3", "1.2 3", "1.2@3"]:
        dpkg = subprocess.run(
            ["dpkg", "--compare-versions", f"{text}-1", "eq", f"{text}-1"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert "bad syntax" in dpkg.stderr, text
        with pytest.raises(VersionError):
            Version.parse(text)


def test_a_nightly_far_ahead_is_refused_unless_forced() -> None:
    today = dt.date(2026, 11, 30)
    assert Version.requested("2026.12.01", today=today).text == "2026.12.01"  # UTC+14 is there
    with pytest.raises(VersionError, match=r"ahead of today .*--force"):
        Version.requested("9999.12.31", today=today)
    assert Version.requested("9999.12.31", force=True, today=today).is_nightly
    assert Version.requested("9999.12.31", release=True, today=today).is_release
