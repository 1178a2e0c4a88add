"""The compiler cache of C and C++ builds: ccache in a volume, optionally shared through S3.

``[build] compiler_cache`` in product.toml picks the mode (``make-package --no-cache``
turns it off for one build):

- ``off``: the build runs as it always did.
- ``local``: a named volume per distro and architecture (:func:`cache_volume`) holds a
  ccache directory, mounted at :data:`CACHE_MOUNT` in the build container, which keeps
  its network off. ``packaging/with-compiler-cache`` runs the builder with ccache's
  wrappers first on PATH, after checking that the cache works (else: one line, and the
  build runs uncached), and ends with the hit rate. ccache itself keeps the cache under
  ``[build] cache_size``.
- ``s3``: the same volume, plus a bucket prefix shared by every worker. The build
  container never talks to S3: on the host, before the build, :class:`S3Cache` copies
  the entries the volume lacks from the prefix (newest first, up to the size limit);
  after the build it uploads the entries the prefix lacks. ccache's entries are
  content-addressed files, so this is a sync by name, and concurrent workers can only
  add the same entries. The host's credentials (the worker's instance role, limited to
  the prefix by :func:`iam_statements`) never enter the container.

A cache that fails in any way (unreachable S3, a volume the host cannot read) costs a
line in the build log, never the build.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import platform
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from releng.errors import BuildError

if TYPE_CHECKING:
    from releng.config import ProductConfig
    from releng.distro import Distro
    from releng.engine import Engine, VolumeInfo
    from releng.project import Project

log = logging.getLogger(__name__)

# The volumes' names start with it (a test run sets one of its own: tests/fixtures/docker.py).
VOLUME_PREFIX = "releng-ccache"
CACHE_MOUNT = "/var/cache/releng-ccache"  # also made (mode 1777) by packaging/builder-setup
WRAPPER = "packaging/with-compiler-cache"
LOG_PREFIX = ">>> compiler cache:"  # the wrapper's lines: the last one is the hit rate
PULLED_MARKER = ".releng-pulled"  # tells the wrapper to recount sizes (ccache --cleanup)
LABEL_DISTRO = "org.releng.ccache-distro"
LABEL_ARCH = "org.releng.ccache-arch"
DEFAULT_S3_PREFIX = "compiler-cache"
S3_WORKERS = 16
NOBODY = "65534:65534"
# ccache's entries: <level dirs of one character>/<digest><kind>; R results, M manifests
# (rewritten as entries are added), W raw files. Stats, locks, tmp/ and ccache.conf are not.
_ENTRY_RE = re.compile(r"^(?:[0-9a-z]/){1,4}[0-9a-z_]+[RMW]$")
_SIZE_UNITS = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}  # ccache's are decimal
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386"}

Mode = Literal["off", "local", "s3"]


def host_architecture() -> str:
    """The Debian architecture of this host's builds (the engine runs native images)."""
    machine = platform.machine()
    return _ARCHES.get(machine, machine.lower())


def cache_volume(project: Project, distro_id: str, arch: str) -> str:
    return f"{VOLUME_PREFIX}-{project.name}-{distro_id}-{arch}"


def size_bytes(size: str) -> int:
    """``5G`` -> 5_000_000_000 (config.py checked the form)."""
    return int(float(size[:-1]) * _SIZE_UNITS[size[-1]])


def ccache_size(size: str) -> str:
    """``[build] cache_size`` as ccache's max_size (which spells kilo as a lower-case k)."""
    return size.replace("K", "k")


@dataclass(frozen=True, kw_only=True)
class S3Location:
    bucket: str
    prefix: str  # no leading or trailing slash

    @classmethod
    def parse(cls, url: str) -> S3Location:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return cls(bucket=bucket, prefix=prefix.strip("/") or DEFAULT_S3_PREFIX)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True, kw_only=True)
