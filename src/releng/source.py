"""Source tarballs: upstream's file or a reproducible pack, then signed.

``make_source_tarball`` writes, all or nothing, into ``out/``::

    <name>[-nightly]-<V>.tar.<ext>                the tarball
    <name>[-nightly]-<V>.tar.<ext>.asc            detached ASCII-armored signature (releng's key)
    <name>[-nightly]-<V>.SHA256SUMS               ``sha256sum -c`` format
    <name>[-nightly]-<V>.SHA256SUMS.asc           its detached signature
    <name>[-nightly]-<V>.tar.<ext>.upstream.asc   upstream's signature (url sources that have one)

Nightlies (``YYYY.MM.DD``) come from the nightly ref, releases from the release
tag; git submodules are included and configured paths pruned. A ``url`` source
is downloaded through a cache that only verified files enter (pinned sha256, a
real tarball, upstream's signature) and kept byte for byte: it becomes the
``.orig.tar.<ext>`` (gz, xz, bz2 or zst as upstream ships it) and upstream's
signature its ``.orig.tar.<ext>.asc``. Only with ``prune`` is it repacked, and
then ``<V>`` carries ``[source] repack_suffix`` (``2.10+ds``).

Packs are reproducible: entries sorted, mtime fixed (``SOURCE_DATE_EPOCH``,
else the commit time, else the newest upstream member), owner 0/0 with no
names, modes normalised to 0644/0755, gzip with no name and no timestamp.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import io
import json
import logging
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
from dataclasses import dataclass, field
from pathlib import Path

from releng import gitrefs
from releng.config import SourceSection
from releng.digest import file_sha256
from releng.errors import SourceError
from releng.gpg import Signer, signer_for, verify
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
    upstream_signature: Path | None = None  # upstream's, of a url source kept as it is


@dataclass(frozen=True)
class _Entry:
    """One member of the tarball, relative to the source root."""

    path: str
    kind: str  # "dir", "file", "symlink"
    executable: bool = False
    target: str = ""
    local: Path | None = None  # file content on disk
    data: bytes | None = None  # or in memory


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


def _git(
    cwd: Path, *args: str, env: Mapping[str, str], check: bool = True, remote: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run git in ``cwd`` with the caller's environment ``env`` (from the edge); ``remote``:
    it talks to that repository over the network (a timeout, and an error naming it). A
    failure is one SourceError line with all of git's."""
    network = gitrefs.NETWORK_CONFIG if remote else ()
    cmd = ["git", "-c", "protocol.file.allow=always", "-c", "advice.detachedHead=false"]
    cmd += [*network, *args]
    log.debug("%s (in %s)", gitrefs.redact(shlex.join(cmd)), cwd)
    full_env = {**env, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    timeout = gitrefs.NETWORK_TIMEOUT if remote else None
    try:
        result = gitrefs.run_git(cmd, cwd=cwd, env=full_env, timeout=timeout)
    except gitrefs.GitTimeoutError:
        raise SourceError(
            f"git {args[0]} of {gitrefs.redact(remote)} did not finish within {timeout:.0f} s; "
            "check that it is reachable (the URL, the network, a firewall), then run again"
        ) from None
    if check and result.returncode != 0:
        raise SourceError(
            f"git {args[0]} failed in {cwd}: {gitrefs.git_detail(result.stderr, result.returncode)}"
        )
    return result


def _is_url(repository: str) -> bool:
    return "://" in repository or repository.startswith("git@")


def git_origin(project: Project, src: SourceSection, env: Mapping[str, str]) -> tuple[Path, str]:
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
                *("fetch", "--quiet", "--prune", "--tags", "origin", "+refs/heads/*:refs/heads/*"),
                remote=src.repository,
                env=env,
            )
        else:
            mirror.parent.mkdir(parents=True, exist_ok=True)
            log.info("cloning %s", src.repository)
            _git(
                mirror.parent,
                *("clone", "--quiet", "--mirror", "--", src.repository, mirror.name),
                remote=src.repository,
                env=env,
            )
        return mirror, ""
    path = (project.root / src.repository).resolve()
    if not path.is_dir():
        raise SourceError(
            f"[source] repository {src.repository!r} is not a directory ({path}); "
            "name a git checkout, a subdirectory of one, or a git URL in product.toml"
        )
    top = _git(path, "rev-parse", "--show-toplevel", check=False, env=env)
    if top.returncode != 0:
        raise SourceError(
            f"{path} is not inside a git repository; run `git init` and commit the source"
        )
    toplevel = Path(top.stdout.strip()).resolve()
    return toplevel, path.relative_to(toplevel).as_posix().strip(".")


