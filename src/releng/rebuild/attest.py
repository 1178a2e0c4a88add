"""Attestations: an in-toto Statement v1 with a SLSA provenance v1 predicate per verified
package, signed (detached, armored) with the rebuilder's key, never the archive's.

A verify-rebuild writes them into ``out/<V>/<DISTRO>/rebuild/attestations/``;
:func:`write_attestations` puts them beside a repository, under ``attestations/``
at the pool path of the package they attest (``attestations/pool/main/t/tally/
tally_1.0-1_amd64.deb.intoto.json`` and ``.asc``), with ``attestations/index.json``
that maps each attested package, version and architecture to that path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from releng.digest import file_sha256
from releng.errors import SigningError

if TYPE_CHECKING:
    from releng.gpg import Signer
    from releng.project import Project

log = logging.getLogger(__name__)

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"
# What the predicate means: docs/rebuild.md describes this build type.
BUILD_TYPE = "https://releng.invalid/buildtypes/debian-rebuild/v1"
BUILDER_ID = "https://releng.invalid/rebuilder/{fingerprint}"
FIRST_BUILDER_ID = "https://releng.invalid/builder/{image}"
SUFFIX = ".intoto.json"
SIGNATURE_SUFFIX = SUFFIX + ".asc"
ATTESTATIONS_DIR = "attestations"
INDEX = "index.json"
REBUILDER_HOME = "rebuilder"  # under .releng/: the development rebuilder key
BINARY_SUFFIXES = (".deb", ".udeb", ".ddeb")


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """A named file and its sha256, as an in-toto ResourceDescriptor."""

    name: str
    sha256: str
    uri: str = ""
    annotations: Mapping[str, str] | None = None

    @classmethod
    def of(cls, path: Path, **kw: Any) -> Artifact:
        return cls(name=path.name, sha256=file_sha256(path), **kw)

    def descriptor(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "digest": {"sha256": self.sha256}}
        if self.uri:
            out["uri"] = self.uri
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def image_artifact(role: str, reference: str, image_id: str) -> Artifact:
    """A Docker image by its id (``sha256:<hex>``: the digest of its configuration)."""
    return Artifact(
        name=reference,
        sha256=image_id.removeprefix("sha256:"),
        uri=f"docker-image:{reference}",
        annotations={"role": role},
    )


def statement(
    *,
    package: Artifact,
    sources: Iterable[Artifact],
    buildinfo: Artifact,
    images: Iterable[Artifact],
    external: Mapping[str, object],
    internal: Mapping[str, object],
    rebuilder_fingerprint: str,
    rebuilder_version: str,
    invocation: str,
    started: str,
    finished: str,
    byproducts: Iterable[Artifact] = (),
) -> dict[str, object]:
    """The in-toto Statement (plain JSON data) for one reproduced package."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [package.descriptor()],
        "predicateType": PROVENANCE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": dict(external),
                "internalParameters": dict(internal),
                "resolvedDependencies": [
                    *(a.descriptor() for a in sources),
                    buildinfo.descriptor(),
                    *(a.descriptor() for a in images),
                ],
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID.format(fingerprint=rebuilder_fingerprint),
                    "version": {"releng": rebuilder_version},
                },
                "metadata": {
                    "invocationId": invocation,
                    "startedOn": started,
                    "finishedOn": finished,
                },
                "byproducts": [a.descriptor() for a in byproducts],
            },
        },
    }


def write_signed(data: Mapping[str, object], path: Path, signer: Signer) -> Path:
    """``path`` (canonical JSON) and ``path.asc`` beside it, signed and verified."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return signer.sign_file(path)


def rebuilder_signer(project: Project, env: Mapping[str, str]) -> Signer:
    """The rebuilder's signer: ``[verify] key`` (its own gnupghome and passphrase), else a
    development rebuilder key under ``.releng/rebuilder/``. Never the archive's key."""
    from releng.gpg import Signer, dev_signer, passphrase_from

    cfg = project.config.verify
    if cfg.key:
        home = (project.root / cfg.gnupghome).expanduser() if cfg.gnupghome else None
        if home is None and env.get("GNUPGHOME"):
            home = Path(env["GNUPGHOME"])
        passphrase = passphrase_from(cfg.passphrase_env, cfg.passphrase_file, env, project.root)
        signer = Signer(gnupghome=home, key=cfg.key, passphrase=passphrase)
    else:
        signer = dev_signer(project.state_dir / REBUILDER_HOME)
    archive = [k.replace(" ", "").upper() for k in project.config.signing.keys]
    if any(signer.fingerprint.upper().endswith(k[-16:]) for k in archive):
        raise SigningError(
            f"the rebuilder key {signer.fingerprint} is the archive signing key; an attestation "
            "must come from a second key: set [verify] key to a key of the rebuilder's own"
        )
    return signer


