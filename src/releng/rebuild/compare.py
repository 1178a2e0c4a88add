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
    the first path in the package's data (``usr/bin/x``), else in its control archive
    (``md5sums``), else a path from a differing file list (only metadata differs), else
    the first differing member (``control.tar.xz``)."""
    data_paths: list[str] = []
    control_paths: list[str] = []
    members: list[str] = []
    in_data = False
    for line in diffoscope_text.splitlines():
        m = _MEMBER_RE.match(line)
        if not m:
            continue
        name = m[1].strip()
        if not line.startswith(("│", " ")):  # a member of the .deb itself
            in_data = name.startswith("data.tar")
        members.append(name)
        if name.startswith("./") and len(name) > 2:
            (data_paths if in_data else control_paths).append(name[2:])
    if data_paths or control_paths:
        return (data_paths or control_paths)[0]
    for line in diffoscope_text.splitlines():
        listed = _LISTED_RE.match(line)
        if listed:
            return str(listed[1])[2:]
    return next((m for m in members if m != "file list"), "the package's ar members")
