"""Base images (engine, local registry pull, mmdebstrap) and builder images, for real."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.engine import Engine
from releng.errors import ImageError
from releng.images import (
    bootstrap_command,
    build_depends,
    builder_inputs,
    builder_reference,
    ensure_base_image,
    ensure_builder_image,
    prune_builder_images,
)
from releng.images.ubuntu import BUNDLED_KEYRING
from releng.project import Project
from tests.fixtures.project import REPO_ROOT, copy_repo, git


def _add_distro(project: Project, name: str, *, docker_base: str, codename: str) -> Project:
    d = project.root / "distros" / name
    d.mkdir()
    (d / "DOCKER_BASE").write_text(docker_base + "\n")
    (d / "DISTRIBUTION").write_text(codename + "\n")
    (d / "PKGVER").write_text(f"1~{codename}\n")
    (d / "debian").symlink_to("../../packaging/debian")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", f"add {name}")
    return Project.load(project.root)


def test_build_depends_joins_all_three_fields(tmp_path: Path) -> None:
    (tmp_path / "control").write_text(
        "Source: x\nBuild-Depends: debhelper-compat (= 13),\n libfoo-dev [amd64] | libbar-dev\n"
        "Build-Depends-Indep: python3\n\nPackage: x\nArchitecture: any\n"
    )
    assert (
        build_depends(tmp_path)
        == "debhelper-compat (= 13), libfoo-dev [amd64] | libbar-dev, python3"
    )
    assert build_depends(REPO_ROOT / "packaging" / "debian") == "debhelper-compat (= 13)"


def test_builder_tag_changes_with_each_input() -> None:
    project = Project.load(REPO_ROOT)
    distro = project.distro("debian-12-bookworm")
    inputs = builder_inputs(project, distro, "sha256:base")
    tag, _ = builder_reference(project, distro, inputs)
    assert tag.startswith("releng-builder-tally:debian-12-bookworm-")
    assert builder_reference(project, distro, dict(inputs))[0] == tag
    for key in ("base_image", "build_depends", "apt_sources", "builder_setup"):
        changed = {**inputs, key: inputs[key] + "x"}
        assert builder_reference(project, distro, changed)[0] != tag, key


@pytest.mark.docker
def test_bootstrapped_base_image_records_suite_mirror_and_date(
    engine: Engine, base_image: Callable[[str], str]
) -> None:
    for distro_id, suite in (("debian-12-bookworm", "bookworm"), ("debian-13-trixie", "trixie")):
        labels = engine.image_labels(base_image(distro_id))
        assert labels["org.releng.suite"] == suite
        assert labels["org.releng.mirror"] == "http://deb.debian.org/debian"
        assert labels["org.releng.date"][:2] == "20"
        result = engine.run(
            base_image(distro_id), ["sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME"]
        )
        assert result.output.strip() == suite


@pytest.mark.docker
@pytest.mark.parametrize(
    ("distro_id", "suite", "version"),
    [
        ("ubuntu-16.04-xenial", "xenial", "16.04"),
        ("ubuntu-22.04-jammy", "jammy", "22.04"),
        ("ubuntu-24.04-noble", "noble", "24.04"),
    ],
)
def test_ubuntu_base_images_come_from_the_archive_with_every_pocket(
    engine: Engine, base_image: Callable[[str], str], distro_id: str, suite: str, version: str
) -> None:
    labels = engine.image_labels(base_image(distro_id))
    assert labels["org.releng.suite"] == suite
    assert labels["org.releng.mirror"] == "http://archive.ubuntu.com/ubuntu"
    script = (
        '. /etc/os-release; echo "version=$VERSION_ID"; grep -h ^deb /etc/apt/sources.list; '
        'echo "diverted=[$(dpkg-divert --list /usr/bin/chfn)]"; '
        "dpkg-query -W -f '${Package} ${Status}\n' apt ubuntu-keyring"
    )
    output = engine.run(base_image(distro_id), ["sh", "-c", script], network="none").output
    assert f"version={version}" in output
    for pocket in ("", "-updates", "-security"):
        assert f"deb http://archive.ubuntu.com/ubuntu {suite}{pocket} main universe" in output
    assert "diverted=[]" in output  # the bootstrap's chfn stub is gone
    assert "apt install ok installed" in output
    assert "ubuntu-keyring install ok installed" in output  # apt in the image trusts the archive


@pytest.mark.docker
def test_base_image_is_pulled_from_a_registry(
    engine: Engine, base_image: Callable[[str], str], local_registry: str, project_copy: Project
) -> None:
    source = engine.client.images.get(base_image("debian-12-bookworm"))
    repository = f"{local_registry}/releng-test/debian"
    tag = f"pull-{uuid.uuid4().hex[:8]}"
    reference = f"{repository}:{tag}"
    source.tag(repository, tag)
    try:
        for line in engine.client.images.push(repository, tag=tag, stream=True, decode=True):
            assert "error" not in line, line
        engine.client.images.remove(reference)
        assert engine.image_id(reference) is None
        project = _add_distro(
            project_copy, "debian-12-pulled", docker_base=reference, codename="bookworm"
        )
        image_id = ensure_base_image(engine, project, project.distro("debian-12-pulled"))
        assert engine.image_id(reference) == image_id
        # The same filesystem as the pushed image (a bootstrap would make other layers).
        assert engine.client.images.get(reference).attrs["RootFS"] == source.attrs["RootFS"]
    finally:
        if engine.image_id(reference) is not None:
            engine.client.images.remove(reference)


@pytest.mark.docker
def test_unobtainable_image_says_what_was_tried(engine: Engine, project_copy: Project) -> None:
    project = _add_distro(
        project_copy,
        "debian-9-nowhere",
        docker_base="127.0.0.1:1/debian:stretch",
        codename="stretch",
    )
    with pytest.raises(ImageError) as info:
        ensure_base_image(engine, project, project.distro("debian-9-nowhere"))
    message = str(info.value)
    assert "127.0.0.1:1/debian:stretch" in message
    assert "debian-9-nowhere" in message
    assert "not in the engine" in message
    assert "pull failed" in message
    assert "bootstrap not possible (debian stretch is not a Debian suite" in message
    assert "docker pull" in message  # what to do
    assert "\n" not in message


@pytest.mark.docker
def test_archived_debian_cannot_be_bootstrapped(engine: Engine) -> None:
    project = Project.load(REPO_ROOT)
    distro = project.distro("debian-9-stretch")
    if engine.image_id(distro.docker_base) is not None:
        pytest.fail(f"this engine has {distro.docker_base}: nothing to refuse; remove it")
    with pytest.raises(ImageError, match="bootstrap not possible") as info:
        ensure_base_image(engine, project, distro, pull=False)
    assert "debian:stretch" in str(info.value)


# The Ubuntu archive's signing keys as Ubuntu publishes them (ubuntu.com/server/docs, the
# ubuntu-keyring package): the 2012 archive key (xenial), its CD image key, the 2018 key.
UBUNTU_ARCHIVE_KEYS = {
    "790BC7277767219C42C86F933B4FE6ACC0B21F32": "Ubuntu Archive Automatic Signing Key (2012)",
    "843938DF228D22F7B3742BC0D94AA3F0EFE21092": "Ubuntu CD Image Automatic Signing Key (2012)",
    "F6ECB3762474EDA9D21B7022871920D1991BC93C": "Ubuntu Archive Automatic Signing Key (2018)",
}


def test_the_carried_ubuntu_keyring_holds_exactly_the_archive_keys(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["gpg", "--homedir", str(tmp_path), "--with-colons", "--show-keys", str(BUNDLED_KEYRING)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [ln.split(":") for ln in proc.stdout.splitlines()]
    fingerprints = [r[9] for r in rows if r[0] == "fpr"]
    uids = [r[9] for r in rows if r[0] == "uid"]
    primaries = [r for r in rows if r[0] == "pub"]
    assert len(primaries) == len(UBUNTU_ARCHIVE_KEYS)
    assert set(fingerprints) >= set(UBUNTU_ARCHIVE_KEYS)
    for fpr, uid in UBUNTU_ARCHIVE_KEYS.items():
        assert any(u.startswith(uid) for u in uids), (fpr, uid)
    assert {r[3] for r in primaries} == {"1"}  # RSA: what every release's gpgv knows


def test_ubuntu_bootstraps_every_pocket_verified_with_the_archive_keyring(
    make_project: Callable[..., Project],
) -> None:
    project = make_project('[images]\nubuntu_mirror = "http://mirror.example/ubuntu/"\n')
    cmd = bootstrap_command(project, project.distro("ubuntu-16.04-xenial"), Path("/tmp/x.tar"))
    assert cmd[-4:] == [
        "/tmp/x.tar",
        "deb http://mirror.example/ubuntu xenial main universe",
        "deb http://mirror.example/ubuntu xenial-updates main universe",
        "deb http://mirror.example/ubuntu xenial-security main universe",
    ]
    assert cmd[cmd.index("/tmp/x.tar") - 1] == "xenial"
    assert f"--keyring={BUNDLED_KEYRING}" in cmd
    assert "--include=apt" in cmd  # xenial's minbase has no apt
    hooks = [a for a in cmd if a.startswith(("--extract-hook=", "--customize-hook="))]
    assert any("--add /usr/bin/chfn" in h for h in hooks)
    assert any("--remove /usr/bin/chfn" in h for h in hooks)
    assert not any("Check-Valid-Until" in a for a in cmd)  # never verification turned off


def test_apt_sources_override_the_ubuntu_mirror(make_project: Callable[..., Project]) -> None:
    project = make_project('[images]\nubuntu_keyring = "keys/ubuntu.gpg"\n')
    (project.root / "distros" / "ubuntu-22.04-jammy" / "APT_SOURCES").write_text(
        "# moved\ndeb [arch=amd64] http://old-releases.ubuntu.com/ubuntu jammy main\n"
        "deb-src http://old-releases.ubuntu.com/ubuntu jammy main\n"
    )
    project = Project.load(project.root)
    cmd = bootstrap_command(project, project.distro("ubuntu-22.04-jammy"), Path("/tmp/x.tar"))
    assert cmd[-2:] == ["/tmp/x.tar", "deb http://old-releases.ubuntu.com/ubuntu jammy main"]
    assert f"--keyring={project.root / 'keys/ubuntu.gpg'}" in cmd


@pytest.mark.docker
@pytest.mark.slow
def test_builder_image_is_reused_and_has_the_build_depends(
    engine: Engine, base_image: Callable[[str], str]
) -> None:
    project = Project.load(REPO_ROOT)
    distro = project.distro("debian-12-bookworm")
    base_image(distro.id)
    first = ensure_builder_image(engine, project, distro)
    again = ensure_builder_image(engine, project, distro)
    assert again.created is False
    assert again.id == first.id
    labels = engine.image_labels(first.reference)
    assert labels["org.releng.base-image"] == first.base_id
    result = engine.run(
        first.reference, ["dpkg-query", "-W", "-f", "${Status}", "debhelper", "fakeroot"]
    )
    assert result.output.count("install ok installed") == 2


@pytest.mark.docker
@pytest.mark.slow
def test_a_build_depends_missing_from_the_distro_is_one_clear_error(
    engine: Engine, base_image: Callable[[str], str], project_copy: Project
) -> None:
    control = project_copy.root / "packaging" / "debian" / "control"
    control.write_text(
        control.read_text().replace(
            "Build-Depends: debhelper-compat (= 13)",
            "Build-Depends: debhelper-compat (= 13), releng-no-such-package-xyz",
        )
    )
    distro = project_copy.distro("debian-12-bookworm")
    base_image(distro.id)
    with pytest.raises(ImageError) as info:
        ensure_builder_image(engine, project_copy, distro)
    message = str(info.value)
    assert "releng-no-such-package-xyz" in message
    assert "debian-12-bookworm" in message
    reference, _ = builder_reference(
        project_copy,
        distro,
        builder_inputs(project_copy, distro, engine.image_id(distro.docker_base) or ""),
    )
    assert engine.image_id(reference) is None


def test_snapshot_bootstraps_from_snapshot_urls(make_project: Callable[..., Project]) -> None:
    project = make_project('[images]\nsnapshot = "20250520T000000Z"\n')
    cmd = bootstrap_command(project, project.distro("debian-12-bookworm"), Path("/tmp/x.tar"))
    assert cmd[-1] == "http://snapshot.debian.org/archive/debian/20250520T000000Z"
    assert '--aptopt=Acquire::Check-Valid-Until "false"' in cmd
    assert cmd[-3:-1] == ["bookworm", "/tmp/x.tar"]


@pytest.mark.docker
@pytest.mark.slow
def test_base_image_task_bootstraps_with_mmdebstrap(engine: Engine, project_copy: Project) -> None:
    reference = f"releng-test-bootstrap/debian:bookworm-{uuid.uuid4().hex[:8]}"
    project = _add_distro(
        project_copy, "debian-12-fresh", docker_base=reference, codename="bookworm"
    )
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "invoke",
                "-r",
                str(REPO_ROOT),
                "make-base-image",
                "debian-12-fresh",
                "--bootstrap",
            ],
            env={**os.environ, "RELENG_ROOT": str(project.root)},
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr
        assert "mmdebstrap --variant=minbase" in proc.stderr  # the logged command
        labels = engine.image_labels(reference)
        assert labels["org.releng.suite"] == "bookworm"
        assert labels["org.releng.bootstrap"] == "mmdebstrap --variant=minbase"
        assert f"org.releng.mirror={labels['org.releng.mirror']}" in proc.stdout
        result = engine.run(reference, ["sh", "-c", "apt-get --version | head -1"], network="none")
        assert result.output.startswith("apt 2.6")
    finally:
        if engine.image_id(reference) is not None:
            engine.client.images.remove(reference)


@pytest.mark.docker
def test_old_builder_images_are_pruned_but_not_one_in_use(
    engine: Engine, base_image: Callable[[str], str], project_copy: Project
) -> None:
    """Four builder images of one distro, the oldest used by a container: keep=2 removes the
    second oldest only (an image in use is left alone), and no other distro's image."""
    project = _add_distro(
        project_copy, "debian-12-prunetest", docker_base="debian:bookworm", codename="bookworm"
    )
    distro = project.distro("debian-12-prunetest")
    base_image("debian-12-bookworm")
    repository = f"releng-builder-{project.name}"
    tags = [f"{distro.id}-{i:016x}" for i in range(4)]
    tags.append("debian-12-prunetestother-0")  # another distro's, made last
    for tag in tags:  # each commit is a new image, created after the last
        holder = engine.client.containers.create("debian:bookworm", ["true"])
        try:
            holder.commit(repository=repository, tag=tag)
        finally:
            holder.remove(force=True)
    *refs, other = [f"{repository}:{tag}" for tag in tags]
    user = engine.client.containers.create(refs[0], ["true"])
    try:
        removed = prune_builder_images(engine, project, distro, keep=2)
        assert removed == [refs[1]]
        assert [engine.image_id(r) is not None for r in refs] == [True, False, True, True]
        assert engine.image_id(other) is not None
    finally:
        user.remove(force=True)
        for ref in [*refs, other]:
            with contextlib.suppress(Exception):
                engine.client.images.remove(ref)


