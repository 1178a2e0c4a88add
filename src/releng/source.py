"""Source tarballs: reproducible byte for byte, then signed.

``make_source_tarball`` writes, all or nothing, into ``out/``::

    <name>[-nightly]-<version>.tar.gz             the tarball
    <name>[-nightly]-<version>.tar.gz.asc         detached ASCII-armored signature
    <name>[-nightly]-<version>.SHA256SUMS         ``sha256sum -c`` format
    <name>[-nightly]-<version>.SHA256SUMS.asc     its detached signature

Nightlies (``YYYY.MM.DD``) come from the nightly ref, releases (``X.Y.Z``) from
the release tag; git submodules are included and configured paths pruned. A
``url`` source is downloaded through a cache, checked against its pinned
sha256 and upstream signature, and repacked the same way.

Reproducible: entries sorted, mtime fixed (``SOURCE_DATE_EPOCH``, else the
commit time, else the newest upstream member), owner 0/0 with no names,
modes normalised to 0644/0755, gzip with no name and no timestamp.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import io
import json
import logging
import os
import shlex
import shutil
import stat
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from releng.config import SourceSection
from releng.errors import SourceError
from releng.gpg import Signer, signer_for
from releng.project import Project
from releng.version import Version

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_STAMP_DIR = "source-stamps"


@dataclass(frozen=True, kw_only=True)
class SourceTarball:
    tarball: Path
    sha256: str
    signature: Path
    sums: Path
    sums_signature: Path
    origin: str  # the commit id, or the upstream URL


@dataclass(frozen=True)
class _Entry:
    """One member of the tarball, relative to the source root."""

    path: str
    kind: str  # "dir", "file", "symlink"
    executable: bool = False
    target: str = ""
    local: Path | None = None  # file content on disk
    data: bytes | None = None  # or in memory


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _pruned(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(p, pat.rstrip("/")) for p in prefixes for pat in patterns)


def write_reproducible_tarball(
    entries: list[_Entry], dest: Path, *, prefix: str, mtime: int
) -> None:
    """Write ``entries`` under ``prefix/`` as a deterministic .tar.gz at ``dest``."""
    files = {e.path: e for e in entries}
    # Every parent directory gets its own entry, so the archive unpacks the same everywhere.
    for path in list(files):
        parts = path.split("/")[:-1]
        for i in range(len(parts)):
            d = "/".join(parts[: i + 1])
            files.setdefault(d, _Entry(d, "dir"))
    with dest.open("wb") as raw:
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0)
        with gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            root = tarfile.TarInfo(prefix)
            _normalise(root, mtime)
            root.type, root.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(root)
            for path in sorted(files):
                e = files[path]
                info = tarfile.TarInfo(f"{prefix}/{path}")
                _normalise(info, mtime)
                if e.kind == "dir":
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                elif e.kind == "symlink":
                    info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, e.target
                    tar.addfile(info)
                else:
                    info.mode = 0o755 if e.executable else 0o644
                    if e.local is not None:
                        info.size = e.local.stat().st_size
                        with e.local.open("rb") as f:
                            tar.addfile(info, f)
                    else:
                        data = e.data or b""
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))


def _normalise(info: tarfile.TarInfo, mtime: int) -> None:
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""


# --- git sources -------------------------------------------------------------------------


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["git", "-c", "protocol.file.allow=always", "-c", "advice.detachedHead=false", *args]
    log.debug("%s (in %s)", shlex.join(cmd), cwd)
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    if check and result.returncode != 0:
        raise SourceError(
            f"git {args[0]} failed in {cwd}: {result.stderr.strip().splitlines()[-1:] or ['?']}"
        )
    return result


def _is_url(repository: str) -> bool:
    return "://" in repository or repository.startswith("git@")


def git_origin(project: Project, src: SourceSection) -> tuple[Path, str]:
    """The git directory to read from and the subdirectory of the source inside it."""
    if _is_url(src.repository):
        mirror = (
            project.state_dir
            / "cache"
            / "git"
            / hashlib.sha256(src.repository.encode()).hexdigest()[:16]
        )
        if mirror.is_dir():
            log.info("fetching %s", src.repository)
            _git(
                mirror,
                "fetch",
                "--quiet",
                "--prune",
                "--tags",
                "origin",
                "+refs/heads/*:refs/heads/*",
            )
        else:
            mirror.parent.mkdir(parents=True, exist_ok=True)
            log.info("cloning %s", src.repository)
            _git(mirror.parent, "clone", "--quiet", "--mirror", src.repository, mirror.name)
        return mirror, ""
    path = (project.root / src.repository).resolve()
    if not path.is_dir():
        raise SourceError(
            f"[source] repository {src.repository!r} is not a directory ({path}); "
            "name a git checkout, a subdirectory of one, or a git URL in product.toml"
        )
    top = _git(path, "rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0:
        raise SourceError(
            f"{path} is not inside a git repository; run `git init` and commit the source"
        )
    toplevel = Path(top.stdout.strip()).resolve()
    return toplevel, path.relative_to(toplevel).as_posix().strip(".")


def _resolve_ref(gitdir: Path, src: SourceSection, version: Version) -> tuple[str, str]:
    ref = src.release_tag.format(version=version.text) if version.is_release else src.nightly_ref
    found = _git(gitdir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if found.returncode != 0:
        if version.is_release:
            tags = _git(gitdir, "tag", "--list", "--sort=-creatordate").stdout.split()
            hint = f"existing tags: {', '.join(tags[:8])}" if tags else "the repository has no tags"
            raise SourceError(
                f"release tag {ref!r} for version {version} does not exist in {gitdir}; "
                f"tag the release first ({hint})"
            )
        raise SourceError(
            f"nightly ref {ref!r} does not exist in {gitdir}; fix [source] nightly_ref"
        )
    return ref, found.stdout.strip()


@contextlib.contextmanager
def _checkout(gitdir: Path, commit: str, *, submodules: bool) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="releng-src-") as tmp:
        work = Path(tmp) / "src"
        _git(Path(tmp), "clone", "--quiet", "--no-checkout", "--shared", str(gitdir), "src")
        _git(work, "checkout", "--quiet", commit)
        if submodules and (work / ".gitmodules").exists():
            _git(work, "submodule", "update", "--init", "--recursive", "--quiet")
        yield work


def _git_entries(work: Path, subdir: str, *, submodules: bool, prune: list[str]) -> list[_Entry]:
    args = ["ls-files", "-z"] + (["--recurse-submodules"] if submodules else [])
    listed = _git(work, *args).stdout.split("\0")
    base = work / subdir if subdir else work
    entries = []
    for name in filter(None, listed):
        if subdir:
            if not name.startswith(subdir + "/"):
                continue
            rel = name[len(subdir) + 1 :]
        else:
            rel = name
        if _pruned(rel, prune):
            continue
        path = base / rel
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            entries.append(_Entry(rel, "symlink", target=str(path.readlink())))
        elif stat.S_ISREG(st.st_mode):
            entries.append(_Entry(rel, "file", executable=bool(st.st_mode & 0o111), local=path))
    if not entries:
        raise SourceError(
            f"the source at {subdir or '.'} has no tracked files; commit the source first"
        )
    return entries


# --- url sources --------------------------------------------------------------------------


def download(url: str, *, cache_dir: Path, expected_sha256: str | None) -> Path:
    """Fetch ``url`` into ``cache_dir`` once; a pinned sha256 is checked before caching."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = url.rstrip("/").rsplit("/", 1)[-1] or "download"
    cached = cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"
    if cached.exists() and (expected_sha256 is None or sha256_file(cached) == expected_sha256):
        log.info("using cached %s", cached)
        return cached
    log.info("downloading %s", url)
    fd, tmpname = tempfile.mkstemp(dir=cache_dir, prefix=".part-")
    tmp = Path(tmpname)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310  (configured source URL)
            while block := resp.read(_CHUNK):
                digest.update(block)
                f.write(block)
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
            raise SourceError(
                f"{url}: sha256 {digest.hexdigest()} does not match the pinned {expected_sha256}; "
                "the upstream file changed or the pin in [source.sha256] is wrong"
            )
        tmp.replace(cached)
    except (urllib.error.URLError, OSError) as exc:
        raise SourceError(
            f"cannot download {url}: {exc}; check [source] url and the network"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return cached


def _verify_upstream_signature(path: Path, signature: Path, keyring: Path) -> None:
    cmd = ["gpgv", "--keyring", str(keyring), str(signature), str(path)]
    log.debug("%s", shlex.join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SourceError(
            f"upstream signature {signature.name} does not verify {path.name} with {keyring}: "
            f"{result.stderr.strip().splitlines()[-1:] or ['?']}"
        )


def _url_entries(archive: Path, prune: list[str]) -> tuple[list[_Entry], int]:
    """Members of an upstream tarball with its single top-level directory stripped."""
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115  (closed by the `with` below)
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"{archive}: not a readable tarball ({exc})") from None
    with tar:
        members = [m for m in tar.getmembers() if m.name not in (".", "./")]
        tops = {m.name.lstrip("./").split("/", 1)[0] for m in members}
        strip = len(tops) == 1 and any("/" in m.name.lstrip("./") for m in members)
        entries: list[_Entry] = []
        newest = 0
        for m in members:
            rel = m.name.lstrip("./")
            if strip:
                rel = rel.split("/", 1)[1] if "/" in rel else ""
            if not rel or rel.startswith("/") or ".." in rel.split("/") or _pruned(rel, prune):
                continue
            newest = max(newest, int(m.mtime))
            if m.issym():
                entries.append(_Entry(rel, "symlink", target=m.linkname))
            elif m.isfile():
                f = tar.extractfile(m)
                data = f.read() if f else b""
                entries.append(_Entry(rel, "file", executable=bool(m.mode & 0o111), data=data))
            elif m.isdir():
                entries.append(_Entry(rel.rstrip("/"), "dir"))
    return entries, newest


# --- the task -----------------------------------------------------------------------------


def _mtime(env: Mapping[str, str], fallback: int) -> int:
    sde = env.get("SOURCE_DATE_EPOCH")
    if sde:
        if not sde.isdigit():
            raise SourceError(
                f"SOURCE_DATE_EPOCH={sde!r} is not a number of seconds; unset or fix it"
            )
        return int(sde)
    return fallback


def _collect(
    project: Project, version: Version, env: Mapping[str, str]
) -> tuple[list[_Entry], int, str, contextlib.ExitStack]:
    src = project.config.source
    stack = contextlib.ExitStack()
    if src.kind == "url":
        url = src.url.format(version=version.text)
        cache = project.root / src.cache_dir
        archive = download(url, cache_dir=cache, expected_sha256=src.sha256.get(version.text))
        if src.signature_url:
            if not src.keyring:
                raise SourceError(
                    "[source] signature_url is set but keyring is empty; name the upstream keyring"
                )
            sig = download(
                src.signature_url.format(version=version.text),
                cache_dir=cache,
                expected_sha256=None,
            )
            _verify_upstream_signature(archive, sig, project.root / src.keyring)
        entries, newest = _url_entries(archive, src.prune)
        return entries, _mtime(env, newest), url, stack
    gitdir, subdir = git_origin(project, src)
    ref, commit = _resolve_ref(gitdir, src, version)
    log.info("source %s at %s (%s)", version, ref, commit[:12])
    commit_time = int(_git(gitdir, "show", "-s", "--format=%ct", commit).stdout.strip())
    work = stack.enter_context(_checkout(gitdir, commit, submodules=src.submodules))
    entries = _git_entries(work, subdir, submodules=src.submodules, prune=src.prune)
    return entries, _mtime(env, commit_time), commit, stack


def _paths(project: Project, version: Version) -> tuple[Path, Path, Path, Path]:
    tarball = project.tarball_path(version)
    stem = f"{project.config.package_name(version)}-{version.text}"
    sums = tarball.with_name(f"{stem}.SHA256SUMS")
    return (
        tarball,
        tarball.with_name(tarball.name + ".asc"),
        sums,
        sums.with_name(sums.name + ".asc"),
    )


def make_source_tarball(
    project: Project, version: Version, *, env: Mapping[str, str], signer: Signer | None = None
) -> SourceTarball:
    """Make, sign and verify the source tarball for ``version``; all four files or none.

    ``signer``: the one :func:`releng.gpg.signer_for` gives, when the caller has it already.
    """
    signer = signer or signer_for(project, env, release=version.is_release)  # before any work
    tarball, asc, sums, sums_asc = _paths(project, version)
    project.out_dir.mkdir(parents=True, exist_ok=True)
    entries, mtime, origin, stack = _collect(project, version, env)
    with stack, tempfile.TemporaryDirectory(dir=project.out_dir, prefix=".tmp-source-") as tmp:
        staged = Path(tmp) / tarball.name
        prefix = f"{project.config.package_name(version)}-{version.text}"
        write_reproducible_tarball(entries, staged, prefix=prefix, mtime=mtime)
        digest = sha256_file(staged)
        staged_sums = Path(tmp) / sums.name
        staged_sums.write_text(f"{digest}  {tarball.name}\n")
        with ThreadPoolExecutor(2) as pool:  # two gpg runs (each verified) at once
            list(pool.map(signer.sign_file, [staged, staged_sums]))
        for name in (tarball.name, asc.name, sums.name, sums_asc.name):
            (Path(tmp) / name).replace(project.out_dir / name)
    stamp = project.state_dir / _STAMP_DIR / f"{tarball.name}.json"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"origin": origin, "sha256": digest, "mtime": mtime}))
    log.info("wrote %s (sha256 %s), signed by %s", tarball, digest, signer.fingerprint)
    return SourceTarball(
        tarball=tarball,
        sha256=digest,
        signature=asc,
        sums=sums,
        sums_signature=sums_asc,
        origin=origin,
    )


