"""``.changes`` and ``.dsc`` files: parse (signed or not), list their files, verify checksums.

Signatures on these files are not checked here: what goes into a repository is
decided by whoever runs the include, and the repository is signed afterwards.
Every listed file must exist beside the control file with the listed size and
SHA256 (MD5 when a file lists nothing stronger).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from releng.apt.debfile import hash_file
from releng.deb822 import listed_files, parse_paragraph, strip_signature
from releng.errors import BadPackageError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1 / 5.6.7
VERSION_RE = re.compile(r"^(?:[0-9]+:)?[0-9A-Za-z][0-9A-Za-z.+~-]*$")


class FileRef(NamedTuple):
    name: str
    size: int
    sha256: str
    md5: str


class SourcePackage(NamedTuple):
    """A .dsc and the files it lists, all verified."""

    dsc: Path
    fields: dict[str, str]
    dsc_ref: FileRef
    files: tuple[FileRef, ...]  # without the .dsc itself

    @property
    def name(self) -> str:
        return self.fields["Source"]

    @property
    def version(self) -> str:
        return self.fields["Version"]


def read_control_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadPackageError(f"cannot read {path}: {exc}") from None
    return parse_paragraph(strip_signature(text), where=str(path))


def checked_name(value: str, *, what: str, where: str) -> str:
    """A package or source name that is safe as a path component, else BadPackageError."""
    if not NAME_RE.fullmatch(value):
        raise BadPackageError(
            f"{where}: {what} {value!r} is not a valid Debian package name "
            "(lower-case letters, digits, '+', '-', '.'; no '/' or '..' at the start)"
        )
    return value


def checked_version(value: str, *, where: str) -> str:
    if not VERSION_RE.fullmatch(value):
        raise BadPackageError(f"{where}: version {value!r} is not a valid Debian version")
    return value


def _file_lists(fields: dict[str, str], *, where: str) -> dict[str, dict[str, tuple[int, str]]]:
    """name -> {"sha256"|"md5": (size, digest)} from Checksums-Sha256 and Files."""
    out: dict[str, dict[str, tuple[int, str]]] = {}
    for key, algo in (("Checksums-Sha256", "sha256"), ("Files", "md5")):
        for f in listed_files(fields, key, where=where):
            out.setdefault(f.name, {})[algo] = (f.size, f.digest)
    if not out:
        raise BadPackageError(f"{where}: lists no files (no Checksums-Sha256 or Files field)")
    return out


def verify_listed(control: Path, fields: dict[str, str]) -> list[FileRef]:
    """Check every file that ``fields`` lists exists beside ``control`` with its checksums."""
    refs = []
    for name, sums in _file_lists(fields, where=str(control)).items():
        path = control.parent / name
        if not path.is_file():
            raise BadPackageError(f"{control} lists {name}, which is missing beside it")
        size, sha256, md5 = hash_file(path)
        for algo, (want_size, want) in sums.items():
            got = sha256 if algo == "sha256" else md5
            if size != want_size or got != want:
                raise BadPackageError(
                    f"{path}: checksum mismatch with {control.name} ({algo} {got}, size {size}; "
                    f"listed {want}, size {want_size}); the file changed after the build: rebuild"
                )
        refs.append(FileRef(name=name, size=size, sha256=sha256, md5=md5))
    return refs


def read_changes(path: Path) -> list[Path]:
    """The files a .changes lists (checksums verified), as paths beside it."""
    fields = read_control_file(path)
    return [path.parent / ref.name for ref in verify_listed(path, fields)]


def read_dsc(path: Path) -> SourcePackage:
    fields = read_control_file(path)
    where = str(path)
    for key in ("Source", "Version"):
        if not fields.get(key):
            raise BadPackageError(f"{where}: has no {key} field; it is not a source control file")
    checked_name(fields["Source"], what="source name", where=where)
    checked_version(fields["Version"], where=where)
    files = verify_listed(path, fields)
    size, sha256, md5 = hash_file(path)
    return SourcePackage(
        dsc=path,
        fields=fields,
        dsc_ref=FileRef(name=path.name, size=size, sha256=sha256, md5=md5),
        files=tuple(files),
    )
