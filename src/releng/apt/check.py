"""repo-check: verify a repository the way a client would, and more thoroughly.

For every suite under ``dists/``: ``InRelease`` verifies with ``gpgv`` against
the repository's exported keyring, every file it lists exists with its size and
SHA256 (under ``by-hash`` and under its name), every pool file a Packages or
Sources index names exists with the size and SHA256 the index gives, and each
``binary-<arch>`` index is of an architecture the Release lists and holds only
packages of that architecture or ``all``. Problems
are what would make apt fail. Warnings are what only older or non-by-hash
clients could trip on, and what a publish in progress looks like: ``Release`` /
``Release.gpg`` not matching ``InRelease``, a plain index name not yet (or no
longer) matching. After a completed publish there are neither.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from releng.apt.debfile import BadPackageError, parse_paragraph, sha256_file
from releng.apt.index import IndexEntry, parse_release_sha256
from releng.errors import RepoError

log = logging.getLogger(__name__)


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


def _gpgv(keyring: Path, *args: str) -> tuple[bool, bytes, str]:
    with tempfile.TemporaryDirectory(prefix="releng-gpgv-") as home:
        cmd = ["gpgv", "--homedir", home, "--keyring", str(keyring.resolve()), *args]
        log.debug("%s", shlex.join(cmd))
        proc = subprocess.run(cmd, capture_output=True, check=False)
    return proc.returncode == 0, proc.stdout, proc.stderr.decode(errors="replace").strip()


def _last_line(err: str) -> str:
    return err.splitlines()[-1] if err else "gpgv failed"


def _release_architectures(release: str) -> set[str]:
    for line in release.splitlines():
        if line.startswith("Architectures:"):
            return set(line.split(":", 1)[1].split())
    return set()


def _stanzas(text: str, where: str) -> list[dict[str, str]]:
    out = []
    for block in text.split("\n\n"):
        if block.strip():
            out.append(parse_paragraph(block, where=where))
    return out


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


def check_repository(root: Path, *, keyring: Path | None = None) -> CheckReport:  # noqa: PLR0912, PLR0915
    """Every signature, checksum and referenced file; problems listed, nothing raised for them."""
    keyring = keyring or find_keyring(root)
    report = CheckReport()
    dists = root / "dists"
    if not dists.is_dir():
        raise RepoError(f"{root} has no dists/ directory: it is not a published repository")
    hashed: dict[Path, tuple[int, str]] = {}

    def problem(msg: str) -> None:
        report.problems.append(msg)

    def pool_file(path: Path, size: int, sha256: str, *, where: str) -> None:
        if path not in hashed:
            if not path.is_file():
                problem(f"{where} names {path.relative_to(root)}, which is missing")
                hashed[path] = (-1, "")
                return
            hashed[path] = sha256_file(path)
            report.files_checked += 1
        got = hashed[path]
        if got[0] >= 0 and got != (size, sha256):
            problem(
                f"{path.relative_to(root)}: size/sha256 {got[0]}/{got[1]} but {where} says {size}/{sha256}"
            )

    for suite_dir in sorted(p for p in dists.iterdir() if p.is_dir()):
        suite = suite_dir.name
        report.suites.append(suite)
        inrelease = suite_dir / "InRelease"
        if not inrelease.is_file():
            problem(f"dists/{suite}: no InRelease file")
            continue
        ok, signed, err = _gpgv(keyring, "--output", "-", str(inrelease))
        if not ok:
            problem(f"dists/{suite}/InRelease does not verify: {_last_line(err)}")
            continue
        # InRelease is what apt reads; Release + Release.gpg serve older clients and may
        # disagree with it for a moment during a publish (or after a killed one).
        release_path = suite_dir / "Release"
        if not release_path.is_file() or signed.rstrip(b"\n") != release_path.read_bytes().rstrip(
            b"\n"
        ):
            report.warnings.append(f"dists/{suite}/Release does not carry the text of InRelease")
        else:
            ok, _, err = _gpgv(keyring, str(suite_dir / "Release.gpg"), str(release_path))
            if not ok:
                report.warnings.append(
                    f"dists/{suite}/Release.gpg does not verify: {_last_line(err)}"
                )
        release = signed
        by_hash = "\nAcquire-By-Hash: yes\n" in release.decode(errors="replace")
        archs = _release_architectures(release.decode(errors="replace"))
        for entry in parse_release_sha256(release.decode()):
            path = suite_dir / entry.path
            byhash = path.parent / "by-hash" / "SHA256" / entry.sha256
            good = _verify_index(
                report, root, suite=suite, entry=entry, byhash=byhash, path=path, by_hash=by_hash
            )
            if good is None or "." in path.name:
                continue  # pool references are read from the uncompressed index
            where = str(path.relative_to(root))
            index_arch = path.parent.name.removeprefix("binary-")
            if path.name == "Packages" and index_arch not in archs:
                problem(
                    f"{where} is listed, but {index_arch} is not in the Release's Architectures"
                )
            try:
                stanzas = _stanzas(good.decode("utf-8"), where)
            except (BadPackageError, UnicodeDecodeError) as exc:
                problem(f"{where} cannot be parsed: {exc}")
                continue
            for st in stanzas:
                if path.name == "Packages" and st.get("Architecture") not in (index_arch, "all"):
                    problem(
                        f"{where}: {st.get('Package')!r} is built for {st.get('Architecture')}, "
                        f"not {index_arch} (or all)"
                    )
                if path.name == "Packages":
                    try:
                        pool_file(root / st["Filename"], int(st["Size"]), st["SHA256"], where=where)
                    except (KeyError, ValueError):
                        problem(
                            f"{where}: stanza {st.get('Package')!r} lacks Filename, Size or SHA256"
                        )
                elif path.name == "Sources":
                    directory = st.get("Directory", "")
                    for line in st.get("Checksums-Sha256", "").splitlines():
                        parts = line.split()
                        if len(parts) == 3:
                            pool_file(
                                root / directory / parts[2], int(parts[1]), parts[0], where=where
                            )
    if not report.suites:
        problem(f"{dists} holds no suites")
    return report
