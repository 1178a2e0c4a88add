"""arm64 for real on an amd64 host: the demo cross-built and emulated, each installed and
run in a fresh arm64 container (qemu-user-static through binfmt_misc, ./scripts/setup-binfmt);
a Build-Depends that cannot cross-build; a repository with both architectures read by apt in
an amd64 and an arm64 container.

One project (architectures amd64 and arm64) is built once per module: amd64 natively, then
arm64 cross, into the same ``out/1.0.0/debian-12-bookworm/``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from releng.apt import check_repository, update_repos
from releng.build import make_package
from releng.errors import ImageError
from releng.images.foreign import ensure_foreign_base_image, image_architecture
from releng.project import Project
from releng.version import Version
from tests.fixtures.gpg import make_key
from tests.fixtures.project import REPO_ROOT, copy_repo, git
from tests.test_apt_in_container import (  # noqa: F401  (served: a fixture, used by name)
    Served,
    apt_script,
    keyring_dir,
    run_apt,
    served,
    warnings_and_errors,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BOOKWORM = "debian-12-bookworm"
VERSION = Version.parse("1.0.0")
REVISION = f"1.0.0-{(REPO_ROOT / 'distros' / BOOKWORM / 'PKGVER').read_text().strip()}"
ELF_MACHINE_AARCH64 = 0xB7


@dataclass(frozen=True)
class ArmProject:
    project: Project
    env: dict[str, str]


def two_arch_project(base: Path) -> ArmProject:
    """A repository copy whose product.toml lists amd64 and arm64, signing with a test key."""
    root = copy_repo(base / "repo")
    key = make_key(base / "gnupg", name="releng arm64 test key")
    text = (root / "product.toml").read_text()
    text = text.replace('key = ""', f'key = "{key.fingerprint}"', 1)
    text = text.replace('gnupghome = ""', f'gnupghome = "{key.home}"', 1)
    text = text.replace('architectures = ["amd64"]', 'architectures = ["amd64", "arm64"]', 1)
    (root / "product.toml").write_text(text)
    git(root, "commit", "-q", "-am", "amd64 and arm64, signed with the test key")
    env = {"PATH": os.environ["PATH"], "RELENG_SIGNING_PASSPHRASE": key.passphrase}
    return ArmProject(Project.load(root), env)


@pytest.fixture(scope="module")
def arm_images(engine: Any, base_image: Callable[[str], str]) -> str:
    """bookworm's base images for amd64 and arm64 (bootstrapped once when missing)."""
    project = Project.load(Path(__file__).resolve().parents[1])
    base_image(BOOKWORM)
    distro = project.distro(BOOKWORM)
    # pull=False: the test suite never asks a public registry (none is reachable here).
    ensure_foreign_base_image(engine, project, distro, "arm64", env=os.environ, pull=False)
    return "arm64v8/debian:bookworm"


@pytest.fixture(scope="module")
def two_arch_build(
    engine: Any, arm_images: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ArmProject, Path]:
    arm = two_arch_project(tmp_path_factory.mktemp("arm64-build"))
    for arch in ("amd64", "arm64"):
        make_package(engine, arm.project, BOOKWORM, VERSION, env=arm.env, arch=arch)
    return arm, arm.project.build_dir(VERSION, BOOKWORM)