def _resolve_ref(
    gitdir: Path, src: SourceSection, version: Version, env: Mapping[str, str]
) -> tuple[str, str]:
    ref = src.tag_for(version) if version.is_release else src.nightly_ref
    found = _git(
        gitdir,
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{ref}^{{commit}}",
        check=False,
        env=env,
    )
    if found.returncode != 0:
        if version.is_release:
            tags = _git(gitdir, "tag", "--list", "--sort=-creatordate", env=env).stdout.split()
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
def _checkout(
    gitdir: Path, commit: str, *, submodules: bool, env: Mapping[str, str]
) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="releng-src-") as tmp:
        work = Path(tmp) / "src"
        _git(
            Path(tmp),
            "clone",
            "--quiet",
            "--no-checkout",
            "--shared",
            "--",
            str(gitdir),
            "src",
            env=env,
        )
        _git(work, "switch", "--quiet", "--detach", "--end-of-options", commit, env=env)
        if submodules and (work / ".gitmodules").exists():
            # Submodules come from their own URLs: a network operation.
            _git(
                work,
                "submodule",
                "update",
                "--init",
                "--recursive",
                "--quiet",
                remote="submodules",
                env=env,
            )
        yield work


def _git_entries(
    work: Path, subdir: str, *, submodules: bool, prune: list[str], env: Mapping[str, str]
) -> list[_Entry]:
    args = ["ls-files", "-z"] + (["--recurse-submodules"] if submodules else [])
    listed = _git(work, *args, env=env).stdout.split("\0")
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

_MAGIC = {
    "gz": b"\x1f\x8b",
    "xz": b"\xfd7zXZ\x00",
    "bz2": b"BZh",
    "zst": b"\x28\xb5\x2f\xfd",
}


def _compression_of(path: Path) -> str | None:
    with path.open("rb") as f:
        head = f.read(8)
    return next((ext for ext, magic in _MAGIC.items() if head.startswith(magic)), None)


def open_tarball(path: Path) -> tarfile.TarFile:
    """A tarball compressed with gzip, xz, bzip2 or zstd (through ``zstd``: Python 3.11's
    tarfile has no zstd), opened for reading; SourceError when it is none of those."""
    try:
        if _compression_of(path) == "zst":
            unpacked = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=False)
            if unpacked.returncode != 0:
                raise SourceError(
                    f"{path}: not a readable zstd tarball "
                    f"({unpacked.stderr.decode(errors='replace').strip()[-200:]})"
                )
            return tarfile.open(fileobj=io.BytesIO(unpacked.stdout), mode="r:")
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"{path}: not a readable tarball ({exc})") from None


def _check_tarball(path: Path, url: str, *, compression: str | None) -> None:
    """A downloaded file is a whole tarball (compressed as its name says, when it is kept as
    upstream's orig tarball); SourceError saying what came instead."""
    found = _compression_of(path)
    if compression is not None and found != compression:
        with path.open("rb") as f:
            head = f.read(60).decode("ascii", errors="replace")
        what = f"a {found} file" if found else f"not a compressed tarball (it begins {head!r})"
        raise SourceError(
            f"{url} gave {what}, not the .tar.{compression} its name says; nothing was cached: "
            "check [source] url (open it in a browser), then run the same command again"
        )
    try:
        with open_tarball(path) as tar:
            if not tar.getmembers():
                raise SourceError(f"{path}: an empty tarball")
    except SourceError as exc:
        raise SourceError(
            f"{url} did not give a readable tarball ({exc}); nothing was cached: check "
            "[source] url (open it in a browser), then run the same command again"
        ) from None


def _verify_upstream_signature(path: Path, signature: Path, keyring: Path, url: str) -> None:
    check = verify(keyring, path.read_bytes(), signature.read_bytes())
    if not check.valid:
        raise SourceError(
            f"upstream signature {signature.name} does not verify {url} with {keyring}: "
            f"{check.reason}; nothing was cached: check "
            "[source] signature_url and keyring, then run the same command again"
        )


def _fetch(url: str, dest: Path) -> None:
    log.info("downloading %s", url)
    try:
        with dest.open("wb") as f, urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310  (configured source URL)
            while block := resp.read(_CHUNK):
                f.write(block)
    except (urllib.error.URLError, OSError) as exc:
        raise SourceError(
            f"cannot download {url}: {exc}; nothing was cached: check [source] url and the "
            "network, then run the same command again"
        ) from None


def _cache_path(cache_dir: Path, url: str) -> Path:
    name = url.rstrip("/").rsplit("/", 1)[-1] or "download"
    return cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


