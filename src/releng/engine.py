"""The Docker seam: one engine, throwaway containers that always remove themselves.

:class:`Engine` wraps a ``docker.DockerClient`` (the engine that ``DOCKER_HOST``
or the local socket names). :meth:`Engine.run` runs one command to completion
and returns its exit code and output; :meth:`Engine.container` is the context
manager for longer work (streamed logs, commit of a failed build). Whatever
happens inside the ``with`` block, Ctrl-C included, the container is removed on
the way out.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from releng.errors import EngineError

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container as DockerContainer

log = logging.getLogger(__name__)

PING_TIMEOUT = 15  # seconds: how long "is an engine there?" may take
API_TIMEOUT = 3600  # seconds between two bytes of a long, quiet build's log stream


class EngineRefused(EngineError):
    """The engine refused a request (an image or volume in use); ``reason`` is its word."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path into a container (read-only unless said otherwise)."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str


@dataclass(frozen=True, kw_only=True)
class ContainerInfo:
    """A container the engine lists: its id and labels."""

    id: str
    labels: Mapping[str, str]

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True, kw_only=True)
class VolumeInfo:
    """A named volume: its labels and where its files are on the engine's host."""

    name: str
    labels: Mapping[str, str]
    mountpoint: str


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    """An image the engine lists: its id, tags, creation time (RFC 3339) and labels."""

    id: str
    tags: tuple[str, ...]
    created: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """Everything that shapes one container, as plain data (logged before it runs)."""

    image: str
    command: Sequence[str]
    mounts: Sequence[Mount] = ()
    # Named volumes: volume name -> target path (read-write): the apt download cache.
    volumes: Mapping[str, str] = field(default_factory=dict)
    # Paths hidden behind an empty read-only tmpfs (secrets inside a mounted tree).
    masks: Sequence[str] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None
    user: str | None = None
    workdir: str | None = None
    hostname: str | None = None  # None: the engine's default (the container id)
    security_opt: Sequence[str] = ()
    tty: bool = False
    stdin_open: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """An equivalent ``docker run`` line, for the log."""
        args = ["docker", "run", "--rm"]
        for m in self.mounts:
            args += ["-v", f"{m.source}:{m.target}" + (":ro" if m.read_only else "")]
        for name, target in self.volumes.items():
            args += ["-v", f"{name}:{target}"]
        for path in self.masks:
            args += ["--tmpfs", f"{path}:ro"]
        for key in sorted(self.environment):
            args += ["-e", f"{key}={self.environment[key]}"]
        if self.network:
            args += ["--network", self.network]
        if self.user:
            args += ["--user", self.user]
        if self.workdir:
            args += ["--workdir", self.workdir]
        if self.hostname:
            args += ["--hostname", self.hostname]
        for opt in self.security_opt:
            args += ["--security-opt", opt]
        if self.tty:
            args.append("-t")
        if self.stdin_open:
            args.append("-i")
        return shlex.join([*args, self.image, *self.command])

    def create_kwargs(self) -> dict[str, Any]:
        from docker.types import Mount as DockerMount

        mounts = [
            DockerMount(target=m.target, source=str(m.source), type="bind", read_only=m.read_only)
            for m in self.mounts
        ]
        mounts += [
            DockerMount(target=target, source=name, type="volume")
            for name, target in self.volumes.items()
        ]
        mounts += [
            DockerMount(target=path, source=None, type="tmpfs", read_only=True, tmpfs_size=4096)
            for path in self.masks
        ]
        kwargs: dict[str, Any] = {
            "image": self.image,
            "command": list(self.command),
            "mounts": mounts,
            "environment": dict(self.environment),
            "detach": True,
            "tty": self.tty,
            "stdin_open": self.stdin_open,
            "labels": {"org.releng.throwaway": "1", **self.labels},
        }
        if self.network:
            kwargs["network_mode"] = self.network
        if self.user:
            kwargs["user"] = self.user
        if self.workdir:
            kwargs["working_dir"] = self.workdir
        if self.hostname:
            kwargs["hostname"] = self.hostname
        if self.security_opt:
            kwargs["security_opt"] = list(self.security_opt)
        return kwargs


