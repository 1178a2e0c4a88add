"""Read what an index needs from a ``.deb``: its control paragraph, size and SHA256.

The file is read once, front to back, in large chunks: every chunk goes through
SHA256, and the ar archive's ``control.tar.*`` member is picked out of the
first chunk(s) on the way. Only that member is decompressed (gzip, xz, zstd or
none); ``data.tar`` is hashed, never unpacked.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import stat
import subprocess
import zlib
from pathlib import Path
from typing import NamedTuple

from releng.errors import BadPackageError

CHUNK = 1 << 20  # 1 MiB reads: few syscalls, and hashlib drops the GIL on each
HEAD = 64 << 10
_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60


class DebInfo(NamedTuple):
    path: str
    control: dict[str, str]  # field -> value (multi-line values keep their "\n " continuations)
    size: int
    sha256: str
    source: str  # the source package name (``Source`` without a version in parentheses)

    @property
    def package(self) -> str:
        return self.control["Package"]

    @property
    def version(self) -> str:
        return self.control["Version"]

    @property
    def architecture(self) -> str:
        return self.control["Architecture"]


def not_a_file(path: Path) -> str:
    """What stands at ``path`` instead of a regular file, as the end of a sentence about it:
    ``does not exist``, ``is a FIFO (named pipe), not a file``, ..."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist" + (" (a dangling symlink)" if path.is_symlink() else "")
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"is {kind}, not a file"


_SPACE = " \t\n\v\f\r"  # C's isspace() in the C locale, as dpkg's parser uses it
_MSDOS_EOF = "\x1a"


# A field name runs to the first space, colon or MSDOS EOF; the blanks around its colon are
# _SPACE without the newline. Matched by regular expressions (in C): a character loop here
# was the largest part of reading a small package.
_NAME_RUN = re.compile(r"[^ \t\n\v\f\r:\x1a]*")
_BLANKS = re.compile(r"[ \t\v\f\r]*")


def _field_name(text: str, pos: int, line: int) -> tuple[str, int]:
    """A field's name and the offset after its colon and the spaces that follow it."""
    n = len(text)
    m = _NAME_RUN.match(text, pos)  # both patterns match the empty string: never None
    end = m.end() if m else pos
    name = text[pos:end]
    if not name:
        raise ValueError(f"line {line}: empty field name")
    if name.startswith("-"):
        raise ValueError(f"line {line}: field name {name!r} cannot start with hyphen")
    m = _BLANKS.match(text, end)
    pos = m.end() if m else end
    if pos >= n or text[pos] != ":":
        what = "end of file after" if pos >= n else "no colon after"
        raise ValueError(f"line {line}: {what} field name {name!r}")
    m = _BLANKS.match(text, pos + 1)
    pos = m.end() if m else pos + 1
    if pos >= n - 1:  # dpkg reads one character past the colon's spaces, and needs more
        raise ValueError(
            f"line {line}: end of file before the value of {name!r} (no final newline)"
        )
    return name, pos


def _value_end(text: str, pos: int, line: int, name: str) -> tuple[int, int, int]:
    """(end of the value, offset after it, line number there): its line and continuations."""
    n = len(text)
    while True:
        end = text.find("\n", pos)
        if end < 0:
            raise ValueError(
                f"line {line}: end of file in the value of {name!r} (no final newline)"
            )
        line += 1
        pos = end + 1
        if pos >= n or text[pos] == "\n" or text[pos] not in _SPACE:
            return end, pos, line
        next_end = text.find("\n", pos)
        if not text[pos : next_end if next_end >= 0 else n].strip(_SPACE):
            raise ValueError(f"line {line}: blank line in the value of field {name!r}")


def _dpkg_stanza(text: str) -> tuple[list[tuple[str, str]], int]:
    """The fields of the first stanza as dpkg's parser reads them (lib/dpkg/parse.c), and
    the offset after it; ValueError saying why when dpkg rejects the text."""
    pos, n, line = 0, len(text), 1
    while pos < n and text[pos] in "\n" + _MSDOS_EOF:  # blank lines before the stanza
        line += text[pos] == "\n"
        pos += 1
    fields: list[tuple[str, str]] = []
    while pos < n:
        name, value_start = _field_name(text, pos, line)
        end, pos, line = _value_end(text, value_start, line, name)
        fields.append((name, text[value_start:end].rstrip(_SPACE)))
        if pos >= n or text[pos] == "\n":
            break
    return fields, pos


def parse_control(text: str, *, where: str) -> dict[str, str]:
    """A binary package's control file, read as dpkg reads it, else BadPackageError.

    dpkg refuses what apt and a plain deb822 reader would pass: a field twice (any case:
    the second ``Package`` would name the package), a blank line inside the fields (a
    second stanza), a line that is no field, a field name starting with '-', a value
    that does not end in a newline. Continuation lines keep their leading space.
    """
    common = _common_control(text)
    return common if common is not None else _dpkg_control(text, where=where)