class CompilerCache:
    """What one build does about the compiler cache, as plain data."""

    mode: Mode
    volume: str = ""
    max_size: str = ""
    arch: str = ""
    s3: S3Location | None = None
    reason: str = ""  # why it is off

    @property
    def on(self) -> bool:
        return self.mode != "off"

    def describe(self) -> str:
        if not self.on:
            return f"off ({self.reason})"
        where = f"volume {self.volume}, limit {self.max_size}"
        return f"ccache in {where}" + (f", shared through {self.s3.url}" if self.s3 else "")

    def command(self, command: list[str], packaging_mount: str) -> list[str]:
        """``command`` run through the wrapper (unchanged when the cache is off)."""
        if not self.on:
            return command
        return ["sh", f"{packaging_mount}/{WRAPPER}", *command]

    def environment(self) -> dict[str, str]:
        if not self.on:
            return {}
        return {"CCACHE_DIR": CACHE_MOUNT, "CCACHE_MAXSIZE": ccache_size(self.max_size)}

    def volumes(self) -> dict[str, str]:
        return {self.volume: CACHE_MOUNT} if self.on else {}


def plan_cache(
    project: Project, distro: Distro, *, no_cache: bool = False, arch: str | None = None
) -> CompilerCache:
    """The compiler cache of one build of ``distro`` (``no_cache``: make-package --no-cache)."""
    build = project.config.build
    if no_cache:
        return CompilerCache(mode="off", reason="--no-cache")
    if build.compiler_cache == "off":
        return CompilerCache(mode="off", reason="[build] compiler_cache = 'off'")
    arch = arch or host_architecture()
    s3 = None
    if build.compiler_cache == "s3":
        url = build.cache_url or f"s3://{project.config.publish.scratch_bucket}"
        s3 = S3Location.parse(url)
    return CompilerCache(
        mode=build.compiler_cache,
        volume=cache_volume(project, distro.id, arch),
        max_size=build.cache_size,
        arch=arch,
        s3=s3,
    )


def ensure_volume(engine: Engine, cache: CompilerCache, distro_id: str) -> None:
    """Create the cache's volume, labelled with its distro and architecture, if missing."""
    if not cache.on:
        return
    if engine.volume(cache.volume) is None:
        engine.create_volume(cache.volume, labels={LABEL_DISTRO: distro_id, LABEL_ARCH: cache.arch})


def volume_path(engine: Engine, volume: str) -> Path | None:
    """The volume's directory on this host, when this process can write there (root, local
    engine); else None."""
    found = engine.volume(volume)
    if found is None or not found.mountpoint:
        return None
    path = Path(found.mountpoint)
    return path if os.access(path, os.W_OK | os.X_OK) else None


# -- S3 ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteEntry:
    etag: str
    size: int
    modified: float


class S3Cache:
    """One distro and architecture's entries in the shared prefix, synced with a directory.

    The client comes in (a seam: moto's S3 in tests). Methods raise what botocore raises;
    :func:`pull` and :func:`push` turn that into a log line.
    """

    def __init__(self, client: Any, location: S3Location, *, distro_id: str, arch: str) -> None:
        self.client = client
        self.bucket = location.bucket
        self.prefix = f"{location.prefix}/{distro_id}/{arch}/"
        self.url = f"s3://{self.bucket}/{self.prefix}"

    def listing(self) -> dict[str, RemoteEntry]:
        entries: dict[str, RemoteEntry] = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                rel = str(obj["Key"])[len(self.prefix) :]
                if _ENTRY_RE.match(rel):
                    entries[rel] = RemoteEntry(
                        etag=str(obj["ETag"]).strip('"'),
                        size=int(obj["Size"]),
                        modified=obj["LastModified"].timestamp(),
                    )
        return entries

    def download(
        self, local: Path, remote: Mapping[str, RemoteEntry], *, limit: int, uid: int, gid: int
    ) -> tuple[int, int]:
        """Copy the entries ``local`` lacks (newest first, at most ``limit`` bytes in all);
        the number of files and bytes copied."""
        wanted: list[str] = []
        total = 0
        for rel, entry in sorted(remote.items(), key=lambda kv: -kv[1].modified):
            total += entry.size
            if total > limit:
                break
            if _differs(local / rel, rel, entry.etag):
                wanted.append(rel)

        def fetch(rel: str) -> int:
            dest = local / rel
            _makedirs(dest.parent, local, uid, gid)
            tmp = dest.with_name(f".{dest.name}.releng-{os.getpid()}")
            self.client.download_file(self.bucket, self.prefix + rel, str(tmp))
            os.chown(tmp, uid, gid)
            tmp.replace(dest)
            return remote[rel].size

        with ThreadPoolExecutor(max_workers=S3_WORKERS) as pool:
            copied = sum(pool.map(fetch, wanted))
        if wanted:
            marker = local / PULLED_MARKER
            marker.touch()
            os.chown(marker, uid, gid)
        return len(wanted), copied

    def upload(self, local: Path, remote: Mapping[str, RemoteEntry]) -> tuple[int, int]:
        """Copy the entries the prefix lacks (or whose manifest changed); files and bytes."""
        wanted = []
        for path in local.rglob("*"):
            rel = path.relative_to(local).as_posix()
            if not _ENTRY_RE.match(rel) or not path.is_file():
                continue
            entry = remote.get(rel)
            if entry is None or _differs(path, rel, entry.etag):
                wanted.append((rel, path))

        def put(item: tuple[str, Path]) -> int:
            rel, path = item
            data = path.read_bytes()
            md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
            self.client.put_object(
                Bucket=self.bucket, Key=self.prefix + rel, Body=data, ContentMD5=md5
            )
            return len(data)

        with ThreadPoolExecutor(max_workers=S3_WORKERS) as pool:
            sent = sum(pool.map(put, wanted))
        return len(wanted), sent


