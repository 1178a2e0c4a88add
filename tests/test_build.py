"""make-package for real: the demo product built, installed and run; stamps; reproducibility."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.build import (
    BUILD_JSON,
    LABEL_PROJECT,
    LABEL_SMOKE,
    Owner,
    build_spec,
    make_package,
    plan_build,
    tree_hash,
)
from releng.distro import read_targets
from releng.engine import Engine, Mount
from releng.project import Project
from releng.version import Version
from tests.fixtures.gpg import PASSPHRASE
from tests.fixtures.project import REPO_ROOT, copy_repo, git

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NIGHTLY = Version.parse("2026.11.20")
BOOKWORM = "debian-12-bookworm"


def deb_field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_tree_hash_sees_content_modes_and_links(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "l").symlink_to("../a")
    first = tree_hash(tmp_path)
    assert tree_hash(tmp_path) == first
    (tmp_path / "a").chmod(0o755)
    second = tree_hash(tmp_path)
    assert second != first
    (tmp_path / "d" / "l").unlink()
    (tmp_path / "d" / "l").symlink_to("../b")
    assert tree_hash(tmp_path) != second


# dpkg before 1.18.11 (xenial's 1.18.4) makes no .buildinfo and has no hook for it.
NO_BUILDINFO = {"xenial"}


@pytest.mark.parametrize("distro_id", read_targets(REPO_ROOT))
def test_demo_release_builds_installs_and_runs(
    demo_build: Callable[..., Path],
    base_image: Callable[[str], str],
    engine: Engine,
    distro_id: str,
) -> None:
    distro = Project.load(REPO_ROOT).distro(distro_id)
    codename, pkgver = distro.codename, distro.pkgver
    out = demo_build(distro_id, "1.0.0")
    assert out.name == distro_id
    assert out.parent.name == "1.0.0"
    revision = f"1.0.0-{pkgver}"
    names = {p.name for p in out.iterdir()}
    expected = {
        f"tally_{revision}_amd64.deb",
        f"tally_{revision}.dsc",
        f"tally_{revision}_amd64.changes",
        "tally_1.0.0.orig.tar.gz",
        "build.log",
        BUILD_JSON,
    }
    if codename not in NO_BUILDINFO:
        expected.add(f"tally_{revision}_amd64.buildinfo")
    assert expected <= names
    assert any(n.startswith(f"tally_{revision}.debian.tar.") for n in names)
    deb = out / f"tally_{revision}_amd64.deb"
    assert deb_field(deb, "Package") == "tally"
    assert deb_field(deb, "Version") == revision
    assert deb_field(deb, "Conflicts") == "tally-nightly"
    changes = (out / f"tally_{revision}_amd64.changes").read_text()
    assert f"Distribution: {codename}" in changes
    # Every file the .changes lists is there (what the apt repository will include).
    listed = [
        ln.split()[-1] for ln in changes.split("Files:")[1].splitlines() if ln.startswith(" ")
    ]
    assert listed and all((out / name).is_file() for name in listed)

    meta = json.loads((out / BUILD_JSON).read_text())
    assert meta["base_image"]["id"] == engine.image_id(base_image(distro_id))
    assert meta["builder_image"]["id"] == engine.image_id(meta["builder_image"]["reference"])
    build_log = (out / "build.log").read_text()
    assert "releng: smoke command passed" in build_log
    if codename not in NO_BUILDINFO:
        # The packages were installed as soon as they were built, while dpkg-buildpackage went on.
        assert ">>> binaries ready:" in build_log
        assert "as they were built" in build_log
    owner = out.parents[2].stat()  # the repository root
    assert {(p.stat().st_uid, p.stat().st_gid) for p in out.iterdir()} == {
        (owner.st_uid, owner.st_gid)
    }

    # Install it in a fresh base container, with no network, and run it.
    result = engine.run(
        base_image(distro_id),
        [
            "sh",
            "-c",
            f"apt-get install -y -q /debs/tally_{revision}_amd64.deb >/dev/null 2>&1 && "
            "echo one two three | tally -w && tally --version",
        ],
        mounts=[Mount(out, "/debs")],
        network="none",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.split()
    assert lines[0] == "3"
    assert "1.0.0" in result.output


@pytest.fixture(scope="module")
def nightly_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A repository copy for nightly builds (signed with its development key)."""
    return Project.load(copy_repo(tmp_path_factory.mktemp("nightly") / "repo"))