@pytest.mark.docker
def test_a_keyring_that_does_not_verify_the_ubuntu_archive_is_one_line_and_imports_nothing(
    engine: Engine, project_copy: Project
) -> None:
    product = project_copy.root / "product.toml"
    wrong = "/usr/share/keyrings/debian-archive-keyring.gpg"
    product.write_text(
        product.read_text().replace("[images]\n", f'[images]\nubuntu_keyring = "{wrong}"\n', 1)
    )
    reference = f"releng-test-keyring/ubuntu:jammy-{uuid.uuid4().hex[:8]}"
    project = _add_distro(
        project_copy, "ubuntu-22.04-wrongkey", docker_base=reference, codename="jammy"
    )
    with pytest.raises(ImageError) as info:
        ensure_base_image(engine, project, project.distro("ubuntu-22.04-wrongkey"), pull=False)
    message = str(info.value)
    assert message.startswith("ubuntu-22.04-wrongkey: the keyring ")
    assert wrong in message
    assert "http://archive.ubuntu.com/ubuntu" in message
    assert "does not verify the Release of jammy" in message
    assert "\n" not in message
    assert engine.image_id(reference) is None


@pytest.mark.docker
def test_an_ubuntu_codename_the_archive_does_not_carry_is_one_line(
    engine: Engine, project_copy: Project
) -> None:
    reference = f"releng-test-nonesuch/ubuntu:nonesuch-{uuid.uuid4().hex[:8]}"
    project = _add_distro(
        project_copy, "ubuntu-99.04-nonesuch", docker_base=reference, codename="nonesuch"
    )
    with pytest.raises(ImageError) as info:
        ensure_base_image(engine, project, project.distro("ubuntu-99.04-nonesuch"), pull=False)
    message = str(info.value)
    assert "the archive at http://archive.ubuntu.com/ubuntu does not carry nonesuch" in message
    assert "\n" not in message
    assert engine.image_id(reference) is None