# -- beside a repository --------------------------------------------------------------------


def attestation_path(repo_root: Path, pool_path: str) -> Path:
    return repo_root / ATTESTATIONS_DIR / f"{pool_path}{SUFFIX}"


def _statements(build_dirs: Iterable[Path]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """sha256 of the attested package -> its signed statement and the statement's data, from
    verify-rebuild outputs."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for build_dir in build_dirs:
        for path in sorted((build_dir / "rebuild" / ATTESTATIONS_DIR).glob(f"*{SUFFIX}")):
            if not path.with_name(path.name + ".asc").is_file():
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
            for subject in data.get("subject", []):
                found[subject["digest"]["sha256"]] = (path, data)
    return found


def has_attestations(build_dirs: Iterable[Path]) -> bool:
    """Whether any of ``build_dirs`` holds a verify-rebuild's attestations (cheap: one stat)."""
    return any((b / "rebuild" / ATTESTATIONS_DIR).is_dir() for b in build_dirs)


def _who_and_when(data: Mapping[str, Any]) -> tuple[str, str]:
    """The rebuilder's fingerprint (from its builder id) and when the rebuild finished."""
    try:
        details = data["predicate"]["runDetails"]
        builder = str(details["builder"]["id"])
        finished = str(details["metadata"]["finishedOn"])
    except (KeyError, TypeError):
        return "", ""
    prefix = BUILDER_ID.format(fingerprint="")
    return (builder.removeprefix(prefix) if builder.startswith(prefix) else builder), finished


def read_index(repo_root: Path) -> dict[str, dict[str, str]]:
    """``attestations/index.json`` of the repository at ``repo_root``: pool path -> entry
    (package, version, architecture, path, sha256, rebuilder, finished); empty without one."""
    path = repo_root / ATTESTATIONS_DIR / INDEX
    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("packages", [])
        return {str(e["path"]): dict(e) for e in entries}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("%s is not valid; check-repo --attestations says more", path)
        return {}


def write_attestations(repo_root: Path, build_dirs: Iterable[Path]) -> list[Path]:
    """Copy the signed statements of ``build_dirs``' verified packages beside the repository
    at ``repo_root`` (its pool's layout under ``attestations/``), and update
    ``attestations/index.json``. Returns the statements written.

    A statement goes beside the pool file whose sha256 it attests, found in the repository's
    records (not by reading the pool: a 10,000-package repository costs one read of its
    record index); a package that is not in the pool gets none.
    """
    from releng.apt.state import RepoState, find_records

    statements = _statements(build_dirs)
    if not statements:
        return []
    state = RepoState(repo_root)
    pool_paths = {
        sha: path
        for path in state.known_paths()
        if path.endswith(BINARY_SUFFIXES) and (sha := state.known_sha256(path)) in statements
    }
    records = find_records(state, pool_paths.values())
    entries = read_index(repo_root)
    written: list[Path] = []
    for sha, rel in sorted(pool_paths.items(), key=lambda item: item[1]):
        rec = records.get(rel)
        if rec is None:
            continue
        source, data = statements[sha]
        dest = attestation_path(repo_root, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for src, dst in (
            (source, dest),
            (source.with_name(source.name + ".asc"), dest.with_name(dest.name + ".asc")),
        ):
            tmp = dst.with_name(dst.name + ".tmp")
            tmp.write_bytes(src.read_bytes())
            tmp.replace(dst)
        rebuilder, finished = _who_and_when(data)
        entries[rel] = {
            "package": rec.package,
            "version": rec.version,
            "architecture": rec.arch,
            "path": rel,
            "sha256": sha,
            "rebuilder": rebuilder,
            "finished": finished,
        }
        written.append(dest)
        log.info("attestation of %s: %s", rel, dest)
    index_path = repo_root / ATTESTATIONS_DIR / INDEX
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_name(INDEX + ".tmp")
    tmp.write_text(
        json.dumps({"packages": [entries[k] for k in sorted(entries)]}, indent=2) + "\n",
        encoding="utf-8",
    )
    tmp.replace(index_path)
    return written
