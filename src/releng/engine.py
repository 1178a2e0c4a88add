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
                f"image {self.spec.image} is not in the engine; run `invoke base-image DISTRO` "
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
    def from_env(cls, env: Mapping[str, str] | None = None) -> Engine:
        """The engine that ``DOCKER_HOST`` (in ``env``) or the local socket names."""
        import os

        import docker
        import docker.errors

        environ = dict(os.environ if env is None else env)
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


def image_ref_parts(reference: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag), tag defaulting to ``latest`` (a digest stays in repo)."""
    if "@" in reference:
        return reference, ""
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = reference.rsplit(":", 1)
        return repo, tag
    return reference, "latest"