@dataclass(frozen=True, kw_only=True)
class Upstream:
    """What to fetch for one version of a url source, and how to tell it is right."""

    url: str
    sha256: str | None  # the pin from [source.sha256]
    signature_url: str | None
    keyring: Path | None
    compression: str | None  # the orig tarball's, when upstream's file is kept as it is

    @classmethod
    def of(cls, project: Project, version: Version) -> Upstream:
        src = project.config.source
        if src.signature_url and not src.keyring:
            raise SourceError(
                "[source] signature_url is set but keyring is empty; name the upstream keyring"
            )
        return cls(
            url=src.url.format(version=version.text),
            sha256=src.sha256.get(version.text),
            signature_url=src.signature_url.format(version=version.text) or None,
            keyring=project.root / src.keyring if src.signature_url else None,
            compression=src.compression if src.pristine else None,
        )

    def verify(self, archive: Path, signature: Path | None) -> None:
        """SourceError unless ``archive`` matches the pin, is a tarball and verifies."""
        if self.sha256 is not None:
            digest = file_sha256(archive)
            if digest != self.sha256:
                raise SourceError(
                    f"{self.url}: sha256 {digest} does not match the pinned {self.sha256}; "
                    "nothing was cached: if upstream changed the file on purpose, fix the pin "
                    "in [source.sha256], then run the same command again"
                )
        _check_tarball(archive, self.url, compression=self.compression)
        if signature is not None and self.keyring is not None:
            _verify_upstream_signature(archive, signature, self.keyring, self.url)


def download(upstream: Upstream, *, cache_dir: Path) -> tuple[Path, Path | None]:
    """The verified upstream file and its signature: from the cache, else downloaded.

    Only verified files enter the cache (pin, tarball, signature), through a rename: a
    failed or interrupted download leaves nothing a later run would trust.
    """
    archive = _cache_path(cache_dir, upstream.url)
    signature = _cache_path(cache_dir, upstream.signature_url) if upstream.signature_url else None
    if archive.exists() and (signature is None or signature.exists()):
        try:
            upstream.verify(archive, signature)
        except SourceError as exc:
            log.warning("the cached %s does not verify (%s); downloading it again", archive, exc)
        else:
            log.info("using cached %s", archive)
            return archive, signature
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".part-") as tmp:
        got = Path(tmp) / archive.name
        _fetch(upstream.url, got)
        got_sig = None
        if upstream.signature_url and signature is not None:
            got_sig = Path(tmp) / signature.name
            _fetch(upstream.signature_url, got_sig)
        upstream.verify(got, got_sig)
        if got_sig is not None and signature is not None:
            got_sig.replace(signature)
        got.replace(archive)
    return archive, signature


def _member_path(member: tarfile.TarInfo) -> str:
    """A member's path with ``./`` prefixes removed (and nothing else: ``.gitignore`` stays)."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _url_entries(archive: Path, prune: list[str]) -> tuple[list[_Entry], int]:
    """Members of an upstream tarball with its single top-level directory stripped."""
    with open_tarball(archive) as tar:
        members = [m for m in tar.getmembers() if _member_path(m) not in ("", ".")]
        tops = {_member_path(m).split("/", 1)[0] for m in members}
        strip = len(tops) == 1 and any("/" in _member_path(m) for m in members)
        entries: list[_Entry] = []
        newest = 0
        for m in members:
            rel = _member_path(m)
            if strip:
                rel = rel.split("/", 1)[1] if "/" in rel else ""
            if not rel or rel.startswith("/") or ".." in rel.split("/") or _pruned(rel, prune):
                continue
            newest = max(newest, int(m.mtime))
            if m.issym():
                entries.append(_Entry(rel, "symlink", target=m.linkname))
            elif m.isfile() or m.islnk():  # a hard link: the file's content once more
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


@dataclass(frozen=True, kw_only=True)
class _Collected:
    """What the tarball is made of: entries to pack, or upstream's file kept as it is."""

    origin: str  # the commit id, or the upstream URL
    entries: list[_Entry] = field(default_factory=list)
    mtime: int = 0
    pristine: Path | None = None  # upstream's verified file: the tarball, byte for byte
    upstream_signature: Path | None = None


def _collect(
    project: Project, version: Version, env: Mapping[str, str], stack: contextlib.ExitStack
) -> _Collected:
    src = project.config.source
    if src.kind == "url":
        upstream = Upstream.of(project, version)
        archive, signature = download(upstream, cache_dir=project.root / src.cache_dir)
        if src.pristine:
            return _Collected(origin=upstream.url, pristine=archive, upstream_signature=signature)
        entries, newest = _url_entries(archive, src.prune)
        return _Collected(origin=upstream.url, entries=entries, mtime=_mtime(env, newest))
    gitdir, subdir = git_origin(project, src, env)
    ref, commit = _resolve_ref(gitdir, src, version, env)
    log.info("source %s at %s (%s)", version, ref, commit[:12])
    shown = _git(gitdir, "show", "-s", "--format=%ct", "--end-of-options", commit, env=env)
    commit_time = int(shown.stdout.strip())
    work = stack.enter_context(_checkout(gitdir, commit, submodules=src.submodules, env=env))
    entries = _git_entries(work, subdir, submodules=src.submodules, prune=src.prune, env=env)
    return _Collected(origin=commit, entries=entries, mtime=_mtime(env, commit_time))