def _differs(path: Path, rel: str, etag: str) -> bool:
    """Whether ``path`` must be copied: it is missing, or a manifest (M, rewritten as
    entries are added) with other content. Results and raw files never change."""
    if not path.is_file():
        return True
    if not rel.endswith("M"):
        return False
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest() != etag


def _makedirs(path: Path, top: Path, uid: int, gid: int) -> None:
    missing = []
    while path != top and not path.is_dir():
        missing.append(path)
        path = path.parent
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            p.mkdir()
            os.chown(p, uid, gid)


@dataclass
class S3Sync:
    """The s3 mode around one build: :meth:`pull` before it, :meth:`push` after it.

    Every failure becomes one ``releng: compiler cache: ...`` line and turns the shared
    cache off for the rest of the build; the build itself goes on.
    """

    engine: Engine
    cache: CompilerCache
    distro_id: str
    env: Mapping[str, str]
    record: Callable[[str], None]
    uid: int
    gid: int
    _remote: dict[str, RemoteEntry] | None = None
    _store: S3Cache | None = None
    _local: Path | None = None

    def pull(self) -> None:
        if self.cache.s3 is None:
            return
        local = volume_path(self.engine, self.cache.volume)
        if local is None:
            self.record(
                f"releng: compiler cache: this host cannot reach the files of volume "
                f"{self.cache.volume} (not root, or a remote engine); "
                f"{self.cache.s3.url} is not used, the local cache is"
            )
            return
        from releng import aws_clients

        # Short timeouts: a cache that does not answer must not stall builds. Credentials
        # come from boto3's usual chain on the host (on AWS: the instance role).
        client = aws_clients.client(
            "s3",
            region_name=aws_clients.region(self.env),
            endpoint_url=self.env.get("AWS_ENDPOINT_URL", ""),
            connect_timeout=3,
            read_timeout=30,
            max_attempts=2,
            pool=S3_WORKERS,
        )
        store = S3Cache(client, self.cache.s3, distro_id=self.distro_id, arch=self.cache.arch)
        try:
            remote = store.listing()
            local.chmod(0o1777)  # as builder-setup made it: the build user writes there
            files, size = store.download(
                local, remote, limit=size_bytes(self.cache.max_size), uid=self.uid, gid=self.gid
            )
        except Exception as exc:  # any failure of the cache: one line, no cache
            self.record(
                f"releng: compiler cache: {store.url} is unreachable ({_reason(exc)}); "
                "this build uses only the local cache"
            )
            return
        self.record(
            f"releng: compiler cache: {files} entries ({size / 1e6:.1f} MB) copied from "
            f"{store.url} ({len(remote)} there)"
        )
        self._store, self._remote, self._local = store, remote, local

    def push(self) -> None:
        if self._store is None or self._remote is None or self._local is None:
            return
        try:
            files, size = self._store.upload(self._local, self._remote)
        except Exception as exc:  # any failure of the cache: one line
            self.record(
                f"releng: compiler cache: uploading to {self._store.url} failed "
                f"({_reason(exc)}); the next build there starts with what it has"
            )
            return
        self.record(
            f"releng: compiler cache: {files} new entries ({size / 1e6:.1f} MB) "
            f"uploaded to {self._store.url}"
        )


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(': "', 1)[0][:200]  # botocore's connection errors quote the whole URL


