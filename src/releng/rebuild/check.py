"""verify-package: what a user runs to check a package against a repository's attestations.

The attestation is fetched from the repository (a directory or an HTTP URL), its
signature checked against the keyring the user gives (the rebuilder's public key,
never the repository's own), and its subject's sha256 compared with the package's.
The answer is one line: verified by whom and when, or why not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from releng.errors import SigningError
from releng.gpg import dearmored, verify
from releng.rebuild.attest import (
    ATTESTATIONS_DIR,
    INDEX,
    PROVENANCE_TYPE,
    SIGNATURE_SUFFIX,
    STATEMENT_TYPE,
    SUFFIX,
)
from releng.rebuild.buildinfo import RebuildError
from releng.rebuild.summary import RESULT_REPRODUCED

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 30  # seconds per file


class NotVerified(RebuildError):
    """A package's attestation is missing, not signed by the given key, or not for it."""


@dataclass(frozen=True, kw_only=True)
class Verdict:
    package: str  # the .deb's file name
    sha256: str
    signer: str  # user id and fingerprint
    signed_on: str
    finished_on: str

    def line(self) -> str:
        return (
            f"verified: {self.package} (sha256 {self.sha256[:16]}…) was rebuilt byte for byte "
            f"by {self.signer} on {self.finished_on}"
        )


