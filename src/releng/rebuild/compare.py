"""Byte-for-byte comparison of two builds' packages, and what diffoscope says differs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from releng.digest import file_sha256

BINARY_SUFFIXES = (".deb", ".udeb", ".ddeb")
# diffoscope --text nests members with "├── ": a path inside a package's data.tar starts "./".
_MEMBER_RE = re.compile(r"^[│ ]*├── (.+)$")
_LISTED_RE = re.compile(r"^[│ ]*[-+](?:[-dlcbps][-rwxsStT]{9}).*\s(\./\S+)")


@dataclass(frozen=True, kw_only=True)
class Comparison:
    name: str
    first_sha256: str
    rebuilt_sha256: str | None  # None: the rebuild made no such package

    @property
    def identical(self) -> bool:
        return self.first_sha256 == self.rebuilt_sha256


def compare_packages(first: dict[str, Path], rebuilt_dir: Path) -> list[Comparison]:
    """Each of the first build's packages against the rebuild's of the same name."""
    results = []
    for name, path in sorted(first.items()):
        other = rebuilt_dir / name
        results.append(
            Comparison(
                name=name,
                first_sha256=file_sha256(path),
                rebuilt_sha256=file_sha256(other) if other.is_file() else None,
            )
        )
    return results


def first_difference(diffoscope_text: str) -> str:
    """The first file inside the package that diffoscope's text report shows differing:
    the first member path (``./usr/bin/x``); else a path from a differing file list
    (only metadata differs); else the first differing member (``control.tar.xz``)."""
    members = []
    for line in diffoscope_text.splitlines():
        m = _MEMBER_RE.match(line)
        if m:
            members.append(m[1].strip())
    for member in members:
        if member.startswith("./"):
            return member[2:] or member
    for line in diffoscope_text.splitlines():
        m = _LISTED_RE.match(line)
        if m:
            return m[1][2:]
    skipped = {"file list"}
    return next((m for m in members if m not in skipped), "the package's ar members")
