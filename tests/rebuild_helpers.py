"""Shared by the rebuild tests: a copy of a finished demo build, rebuilt by the real code."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from releng.engine import Engine
from releng.gpg import Signer
from releng.project import Project
from releng.rebuild import RebuildResult, plan_rebuild, verify_rebuild
from tests.fixtures.gpg import TestKey, make_key
from tests.fixtures.project import REPO_ROOT

BOOKWORM = "debian-12-bookworm"


@dataclass(frozen=True)
class Rebuilt:
    project: Project
    build_dir: Path
    key: TestKey
    signer: Signer
    result: RebuildResult


def rebuilder_key(base: Path) -> tuple[TestKey, Signer]:
    key = make_key(base / "rebuilder-gnupg", name="releng test rebuilder", passphrase=None)
    return key, Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)


def copy_build(first: Path, dest: Path) -> Path:
    """``first`` (a build directory) copied to ``dest/out/<version>/<distro>``."""
    build_dir = dest / "out" / first.parent.name / first.name
    shutil.copytree(first, build_dir)
    return build_dir


def rebuild(engine: Engine, first: Path, base: Path, *, distro_id: str = BOOKWORM) -> Rebuilt:
    project = Project.load(REPO_ROOT)
    build_dir = copy_build(first, base)
    key, signer = rebuilder_key(base)
    plan = plan_rebuild(
        build_dir,
        distro_id=distro_id,
        codename=project.distro(distro_id).codename,
        arch="amd64",
    )
    result = verify_rebuild(engine, project, plan, signer=signer)
    return Rebuilt(project, build_dir, key, signer, result)