def _env() -> dict[str, str]:
    return {"PATH": os.environ["PATH"]}


def test_nightly_is_renamed_skipped_when_unchanged_and_reproducible(
    engine: Engine, base_image: Callable[[str], str], nightly_project: Project
) -> None:
    base_image(BOOKWORM)
    first = make_package(engine, nightly_project, BOOKWORM, NIGHTLY, env=_env())
    assert not first.up_to_date
    deb = first.out_dir / "tally-nightly_2026.11.20-1~deb12u1_amd64.deb"
    assert deb_field(deb, "Package") == "tally-nightly"
    assert deb_field(deb, "Conflicts") == "tally"
    assert deb_field(deb, "Replaces") == "tally"
    recorded = json.loads((first.out_dir / BUILD_JSON).read_text())

    again = make_package(engine, nightly_project, BOOKWORM, NIGHTLY, env=_env())
    assert again.up_to_date
    assert json.loads((first.out_dir / BUILD_JSON).read_text()) == recorded

    forced = make_package(engine, nightly_project, BOOKWORM, NIGHTLY, env=_env(), force=True)
    assert not forced.up_to_date
    rebuilt = json.loads((forced.out_dir / BUILD_JSON).read_text())
    debs = [f for f in recorded["files"] if f.endswith(".deb")]
    assert len(debs) >= 1
    for name in debs:
        assert rebuilt["sha256"][name] == recorded["sha256"][name], f"{name} is not reproducible"