def current_source_tarball(project: Project, version: Version) -> SourceTarball | None:
    """The existing tarball when it is complete and matches its stamp; None: make it anew.

    A release's tag and a url source do not move, so an intact tarball is reused. A
    nightly is remade when the nightly ref now points at another commit.
    """
    tarball, asc, sums, sums_asc = _paths(project, version)
    stamp = project.state_dir / _STAMP_DIR / f"{tarball.name}.json"
    if not all(p.exists() for p in (tarball, asc, sums, sums_asc, stamp)):
        return None
    recorded = json.loads(stamp.read_text())
    current = recorded["origin"]
    if project.config.source.kind == "git" and version.is_nightly:
        gitdir, _ = git_origin(project, project.config.source)
        current = _resolve_ref(gitdir, project.config.source, version)[1]
    if current != recorded["origin"] or sha256_file(tarball) != recorded["sha256"]:
        return None
    log.info("%s is up to date", tarball)
    return SourceTarball(
        tarball=tarball,
        sha256=recorded["sha256"],
        signature=asc,
        sums=sums,
        sums_signature=sums_asc,
        origin=current,
    )


def ensure_source_tarball(
    project: Project, version: Version, *, env: Mapping[str, str]
) -> SourceTarball:
    """The current tarball (see :func:`current_source_tarball`), else a new one."""
    return current_source_tarball(project, version) or make_source_tarball(
        project, version, env=env
    )


def remove_source_tarball(project: Project, version: Version) -> None:
    """Forget a made tarball (its four files and its stamp)."""
    for path in _paths(project, version):
        path.unlink(missing_ok=True)
    shutil.rmtree(
        project.state_dir / _STAMP_DIR / f"{project.tarball_name(version)}.json", ignore_errors=True
    )
