"""Architectures: names, the checks a build makes before anything runs, and their errors."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.arch import (
    ARCHITECTURES,
    ArchError,
    check_architecture,
    check_emulation,
    dpkg_architectures,
    dpkg_knows,
    host_architecture,
    image_for,
)
from releng.build import Target
from releng.project import Project
from tests.fixtures.project import REPO_ROOT
from tests.test_cli import assert_one_error_line, invoke

TWO_ARCHS = '[repositories]\narchitectures = ["amd64", "arm64"]\n'
# What qemu-user-static's handler looks like once registered (scripts/setup-binfmt).
HANDLER = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\n"


def test_dpkg_knows_the_architectures_releng_names() -> None:
    assert set(ARCHITECTURES) <= dpkg_architectures()  # dpkg_knows takes them without asking
    assert host_architecture() == "amd64"  # this project's machines; tests below assume it


def test_loading_a_product_with_releng_s_architectures_does_not_run_dpkg_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dpkg-architecture -L`` is a Perl script: 34 ms of every command, for nothing."""
    from releng.config import load_product

    (tmp_path / "product.toml").write_text(TWO_ARCHS)
    asked: list[str] = []
    monkeypatch.setattr("releng.arch.dpkg_architectures", lambda: asked.append("-L") or {"x"})
    assert load_product(tmp_path).repositories.architectures == ["amd64", "arm64"]
    assert asked == []
    assert dpkg_knows("hurd-amd64") is False  # any other name asks dpkg (here: the stand-in)
    assert asked == ["-L"]


def test_foreign_images_are_named_as_the_registries_name_them() -> None:
    assert image_for("debian:bookworm", "arm64") == "arm64v8/debian:bookworm"
    assert image_for("ubuntu:24.04", "armhf") == "arm32v7/ubuntu:24.04"
    assert image_for("debian:bookworm", "amd64") == "debian:bookworm"
    assert image_for("registry.example/ns/debian:12", "arm64") == (
        "registry.example/ns/arm64v8-debian:12"
    )


