"""Debian control data as every part of releng reads it: deb822 paragraphs (``.changes``,
``.dsc``, ``.buildinfo``, Release and index stanzas), clearsigned texts, the file lists
in them (``Checksums-Sha256``, ``Files``) and their RFC 2822 dates (a Release's ``Date``
and ``Valid-Until``).

Standard library only: the Lambda handlers use it too (see releng.aws.deploy's
LAMBDA_MODULES). The control file inside a ``.deb`` is read by
:func:`releng.apt.debfile.parse_control`, as dpkg reads it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import NamedTuple

from releng.errors import BadPackageError

_FIELD_RE = re.compile(r"^([!-9;-~][!-9;-~]*):[ \t]*(.*)$")  # deb822 field names: no ':' or space
_FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~_-]*$")


def parse_paragraph(text: str, *, where: str) -> dict[str, str]:
    """One deb822 paragraph as an ordered dict; continuation lines are kept verbatim."""
    fields: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t":
            if last is None:
                raise BadPackageError(f"{where}: a continuation line comes before any field")
            fields[last] += "\n" + line.rstrip()
            continue
        if line.startswith("#"):
            continue
        m = _FIELD_RE.match(line)
        if not m:
            raise BadPackageError(f"{where}: malformed control line {line[:60]!r}")
        last = m.group(1)
        fields[last] = m.group(2).rstrip()
    return fields


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def parse_paragraphs(text: str, *, where: str, containing: str = "") -> list[dict[str, str]]:
    """Every paragraph of a deb822 text (an index's stanzas, a debian/control), in order;
    with ``containing``, only those whose text holds it, found before any is parsed (one
    package's stanzas out of 10,000 in a few ms, not the 100 ms of parsing them all)."""
    if containing not in text:
        return []
    blocks = _PARAGRAPH_BREAK.split(text)
    return [parse_paragraph(b, where=where) for b in blocks if containing in b and b.strip()]


def strip_signature(text: str) -> str:
    """The signed body of a clearsigned text (or the text itself when it is not signed)."""
    if not text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return text
    body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    body = body.split("\n-----BEGIN PGP SIGNATURE-----", 1)[0]
    return "\n".join(ln[2:] if ln.startswith("- ") else ln for ln in body.split("\n"))


class Listed(NamedTuple):
    """One line of a file list: ``Checksums-Sha256`` (sha256), ``Files`` (md5)."""

    digest: str  # lower-case hex
    size: int
    name: str  # a plain file name: no directory, never ".."


def listed_files(fields: Mapping[str, str], key: str, *, where: str) -> list[Listed]:
    """The files the field ``key`` lists (none when it is absent), each line
    ``DIGEST SIZE NAME`` (``Files`` in a ``.dsc`` and ``.changes`` also carries section
    and priority before the name); BadPackageError, in one line, for a malformed line or
    a name that is not a plain file name."""
    out: list[Listed] = []
    for line in fields.get(key, "").splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise BadPackageError(f"{where}: malformed {key} line {line.strip()!r}")
        digest, size, name = parts[0], parts[1], parts[-1]
        if not _FILENAME_RE.fullmatch(name) or ".." in name:
            raise BadPackageError(f"{where}: {key} names {name!r}, which is not a plain file name")
        try:
            out.append(Listed(digest.lower(), int(size), name))
        except ValueError:
            raise BadPackageError(
                f"{where}: malformed size in {key} line {line.strip()!r}"
            ) from None
    return out


# -- Release files ---------------------------------------------------------------------------------


class IndexEntry(NamedTuple):
    """A file a Release lists under SHA256."""

    path: str  # relative to dists/<suite>/
    size: int
    sha256: str


_RELEASE_FILE_RE = re.compile(r"^ ([0-9a-f]{64}) +(\d+) (\S+)$")


def parse_release_sha256(text: str) -> list[IndexEntry]:
    """The files the SHA256 field of a Release text lists (lines of any other shape are
    passed over: ``invoke check-repo`` reports them)."""
    out: list[IndexEntry] = []
    in_section = False
    for line in text.splitlines():
        if not line.startswith(" "):
            in_section = line.rstrip() == "SHA256:"
            continue
        if in_section:
            m = _RELEASE_FILE_RE.match(line)
            if m:
                out.append(IndexEntry(path=m.group(3), size=int(m.group(2)), sha256=m.group(1)))
    return out


# -- dates -----------------------------------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc1123(when: dt.datetime) -> str:
    """``Sun, 22 Nov 2026 01:02:03 UTC``: locale-independent, as apt expects."""
    u = when.astimezone(dt.UTC)
    return f"{_DAYS[u.weekday()]}, {u.day:02d} {_MONTHS[u.month - 1]} {u.year} {u:%H:%M:%S} UTC"


def parse_date(text: str) -> dt.datetime | None:
    """An RFC 2822 date, as apt reads a Release's ``Date`` and ``Valid-Until`` (one without
    a zone is UTC); None when ``text`` is not one. What :func:`rfc1123` writes is read
    without loading email.utils (5 ms: one publish reads a date at least once)."""
    parts = text.split()
    if len(parts) == 6 and parts[2] in _MONTHS and parts[5] == "UTC":
        try:
            hour, minute, second = map(int, parts[4].split(":"))
            month = _MONTHS.index(parts[2]) + 1
            return dt.datetime(
                int(parts[3]), month, int(parts[1]), hour, minute, second, tzinfo=dt.UTC
            )
        except ValueError:
            pass  # the general parser below says what it is
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def release_field(release: bytes, name: str) -> str | None:
    """The value of the one-line field ``name`` in a Release text (None when it has none);
    found without splitting the text, which may list thousands of files."""
    key = name.encode() + b":"
    if release.startswith(key):
        start = 0
    else:
        at = release.find(b"\n" + key)
        if at < 0:
            return None
        start = at + 1
    end = release.find(b"\n", start)
    line = release[start : end if end >= 0 else len(release)]
    return line[len(key) :].strip().decode("utf-8", "replace")
