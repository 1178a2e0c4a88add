"""The lock files are what every install uses: they must match pyproject.toml."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from releng import lockfile
from tests.fixtures.project import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_lock_files_match_pyproject() -> None:
    assert lockfile.stale(REPO_ROOT) == []


def test_every_requirement_is_pinned_within_its_range() -> None:
    locked = lockfile.pins(REPO_ROOT / lockfile.LOCK)
    project = PYPROJECT["project"]
    wanted = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
        *PYPROJECT["build-system"]["requires"],
    ]
    for line in wanted:
        req = Requirement(line)
        versions = locked.get(canonicalize_name(req.name), set())
        assert versions, f"{req.name} is not in {lockfile.LOCK}; run `nox -s lock`"
        assert all(req.specifier.contains(v) for v in versions), (req, versions)


def test_runtime_set_is_the_lock_s_versions_without_the_tools() -> None:
    locked = lockfile.pins(REPO_ROOT / lockfile.LOCK)
    runtime = lockfile.pins(REPO_ROOT / lockfile.RUNTIME)
    assert {"boto3", "botocore", "docker", "invoke", "python-gnupg"} <= runtime.keys()
    assert not {"nox", "pyyaml", "pytest", "uv", "moto"} & runtime.keys()
    for name, versions in runtime.items():
        assert versions <= locked[name], name


def test_a_changed_pyproject_makes_the_locks_stale(tmp_path: Path) -> None:
    (tmp_path / "requirements").mkdir()
    for rel in ("pyproject.toml", str(lockfile.LOCK), str(lockfile.RUNTIME)):
        shutil.copy(REPO_ROOT / rel, tmp_path / rel)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"docker>=7.1"', '"docker>=7.2"'))
    problems = lockfile.stale(tmp_path)
    assert [p.split()[0] for p in problems] == [str(lockfile.LOCK), str(lockfile.RUNTIME)]
    assert all("run `nox -s lock`" in p for p in problems)


def test_the_venv_part_of_the_lock_is_runtime_and_dev_tools_with_their_dependencies() -> None:
    part = lockfile.venv_requirements(REPO_ROOT)
    names = {line.split("==")[0] for line in part.splitlines() if "==" in line[:80]}
    assert {"invoke", "docker", "boto3", "botocore", "nox", "uv", "pyyaml", "setuptools"} <= names
    assert {"urllib3", "s3transfer", "virtualenv", "packaging"} <= names  # pulled in
    assert not {"pytest", "moto", "mypy", "ruff", "cfn-lint", "awscli"} & names
    locked = (REPO_ROOT / lockfile.LOCK).read_text()
    blocks = part.split("\n", 1)[1]
    assert all(line in locked.splitlines() for line in blocks.splitlines())