def test_bootstraps_retry_a_transient_archive_failure(make_project: Callable[..., Project]) -> None:
    # apt 2.3 and later retry three times anyway; apt 2.2 (bullseye hosts) does not retry.
    project = make_project("")
    for distro_id in ("debian-12-bookworm", "ubuntu-24.04-noble"):
        cmd = bootstrap_command(project, project.distro(distro_id), Path("/tmp/x.tar"))
        assert '--aptopt=Acquire::Retries "3"' in cmd, distro_id


@pytest.mark.docker
@pytest.mark.slow
def test_an_ubuntu_base_image_bootstraps_from_a_checkout_under_a_private_directory(
    engine: Engine, tmp_path: Path
) -> None:
    # As a clone in /root: apt inside mmdebstrap reads the keyring as _apt, who cannot
    # enter a directory of mode 0700.
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o700)
    root = copy_repo(home / "repo")
    (root / "keys").mkdir()
    shutil.copyfile(BUNDLED_KEYRING, root / "keys" / "ubuntu.gpg")
    product = root / "product.toml"
    product.write_text(
        product.read_text().replace("[images]\n", '[images]\nubuntu_keyring = "keys/ubuntu.gpg"\n')
    )
    reference = f"releng-test-private/ubuntu:xenial-{uuid.uuid4().hex[:8]}"
    project = _add_distro(
        Project.load(root), "ubuntu-16.04-private", docker_base=reference, codename="xenial"
    )
    try:
        image_id = ensure_base_image(
            engine, project, project.distro("ubuntu-16.04-private"), pull=False
        )
        assert engine.image_id(reference) == image_id
        assert engine.image_labels(reference)["org.releng.suite"] == "xenial"
        result = engine.run(reference, ["sh", "-c", ". /etc/os-release; echo $VERSION_ID"])
        assert result.output.strip() == "16.04"
    finally:
        with contextlib.suppress(Exception):
            engine.remove_image(reference)