@pytest.mark.parametrize(
    ("arch", "allowed", "message"),
    [
        ("arm65", ["amd64"], "unknown architecture 'arm65': dpkg does not know it"),
        ("arm64", ["amd64"], "architecture arm64 is not in [repositories] architectures"),
        ("hurd-amd64", ["hurd-amd64"], "releng has no base images for hurd-amd64"),
    ],
)
def test_an_architecture_is_checked_before_anything_runs(
    arch: str, allowed: list[str], message: str
) -> None:
    with pytest.raises(ArchError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_architecture(arch, allowed, where="product.toml")


def test_emulation_needs_an_enabled_handler_with_the_fix_binary_flag(tmp_path: Path) -> None:
    env = {"RELENG_BINFMT_MISC": str(tmp_path)}
    with pytest.raises(ArchError, match=r"does not exist .*run ./scripts/setup-binfmt"):
        check_emulation("arm64", env)
    (tmp_path / "qemu-aarch64").write_text(HANDLER.replace("POF", "PO"))
    with pytest.raises(ArchError, match="registered without the F flag"):
        check_emulation("arm64", env)
    (tmp_path / "qemu-aarch64").write_text(HANDLER.replace("enabled", "disabled"))
    with pytest.raises(ArchError, match="is disabled"):
        check_emulation("arm64", env)
    (tmp_path / "qemu-aarch64").write_text(HANDLER)
    check_emulation("arm64", env)
    check_emulation("amd64", {"RELENG_BINFMT_MISC": str(tmp_path / "none")})  # native
    check_emulation("i386", {"RELENG_BINFMT_MISC": str(tmp_path / "none")})  # amd64 runs it


def test_the_first_architecture_builds_everything_the_others_only_theirs() -> None:
    primary = Target(arch="amd64", mode="native", primary=True)
    assert (primary.stamp, primary.log_name) == ("build.json", "build.log")
    assert primary.dpkg_buildpackage_args() == "-sa"
    cross = Target(arch="arm64", mode="cross", primary=False)
    assert (cross.stamp, cross.log_name) == ("build-arm64.json", "build-arm64.log")
    assert cross.dpkg_buildpackage_args() == "-B --host-arch=arm64 -Pcross,nocheck"
    assert Target(arch="arm64", mode="emulated", primary=False).dpkg_buildpackage_args() == "-B"


@pytest.mark.docker
@pytest.mark.parametrize(
    ("args", "product", "env", "message"),
    [
        (["--arch", "arm65"], "", {}, "unknown architecture 'arm65'"),
        (["--arch", "arm64"], "", {}, "architecture arm64 is not in [repositories] architectures"),
        (["--arch", "arm64", "--mode", "native"], TWO_ARCHS, {}, "unknown build mode 'native'"),
        (
            ["--arch", "arm64", "--mode", "emulated"],
            TWO_ARCHS,
            {"RELENG_BINFMT_MISC": "/nonexistent"},
            "cannot run arm64 programs on this amd64 host",
        ),
    ],
)
def test_make_package_refuses_bad_architectures_in_one_line(
    make_project: Callable[[str], Project],
    args: list[str],
    product: str,
    env: dict[str, str],
    message: str,
) -> None:
    project = make_project(product)
    result = invoke("make-package", "debian-12-bookworm", *args, root=project.root, env=env)
    assert_one_error_line(result, message)
    assert not (project.root / "out").exists() or not any((project.root / "out").iterdir())


def test_the_build_mode_is_checked_in_product_toml_and_the_distro(
    make_project: Callable[[str], Project],
) -> None:
    from releng.config import parse_product
    from releng.distro import load_distro_dir
    from releng.errors import ConfigError, DistroError

    with pytest.raises(ConfigError, match=r"\[images\] build_mode = 'qemu' is not allowed"):
        parse_product('[images]\nbuild_mode = "qemu"\n', path=None, where="product.toml")
    project = make_project(TWO_ARCHS)
    distro_dir = project.root / "distros/debian-12-bookworm"
    (distro_dir / "BUILD_MODE").write_text("emulated\n")
    assert load_distro_dir(distro_dir, repo_root=project.root).build_mode == "emulated"
    (distro_dir / "BUILD_MODE").write_text("fast\n")
    with pytest.raises(DistroError, match="'fast' is not a build mode; use cross or emulated"):
        load_distro_dir(distro_dir, repo_root=project.root)


# qemu-user-static's /usr/lib/binfmt.d/qemu-aarch64.conf, with an interpreter every host has:
# registering opens it (the F flag), nothing here runs an arm64 program.
QEMU_AARCH64_CONF = (
    r":qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7"
    r"\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
    ":/usr/bin/true:OCPF\n"
)


def _setup_binfmt(*, mount_fails: bool = False) -> subprocess.CompletedProcess[str]:
    """scripts/setup-binfmt as root of a new user and mount namespace, whose binfmt_misc
    (Linux 6.7+) is its own: nothing registered here reaches the machine. The machine's
    binfmt_misc, if it has one mounted (./scripts/setup registers arm64 on it), is hidden
    under a tmpfs first, so the script finds none, as on a fresh machine; qemu-user-static's
    file is shown on a tmpfs. ``mount_fails``: ``mount`` refuses, as it does where the
    machine's mounts are not this namespace's to change (a ``mount`` first on PATH)."""
    script = REPO_ROOT / "scripts" / "setup-binfmt"
    refusing = (
        "#!/bin/sh\necho 'mount: /proc/sys/fs/binfmt_misc: permission denied.' >&2\nexit 32\n"
    )
    prepare = [
        "mount -t tmpfs tmpfs /proc/sys/fs/binfmt_misc",
        "mount -t tmpfs tmpfs /usr/lib/binfmt.d",
        f"printf '%s' {shlex.quote(QEMU_AARCH64_CONF)} >/usr/lib/binfmt.d/qemu-aarch64.conf",
    ]
    if mount_fails:
        prepare += [
            "mkdir -p /tmp/refusing && mount -t tmpfs tmpfs /tmp/refusing",
            f"printf '%s' {shlex.quote(refusing)} >/tmp/refusing/mount",
            "chmod +x /tmp/refusing/mount && export PATH=/tmp/refusing:$PATH",
        ]
    shell = " && ".join(
        [*prepare, "test ! -w /proc/sys/fs", str(script), "cat /proc/sys/fs/binfmt_misc/*aarch64"]
    )
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--fork", "--mount", "bash", "-c", shell],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_setup_binfmt_mounts_binfmt_misc_under_a_read_only_proc_sys() -> None:
    proc = _setup_binfmt()
    assert proc.returncode == 0, proc.stderr
    assert "setup-binfmt: arm64 emulation ready (enabled)" in proc.stderr
    assert "read-only" not in proc.stderr
    assert "interpreter /usr/bin/true" in proc.stdout
    assert "flags: POCF" in proc.stdout  # F: containers can use it


def test_setup_binfmt_says_why_binfmt_misc_cannot_be_mounted() -> None:
    proc = _setup_binfmt(mount_fails=True)
    message = [ln for ln in proc.stderr.splitlines() if ln.startswith("setup-binfmt:")]
    assert len(message) == 1, proc.stderr  # one line, which says what to do
    assert message[0].startswith(
        "setup-binfmt: cannot mount binfmt_misc on /proc/sys/fs/binfmt_misc (mount: "
    )
    assert "arm64 emulation stays off; amd64 builds are unaffected" in message[0]
    assert "installing" not in proc.stderr  # nothing installed where it cannot be used
