"""check-repo: verify a repository the way a client would, and more thoroughly.

For every suite under ``dists/``: ``InRelease`` verifies (:func:`releng.gpg.verify`, as apt does) against
the repository's exported keyring, every file it lists exists with its size and
SHA256 (under ``by-hash`` and under its name), every pool file a Packages or
Sources index names exists with the size and SHA256 the index gives, and each
``binary-<arch>`` index is of an architecture the Release lists and holds only
packages of that architecture or ``all``. Problems
are what would make apt fail. Warnings are what only older or non-by-hash
clients could trip on, and what a publish in progress looks like: ``Release`` /
``Release.gpg`` not matching ``InRelease``, a plain index name not yet (or no
longer) matching. After a completed publish there are neither. A suite for a
release whose apt verifies with GnuPG 1.4 (xenial and older) signed with a key
that GnuPG 1.4 cannot verify (ed25519, ECDSA) is warned about too.

The signed Release text is held to what apt accepts without a warning: one deb822
paragraph, no control characters, no field twice, a ``Suite`` or ``Codename``
that is the directory's name, a ``Date`` not in the future and a ``Valid-Until``
not past, and every component (one path segment) with a ``Packages`` index for
each architecture it lists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from releng.apt.debfile import not_a_file, read_deb
from releng.deb822 import (
    IndexEntry,
    listed_files,
    parse_date,
    parse_paragraphs,
    parse_release_sha256,
)
from releng.digest import file_size_sha256
from releng.errors import BadPackageError, RepoError
from releng.gpg import Verification, expiry_warnings, keyring_keys, verify

log = logging.getLogger(__name__)


# Codenames whose apt verifies with GnuPG 1.4, which knows RSA and DSA keys but no elliptic
# curves: apt there refuses a repository signed with ed25519 ("unknown pubkey algorithm").
GPGV1_CODENAMES = frozenset({"precise", "trusty", "xenial", "wheezy", "jessie"})
GPGV1_ALGORITHMS = frozenset({"1", "2", "3", "17"})  # RSA (1-3) and DSA (17)
_ALGORITHM_NAMES = {"18": "ECDH", "19": "ECDSA", "22": "EdDSA (ed25519)"}


@dataclass
class CheckReport:
    suites: list[str] = field(default_factory=list)
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)
    # Plain index names that differ from the Release while their by-hash copies are right:
    # what a publish in progress (or killed) looks like; apt reads by-hash and is unaffected.
    warnings: list[str] = field(default_factory=list)


def find_keyring(root: Path) -> Path:
    found = sorted(root.glob("*-archive-keyring.gpg"))
    if len(found) != 1:
        raise RepoError(
            f"{root}: expected one *-archive-keyring.gpg beside the repository, found {len(found)}; "
            "publish the repository (it exports the key) or pass --keyring"
        )
    return found[0]


def _signing_algorithm(check: Verification) -> str:
    """The OpenPGP public-key algorithm id of the key that signed (the first good signature)."""
    return next((s.algorithm for s in check.signatures if s.status == "good"), "")


def _old_client_warning(check: Verification, suite: str) -> str | None:
    """A warning when ``suite``'s clients (by its codename) cannot verify the key that signed it."""
    codename = suite.split("-", 1)[0]
    if codename not in GPGV1_CODENAMES:
        return None
    algorithm = _signing_algorithm(check)
    if not algorithm or algorithm in GPGV1_ALGORITHMS:
        return None
    name = _ALGORITHM_NAMES.get(algorithm, f"algorithm {algorithm}")
    return (
        f"dists/{suite} is signed with an {name} key, which {codename}'s apt (GnuPG 1.4) cannot "
        "verify: apt there refuses this suite; sign it with an RSA key (4096 bits)"
    )


_FIELD_NAME_RE = re.compile(r"[!-9;-~]+")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_~-]*")
_SHA256_LINE_RE = re.compile(r" [0-9a-f]{64} +\d+ (\S+)")
_KEYRING_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+-archive-keyring\.gpg")
_DATE_SLACK = dt.timedelta(seconds=10)  # apt's Acquire::Max-FutureTime default


def _release_fields(text: str, suite: str, problem: Callable[[str], None]) -> dict[str, str]:
    """The signed Release text's fields, each problem apt would see reported."""
    where = f"dists/{suite}/InRelease"
    fields: dict[str, str] = {}
    last: str | None = None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for n, line in enumerate(lines, 1):
        if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", line):
            problem(f"{where} line {n} holds a control character: {line[:60]!r}")
            continue
        if not line.strip():
            problem(f"{where} line {n} is blank: apt reads only the fields before it")
            break
        if line[0] in " \t":
            if last is None:
                problem(f"{where} line {n} continues no field")
            else:
                fields[last] += "\n" + line
            continue
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME_RE.fullmatch(name):
            problem(f"{where} line {n} is not a field: {line[:60]!r}")
            last = None
            continue
        if name in fields:
            problem(f"{where} has the field {name} twice (line {n})")
        fields[name] = value.strip()
        last = name
    return fields