def _paths(project: Project, version: Version) -> tuple[Path, Path, Path, Path]:
    tarball = project.tarball_path(version)
    sums = tarball.with_name(f"{project.source_stem(version)}.SHA256SUMS")
    return (
        tarball,
        tarball.with_name(tarball.name + ".asc"),
        sums,
        sums.with_name(sums.name + ".asc"),
    )


def make_source_tarball(
    project: Project, version: Version, *, env: Mapping[str, str], signer: Signer | None = None
) -> SourceTarball:
    """Make, sign and verify the source tarball for ``version``; all its files or none.

    A url source with no ``prune`` keeps upstream's verified file byte for byte (and
    upstream's signature beside it, as ``<tarball>.upstream.asc``); anything else is packed
    reproducibly. ``signer``: the one :func:`releng.gpg.signer_for` gives, when the caller
    has it already.
    """
    signer = signer or signer_for(project, env, release=version.is_release)  # before any work
    tarball, asc, sums, sums_asc = _paths(project, version)
    upstream_asc = project.upstream_signature_path(version)
    project.out_dir.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.ExitStack() as stack,
        tempfile.TemporaryDirectory(dir=project.out_dir, prefix=".tmp-source-") as tmp,
    ):
        got = _collect(project, version, env, stack)
        staged = Path(tmp) / tarball.name
        names = [tarball.name, asc.name, sums.name, sums_asc.name]
        if got.pristine is not None:
            shutil.copyfile(got.pristine, staged)
            if got.upstream_signature is not None and upstream_asc is not None:
                shutil.copyfile(got.upstream_signature, Path(tmp) / upstream_asc.name)
                names.append(upstream_asc.name)
        else:
            prefix = project.source_stem(version)
            write_reproducible_tarball(got.entries, staged, prefix=prefix, mtime=got.mtime)
        digest = file_sha256(staged)
        staged_sums = Path(tmp) / sums.name
        staged_sums.write_text(f"{digest}  {tarball.name}\n")
        with ThreadPoolExecutor(2) as pool:  # two gpg runs (each verified) at once
            list(pool.map(signer.sign_file, [staged, staged_sums]))
        for name in names:
            (Path(tmp) / name).replace(project.out_dir / name)
    stamp = project.state_dir / _STAMP_DIR / f"{tarball.name}.json"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"origin": got.origin, "sha256": digest}))
    log.info("wrote %s (sha256 %s), signed by %s", tarball, digest, signer.fingerprint)
    return SourceTarball(
        tarball=tarball,
        sha256=digest,
        signature=asc,
        sums=sums,
        sums_signature=sums_asc,
        origin=got.origin,
        upstream_signature=upstream_asc,
    )


def current_source_tarball(
    project: Project, version: Version, *, env: Mapping[str, str]
) -> SourceTarball | None:
    """The existing tarball when it is complete and matches its stamp; None: make it anew.

    A release's tag and a url source do not move, so an intact tarball is reused. A
    nightly is remade when the nightly ref now points at another commit.
    """
    tarball, asc, sums, sums_asc = _paths(project, version)
    upstream_asc = project.upstream_signature_path(version)
    stamp = project.state_dir / _STAMP_DIR / f"{tarball.name}.json"
    wanted = [tarball, asc, sums, sums_asc, stamp, *([upstream_asc] if upstream_asc else [])]
    if not all(p.exists() for p in wanted):
        return None
    recorded = json.loads(stamp.read_text())
    current = recorded["origin"]
    if project.config.source.kind == "git" and version.is_nightly:
        gitdir, _ = git_origin(project, project.config.source, env)
        current = _resolve_ref(gitdir, project.config.source, version, env)[1]
    if current != recorded["origin"] or file_sha256(tarball) != recorded["sha256"]:
        return None
    log.info("%s is up to date", tarball)
    return SourceTarball(
        tarball=tarball,
        sha256=recorded["sha256"],
        signature=asc,
        sums=sums,
        sums_signature=sums_asc,
        origin=current,
        upstream_signature=upstream_asc,
    )


def ensure_source_tarball(
    project: Project, version: Version, *, env: Mapping[str, str]
) -> SourceTarball:
    """The current tarball (see :func:`current_source_tarball`), else a new one."""
    return current_source_tarball(project, version, env=env) or make_source_tarball(
        project, version, env=env
    )
