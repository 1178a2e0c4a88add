"""arm64 for Ubuntu on an amd64 host without Ubuntu's ports archive (ports.ubuntu.com, where
Ubuntu keeps every architecture but amd64 and i386; out of reach here).

The demo cross-builds for noble arm64 with the cross toolchain Ubuntu's main archive carries
(packaging/cross-setup); a Build-Depends that needs arm64 packages fails in one line naming
ports; without an arm64 noble image the smoke test cannot run, which is said in one line
with ``--no-smoke`` as the way to build without it. ``[images] ubuntu_ports_mirror = ""``
pins the no-ports way whatever the network reaches.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from releng.build import make_package
from releng.errors import ImageError
from releng.images.builder import builder_inputs, builder_reference
from releng.images.foreign import foreign_bootstrap_command
from releng.images.ubuntu import reachable_ports_mirror
from releng.project import Project
from releng.version import Version
from tests.fixtures.http import StaticServer
from tests.fixtures.project import REPO_ROOT, copy_repo, git
from tests.test_arch_build import ELF_MACHINE_AARCH64, deb_field, elf_machine, two_arch_project

NOBLE = "ubuntu-24.04-noble"
VERSION = Version.parse("1.0.0")
REVISION = f"1.0.0-{(REPO_ROOT / 'distros' / NOBLE / 'PKGVER').read_text().strip()}"


def noble_arm64_project(
    base: Path, *, build_depends: str = "", docker_base: str = ""
) -> tuple[Project, dict[str, str]]:
    """test_arch_build's amd64 and arm64 project (signed with a test key), with no Ubuntu
    ports mirror; and its environment."""
    arm = two_arch_project(base)
    root = arm.project.root
    toml = root / "product.toml"
    toml.write_text(
        toml.read_text().replace("[images]\n", '[images]\nubuntu_ports_mirror = ""\n', 1)
    )
    if build_depends:
        control = root / "packaging/debian/control"
        control.write_text(control.read_text().replace("(= 13)", f"(= 13), {build_depends}"))
    if docker_base:
        (root / "distros" / NOBLE / "DOCKER_BASE").write_text(docker_base + "\n")
    git(root, "commit", "-q", "-am", "noble without ports")
    return Project.load(root), arm.env


def test_only_cross_builders_tags_include_cross_setup(tmp_path: Path) -> None:
    root = copy_repo(tmp_path / "repo")
    project = Project.load(root)
    distro = project.distro(NOBLE)
    native = builder_inputs(project, distro, "sha256:base")
    cross = builder_inputs(project, distro, "sha256:base", arch="arm64", cross=True)
    assert "cross_setup" not in native
    assert cross["ports_mirror"] == ""  # Ubuntu's: which archive served the Build-Depends
    setup = root / "packaging/cross-setup"
    setup.write_text(setup.read_text() + "# edited\n")
    assert builder_inputs(project, distro, "sha256:base") == native
    edited = builder_inputs(project, distro, "sha256:base", arch="arm64", cross=True)
    assert builder_reference(project, distro, edited) != builder_reference(project, distro, cross)


def test_the_ports_mirror_is_used_only_when_it_answers(
    tmp_path: Path, http_server: StaticServer
) -> None:
    root = copy_repo(tmp_path / "repo")
    (http_server.root / "dists/noble").mkdir(parents=True)
    (http_server.root / "dists/noble/InRelease").write_text("signed\n")
    toml = root / "product.toml"
    text = toml.read_text()
    for mirror, expected in [
        (http_server.url, http_server.url),
        ("http://127.0.0.1:1/ubuntu-ports", ""),  # nothing listens there
        (f"{http_server.url}/elsewhere", ""),  # answers 404
        ("", ""),
    ]:
        toml.write_text(text.replace("[images]\n", f'[images]\nubuntu_ports_mirror = "{mirror}"\n'))
        project = Project.load(root)
        assert reachable_ports_mirror(project, project.distro(NOBLE)) == expected, mirror


def test_arm64_ubuntu_is_bootstrapped_from_ports() -> None:
    project = Project.load(REPO_ROOT)
    cmd = foreign_bootstrap_command(project, project.distro(NOBLE), "arm64", Path("/tmp/x.tar"))
    assert "--architectures=arm64" in cmd
    ports = project.config.images.ubuntu_ports_mirror
    assert f"deb {ports} noble-updates main universe" in cmd
    assert not any(project.config.images.ubuntu_mirror in arg for arg in cmd)


@pytest.mark.docker
@pytest.mark.slow
def test_demo_cross_built_for_noble_arm64_without_ports(
    engine: Any, base_image: Any, tmp_path: Path
) -> None:
    base_image(NOBLE)
    project, env = noble_arm64_project(tmp_path)
    result = make_package(engine, project, NOBLE, VERSION, env=env, arch="arm64", smoke_test=False)
    deb = result.out_dir / f"tally_{REVISION}_arm64.deb"
    info = subprocess.run(
        ["dpkg-deb", "-I", str(deb)], check=True, capture_output=True, text=True
    ).stdout
    assert re.search(r"^ Architecture: arm64$", info, re.MULTILINE), info
    assert deb_field(deb, "Architecture") == "arm64"
    assert elf_machine(deb, "usr/bin/tally", tmp_path / "x") == ELF_MACHINE_AARCH64
    # The arm64 C library's real name (not libc6-arm64-cross, nor libc6:arm64), and only it.
    assert re.fullmatch(r"libc6 \(>= [0-9.]+\)", deb_field(deb, "Depends")), info
    stamp = json.loads((result.out_dir / "build-arm64.json").read_text())
    assert (stamp["build_mode"], stamp["smoke_test"]) == ("cross", "skipped")
    assert stamp["inputs"]["smoke_test"] == "skipped"
    log = (result.out_dir / "build-arm64.log").read_text()
    assert "releng: smoke test skipped (--no-smoke)" in log
    assert "dpkg-buildpackage -B --host-arch=arm64 -Pcross,nocheck" in log


@pytest.mark.docker
@pytest.mark.slow
def test_build_depends_on_arm64_libraries_need_ports(
    engine: Any, base_image: Any, tmp_path: Path
) -> None:
    base_image(NOBLE)
    project, env = noble_arm64_project(tmp_path, build_depends="zlib1g-dev")
    with pytest.raises(ImageError) as info:
        make_package(engine, project, NOBLE, VERSION, env=env, arch="arm64", smoke_test=False)
    message = str(info.value)
    assert "\n" not in message
    assert "zlib1g-dev" in message
    assert "only Ubuntu's ports archive has" in message
    assert "ubuntu_ports_mirror" in message


@pytest.mark.docker
def test_no_arm64_image_for_the_smoke_test_is_said_in_one_line(engine: Any, tmp_path: Path) -> None:
    # A base image name no registry serves (nothing listens on port 1): the pull fails at
    # once, and with no ports mirror there is nothing to bootstrap arm64 noble from.
    project, env = noble_arm64_project(tmp_path, docker_base="127.0.0.1:1/ubuntu:noble")
    with pytest.raises(ImageError) as info:
        make_package(engine, project, NOBLE, VERSION, env=env, arch="arm64")
    message = str(info.value)
    assert "\n" not in message
    assert "no base image 127.0.0.1:1/arm64v8-ubuntu:noble" in message
    assert "ubuntu_ports_mirror is empty" in message
    assert "docker load" in message
    assert f"invoke make-package {NOBLE} --arch arm64 --no-smoke" in message