def _check_release(
    fields: dict[str, str], entries: list[IndexEntry], suite: str, problem: Callable[[str], None]
) -> None:
    """What apt requires of a Release beyond its signature and its files."""
    where = f"dists/{suite}/InRelease"
    if suite not in (fields.get("Suite"), fields.get("Codename")):
        problem(
            f"{where}: neither Suite ({fields.get('Suite')!r}) nor Codename "
            f"({fields.get('Codename')!r}) is {suite!r}; apt reports a conflicting distribution"
        )
    _check_dates(fields, where, problem)
    listed = {e.path for e in entries}
    for line in fields.get("SHA256", "").split("\n")[1:]:
        m = _SHA256_LINE_RE.fullmatch(line)
        if m is None or ".." in m[1].split("/") or m[1].startswith("/"):
            problem(f"{where}: malformed SHA256 line {line[:80]!r}")
    if "SHA256" not in fields or not entries:
        problem(f"{where} lists no files under SHA256")
    archs = fields.get("Architectures", "").split()
    components = fields.get("Components", "").split()
    if not components:
        problem(f"{where} has no Components field")
    for component in components:
        if not _SEGMENT_RE.fullmatch(component):
            problem(f"{where}: component {component!r} is not one path segment")
            continue
        for arch in archs:
            if arch == "all":
                continue
            index = f"{component}/binary-{arch}/Packages"
            if not any(f"{index}{ext}" in listed for ext in ("", ".gz", ".xz")):
                problem(f"{where} lists no {index}: apt cannot find that index")


def _check_dates(fields: dict[str, str], where: str, problem: Callable[[str], None]) -> None:
    """A Date apt accepts now, and a Valid-Until not past."""
    now = dt.datetime.now(dt.UTC)
    limits: dict[str, Callable[[dt.datetime], bool]] = {
        "Date": lambda t: t > now + _DATE_SLACK,
        "Valid-Until": lambda t: t < now,
    }
    for name, bad in limits.items():
        value = fields.get(name)
        if value is None:
            if name == "Date":
                problem(f"{where} has no Date field")
            continue
        when = parse_date(value)
        if when is None:
            problem(f"{where}: {name} {value!r} is not an RFC 2822 date")
            continue
        if bad(when):
            state = "in the future" if name == "Date" else "past: the Release has expired"
            problem(f"{where}: {name} {value} is {state}; republish (invoke republish-repo)")


def _verify_index(
    report: CheckReport,
    root: Path,
    *,
    suite: str,
    entry: IndexEntry,
    byhash: Path,
    path: Path,
    by_hash: bool,
) -> bytes | None:
    """Check one index the Release lists; its verified content, or None.

    With Acquire-By-Hash the by-hash copy is what apt reads: a plain name that differs
    is only a warning (a publish is in progress, or was killed before its Release).
    """
    good: bytes | None = None
    for candidate in (byhash, path) if by_hash else (path,):
        out = (
            report.warnings
            if (by_hash and candidate == path and good is not None)
            else report.problems
        )
        rel = candidate.relative_to(root)
        if not candidate.is_file():
            out.append(f"dists/{suite}/Release lists {rel}, which is missing")
            continue
        data = candidate.read_bytes()
        report.files_checked += 1
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            out.append(f"{rel} does not match the size/sha256 in dists/{suite}/Release")
        elif good is None:
            good = data
    return good


def _pool_digest(path: Path) -> tuple[int, str, str]:
    """(size, sha256, why dpkg refuses it or "") of a pool file: a .deb's control file is
    read as dpkg reads it on the way (one pass over the file)."""
    if path.suffix not in (".deb", ".udeb"):
        return (*file_size_sha256(path), "")
    try:
        info = read_deb(path)
    except BadPackageError as exc:
        return (*file_size_sha256(path), str(exc).removeprefix(f"{path}: "))
    return info.size, info.sha256, ""


