"""make-package: one distro's .debs, built in a throwaway container of its builder image.

Plan, act, verify:

1. :func:`plan_build` makes sure the source tarball, base image and builder image
   exist and gathers the build's inputs (tarball sha256, distro directory and
   ``packaging/`` content hashes, builder image id). When ``build.json`` of an
   earlier build in ``out/<version>/<distro>/`` records the same inputs, the
   build is up to date.
2. :func:`make_package` runs the distro's ``make-package`` (or
   ``packaging/make-debianish-package``) with no network, as an unprivileged
   user, writing into a temporary directory beside the output directory.
3. The built ``.deb``s are installed in a fresh container of the base image and
   the product's smoke command runs; only then is the temporary directory
   renamed into place. Anything else leaves nothing in ``out/``.

The signing key, GNUPGHOME and AWS credentials never reach the container: its
environment is built from scratch and ``.releng/`` (the development key) is
hidden behind an empty tmpfs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from releng.distro import Distro
from releng.engine import Container, ContainerSpec, Engine, Mount
from releng.errors import BuildError, RelengError
from releng.images import BuilderImage, ensure_base_image, ensure_builder_image
from releng.project import Project
from releng.version import Version

log = logging.getLogger(__name__)

DEFAULT_BUILDER = "packaging/make-debianish-package"
OUT_MOUNT = "/var/out"
BUILD_DIR = "/build"
SMOKE_MOUNT = "/var/debs"  # the build's output, read-only, in the smoke container
BUILD_JSON = "build.json"
BUILD_LOG = "build.log"
LOGS_DIR = "logs"  # under the state dir: logs of failed builds survive there
FAILED_REPOSITORY = "releng-failed-{name}"
FALLBACK_BUILD_UID = 1000  # the build user when the invoking user is root
LABEL_PROJECT = "org.releng.project"
LABEL_DISTRO = "org.releng.distro"
LABEL_RUN = "org.releng.run"
LABEL_SMOKE = "org.releng.smoke-of"  # the idle smoke-test container of a project
RUN_ID = uuid.uuid4().hex  # this process's containers (make-all-packages removes them on Ctrl-C)


# -- inputs ------------------------------------------------------------------------------


def tree_hash(path: Path) -> str:
    """sha256 over a directory's names, modes, symlink targets and file contents."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        base = Path(root)
        for name in sorted([*dirs, *files]):
            p = base / name
            rel = p.relative_to(path).as_posix()
            if p.is_symlink():
                digest.update(f"L {rel} {p.readlink()}\n".encode())
            elif p.is_file():
                mode = "x" if os.access(p, os.X_OK) else "-"
                digest.update(
                    f"F {rel} {mode} {hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode()
                )
            elif p.is_dir():
                digest.update(f"D {rel}\n".encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tarball_mtime(tarball: Path) -> int:
    """The source date of a tarball: its newest member's mtime (the source sets them all alike)."""
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            return max((int(m.mtime) for m in tf.getmembers()), default=0)
    except (OSError, tarfile.TarError) as exc:
        raise BuildError(
            f"cannot read the source tarball {tarball}: {exc}; remake it with --force"
        ) from None


@dataclass(frozen=True, kw_only=True)
class Owner:
    """Who the output files belong to, and the uid:gid that builds in the container."""

    uid: int
    gid: int

    @classmethod
    def for_project(cls, project: Project, env: Mapping[str, str]) -> Owner:
        if os.getuid() != 0:
            return cls(uid=os.getuid(), gid=os.getgid())
        if env.get("SUDO_UID", "").isdigit() and env.get("SUDO_GID", "").isdigit():
            return cls(uid=int(env["SUDO_UID"]), gid=int(env["SUDO_GID"]))
        st = project.root.stat()
        return cls(uid=st.st_uid, gid=st.st_gid)

    @property
    def build_user(self) -> str:
        uid = self.uid or FALLBACK_BUILD_UID
        gid = self.gid if self.uid else FALLBACK_BUILD_UID
        return f"{uid}:{gid}"


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    project: Project
    distro: Distro
    version: Version
    tarball: Path
    base_image_id: str
    builder: BuilderImage
    inputs: dict[str, str]
    out_dir: Path
    up_to_date: bool


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    distro_id: str
    version: str
    out_dir: Path
    up_to_date: bool
    files: list[str] = field(default_factory=list)
    log_path: Path | None = None
    seconds: float = 0.0


class BuildFailed(BuildError):
    """A build (or its smoke test) failed; ``log_path`` holds the whole log."""

    def __init__(self, message: str, log_path: Path | None) -> None:
        super().__init__(message)
        self.log_path = log_path


def _read_build_json(out_dir: Path) -> dict[str, object] | None:
    try:
        data = json.loads((out_dir / BUILD_JSON).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def plan_build(
    engine: Engine,
    project: Project,
    distro: Distro,
    version: Version,
    *,
    env: Mapping[str, str],
    force: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> BuildPlan:
    """Ensure the tarball and images exist, gather the inputs, decide whether to build."""
    from releng.source import ensure_source_tarball

    if not distro.is_debianish and distro.make_package is None:
        raise BuildError(f"{distro.id} has neither debian/ nor its own make-package; add one")
    check_writable(project.out_dir)
    source = ensure_source_tarball(project, version, env=env)
    base_id = ensure_base_image(engine, project, distro)
    builder = ensure_builder_image(engine, project, distro, base_id=base_id, on_line=on_line)
    inputs = {
        "tarball_sha256": source.sha256,
        "distro_dir": tree_hash(distro.path),
        "packaging": tree_hash(project.root / "packaging"),
        "builder_image": builder.id,
    }
    out_dir = project.build_dir(version, distro.id)
    previous = _read_build_json(out_dir)
    up_to_date = (
        not force
        and previous is not None
        and previous.get("inputs") == inputs
        and all((out_dir / str(f)).is_file() for f in list(previous.get("files") or []))  # type: ignore[call-overload]
    )
    return BuildPlan(
        project=project,
        distro=distro,
        version=version,
        tarball=source.tarball,
        base_image_id=base_id,
        builder=builder,
        inputs=inputs,
        out_dir=out_dir,
        up_to_date=up_to_date,
    )


def check_writable(out_dir: Path) -> None:
    """Fail early, before any container runs, when ``out/`` cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(dir=out_dir, prefix=".write-probe-")
        Path(probe).rmdir()
    except OSError as exc:
        raise BuildError(
            f"cannot write to {out_dir}: {exc.strerror}; make it writable by this user "
            f"(or remove it) and run again"
        ) from None


# -- the container ------------------------------------------------------------------------


def in_container(project: Project, host_path: Path) -> str:
    """Where a path under the repository is seen inside the build container."""
    try:
        rel = host_path.resolve().relative_to(project.root)
    except ValueError:
        raise BuildError(
            f"{host_path} is outside the repository {project.root}; keep it inside"
        ) from None
    return f"{project.packaging_mount}/{rel.as_posix()}" if rel.parts else project.packaging_mount


def secret_masks(project: Project) -> list[str]:
    """Paths inside the read-only repository mount hidden from the build (keys, GNUPGHOME)."""
    hidden = [project.state_dir]
    if project.config.signing.gnupghome:
        hidden.append((project.root / project.config.signing.gnupghome).expanduser())
    masks = []
    for path in hidden:
        resolved = path.resolve()
        if resolved.is_dir() and resolved.is_relative_to(project.root) and resolved != project.root:
            masks.append(in_container(project, resolved))
    return sorted(set(masks))


def build_environment(plan: BuildPlan, *, cpus: int) -> dict[str, str]:
    """The build container's whole environment: built from scratch, no host variables."""
    project, distro, version = plan.project, plan.distro, plan.version
    epoch = tarball_mtime(plan.tarball)
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "DEBIAN_FRONTEND": "noninteractive",
        "NAME": project.name,
        "PACKAGE": project.config.package_name(version),
        "VERSION": version.text,
        "IS_NIGHTLY": "1" if version.is_nightly else "",
        "TARBALL": in_container(project, plan.tarball),
        "OUT": OUT_MOUNT,
        "WORK": BUILD_DIR,
        "MAINTAINER": project.config.product.maintainer,
        "SOURCE_DATE_EPOCH": str(epoch),
        "CHANGELOG_DATE": email.utils.format_datetime(dt.datetime.fromtimestamp(epoch, dt.UTC)),
        "DEB_BUILD_OPTIONS": f"parallel={cpus}",
    }
    if distro.debian_dir is not None:
        env["DEBIAN_DIR"] = in_container(project, distro.debian_dir)
        env["DISTRIBUTION"] = distro.codename
        env["PKGVER"] = distro.pkgver or ""
    if distro.prebuild_hook is not None:
        env["PREBUILD_HOOK"] = f"{project.distro_mount}/{distro.prebuild_hook.name}"
    return env


def build_command(plan: BuildPlan) -> list[str]:
    if plan.distro.make_package is not None:
        return [f"{plan.project.distro_mount}/make-package"]
    return ["sh", f"{plan.project.packaging_mount}/{DEFAULT_BUILDER}"]


def build_spec(plan: BuildPlan, out_tmp: Path, *, owner: Owner, cpus: int) -> ContainerSpec:
    project = plan.project
    return ContainerSpec(
        image=plan.builder.id,
        command=build_command(plan),
        mounts=[
            Mount(project.root, project.packaging_mount),
            Mount(plan.distro.path.resolve(), project.distro_mount),
            Mount(out_tmp, OUT_MOUNT, read_only=False),
        ],
        masks=secret_masks(project),
        environment=build_environment(plan, cpus=cpus),
        network="none",
        user=owner.build_user,
        workdir=BUILD_DIR,
        labels={
            LABEL_PROJECT: str(project.root),
            LABEL_DISTRO: plan.distro.id,
            LABEL_RUN: RUN_ID,
        },
    )


def smoke_spec(plan: BuildPlan, debs_dir: Path) -> ContainerSpec:
    """A fresh base-image container, idle until the build's .debs exist (``debs_dir``, read-only).

    It is created and started while the build runs; :func:`smoke_command` then runs in it.
    """
    return ContainerSpec(
        image=plan.base_image_id,
        command=["sleep", "infinity"],
        mounts=[Mount(debs_dir, SMOKE_MOUNT)],
        environment={"DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"},
        network="none",
        # Not LABEL_PROJECT: while the build runs, the project's one container is the build's.
        labels={
            LABEL_SMOKE: str(plan.project.root),
            LABEL_DISTRO: plan.distro.id,
            LABEL_RUN: RUN_ID,
        },
    )


def smoke_command(plan: BuildPlan, debs: list[str]) -> list[str]:
    """Install the .debs (``dpkg -i``; apt-get resolves what dpkg cannot), run the smoke command."""
    install = shlex.join(f"{SMOKE_MOUNT}/{name}" for name in debs)
    script = (
        f"dpkg -i {install} >/tmp/dpkg.log 2>&1 "
        f"|| apt-get install -y -q --no-install-recommends {install} >/tmp/install.log 2>&1 "
        '|| { cat /tmp/install.log; echo "releng: the packages do not install"; exit 100; }; '
        'exec "$@"'
    )
    return ["sh", "-c", script, "smoke", *plan.project.config.product.smoke_command]


def failed_image(project: Project, distro_id: str) -> str:
    return f"{FAILED_REPOSITORY.format(name=project.name)}:{distro_id}"


# -- make-package ----------------------------------------------------------------------


def _chown_tree(path: Path, owner: Owner) -> None:
    if os.getuid() != 0:
        return
    os.chown(path, owner.uid, owner.gid)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(Path(root) / name, owner.uid, owner.gid, follow_symlinks=False)


def _new_log(project: Project, distro_id: str, version: Version) -> Path:
    logs = project.state_dir / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return logs / f"{distro_id}-{version.text}-{stamp}-{os.getpid()}.log"


def make_package(
    engine: Engine,
    project: Project,
    distro_id: str,
    version: Version,
    *,
    env: Mapping[str, str],
    force: bool = False,
    keep: bool = False,
    cpus: int | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build ``distro_id``'s packages of ``version`` into ``out/<version>/<distro>/``.

    Up to date (same inputs as the last successful build): nothing runs unless
    ``force``. A failure raises :class:`BuildFailed` naming the log; ``keep``
    first commits the failed container to ``releng-failed-<name>:<distro>``.
    """
    started = time.monotonic()
    distro = project.distro(distro_id)
    plan = plan_build(engine, project, distro, version, env=env, force=force, on_line=on_line)
    if plan.up_to_date:
        previous = _read_build_json(plan.out_dir) or {}
        log.info("%s %s is up to date in %s", distro_id, version, plan.out_dir)
        return BuildResult(
            distro_id=distro_id,
            version=version.text,
            out_dir=plan.out_dir,
            up_to_date=True,
            files=[str(f) for f in list(previous.get("files") or [])],  # type: ignore[call-overload]
            seconds=time.monotonic() - started,
        )
    owner = Owner.for_project(project, env)
    log_path = _new_log(project, distro_id, version)
    cpus = cpus or os.cpu_count() or 1
    plan.out_dir.parent.mkdir(parents=True, exist_ok=True)
    with (
        _failed_log_kept(log_path, owner),
        tempfile.TemporaryDirectory(dir=plan.out_dir.parent, prefix=f".tmp-{distro_id}-") as tmp,
        log_path.open("w", encoding="utf-8") as log_file,
    ):
        work = Path(tmp)
        out_tmp = work / "out"
        out_tmp.mkdir()
        if os.getuid() == 0:
            uid, gid = (int(x) for x in owner.build_user.split(":"))
            os.chown(out_tmp, uid, gid)

        def record(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()
            if on_line is not None:
                on_line(line)

        spec = build_spec(plan, out_tmp, owner=owner, cpus=cpus)
        record(f"releng: {spec.describe()}")
        log.info("building %s %s in %s", distro_id, version, plan.builder.reference)
        with _started_meanwhile(engine, smoke_spec(plan, out_tmp)) as (begin_smoke, smoke):
            _run_build(
                engine, plan, spec, record=record, log_path=log_path, keep=keep, started=begin_smoke
            )
            files = _smoke_test(smoke(), plan, out_tmp, record=record, log_path=log_path)
        metadata = _metadata(plan, out_tmp, files)
        log_file.flush()
        shutil.copyfile(log_path, out_tmp / BUILD_LOG)
        (out_tmp / BUILD_JSON).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        _chown_tree(out_tmp, owner)
        _replace_dir(out_tmp, plan.out_dir, work)
    log_path.unlink()  # it is out/<version>/<distro>/build.log now
    log.info("built %s %s into %s", distro_id, version, plan.out_dir)
    return BuildResult(
        distro_id=distro_id,
        version=version.text,
        out_dir=plan.out_dir,
        up_to_date=False,
        files=files,
        log_path=plan.out_dir / BUILD_LOG,
        seconds=time.monotonic() - started,
    )


def _run_build(
    engine: Engine,
    plan: BuildPlan,
    spec: ContainerSpec,
    *,
    record: Callable[[str], None],
    log_path: Path,
    keep: bool,
    started: Callable[[], None] = lambda: None,
) -> None:
    """Run the build container to its end; BuildFailed (after --keep's commit) unless it exits 0.

    ``started`` is called once the container runs.
    """
    distro_id, version = plan.distro.id, plan.version
    with engine.container(spec) as container:
        container.start()
        started()
        container.stream(record)
        code = container.wait()
        if code == 0:
            return
        hint = ""
        if keep:
            repo, tag = failed_image(plan.project, distro_id).split(":")
            container.commit(repo, tag, changes=['CMD ["bash", "-l"]', f"WORKDIR {BUILD_DIR}"])
            hint = f"; the failed container is kept: invoke interactive {distro_id} --from-failed"
    raise BuildFailed(
        f"build of {distro_id} {version} failed (exit {code}): {_last(log_path)}; "
        f"full log: {log_path}{hint}",
        log_path,
    )


@contextlib.contextmanager
def _started_meanwhile(
    engine: Engine, spec: ContainerSpec
) -> Iterator[tuple[Callable[[], None], Callable[[], Container]]]:
    """Create and start ``spec``'s container in a thread while the block runs.

    The block gets two functions: ``begin`` starts the creation (not at once: two
    concurrent creations slow each other), ``get`` waits for the container (begun if
    need be; raising what its creation raised). On the way out, whatever happened,
    the creation is waited for and the container removed.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    container = engine.container(spec)

    def create_and_start() -> Container:
        container.__enter__()
        container.start()
        return container

    futures: list[Future[Container]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="releng-smoke") as pool:

        def begin() -> None:
            if not futures:
                futures.append(pool.submit(create_and_start))

        def get() -> Container:
            begin()
            return futures[0].result()

        try:
            yield begin, get
        finally:
            for future in futures:
                future.exception()  # wait: a container still being created cannot be removed
            container.remove()


def _smoke_test(
    container: Container,
    plan: BuildPlan,
    out_tmp: Path,
    *,
    record: Callable[[str], None],
    log_path: Path,
) -> list[str]:
    """Check the build's files, install its .debs in the fresh base container, run the smoke command."""
    distro_id, version = plan.distro.id, plan.version
    files = sorted(p.name for p in out_tmp.iterdir() if p.is_file())
    debs = [f for f in files if f.endswith(".deb")]
    if not debs or not any(f.endswith(".changes") for f in files):
        raise BuildFailed(
            f"build of {distro_id} {version} made no .deb or no .changes in {OUT_MOUNT}; "
            f"full log: {log_path}",
            log_path,
        )
    record(f"releng: installing {', '.join(debs)} in a fresh {plan.distro.docker_base} container")
    smoke = container.exec(smoke_command(plan, debs))
    for line in smoke.output.splitlines():
        record(line)
    if smoke.exit_code != 0:
        what = (
            "do not install"
            if smoke.exit_code == 100
            else f"fail the smoke command (exit {smoke.exit_code})"
        )
        raise BuildFailed(
            f"the {distro_id} packages {what}: {_last(log_path)}; full log: {log_path}", log_path
        )
    record(f"releng: smoke command passed: {' '.join(plan.project.config.product.smoke_command)}")
    return files


def _metadata(plan: BuildPlan, out_tmp: Path, files: list[str]) -> dict[str, object]:
    return {
        "distro": plan.distro.id,
        "version": plan.version.text,
        "package": plan.project.config.package_name(plan.version),
        "inputs": plan.inputs,
        "base_image": {"reference": plan.distro.docker_base, "id": plan.base_image_id},
        "builder_image": {"reference": plan.builder.reference, "id": plan.builder.id},
        "files": files,
        "sha256": {f: file_sha256(out_tmp / f) for f in files},
        "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@contextlib.contextmanager
def _failed_log_kept(log_path: Path, owner: Owner) -> Iterator[None]:
    """A failed build's log stays under .releng/logs/, owned by the invoking user."""
    try:
        yield
    finally:
        if log_path.exists() and os.getuid() == 0:
            os.chown(log_path.parent, owner.uid, owner.gid)
            os.chown(log_path, owner.uid, owner.gid)


def _replace_dir(new: Path, dest: Path, scratch: Path) -> None:
    """Put ``new`` at ``dest``; an earlier ``dest`` goes into ``scratch`` (deleted with it)."""
    if dest.exists():
        dest.replace(scratch / "previous")
    new.replace(dest)


def _last(log_path: Path) -> str:
    """The most telling line of a failed build's log: the first real error, else the last line."""
    lines = [
        ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    ]
    lines = [ln for ln in lines if ln and not ln.startswith("releng: docker run")]
    wrappers = ("make", "dpkg-buildpackage", "dh ", "dh:", "dh_", "debian/rules")
    errors = [
        ln
        for ln in lines
        if ("error:" in ln.lower() or ln.startswith("E: ")) and not ln.startswith(wrappers)
    ]
    if errors:
        return errors[0][:300]
    for ln in reversed(lines):
        if "error" in ln.lower():
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


# -- SIGTERM as Ctrl-C --------------------------------------------------------------------


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, so containers and temp dirs go."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def remove_run_containers(engine: Engine) -> int:
    """Force-remove every container this process started (used after Ctrl-C)."""
    removed = 0
    for c in engine.client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={RUN_ID}"}):
        with contextlib.suppress(RelengError, Exception):
            c.remove(force=True, v=True)
            removed += 1
    return removed