@pytest.mark.docker
def test_a_failed_mmdebstrap_shows_its_last_errors_and_keeps_its_log(
    engine: Engine, project_copy: Project
) -> None:
    product = project_copy.root / "product.toml"
    mirror = "http://deb.debian.org/releng-no-such-mirror"
    text = product.read_text()
    product.write_text(text.replace('"http://deb.debian.org/debian"', f'"{mirror}"', 1))
    reference = f"releng-test-mmfail/debian:bookworm-{uuid.uuid4().hex[:8]}"
    project = _add_distro(
        project_copy, "debian-12-mmfail", docker_base=reference, codename="bookworm"
    )
    with pytest.raises(ImageError) as info:
        ensure_base_image(engine, project, project.distro("debian-12-mmfail"), pull=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"debian-12-mmfail: mmdebstrap of bookworm from {mirror} failed: ")
    assert f"E: Failed to fetch {mirror}/dists/bookworm/InRelease" in message  # apt's own
    assert "E: mmdebstrap failed to run" not in message  # not the line that says nothing
    logs = sorted((project.state_dir / "logs").glob("bootstrap-debian-12-mmfail-*.log"))
    assert len(logs) == 1
    assert f"full log: {logs[0]};" in message
    assert "I: running apt-get update..." in logs[0].read_text()
    assert engine.image_id(reference) is None