def _check_compressed(
    report: CheckReport,
    suite: str,
    entries: list[IndexEntry],
    compressed: list[tuple[IndexEntry, bytes]],
) -> None:
    """Each ``.gz`` and ``.xz`` index (its bytes verified against the Release) decompresses, to
    the uncompressed index the Release lists beside it: apt fetches the ``.xz``, and a
    matching hash says nothing of what is inside."""
    import gzip
    import lzma
    import zlib

    listed = {e.path: e for e in entries}
    for entry, data in compressed:
        where = f"dists/{suite}/{entry.path}"
        try:
            text = gzip.decompress(data) if entry.path.endswith(".gz") else lzma.decompress(data)
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
            report.problems.append(f"{where} cannot be decompressed ({exc}); republish it")
            continue
        plain = listed.get(entry.path.rsplit(".", 1)[0])
        if plain is not None and (
            len(text) != plain.size or hashlib.sha256(text).hexdigest() != plain.sha256
        ):
            report.problems.append(
                f"{where} does not decompress to the {plain.path} the Release lists; republish "
                "it (invoke republish-repo)"
            )


def _check_contents(report: CheckReport, suite_dir: Path, entries: list[IndexEntry]) -> None:
    """Each ``Contents-<arch>.gz`` the Release lists (releng.apt.contents): a gzip file of
    ``PATH  SECTION/PACKAGE`` lines, naming only packages its component's Packages hold
    for that architecture (or ``all``). Sizes and hashes are checked with the other indexes."""
    import gzip
    import zlib

    from releng.apt.contents import parse_contents

    for entry in entries:
        directory, _, name = entry.path.rpartition("/")
        if not (name.startswith("Contents-") and name.endswith(".gz")):
            continue
        where = f"dists/{suite_dir.name}/{entry.path}"
        arch = name.removeprefix("Contents-").removesuffix(".gz")
        try:
            listed = parse_contents(
                gzip.decompress((suite_dir / entry.path).read_bytes()), where=where
            )
        except FileNotFoundError:
            continue  # reported as missing with the other indexes
        except (OSError, EOFError, zlib.error, BadPackageError) as exc:
            report.problems.append(f"{where} cannot be read: {exc}")
            continue
        known: set[str] = set()
        for packages in (suite_dir / directory).glob("binary-*/Packages"):
            for st in parse_paragraphs(packages.read_text("utf-8", "replace"), where=str(packages)):
                if arch in (st.get("Architecture"), packages.parent.name.removeprefix("binary-")):
                    known.add(st.get("Package", ""))
        strangers = sorted({p for names in listed.values() for p in names} - known)
        if strangers:
            report.problems.append(
                f"{where} names {', '.join(strangers[:5])}, not in {directory}'s {arch} Packages; "
                "republish (invoke republish-repo)"
            )


def check_repository(
    root: Path, *, keyring: Path | None = None, warn_days: int = 60
) -> CheckReport:
    """Every signature, checksum and referenced file; problems listed, nothing raised for them."""
    if root.exists() and not root.is_dir():
        raise RepoError(f"{root} is a file, not a repository directory; name one with --repo")
    keyring = keyring or find_keyring(root)
    dists = root / "dists"
    if not dists.is_dir():
        raise RepoError(f"{root} has no dists/ directory: it is not a published repository")
    checker = _Checker(root=root, keyring=keyring, report=CheckReport())
    report = checker.report
    report.warnings.extend(expiry_warnings(keyring_keys(keyring), warn_days=warn_days))
    if not _KEYRING_RE.fullmatch(keyring.name):
        checker.problem(f"the keyring file name {keyring.name!r} is not NAME-archive-keyring.gpg")
    suite_dirs = sorted(p for p in dists.iterdir() if p.is_dir())
    for staging in (p for p in suite_dirs if p.name.startswith(".")):
        report.warnings.append(f"{staging.relative_to(root)}: a killed first publish's staging")
    for suite_dir in (p for p in suite_dirs if not p.name.startswith(".")):
        report.suites.append(suite_dir.name)
        checker.suite(suite_dir)
    if not report.suites:
        checker.problem(f"{dists} holds no suites")
    return report