def _dpkg_control(text: str, *, where: str) -> dict[str, str]:
    """:func:`parse_control` for any text: dpkg's parser, step by step."""
    try:
        fields, end = _dpkg_stanza(text)
        if text[end:].strip("\n" + _MSDOS_EOF):
            raise ValueError("a blank line inside the fields: dpkg finds a second stanza")
    except ValueError as exc:
        raise BadPackageError(
            f"{where}: dpkg cannot read it ({exc}); fix the control file and rebuild the package"
        ) from None
    seen: dict[str, str] = {}
    for name, _ in fields:
        if name.lower() in seen:
            raise BadPackageError(
                f"{where}: the field {name} is there twice (dpkg refuses it: duplicate value "
                "for a field); fix the control file and rebuild the package"
            )
        seen[name.lower()] = name
    return {
        name: "\n".join(ln.rstrip(_SPACE) for ln in value.split("\n")) for name, value in fields
    }


# The shape of nearly every control file: each line a field (a name of letters, digits and
# '-', its value starting on that line) or a continuation of one with more than blanks on it,
# then nothing but newlines. dpkg's parser reads such a text as one stanza of exactly these
# fields; regular expressions read it in C, 3 times faster than the loop above.
_COMMON_CONTROL = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9-]*:[ \t]*[^ \t\n\v\f\r][^\n]*\n"
    r"(?:[ \t][ \t\v\f\r]*[^ \t\n\v\f\r][^\n]*\n)*)+\n*"  # one way to match: linear
)
_COMMON_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*([^\n]*(?:\n[ \t][^\n]*)*)\n", re.M)


def _common_control(text: str) -> dict[str, str] | None:
    """What :func:`parse_control` returns for a text of the common shape (each field once);
    None for any other text, which the faithful parser reads (and refuses, saying why)."""
    if _COMMON_CONTROL.fullmatch(text) is None:
        return None
    pairs = _COMMON_FIELD.findall(text)
    if len({name.lower() for name, _ in pairs}) != len(pairs):
        return None
    return {
        name: "\n".join(ln.rstrip(_SPACE) for ln in value.split("\n"))
        if "\n" in value
        else value.rstrip(_SPACE)
        for name, value in pairs
    }


def _decompress(member: str, data: bytes, *, where: str) -> bytes:
    try:
        if member.endswith(".gz"):
            return zlib.decompress(data, wbits=47)  # gzip or zlib header, auto-detected
        if member.endswith(".xz"):
            return lzma.decompress(data)
        if member.endswith(".zst"):
            return _unzstd(data, where=where)
        if member == "control.tar":
            return data
    except (zlib.error, lzma.LZMAError) as exc:
        raise BadPackageError(
            f"{where}: {member} is corrupt ({exc}); rebuild the package"
        ) from None
    raise BadPackageError(f"{where}: unsupported control member {member!r}")