def test_a_changed_source_rebuilds(
    engine: Engine, base_image: Callable[[str], str], nightly_project: Project
) -> None:
    base_image(BOOKWORM)
    version = Version.parse("2026.11.21")
    first = make_package(engine, nightly_project, BOOKWORM, version, env=_env())
    old_sha = json.loads((first.out_dir / BUILD_JSON).read_text())["inputs"]["tarball_sha256"]
    readme = nightly_project.root / "demo" / "tally" / "README"
    readme.write_text(readme.read_text() + "\nA changed source.\n")
    git(
        nightly_project.root,
        "commit",
        "-q",
        "-am",
        "change the source",
        date="2026-01-03T00:00:00Z",
    )
    second = make_package(engine, nightly_project, BOOKWORM, version, env=_env())
    assert not second.up_to_date
    meta = json.loads((second.out_dir / BUILD_JSON).read_text())
    assert meta["inputs"]["tarball_sha256"] != old_sha
    orig = second.out_dir / "tally-nightly_2026.11.21.orig.tar.gz"
    listing = subprocess.run(
        ["tar", "-xzOf", str(orig), "--wildcards", "*/README"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "A changed source." in listing.stdout


def test_secrets_and_network_stay_out_of_the_build_container(
    engine: Engine, base_image: Callable[[str], str], nightly_project: Project, tmp_path: Path
) -> None:
    base_image(BOOKWORM)
    host_env = {
        **_env(),
        "GNUPGHOME": "/root/.gnupg",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "RELENG_SIGNING_PASSPHRASE": "pass",
    }
    distro = nightly_project.distro(BOOKWORM)
    plan = plan_build(engine, nightly_project, distro, NIGHTLY, env=host_env)
    assert any(nightly_project.state_dir.iterdir())  # the development key is in there
    out = tmp_path / "out"
    out.mkdir()
    spec = build_spec(plan, out, owner=Owner.for_project(nightly_project, host_env), cpus=1)
    probe = dataclasses.replace(
        spec,
        command=[
            "sh",
            "-c",
            'echo "releng=[$(ls -A /opt/tally-packaging/.releng)]"; env; ls /sys/class/net; id -u; '
            "touch /opt/tally-packaging/x 2>/dev/null || echo repo-read-only",
        ],
    )
    result = engine.run_spec(probe)
    assert "releng=[]" in result.output
    for secret in ("GNUPGHOME", "AWS_", "s3cr3t", "RELENG_SIGNING_PASSPHRASE"):
        assert secret not in result.output
    lines = result.output.splitlines()
    assert "lo" in lines and "eth0" not in lines
    assert "0" not in lines  # not root
    assert "repo-read-only" in lines
    assert any(ln.startswith("SOURCE_DATE_EPOCH=17") for ln in lines)  # the source's commit time
    assert not any(ln.startswith(("BUILD_DEPENDS=", "APT_SOURCES=")) for ln in lines)


def test_a_distro_with_its_own_make_package_uses_it(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    base_image(BOOKWORM)
    root = copy_repo(tmp_path / "repo")
    own = root / "distros" / BOOKWORM / "make-package"
    own.write_text(
        "#!/bin/sh\necho own builder for $DISTRIBUTION\n"
        'exec sh "/opt/tally-packaging/packaging/make-debianish-package"\n'
    )
    own.chmod(0o755)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the distro's own builder")
    project = Project.load(root)
    result = make_package(engine, project, BOOKWORM, NIGHTLY, env=_env())
    assert "own builder for bookworm" in (result.out_dir / "build.log").read_text()
    assert (result.out_dir / "tally-nightly_2026.11.20-1~deb12u1_amd64.deb").is_file()


def test_output_belongs_to_the_invoking_user_under_sudo(
    engine: Engine, base_image: Callable[[str], str], nightly_project: Project
) -> None:
    if os.getuid() != 0:
        pytest.skip("only root can hand files to another user; non-root builds own their files")
    base_image(BOOKWORM)
    env = {**_env(), "SUDO_UID": "4321", "SUDO_GID": "4322"}
    result = make_package(engine, nightly_project, BOOKWORM, Version.parse("2026.11.15"), env=env)
    owners = {
        (p.stat().st_uid, p.stat().st_gid) for p in [result.out_dir, *result.out_dir.iterdir()]
    }
    assert owners == {(4321, 4322)}
    assert (
        "--user 4321:4322" in (result.out_dir / "build.log").read_text()
    )  # built as that user too


def test_a_new_tarball_equal_to_the_last_builds_is_up_to_date(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    """The build container starts while a new tarball is made; when that tarball is the last
    build's, the build is up to date all the same and the container is gone."""
    base_image(BOOKWORM)
    project = Project.load(copy_repo(tmp_path / "repo"))
    env = {**_env(), "SOURCE_DATE_EPOCH": "1767225600"}  # the tarball no longer has commit times
    version = Version.parse("2026.11.19")
    first = make_package(engine, project, BOOKWORM, version, env=env)
    assert not first.up_to_date
    git(project.root, "commit", "-q", "--allow-empty", "-m", "moves the nightly ref only")
    again = make_package(engine, project, BOOKWORM, version, env=env)
    assert again.up_to_date
    assert (
        engine.client.containers.list(
            all=True, filters={"label": f"{LABEL_PROJECT}={project.root}"}
        )
        == []
    )
    assert not any((project.state_dir / "logs").iterdir()), "no log of a build that did not run"


@pytest.mark.parametrize("hand_over", ["changed", "missing"])
def test_packages_changed_after_the_hand_over_are_installed_again_in_a_fresh_container(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path, hand_over: str
) -> None:
    """The early install counts only for the very packages of the output: a builder that
    announces packages which then change (or are not there) gets them installed again."""
    base_image(BOOKWORM)
    root = copy_repo(tmp_path / "repo")
    own = root / "distros" / BOOKWORM / "make-package"
    builder = 'sh "/opt/tally-packaging/packaging/make-debianish-package"\n'
    if hand_over == "changed":
        # After the real build (and its hand-over), repack the package: other bytes.
        script = (
            "#!/bin/sh\nset -e\n" + builder + 'cd "$OUT"\nfor d in tally-nightly_*.deb; do\n'
            '  dpkg-deb -R "$d" /tmp/unpacked && dpkg-deb -Zgzip -b /tmp/unpacked "$d"\n'
            "done\n"
        )
    else:
        script = '#!/bin/sh\nset -e\necho ">>> binaries ready: nothing_1_amd64.deb"\n' + builder
    own.write_text(script)
    own.chmod(0o755)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a builder whose hand-over does not hold")
    result = make_package(engine, Project.load(root), BOOKWORM, NIGHTLY, env=_env())
    build_log = (result.out_dir / "build.log").read_text()
    assert "the packages changed after they were handed over; again:" in build_log
    assert "as they were built" not in build_log
    # The second smoke install is the last step; only the compiler cache's summary follows.
    lines = build_log.rstrip().splitlines()
    assert lines[-1].startswith("releng: compiler cache:"), lines[-1]
    assert lines[-2] == "releng: smoke command passed: sh -c echo one two | tally -w"
    if hand_over == "changed":
        deb = next(result.out_dir.glob("tally-nightly_*_amd64.deb"))
        assert b"data.tar.gz" in deb.read_bytes()[:2048]  # the repacked one is the output
    assert engine.client.containers.list(all=True, filters={"label": f"{LABEL_SMOKE}={root}"}) == []


def test_make_all_packages_over_the_six_targets_ends_with_a_summary(
    demo_build: Callable[..., Path],
) -> None:
    """Over the session's builds of every target: one row each in the summary table."""
    targets = read_targets(REPO_ROOT)
    root = demo_build(targets[0], "1.0.0").parents[2]
    for distro_id in targets:
        demo_build(distro_id, "1.0.0")
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "invoke", "-r", str(REPO_ROOT)),
            *("make-all-packages", "--version", "1.0.0", "--jobs", "2"),
        ],
        env={**os.environ, "RELENG_ROOT": str(root), "RELENG_SIGNING_PASSPHRASE": PASSPHRASE},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    table = lines[lines.index(next(ln for ln in lines if ln.startswith("DISTRO "))) + 1 :]
    assert [ln.split()[0] for ln in table if ln.strip()] == targets
    # Up to date, unless the engine's base image changed since (a shared engine): then built.
    statuses = {re.split(r"\s{2,}", ln)[1] for ln in table if ln.strip()}
    assert statuses <= {"up to date", "built"}, proc.stdout


def test_a_second_architectures_build_keeps_the_first_ones_rebuild_results(tmp_path: Path) -> None:
    """verify-rebuild's results for amd64 stay when arm64 is built beside it afterwards (same
    source tarball): the results name each package by digest, so nothing stale is trusted."""
    from types import SimpleNamespace
    from typing import cast

    from releng.build import output
    from releng.build.plan import BuildPlan
    from releng.rebuild import run

    assert output.REBUILD_DIR == run.REBUILD_DIR
    out_dir = tmp_path / "out" / "1.0.0" / "debian-12-bookworm"
    (out_dir / "rebuild" / "attestations").mkdir(parents=True)
    (out_dir / "build.json").write_text(
        json.dumps({"inputs": {"tarball_sha256": "t1"}, "files": ["tally_1_amd64.deb"]})
    )
    (out_dir / "tally_1_amd64.deb").write_bytes(b"deb")
    (out_dir / "rebuild" / "rebuild.json").write_text("{}")
    (out_dir / "rebuild" / "attestations" / "tally_1_amd64.deb.intoto.json").write_text("{}")
    staged = tmp_path / "staged"
    staged.mkdir()

    def plan(tarball: str) -> BuildPlan:
        return cast(
            BuildPlan,
            SimpleNamespace(
                out_dir=out_dir, stamp="build-arm64.json", inputs={"tarball_sha256": tarball}
            ),
        )

    output._keep_other_architectures(plan("t1"), staged)
    assert (staged / "tally_1_amd64.deb").is_file()
    assert (staged / "rebuild" / "attestations" / "tally_1_amd64.deb.intoto.json").is_file()

    other = tmp_path / "other"
    other.mkdir()
    output._keep_other_architectures(plan("t2"), other)  # another source: nothing kept
    assert list(other.iterdir()) == []