class Container:
    """A created container; use as a context manager so it is always removed."""

    def __init__(self, engine: Engine, spec: ContainerSpec) -> None:
        self.engine = engine
        self.spec = spec
        self._container: DockerContainer | None = None

    @property
    def id(self) -> str:
        if self._container is None:
            raise EngineError("internal: the container was not created")
        return str(self._container.id)

    def __enter__(self) -> Container:
        import docker.errors

        log.debug("%s", self.spec.describe())
        # A name known before the request: a Ctrl-C during the create call can still remove it.
        name = f"releng-{uuid.uuid4().hex[:16]}"
        try:
            self._container = self.engine.client.containers.create(
                name=name, **self.spec.create_kwargs()
            )
        except docker.errors.ImageNotFound:
            raise EngineError(
                f"image {self.spec.image} is not in the engine; run `invoke make-base-image DISTRO` "
                "or the build that makes it"
            ) from None
        except docker.errors.APIError as exc:
            raise EngineError(
                f"the engine refused to create a container of {self.spec.image}: {exc.explanation}"
            ) from None
        except BaseException:
            with contextlib.suppress(Exception):
                self.engine.client.api.remove_container(name, force=True, v=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def remove(self) -> None:
        import docker.errors

        if self._container is None:
            return
        try:
            self._container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:  # removal in progress is fine
            if "already in progress" not in str(exc):
                raise
        self._container = None

    def start(self) -> None:
        assert self._container is not None
        self._container.start()

    def stream(self, on_line: Callable[[str], None]) -> None:
        """Call ``on_line`` for each line of combined output until the container stops."""
        assert self._container is not None
        seen = bytearray()
        buffer = b""

        def feed(chunk: bytes) -> None:
            nonlocal buffer
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                on_line(line.decode("utf-8", "replace"))

        for chunk in self._container.logs(stream=True, follow=True, stdout=True, stderr=True):
            seen += chunk
            feed(chunk)
        # A follow stream can end before the engine has written the last lines of a
        # container that just exited (seen with dockerd 20.10 under load): once it has
        # stopped, read the whole log again and pass on what the stream missed.
        self._container.wait(timeout=None)
        full = bytes(self._container.logs(stdout=True, stderr=True))
        if len(full) > len(seen) and full.startswith(bytes(seen)):
            feed(full[len(seen) :])
        if buffer:
            on_line(buffer.decode("utf-8", "replace"))

    def exec(
        self, command: Sequence[str], *, environment: Mapping[str, str] | None = None
    ) -> RunResult:
        """Run ``command`` in the running container to its end; its exit code and output."""
        assert self._container is not None
        log.debug("docker exec %s %s", self.id[:12], shlex.join(command))
        code, output = self._container.exec_run(
            list(command), environment=dict(environment or {}), stdout=True, stderr=True
        )
        assert isinstance(output, bytes) and code is not None  # not streamed: both are there
        return RunResult(exit_code=code, output=output.decode("utf-8", "replace"))

    def attach_socket(self) -> Any:
        """The raw socket of the container's stdin, stdout and stderr (for a terminal)."""
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        return self.engine.client.api.attach_socket(self.id, params=params)

    def resize(self, *, height: int, width: int) -> None:
        """Set the container's terminal size."""
        self.engine.client.api.resize(self.id, height=height, width=width)

    def wait(self) -> int:
        assert self._container is not None
        return int(self._container.wait(timeout=None)["StatusCode"])

    def output(self) -> str:
        assert self._container is not None
        return bytes(self._container.logs(stdout=True, stderr=True)).decode("utf-8", "replace")

    def commit(
        self,
        repository: str,
        tag: str,
        *,
        changes: Sequence[str] = (),
        conf: Mapping[str, Any] | None = None,
    ) -> str:
        """Commit the container's filesystem to ``repository:tag``; returns the image id.

        ``conf`` overrides parts of the container's configuration (e.g. ``Env``).
        """
        assert self._container is not None
        image = self._container.commit(
            repository=repository,
            tag=tag,
            changes=list(changes) or None,
            conf=dict(conf) if conf else None,
        )
        log.info("committed container %s to %s:%s (%s)", self.id[:12], repository, tag, image.id)
        return str(image.id)


class Engine:
    """One Docker engine."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Engine:
        """The engine that ``DOCKER_HOST`` (in ``env``, the caller's environment) or the local
        socket names."""
        import docker
        import docker.errors

        environ = dict(env)
        where = environ.get("DOCKER_HOST") or "the local socket (unix:///var/run/docker.sock)"
        try:
            client = docker.from_env(environment=environ, timeout=PING_TIMEOUT)
            client.ping()
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise EngineError(
                f"no Docker engine answers at {where} ({reason}); start one with ./scripts/setup, "
                "or set DOCKER_HOST to an engine that runs"
            ) from None
        client.api.timeout = API_TIMEOUT
        return cls(client)

    def container(self, spec: ContainerSpec) -> Container:
        return Container(self, spec)

    def run(
        self,
        image: str,
        command: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        environment: Mapping[str, str] | None = None,
        network: str | None = None,
        user: str | None = None,
        workdir: str | None = None,
    ) -> RunResult:
        """Run ``command`` in a throwaway container of ``image``; the container is always removed."""
        spec = ContainerSpec(
            image=image,
            command=command,
            mounts=mounts,
            environment=dict(environment or {}),
            network=network,
            user=user,
            workdir=workdir,
        )
        return self.run_spec(spec)

    def run_spec(
        self, spec: ContainerSpec, on_line: Callable[[str], None] | None = None
    ) -> RunResult:
        """Run ``spec`` to its end (``on_line`` sees each line live); the container is removed."""
        with self.container(spec) as c:
            c.start()
            c.stream(on_line or (lambda _line: None))
            code = c.wait()
            output = c.output()
        return RunResult(exit_code=code, output=output)

    def image_id(self, reference: str) -> str | None:
        """The id of ``reference`` in the engine, or None."""
        import docker.errors

        try:
            return str(self.client.images.get(reference).id)
        except docker.errors.ImageNotFound:
            return None

    def image_labels(self, reference: str) -> dict[str, str]:
        image = self.client.images.get(reference)
        return dict(image.labels or {})

    def image_architecture(self, reference: str) -> str | None:
        """The architecture an image's config records (OCI names: amd64, arm64), or None."""
        import docker.errors

        try:
            image = self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            return None
        return str(image.attrs.get("Architecture") or "")

    def images(self, repository: str) -> list[ImageInfo]:
        """The images tagged in ``repository``."""
        return [
            ImageInfo(
                id=str(i.id),
                tags=tuple(i.tags),
                created=str(i.attrs.get("Created", "")),
                labels=dict(i.labels or {}),
            )
            for i in self.client.images.list(name=repository)
        ]

    def remove_image(self, reference: str) -> bool:
        """Untag (and remove, when it was the last tag) ``reference``; False when it is not
        there. EngineError with the engine's reason when it refuses (an image in use)."""
        import docker.errors

        try:
            self.client.images.remove(reference)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            reason = str(exc.explanation)
            raise EngineRefused(f"cannot remove {reference}: {reason}", reason) from None
        return True

    def pull(self, reference: str, *, platform: str | None = None) -> str:
        """Pull ``reference`` (for ``platform``); its id, or EngineError with the registry's
        reason."""
        import docker.errors

        repository, tag = image_ref_parts(reference)
        try:
            image = self.client.images.pull(repository, tag=tag or None, platform=platform)
        except docker.errors.APIError as exc:
            raise EngineError(_last_line(str(exc.explanation or exc))) from None
        return str(image.id)

    def import_image(self, tarball: Path, reference: str, *, changes: Sequence[str] = ()) -> None:
        """``docker import`` a root file system tarball as ``reference``."""
        repository, tag = image_ref_parts(reference)
        log.info("docker import %s as %s:%s", tarball, repository, tag)
        self.client.api.import_image_from_file(
            str(tarball), repository=repository, tag=tag, changes=list(changes)
        )

    def load_image(self, archive: Path) -> None:
        """``docker load`` a ``docker save``-format archive (streamed from the file)."""
        with archive.open("rb") as fh:
            self.client.images.load(fh)

    def containers(self, label: str, value: str) -> list[ContainerInfo]:
        """Every container (running or not) whose ``label`` is ``value``.

        One request: the SDK's ``containers.list`` inspects each listed container in turn and
        raises NotFound for one removed in between (a build's own clean-up racing a Ctrl-C's).
        """
        found = self.client.api.containers(all=True, filters={"label": f"{label}={value}"})
        return [ContainerInfo(id=str(c["Id"]), labels=dict(c.get("Labels") or {})) for c in found]

    def remove_container(self, container_id: str) -> bool:
        """Force-remove a container and its anonymous volumes; False when it was not there
        or its removal failed (another run removing it meanwhile)."""
        try:
            self.client.api.remove_container(container_id, force=True, v=True)
        except Exception:  # gone, or being removed by another run meanwhile: no harm
            return False
        return True

    def volume(self, name: str) -> VolumeInfo | None:
        """The named volume, or None."""
        import docker.errors

        try:
            attrs = self.client.volumes.get(name).attrs
        except docker.errors.NotFound:
            return None
        return _volume_info(attrs)

    def volumes(self, prefix: str) -> list[VolumeInfo]:
        """The volumes whose names start with ``prefix``, by name."""
        found = [_volume_info(v.attrs) for v in self.client.volumes.list(filters={"name": prefix})]
        return sorted((v for v in found if v.name.startswith(prefix)), key=lambda v: v.name)

    def create_volume(self, name: str, *, labels: Mapping[str, str]) -> None:
        self.client.volumes.create(name, labels=dict(labels))

    def remove_volume(self, name: str) -> None:
        """Remove a volume; EngineError with the engine's reason (a volume in use)."""
        import docker.errors

        try:
            self.client.volumes.get(name).remove()
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            reason = str(exc.explanation)
            raise EngineRefused(f"cannot remove the volume {name}: {reason}", reason) from None


def _volume_info(attrs: Mapping[str, Any]) -> VolumeInfo:
    return VolumeInfo(
        name=str(attrs.get("Name", "")),
        labels=dict(attrs.get("Labels") or {}),
        mountpoint=str(attrs.get("Mountpoint") or ""),
    )


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no details"


def image_ref_parts(reference: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag), tag defaulting to ``latest`` (a digest stays in repo)."""
    if "@" in reference:
        return reference, ""
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = reference.rsplit(":", 1)
        return repo, tag
    return reference, "latest"