def elf_machine(deb: Path, member: str, tmp_path: Path) -> int:
    """e_machine of an ELF file inside a .deb."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    header = (tmp_path / member).read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    return int.from_bytes(header[18:20], "little")


def deb_field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True, text=True
    ).stdout.strip()


def assert_arm64_build(out: Path, mode: str, tmp_path: Path) -> None:
    deb = out / f"tally_{REVISION}_arm64.deb"
    assert deb_field(deb, "Architecture") == "arm64"
    assert elf_machine(deb, "usr/bin/tally", tmp_path) == ELF_MACHINE_AARCH64
    stamp = json.loads((out / "build-arm64.json").read_text())
    assert (stamp["architecture"], stamp["build_mode"]) == ("arm64", mode)
    assert stamp["base_image"]["reference"] == "arm64v8/debian:bookworm"
    # Only arm64's own packages (-B): the source package came with the amd64 build.
    assert {f"tally_{REVISION}_arm64.{ext}" for ext in ("buildinfo", "changes", "deb")} <= set(
        stamp["files"]
    )
    assert all(f"_{REVISION}_arm64." in name for name in stamp["files"]), stamp["files"]
    log = (out / "build-arm64.log").read_text()
    assert "in a fresh arm64v8/debian:bookworm container" in log
    assert "releng: smoke command passed" in log


def test_arm64_base_image_is_an_arm64_image(engine: Any, arm_images: str) -> None:
    assert image_architecture(engine, arm_images) == "arm64"
    result = engine.run(arm_images, ["sh", "-c", "uname -m; dpkg --print-architecture"])
    assert result.output.split() == ["aarch64", "arm64"]


def test_demo_cross_built_for_arm64_beside_amd64(
    two_arch_build: tuple[ArmProject, Path], tmp_path: Path
) -> None:
    _arm, out = two_arch_build
    assert_arm64_build(out, "cross", tmp_path)
    # The amd64 build (first architecture: the source package too) is still there, whole.
    amd64 = json.loads((out / "build.json").read_text())
    assert f"tally_{REVISION}_amd64.deb" in amd64["files"]
    assert f"tally_{REVISION}.dsc" in amd64["files"]
    assert all((out / name).is_file() for name in amd64["files"])
    assert deb_field(out / f"tally_{REVISION}_amd64.deb", "Architecture") == "amd64"


def test_demo_built_emulated_for_arm64(
    engine: Any, arm_images: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    arm = two_arch_project(tmp_path_factory.mktemp("arm64-emulated"))
    result = make_package(
        engine, arm.project, BOOKWORM, VERSION, env=arm.env, arch="arm64", mode="emulated"
    )
    assert result.arch == "arm64"
    assert_arm64_build(result.out_dir, "emulated", tmp_path)


def test_a_build_depends_with_no_arm64_candidate_cannot_cross_build(
    engine: Any, arm_images: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    arm = two_arch_project(tmp_path_factory.mktemp("arm64-no-cross"))
    root = arm.project.root
    control = root / "packaging/debian/control"
    # cpuid reads x86 CPUID: Debian builds it for amd64 and i386 only.
    control.write_text(control.read_text().replace("(= 13)", "(= 13), cpuid"))
    git(root, "commit", "-q", "-am", "a Build-Depends with no arm64 build")
    project = Project.load(root)
    with pytest.raises(ImageError) as info:
        make_package(engine, project, BOOKWORM, VERSION, env=arm.env, arch="arm64")
    message = str(info.value)
    assert "\n" not in message
    assert "cannot cross-build for arm64" in message
    assert "cpuid" in message
    assert "--mode emulated" in message


def test_apt_in_each_architecture_installs_its_own_build(
    two_arch_build: tuple[ArmProject, Path],
    served: Served,  # noqa: F811  (the imported fixture)
    engine: Any,
    arm_images: str,
    tmp_path: Path,
) -> None:
    arm, _out = two_arch_build
    repo = served.www / "two-arch"
    update_repos(arm.project, served.signer, version=VERSION, repo=repo)
    report = check_repository(repo)
    assert report.problems == [] and report.warnings == []
    keyring = keyring_dir(tmp_path, repo / "tally-archive-keyring.gpg")
    install = (
        "apt-get install -y --no-install-recommends tally 2>&1\n"
        "dpkg-query -W -f '${Architecture} ${Version}\\n' tally\n"
        "echo one two | tally -w"
    )
    for image, arch in (("debian:bookworm", "amd64"), (arm_images, "arm64")):
        code, output = run_apt(
            engine, image, keyring, apt_script(f"{served.url}/two-arch", "bookworm", then=install)
        )
        assert code == 0, output
        assert warnings_and_errors(output) == [], output
        assert output.rstrip().splitlines()[-2:] == [f"{arch} {REVISION}", "2"], output
