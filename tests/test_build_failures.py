"""Bad input to make-package: one clear error, non-zero exit, nothing half-written in out/."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.build import (
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_SMOKE,
    BuildFailed,
    failed_image,
    make_package,
    owner_label,
)
from releng.engine import Engine
from releng.errors import BuildError
from releng.project import Project
from releng.version import Version
from tests.fixtures.project import REPO_ROOT, copy_repo, git

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BOOKWORM = "debian-12-bookworm"


def invoke(
    root: Path, *args: str, env: dict[str, str] | None = None, **kw: object
) -> subprocess.Popen[str]:
    full_env = {**os.environ, "RELENG_ROOT": str(root), **(env or {})}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "invoke", "-r", str(REPO_ROOT), *args],
        cwd=root,
        env=full_env,
        text=True,
        **kw,
    )


def leftovers(project: Project, version: str) -> list[str]:
    """What a failed or interrupted build must not leave: anything under out/<version>/
    but the per-distro lock files the architectures' builds share (``.<distro>.lock``)."""
    directory = project.out_dir / version
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


def containers_of(engine: Engine, project: Project, label: str = LABEL_PROJECT) -> list[object]:
    return engine.client.containers.list(all=True, filters={"label": f"{label}={project.root}"})


def terminate_mid_build(
    proc: subprocess.Popen[str], engine: Engine, project: Project, *, builds: int, timeout: int
) -> None:
    """Wait until ``builds`` builds run their slow prebuild hook, SIGTERM the invoke process,
    and check it exits 130 with every build and smoke container of the project gone."""
    assert proc.stderr is not None
    try:
        running = 0
        for line in proc.stderr:  # the live log: wait until the builds run the hook
            running += "prebuild hook runs" in line
            if running == builds:
                break
        else:
            pytest.fail(f"ended before {builds} build(s) ran the hook (exit {proc.wait()})")
        assert len(containers_of(engine, project)) == builds
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=timeout) == 130, rest[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert containers_of(engine, project) == []
    assert containers_of(engine, project, LABEL_SMOKE) == [], (
        "idle smoke containers are removed too"
    )


@pytest.fixture
def broken_project(tmp_path: Path) -> Project:
    """The demo with a compile error committed on its nightly ref."""
    root = copy_repo(tmp_path / "repo")
    source = root / "demo" / "tally" / "tally.c"
    source.write_text("#error releng test: a compile error\n" + source.read_text())
    git(root, "commit", "-q", "-am", "break the build")
    return Project.load(root)


def test_compile_error_keeps_the_log_leaves_no_output_and_keep_commits_the_container(
    engine: Engine, base_image: Callable[[str], str], broken_project: Project
) -> None:
    base_image(BOOKWORM)
    image = failed_image(broken_project, BOOKWORM)
    version = Version.parse("2026.11.19")
    try:
        with pytest.raises(BuildFailed) as info:
            make_package(
                engine,
                broken_project,
                BOOKWORM,
                version,
                env={"PATH": os.environ["PATH"]},
                keep=True,
            )
        message = str(info.value)
        assert "build of debian-12-bookworm 2026.11.19 failed" in message
        assert "releng test: a compile error" in message
        assert f"full log: {info.value.log_path}" in message
        assert "invoke interactive debian-12-bookworm --from-failed" in message
        assert info.value.log_path is not None
        assert "#error releng test" in info.value.log_path.read_text()
        assert leftovers(broken_project, "2026.11.19") == []
        assert containers_of(engine, broken_project) == []
        # The kept container holds the failed build's tree.
        result = engine.run(image, ["ls", "/build"])
        assert "tally-nightly-2026.11.19" in result.output.split()
    finally:
        if engine.image_id(image) is not None:
            engine.client.images.remove(image, force=True)


def test_sigterm_mid_build_removes_the_container_and_leaves_nothing(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    base_image(BOOKWORM)
    root = copy_repo(tmp_path / "repo")
    hook = root / "distros" / BOOKWORM / "make-package.prebuild"
    hook.write_text("#!/bin/sh\necho prebuild hook runs; sleep 120\n")
    hook.chmod(0o755)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a slow prebuild hook")
    project = Project.load(root)
    proc = invoke(root, "make-package", BOOKWORM, "--version", "2026.11.18", stderr=subprocess.PIPE)
    terminate_mid_build(proc, engine, project, builds=1, timeout=60)
    assert leftovers(project, "2026.11.18") == []


def test_unwritable_out_is_one_clear_error(engine: Engine, project_copy: Project) -> None:
    out = project_copy.out_dir
    out.mkdir()
    if os.getuid() == 0:
        subprocess.run(["chattr", "+i", str(out)], check=True)
    else:
        out.chmod(0o555)
    try:
        with pytest.raises(BuildError) as info:
            make_package(
                engine,
                project_copy,
                BOOKWORM,
                Version.parse("2026.11.17"),
                env={"PATH": os.environ["PATH"]},
            )
    finally:
        if os.getuid() == 0:
            subprocess.run(["chattr", "-i", str(out)], check=True)
        out.chmod(0o755)
    assert f"cannot write to {out}" in str(info.value)
    assert list(out.iterdir()) == []


def test_no_engine_fails_in_one_line_before_any_work(project_copy: Project) -> None:
    proc = invoke(
        project_copy.root,
        "make-package",
        BOOKWORM,
        "--version",
        "2026.11.17",
        env={"DOCKER_HOST": "tcp://127.0.0.1:1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert "no Docker engine answers at tcp://127.0.0.1:1" in errors[0]
    assert "./scripts/setup" in errors[0]
    assert "Traceback" not in stderr
    assert not project_copy.out_dir.exists()


def test_unknown_distro_lists_the_valid_ones(project_copy: Project) -> None:
    proc = invoke(
        project_copy.root,
        "make-package",
        "debian-99-nope",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "unknown distro 'debian-99-nope'" in stderr
    assert "debian-12-bookworm" in stderr


def test_make_all_packages_goes_on_after_a_failure_and_reports_it(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    base_image(BOOKWORM)
    root = copy_repo(tmp_path / "repo")
    # stretch is archived: neither the engine, a registry nor mmdebstrap makes its image.
    (root / "distros" / "debian-9-stretch" / "DOCKER_BASE").write_text(
        "127.0.0.1:1/debian:stretch\n"
    )
    git(root, "commit", "-q", "-am", "an image nobody has")
    project = Project.load(root)
    proc = invoke(
        root,
        "make-all-packages",
        "--version",
        "2026.11.16",
        "--distros",
        f"debian-9-stretch,{BOOKWORM}",
        "--jobs",
        "2",
        "--no-cache",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr
    logs = stderr.splitlines()  # live logs and progress on stderr, the summary alone on stdout
    # Live lines are prefixed by the distro, padded to the longest name, and " | ".
    assert any(
        ln.partition(" | ")[0].rstrip() == BOOKWORM and "dpkg-buildpackage" in ln for ln in logs
    )
    assert f"{BOOKWORM} | releng: compiler cache: off (--no-cache)" in logs  # passed through
    assert any(ln.startswith("[1/2] ") for ln in logs)
    assert any(ln.startswith("[2/2] ") for ln in logs)
    table = stdout.splitlines()
    assert table[0].startswith("DISTRO "), stdout
    assert any(ln.startswith(BOOKWORM) and " built " in ln for ln in table)
    assert any(
        ln.startswith("debian-9-stretch")
        and " FAILED " in ln
        and "127.0.0.1:1/debian:stretch" in ln
        for ln in table
    )
    assert "1 of 2 distro(s) failed: debian-9-stretch" in stderr
    assert (project.build_dir(Version.parse("2026.11.16"), BOOKWORM) / "build.json").is_file()
    assert not project.build_dir(Version.parse("2026.11.16"), "debian-9-stretch").exists()


def test_sigterm_stops_make_all_packages_and_cleans_every_build(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    distros = [BOOKWORM, "debian-13-trixie"]
    for d in distros:
        base_image(d)
    root = copy_repo(tmp_path / "repo")
    for d in distros:
        hook = root / "distros" / d / "make-package.prebuild"
        hook.write_text("#!/bin/sh\necho prebuild hook runs; sleep 120\n")
        hook.chmod(0o755)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "slow prebuild hooks")
    project = Project.load(root)
    proc = invoke(
        root,
        "make-all-packages",
        "--version",
        "2026.11.14",
        "--distros",
        ",".join(distros),
        stderr=subprocess.PIPE,
    )
    terminate_mid_build(proc, engine, project, builds=2, timeout=120)
    assert leftovers(project, "2026.11.14") == []


def slow_hook_project(tmp_path: Path) -> Project:
    root = copy_repo(tmp_path / "repo")
    hook = root / "distros" / BOOKWORM / "make-package.prebuild"
    hook.write_text("#!/bin/sh\necho prebuild hook runs; sleep 120\n")
    hook.chmod(0o755)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a slow prebuild hook")
    return Project.load(root)


def start_until_the_hook_runs(
    project: Project, engine: Engine, version: str, *, smoke_idle: bool
) -> subprocess.Popen[str]:
    """make-package running its slow hook; ``smoke_idle``: and its smoke container created."""
    proc = invoke(
        project.root, "make-package", BOOKWORM, "--version", version, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the live build log is on stderr
        if "prebuild hook runs" in line:
            break
    else:
        pytest.fail(f"ended before the build ran the hook (exit {proc.wait()})")
    deadline = time.monotonic() + 120
    while smoke_idle and not containers_of(engine, project, LABEL_SMOKE):
        assert time.monotonic() < deadline, "no smoke container was made"
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("smoke_idle", [False, True], ids=["smoke-being-made", "smoke-idle"])
def test_a_double_ctrl_c_leaves_no_container_and_no_output(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path, smoke_idle: bool
) -> None:
    base_image(BOOKWORM)
    project = slow_hook_project(tmp_path)
    proc = start_until_the_hook_runs(project, engine, "2026.11.13", smoke_idle=smoke_idle)
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.01)  # two Ctrl-Cs 10 ms apart: the second lands in the clean-up
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        proc.stderr.read()
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert containers_of(engine, project) == []
    assert containers_of(engine, project, LABEL_SMOKE) == []
    assert leftovers(project, "2026.11.13") == []


def test_a_run_after_a_sigkill_removes_what_the_dead_run_left_and_nothing_else(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    image = base_image(BOOKWORM)
    project = slow_hook_project(tmp_path)
    proc = start_until_the_hook_runs(project, engine, "2026.11.12", smoke_idle=True)
    proc.kill()
    proc.wait()
    assert len(containers_of(engine, project)) == 1  # the build's, and the smoke one:
    assert len(containers_of(engine, project, LABEL_SMOKE)) == 1
    assert [n for n in leftovers(project, "2026.11.12") if n.startswith(f".tmp-{BOOKWORM}-")]
    # A container of a live run of the same checkout (this test's process) is not touched.
    live = engine.client.containers.create(
        image,
        ["true"],
        labels={LABEL_PROJECT: str(project.root), LABEL_OWNER: owner_label()},
    )
    try:
        # The rerun goes through: the hook is fast now (the distro directory is mounted).
        (project.root / "distros" / BOOKWORM / "make-package.prebuild").write_text(
            "#!/bin/sh\necho prebuild hook is fast now\n"
        )
        rerun = invoke(
            project.root,
            "make-package",
            BOOKWORM,
            "--version",
            "2026.11.12",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _out, err = rerun.communicate(timeout=900)
        assert rerun.returncode == 0, err
        assert [c.id for c in containers_of(engine, project)] == [live.id]  # type: ignore[attr-defined]
        assert containers_of(engine, project, LABEL_SMOKE) == []
        assert leftovers(project, "2026.11.12") == [BOOKWORM]
    finally:
        live.remove(force=True)


@pytest.mark.parametrize("immutable", ["out/V", "out/V/distro"])
def test_an_immutable_version_or_distro_output_directory_is_one_clear_error(
    engine: Engine, project_copy: Project, immutable: str
) -> None:
    version = Version.parse("2026.11.10")
    build_dir = project_copy.build_dir(version, BOOKWORM)
    build_dir.mkdir(parents=True)
    (build_dir / "build.json").write_text("{}\n")
    target = build_dir if immutable.endswith("distro") else build_dir.parent
    subprocess.run(["chattr", "+i", str(target)], check=True)
    try:
        with pytest.raises(BuildError) as info:
            make_package(engine, project_copy, BOOKWORM, version, env={"PATH": os.environ["PATH"]})
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    assert f"cannot write to {target}: Operation not permitted" in str(info.value)
    assert leftovers(project_copy, "2026.11.10") == [BOOKWORM]
    assert sorted(p.name for p in build_dir.iterdir()) == ["build.json"]