class _Source:
    """A repository's files, from a directory or over HTTP(S)."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.url = location if location.startswith(("http://", "https://")) else None
        if self.url is None and not Path(location).is_dir():
            raise NotVerified(f"not verified: {location} is neither a directory nor an HTTP URL")

    def get(self, rel: str) -> bytes | None:
        """The file at ``rel`` (a path in the repository), or None when it is not there."""
        if self.url is None:
            path = Path(self.location) / rel
            return path.read_bytes() if path.is_file() else None
        url = self.url.rstrip("/") + "/" + urllib.parse.quote(rel)
        log.debug("GET %s", url)
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310  (http(s) only, checked above)
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise NotVerified(f"not verified: {url} answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise NotVerified(f"not verified: cannot fetch {url}: {exc}") from None


def verify_signature(data: bytes, signature: bytes, keyring: Path) -> tuple[str, str, str]:
    """(fingerprint, user id, signature date) of a good detached signature by a key of
    ``keyring`` (a public keyring a user was given, armored or binary), checked with gpgv as apt
    does (:func:`releng.gpg.verify`); NotVerified otherwise."""
    try:
        key_data = dearmored(keyring.read_bytes())
    except (OSError, ValueError) as exc:
        raise NotVerified(f"not verified: cannot read the keyring {keyring}: {exc}") from None
    try:
        checked = verify(key_data, data, signature)
    except SigningError as exc:
        raise NotVerified(f"not verified: {exc}") from None
    good = [s for s in checked.signatures if s.status == "good" and s.fingerprint]
    if checked.valid and len(good) == 1:
        stamp = good[0].created
        when = (
            dt.datetime.fromtimestamp(int(stamp), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if stamp.isdigit()
            else stamp
        )
        return good[0].fingerprint, good[0].uid, when
    if checked.missing:
        raise NotVerified(
            f"not verified: the attestation is signed by a key that is not in {keyring}"
        )
    if any(s.status == "bad" for s in checked.signatures):
        raise NotVerified("not verified: the attestation's signature is bad (it was altered)")
    raise NotVerified(f"not verified: {checked.reason or 'gpgv refused the signature'}")


def _index(source: _Source) -> list[dict[str, str]]:
    raw = source.get(f"{ATTESTATIONS_DIR}/{INDEX}")
    if raw is None:
        raise NotVerified(
            f"not verified: {source.location} has no attestations "
            f"({ATTESTATIONS_DIR}/{INDEX} is missing)"
        )
    try:
        return list(json.loads(raw)["packages"])
    except (ValueError, KeyError, TypeError):
        raise NotVerified(f"not verified: {ATTESTATIONS_DIR}/{INDEX} is not valid") from None


def _pick(
    entries: list[dict[str, str]], *, package: str, version: str, arch: str | None
) -> dict[str, str] | None:
    found = [
        e
        for e in entries
        if e.get("package") == package
        and e.get("version") == version
        and (arch is None or e.get("architecture") in (arch, "all"))
    ]
    return found[0] if found else None


def verify_package(target: str, *, repo: str, keyring: Path, arch: str | None = None) -> Verdict:
    """Check ``target`` (a .deb file, or NAME=VERSION fetched from ``repo``) against its
    attestation in ``repo``; NotVerified (one line) when it does not hold."""
    from releng.apt.debfile import read_deb
    from releng.digest import file_sha256

    source = _Source(repo)
    entries = _index(source)
    if "=" in target and not target.endswith(".deb"):
        package, version = target.split("=", 1)
        entry = _pick(entries, package=package, version=version, arch=arch)
        if entry is None:
            raise NotVerified(f"not verified: {package} {version} has no attestation in {repo}")
        data = source.get(entry["path"])
        if data is None:
            raise NotVerified(f"not verified: {repo} lists {entry['path']}, which is not there")
        name, sha256 = Path(entry["path"]).name, hashlib.sha256(data).hexdigest()
    else:
        path = Path(target)
        if not path.is_file():
            raise NotVerified(f"not verified: {target} is not a file (nor NAME=VERSION)")
        info = read_deb(path)
        entry = _pick(entries, package=info.package, version=info.version, arch=info.architecture)
        if entry is None:
            raise NotVerified(
                f"not verified: {info.package} {info.version} {info.architecture} has no "
                f"attestation in {repo}"
            )
        name, sha256 = Path(entry["path"]).name, file_sha256(path)
    rel = f"{ATTESTATIONS_DIR}/{entry['path']}"
    statement_bytes = source.get(rel + SUFFIX)
    signature = source.get(rel + SIGNATURE_SUFFIX)
    if statement_bytes is None or signature is None:
        raise NotVerified(f"not verified: {name}: its attestation {rel}{SUFFIX} is missing")
    fingerprint, uid, signed_on = verify_signature(statement_bytes, signature, keyring)
    return _check_statement(
        statement_bytes,
        name=name,
        sha256=sha256,
        signer=f"{uid} ({fingerprint})",
        signed_on=signed_on,
    )


def _check_statement(raw: bytes, *, name: str, sha256: str, signer: str, signed_on: str) -> Verdict:
    try:
        data = json.loads(raw)
        subjects = {s["name"]: s["digest"]["sha256"] for s in data["subject"]}
        predicate = data["predicate"]
        result = predicate["buildDefinition"]["internalParameters"]["result"]
        finished = predicate["runDetails"]["metadata"]["finishedOn"]
        kinds = (data["_type"], data["predicateType"])
    except (ValueError, KeyError, TypeError):
        raise NotVerified(
            f"not verified: {name}: the attestation is not a releng statement"
        ) from None
    if kinds != (STATEMENT_TYPE, PROVENANCE_TYPE) or result != RESULT_REPRODUCED:
        raise NotVerified(f"not verified: {name}: the attestation does not state a reproduction")
    attested = subjects.get(name)
    if attested != sha256:
        raise NotVerified(
            f"not verified: {name} has sha256 {sha256}, the rebuilder attested "
            f"{attested or 'another package'}: the package was altered"
        )
    return Verdict(
        package=name, sha256=sha256, signer=signer, signed_on=signed_on, finished_on=finished
    )


# -- check-repo --attestations: every package of every suite ------------------------------------


@dataclass(frozen=True, kw_only=True)
class AttestationReport:
    """check-repo --attestations: per published package (suite, package, version, arch)."""

    verified: list[str]  # "SUITE PACKAGE VERSION ARCH: verified by ... on ..."
    unverified: list[str]  # "SUITE PACKAGE VERSION ARCH: no attestation"
    bad: list[str]  # "SUITE PACKAGE VERSION ARCH: <why the attestation does not hold>"


def check_attestations(
    root: Path, *, keyring: Path, exempt: frozenset[str] = frozenset()
) -> AttestationReport:
    """Check every binary package of every published suite of the repository at ``root``
    against its attestation beside the pool, as verify-package does (the signature by a key
    of ``keyring`` with gpgv, then the statement's subject against the sha256 the repository's
    records give). A package in several suites is checked once; ``exempt``: package names
    not checked (:func:`releng.rebuild.policy.not_rebuilt`)."""
    from releng.apt.state import RepoState

    state = RepoState(root)
    source = _Source(str(root))
    done: dict[str, tuple[str, str]] = {}  # pool path -> (kind, line)
    report = AttestationReport(verified=[], unverified=[], bad=[])
    for suite in state.suites():
        if not (root / "dists" / suite / "InRelease").is_file():
            continue  # not published yet: check-repo says so
        for path, (_when, kind, package, version, arch) in sorted(
            state.load_suite(suite).members.items()
        ):
            if kind == "dsc" or package in exempt:
                continue
            if path not in done:
                done[path] = _check_one(source, path, state.known_sha256(path), keyring)
            what, why = done[path]
            lines = {"verified": report.verified, "unverified": report.unverified}
            lines.get(what, report.bad).append(f"{suite} {package} {version} {arch}: {why}")
    return report


def _check_one(source: _Source, path: str, sha256: str | None, keyring: Path) -> tuple[str, str]:
    rel = f"{ATTESTATIONS_DIR}/{path}"
    statement_bytes, signature = source.get(rel + SUFFIX), source.get(rel + SIGNATURE_SUFFIX)
    if statement_bytes is None and signature is None:
        return "unverified", "no attestation"
    if statement_bytes is None or signature is None:
        return "bad", f"{rel}{SUFFIX if statement_bytes is None else SIGNATURE_SUFFIX} is missing"
    if sha256 is None:
        return "bad", f"the repository's records give no sha256 for {path}"
    try:
        fingerprint, uid, signed_on = verify_signature(statement_bytes, signature, keyring)
        verdict = _check_statement(
            statement_bytes,
            name=Path(path).name,
            sha256=sha256,
            signer=f"{uid} ({fingerprint})",
            signed_on=signed_on,
        )
    except NotVerified as exc:
        return "bad", str(exc).removeprefix("not verified: ")
    return "verified", f"verified by {verdict.signer} on {verdict.finished_on}"