def _unzstd(data: bytes, *, where: str) -> bytes:
    exe = shutil.which("zstd")
    if exe is None:
        raise BadPackageError(
            f"{where}: its control.tar is zstd-compressed and no `zstd` program is installed; "
            "install zstd (apt-get install zstd)"
        )
    proc = subprocess.run([exe, "-dc"], input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        raise BadPackageError(
            f"{where}: control.tar.zst is corrupt: {proc.stderr.decode().strip()}"
        )
    return proc.stdout


def control_from_tar(tar: bytes, *, where: str) -> str:
    """The ``./control`` file of an (uncompressed) control.tar, parsed by hand: no tarfile."""
    pos = 0
    long_name: str | None = None
    while pos + 512 <= len(tar):
        header = tar[pos : pos + 512]
        if header == b"\0" * 512:
            break
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        if prefix and header[257:262] == b"ustar":
            name = prefix + "/" + name
        try:
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            raise BadPackageError(
                f"{where}: control.tar has a corrupt header; build or download it again"
            ) from None
        kind = header[156:157]
        body = tar[pos + 512 : pos + 512 + size]
        if kind == b"L":  # GNU long name for the next entry
            long_name = body.split(b"\0", 1)[0].decode("utf-8", "replace")
        else:
            if long_name is not None:
                name, long_name = long_name, None
            if kind in (b"0", b"\0") and name.removeprefix("./") == "control":
                return body.decode("utf-8", "replace")
        pos += 512 + (size + 511) // 512 * 512
    raise BadPackageError(f"{where}: control.tar has no ./control file; rebuild the package")


class _Tee:
    """A sha256 that also writes what it is given to a file descriptor."""

    def __init__(self, fd: int) -> None:
        self._sha = hashlib.sha256()
        self._fd = fd

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def read_deb(path: str | Path, *, copy_to: int | None = None) -> DebInfo:  # noqa: PLR0912, PLR0915  (one pass over the ar archive)
    """Control paragraph, size and SHA256 of the .deb at ``path``; BadPackageError if it is not one.

    ``copy_to``: a file descriptor that gets every byte as it is read and hashed (one read
    pass both copies the package and hashes exactly the bytes of the copy).
    """
    where = os.fspath(path)
    digest = _Tee(copy_to) if copy_to is not None else hashlib.sha256()
    try:
        f = open(path, "rb", buffering=0)  # noqa: PTH123, SIM115  (raw reads, closed below)
    except OSError as exc:
        raise BadPackageError(f"cannot read {where}: {exc.strerror}") from None
    with f:
        # A small first read: most .debs' control member is in their first few KiB, and
        # asking for 1 MiB would allocate (and fault in) 1 MiB for every small package.
        head = f.read(HEAD)
        digest.update(head)
        buf = bytearray(head)
        if not head.startswith(_AR_MAGIC):
            raise BadPackageError(
                f"{where} is not a Debian package (no ar archive magic); build or download it again"
            )
        pos = len(_AR_MAGIC)
        control: str | None = None
        eof = len(head) < HEAD
        while control is None:
            while len(buf) < pos + _AR_HEADER and not eof:
                more = f.read(CHUNK)
                eof = len(more) < CHUNK
                digest.update(more)
                buf += more
            if len(buf) < pos + _AR_HEADER:
                break
            header = bytes(buf[pos : pos + _AR_HEADER])
            if header[58:60] != b"`\n":
                raise BadPackageError(
                    f"{where}: corrupt ar member header at byte {pos}; build or download it again"
                )
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            try:
                size = int(header[48:58].decode("ascii").strip())
            except ValueError:
                raise BadPackageError(
                    f"{where}: corrupt ar member size at byte {pos}; build or download it again"
                ) from None
            start = pos + _AR_HEADER
            if name.startswith("control.tar"):
                while len(buf) < start + size and not eof:
                    more = f.read(max(CHUNK, start + size - len(buf)))
                    eof = len(more) == 0
                    digest.update(more)
                    buf += more
                if len(buf) < start + size:
                    raise BadPackageError(
                        f"{where}: truncated ar archive (in {name}); build or download it again"
                    )
                tar = _decompress(name, bytes(buf[start : start + size]), where=where)
                control = control_from_tar(tar, where=where)
                break
            if name.startswith("data.tar"):
                break  # control comes before data in every valid .deb
            pos = start + size + (size & 1)
        if control is None:
            raise BadPackageError(
                f"{where}: no control.tar member (truncated or not a binary package); "
                "build or download it again"
            )
        size_total = len(buf)
        first = buf
        if not eof:
            # The rest into one reused buffer: a fresh 1 MiB bytes per read would be mapped and
            # faulted in anew each time (~5% more CPU for large packages).
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := f.readinto(buf):
                size_total += n
                digest.update(view[:n])
        del buf
        _check_ar_members(f.fileno(), first, start + size + (size & 1), size_total, where=where)
        del first
    fields = parse_control(control, where=f"{where}: control")
    missing = [k for k in ("Package", "Version", "Architecture") if not fields.get(k)]
    if missing:
        raise BadPackageError(
            f"{where}: the control file has no {', '.join(missing)} field; rebuild the package"
        )
    source = fields.get("Source", "").split("(")[0].strip() or fields["Package"]
    return DebInfo(
        path=where, control=fields, size=size_total, sha256=digest.hexdigest(), source=source
    )


def _check_ar_members(fd: int, head: bytearray, pos: int, total: int, *, where: str) -> None:
    """The ar members after ``control.tar*`` (at ``pos``) add up to the file's ``total`` size.

    A file cut short (a copy interrupted, a full disk) still has its control member, and
    would otherwise be published with a Packages stanza that apt's download then fails.
    Headers come from the first bytes already read, else a 60-byte pread (page-cached).
    """
    data = False
    while pos < total:
        if total - pos == 1 and pos % 2 == 1:
            break  # the pad byte after an odd-sized last member
        header = bytes(head[pos : pos + _AR_HEADER]) if pos + _AR_HEADER <= len(head) else b""
        if not header:
            header = os.pread(fd, _AR_HEADER, pos)
        if len(header) < _AR_HEADER or header[58:60] != b"`\n":
            raise BadPackageError(
                f"{where}: corrupt or truncated ar member header at byte {pos} of {total}; "
                "the file is damaged: build or download it again"
            )
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        digits = header[48:58].strip()
        if not digits.isdigit() or not name.isprintable() or not name:
            raise BadPackageError(
                f"{where}: corrupt ar member header at byte {pos}; build or download it again"
            )
        size = int(digits)
        end = pos + _AR_HEADER + size
        if end > total:
            raise BadPackageError(
                f"{where} is truncated: its {name} member needs {end} bytes, the file has "
                f"{total}; build or download it again"
            )
        data |= name.startswith("data.tar")
        pos = end + (size & 1)
    if not data:
        raise BadPackageError(f"{where}: no data.tar member (truncated or not a binary package)")


def hash_file(path: Path) -> tuple[int, str, str]:
    """``(size, sha256, md5)`` of a file, read in large chunks."""
    sha = hashlib.sha256()
    md5 = hashlib.md5()  # noqa: S324  (Sources' Files field is MD5 by format, not for security)
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            size += len(chunk)
            sha.update(chunk)
            md5.update(chunk)
    return size, sha.hexdigest(), md5.hexdigest()