@dataclass
class _Checker:
    """One check-repo run: the report, and each pool file's size and sha256, read once."""

    root: Path
    keyring: Path
    report: CheckReport
    hashed: dict[Path, tuple[int, str]] = field(default_factory=dict)

    def problem(self, msg: str) -> None:
        self.report.problems.append(msg)

    def pool_file(self, path: Path, size: int, sha256: str, *, where: str) -> None:
        root, hashed = self.root, self.hashed
        rel = os.path.normpath(os.path.relpath(path, root))
        if rel.startswith("..") or not rel.startswith("pool/"):
            self.problem(f"{where} names {rel}, which is outside the repository's pool")
            return
        if path not in hashed:
            if not path.is_file():
                what = not_a_file(path).replace("does not exist", "is missing")
                self.problem(f"{where} names {path.relative_to(root)}, which {what}")
                hashed[path] = (-1, "")
                return
            got_size, got_sha256, refused = _pool_digest(path)
            hashed[path] = (got_size, got_sha256)
            self.report.files_checked += 1
            if refused and hashed[path] == (size, sha256):
                # The index vouches for it (apt downloads it), and dpkg cannot install it.
                self.problem(f"{path.relative_to(root)}: {refused}")
        got = hashed[path]
        if got[0] >= 0 and got != (size, sha256):
            self.problem(
                f"{path.relative_to(root)}: size/sha256 {got[0]}/{got[1]} but {where} says {size}/{sha256}"
            )

    def signed_release(self, suite_dir: Path) -> str | None:
        """The text InRelease signs, checked as apt would; None (a problem) when it fails."""
        suite = suite_dir.name
        inrelease = suite_dir / "InRelease"
        if not inrelease.is_file():
            self.problem(f"dists/{suite}: no InRelease file")
            return None
        check = verify(self.keyring, inrelease.read_bytes())
        signed = check.content
        if not check.valid:
            self.problem(f"dists/{suite}/InRelease does not verify: {check.reason}")
            return None
        old_client = _old_client_warning(check, suite)
        if old_client:
            self.report.warnings.append(old_client)
        # InRelease is what apt reads; Release + Release.gpg serve older clients and may
        # disagree with it for a moment during a publish (or after a killed one).
        release_path = suite_dir / "Release"
        if not release_path.is_file() or signed.rstrip(b"\n") != release_path.read_bytes().rstrip(
            b"\n"
        ):
            self.report.warnings.append(
                f"dists/{suite}/Release does not carry the text of InRelease"
            )
        else:
            detached = suite_dir / "Release.gpg"
            sig = detached.read_bytes() if detached.is_file() else b""
            release_check = verify(self.keyring, release_path.read_bytes(), sig)
            if not release_check.valid:
                self.report.warnings.append(
                    f"dists/{suite}/Release.gpg does not verify: {release_check.reason}"
                )
        try:
            return signed.decode("utf-8")
        except UnicodeDecodeError:
            self.problem(f"dists/{suite}/InRelease is not UTF-8 text")
            return None

    def suite(self, suite_dir: Path) -> None:
        """One suite: its signed Release, every index it lists, every pool file they name."""
        suite = suite_dir.name
        release_text = self.signed_release(suite_dir)
        if release_text is None:
            return
        fields = _release_fields(release_text, suite, self.problem)
        entries = parse_release_sha256(release_text)
        _check_release(fields, entries, suite, self.problem)
        by_hash = fields.get("Acquire-By-Hash") == "yes"
        archs = set(fields.get("Architectures", "").split())
        compressed: list[tuple[IndexEntry, bytes]] = []
        for entry in entries:
            path = suite_dir / entry.path
            byhash = path.parent / "by-hash" / "SHA256" / entry.sha256
            good = _verify_index(
                self.report,
                self.root,
                suite=suite,
                entry=entry,
                byhash=byhash,
                path=path,
                by_hash=by_hash,
            )
            contents = path.name.startswith("Contents-")  # read by _check_contents
            if good is not None and path.suffix in (".gz", ".xz") and not contents:
                compressed.append((entry, good))
            if good is None or "." in path.name or contents:
                continue  # pool references are read from the uncompressed index
            self.index(path, good, archs)
        _check_compressed(self.report, suite, entries, compressed)
        _check_contents(self.report, suite_dir, entries)

    def index(self, path: Path, good: bytes, archs: set[str]) -> None:
        """A Packages or Sources index (verified bytes ``good``): each stanza's pool files."""
        root = self.root
        where = str(path.relative_to(root))
        index_arch = path.parent.name.removeprefix("binary-")
        if path.name == "Packages" and index_arch not in archs:
            self.problem(
                f"{where} is listed, but {index_arch} is not in the Release's Architectures"
            )
        try:
            stanzas = parse_paragraphs(good.decode("utf-8"), where=where)
        except (BadPackageError, UnicodeDecodeError) as exc:
            self.problem(f"{where} cannot be parsed: {exc}")
            return
        for st in stanzas:
            if path.name == "Packages" and st.get("Architecture") not in (index_arch, "all"):
                self.problem(
                    f"{where}: {st.get('Package')!r} is built for {st.get('Architecture')}, "
                    f"not {index_arch} (or all)"
                )
            if path.name == "Packages":
                try:
                    self.pool_file(
                        root / st["Filename"], int(st["Size"]), st["SHA256"], where=where
                    )
                except (KeyError, ValueError):
                    self.problem(
                        f"{where}: stanza {st.get('Package')!r} lacks Filename, Size or SHA256"
                    )
            elif path.name == "Sources":
                directory = st.get("Directory", "")
                try:
                    listed = listed_files(st, "Checksums-Sha256", where=where)
                except BadPackageError as exc:
                    self.problem(str(exc))
                    continue
                for f in listed:
                    self.pool_file(root / directory / f.name, f.size, f.digest, where=where)
