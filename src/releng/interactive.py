"""``invoke interactive``: a shell in a distro's builder image, with the build's mounts.

The shell gets the same read-only mounts as a build (the repository at
``/opt/<name>-packaging``, the distro directory at ``/opt/<name>-distro-packaging``),
``/var/out`` read-write on ``out/interactive/<distro>/``, the same environment
as a build of ``version``, network (to ``apt-get install gdb``), and
``seccomp=unconfined`` so that gdb and strace work. ``--from-failed`` opens the
image that ``make-package --keep`` committed from a failed build instead.

``--arch`` (and ``--mode``) choose the builder as ``make-package`` does: for another
architecture than the host's, the cross builder (the host's image with the cross toolchain;
``HOST_ARCH`` and ``DPKG_BUILDPACKAGE_ARGS`` say what a build would run) or the emulated one
(the architecture's own image, every program run through qemu-user-static).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from releng.build import (
    BUILD_DIR,
    build_environment,
    build_mounts,
    failed_image,
    plan_build,
    secret_masks,
    source_dates,
    stage_debian,
    stages_debian,
)
from releng.engine import ContainerSpec, Engine
from releng.errors import BuildError
from releng.project import Project
from releng.version import Version

log = logging.getLogger(__name__)

INTERACTIVE_OUT = "interactive"


def require_terminal(stdin: TextIO | None = None) -> None:
    stream = stdin if stdin is not None else sys.stdin
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        raise BuildError(
            "invoke interactive needs a terminal on standard input (it opens a shell); "
            "run it from a terminal, or use `invoke make-package` for unattended builds"
        )


def interactive_spec(
    engine: Engine,
    project: Project,
    distro_id: str,
    version: Version,
    *,
    env: Mapping[str, str],
    from_failed: bool = False,
    arch: str | None = None,
    mode: str | None = None,
    command: Sequence[str] = ("bash", "-l"),
) -> ContainerSpec:
    """The container an interactive session runs in (plain data; nothing started).
    ``arch`` (default: the host's) and ``mode``: :func:`releng.build.resolve_target`."""
    distro = project.distro(distro_id)
    plan = plan_build(engine, project, distro, version, env=env, force=True, arch=arch, mode=mode)
    image = plan.builder.id
    if from_failed:
        image = failed_image(project, distro_id)
        if engine.image_id(image) is None:
            raise BuildError(
                f"no failed build of {distro_id} is kept ({image} is not in the engine); "
                f"run `invoke make-package {distro_id} --keep` and let it fail first"
            )
    out_dir = project.out_dir / INTERACTIVE_OUT / distro_id
    out_dir.mkdir(parents=True, exist_ok=True)
    environment = build_environment(plan, cpus=os.cpu_count() or 1)
    environment["TERM"] = env.get("TERM", "xterm")
    debian = None
    if stages_debian(distro):  # the prepared debian/, as a build gets it
        debian = project.out_dir / INTERACTIVE_OUT / f".{distro_id}.debian"
        shutil.rmtree(debian, ignore_errors=True)
        debian.mkdir()
        stage_debian(plan, debian, dates=source_dates(plan.tarball))
    return ContainerSpec(
        image=image,
        command=list(command),
        mounts=build_mounts(project, distro, out_dir, debian=debian),
        masks=secret_masks(project),
        environment=environment,
        workdir=BUILD_DIR,
        security_opt=["seccomp=unconfined"],
        tty=True,
        stdin_open=True,
    )


def attach(engine: Engine, spec: ContainerSpec, *, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Run ``spec`` with this terminal attached (raw mode); its exit code. Always removed."""
    import select
    import termios
    import tty

    log.info("%s", spec.describe())
    with engine.container(spec) as container:
        sock = container.attach_socket()
        raw = sock._sock  # the socket under the SDK's SocketIO wrapper
        container.start()
        size = shutil.get_terminal_size()
        with contextlib.suppress(Exception):
            container.resize(height=size.lines, width=size.columns)
        saved = termios.tcgetattr(stdin_fd)
        tty.setraw(stdin_fd)
        watch: list[Any] = [raw, stdin_fd]
        try:
            while True:
                ready, _, _ = select.select(watch, [], [])
                if raw in ready:
                    data = raw.recv(65536)
                    if not data:
                        break
                    os.write(stdout_fd, data)
                if stdin_fd in ready:
                    data = os.read(stdin_fd, 65536)
                    if not data:  # end of input: the shell sees EOF too
                        raw.shutdown(socket.SHUT_WR)
                        watch.remove(stdin_fd)
                        continue
                    raw.sendall(data)
        finally:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
            sock.close()
        return container.wait()