def iam_statements(location: S3Location, *, partition: str = "aws") -> list[dict[str, Any]]:
    """What a worker's role needs for the s3 mode, and nothing more: list, read and write
    under the cache prefix. The CloudFormation template's builder role holds them for a
    cache bucket other than scratch (its bucket, prefix and partition as ``${...}``)."""
    return [
        {
            "Sid": "CompilerCacheList",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:{partition}:s3:::{location.bucket}",
            "Condition": {"StringLike": {"s3:prefix": [f"{location.prefix}/*"]}},
        },
        {
            "Sid": "CompilerCacheObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": f"arn:{partition}:s3:::{location.bucket}/{location.prefix}/*",
        },
    ]


def separate_cache_bucket(config: ProductConfig) -> S3Location | None:
    """The s3 mode's location when it is not in ``[publish] scratch_bucket`` (whose whole
    bucket the builders may use anyway): the stack grants its prefix to the builders."""
    if config.build.compiler_cache != "s3" or not config.build.cache_url:
        return None
    location = S3Location.parse(config.build.cache_url)
    return None if location.bucket == config.publish.scratch_bucket else location


# -- show-cache and clear-cache -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VolumeStats:
    volume: str
    distro_id: str
    arch: str
    report: str  # ccache --show-stats, or why it is missing


def project_volumes(engine: Engine, project: Project, distro_id: str = "") -> list[VolumeInfo]:
    prefix = (
        cache_volume(project, distro_id, "") if distro_id else f"{VOLUME_PREFIX}-{project.name}-"
    )
    return engine.volumes(prefix)


def cache_stats(engine: Engine, project: Project, distro_id: str = "") -> list[VolumeStats]:
    """ccache's statistics of each cache volume (of ``distro_id``, or all), read in a
    container of that distro's newest builder image, with no network."""
    from releng.engine import ContainerSpec

    stats = []
    for volume in project_volumes(engine, project, distro_id):
        labels = volume.labels
        distro = str(labels.get(LABEL_DISTRO, ""))
        image = _builder_image(engine, project, distro)
        if image is None:
            report = f"no builder image of {distro or 'its distro'} to read it with; make-package makes one"
        else:
            spec = ContainerSpec(
                image=image,
                command=["sh", "-c", "ccache --show-stats --verbose 2>&1"],
                volumes={volume.name: CACHE_MOUNT},
                environment={
                    "CCACHE_DIR": CACHE_MOUNT,
                    "CCACHE_MAXSIZE": ccache_size(project.config.build.cache_size),
                },
                network="none",
                # Not root: nothing it might write may belong to another user than the build's.
                user=NOBODY,
            )
            result = engine.run_spec(spec)
            report = result.output.rstrip()
            if result.exit_code != 0:
                said = (report.splitlines() or ["no output"])[0]
                report = (
                    f"ccache cannot read it ({said}); invoke clear-cache {distro} empties it "
                    "(the next build starts a new one)"
                )
        stats.append(
            VolumeStats(
                volume=str(volume.name),
                distro_id=distro,
                arch=str(labels.get(LABEL_ARCH, "")),
                report=report,
            )
        )
    return stats


def _builder_image(engine: Engine, project: Project, distro_id: str) -> str | None:
    if not distro_id:
        return None
    prefix = f"releng-builder-{project.name}:{distro_id}-"
    images = engine.images(f"releng-builder-{project.name}")
    tagged = sorted(
        ((i.created, t) for i in images for t in i.tags if t.startswith(prefix)), reverse=True
    )
    return tagged[0][1] if tagged else None


def cache_clear(engine: Engine, project: Project, distro_id: str = "") -> list[str]:
    """Remove the cache volumes (of ``distro_id``, or all); the names removed."""
    from releng.engine import EngineRefused

    removed = []
    for volume in project_volumes(engine, project, distro_id):
        try:
            engine.remove_volume(volume.name)
        except EngineRefused as exc:
            raise BuildError(
                f"cannot remove the compiler cache volume {volume.name}: {exc.reason}; "
                "wait for the build that uses it to end"
            ) from None
        removed.append(volume.name)
    return removed
