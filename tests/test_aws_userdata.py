"""The EC2 user data, rendered with a stack's real values: shellcheck-clean, and its install
steps run in a stock debian:bookworm container (the AMI's release) as far as they go without
AWS: Debian packages (with dpkg's lock wait), releng cloned at the configured branch and
installed from its hash-pinned requirements, the worker importable."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from releng.aws import template
from tests.fixtures.docker import DOWNLOAD_CACHE_VOLUMES, PRIME_APT_ARCHIVES, SAVE_APT_ARCHIVES
from tests.fixtures.project import git

ROOT = Path(__file__).resolve().parents[1]
BRANCH = "release-line"


def _rendered(queue: str, repository: str) -> str:
    """The script as the launch template's Fn::Sub gives it to an instance of ``queue``."""
    tmpl = yaml.safe_load((ROOT / template.TEMPLATE_FILE).read_text(encoding="utf-8"))
    data = tmpl["Resources"][f"{queue.capitalize()}LaunchTemplate"]["Properties"]
    script, local = data["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    values = {
        "AWS::Region": "eu-central-1",
        "ScratchBucket": "releng-scratchbucket-1x2y3z",
        "Branch": BRANCH,
        "RepositoryUrl": repository,
        "GitCredentialsParameter": "",
        "SigningKeyParameter": "/releng/signing-key",
        "SigningPassphraseParameter": "/releng/signing-passphrase",
        "Queue": local["Queue"],
        "QueueUrl": f"https://sqs.eu-central-1.amazonaws.com/123456789012/releng-{queue}",
        "Signs": local["Signs"],
        "Pushes": local["Pushes"],
        "PublicGitTokenParameter": "/releng/public-git-token",
    }
    return template.render_sub(script, values)


@pytest.mark.slow
@pytest.mark.parametrize("queue", ["tarball", "build", "publish"])
def test_user_data_is_shellcheck_clean(queue, tmp_path) -> None:
    exe = shutil.which("shellcheck")
    assert exe, "shellcheck is missing: ./scripts/setup installs it (apt-get install shellcheck)"
    script = tmp_path / "user-data.sh"
    script.write_text(_rendered(queue, "https://git.example.com/packaging.git"))
    assert "${" not in script.read_text().replace("$((", "")
    assert len(script.read_bytes()) < 16 * 1024  # EC2's user data limit
    proc = subprocess.run(
        [exe, "--shell=bash", "--severity=style", str(script)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    signs = 'SIGNS="yes"' in script.read_text()
    assert signs == (queue != "build")


def _checkout_copy(dest: Path) -> Path:
    """This checkout as it is (tracked and new files, not ignored ones), committed in ``dest``:
    what the workers clone."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file() or src.is_symlink():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target, follow_symlinks=False)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "the checkout")
    return dest


@pytest.mark.docker
@pytest.mark.slow
def test_user_data_installs_releng_in_stock_bookworm(docker_client, base_image, tmp_path) -> None:
    repo = _checkout_copy(tmp_path / "repo")
    git(repo, "checkout", "-q", "-b", BRANCH)
    (repo / "on-the-branch").write_text("the clone must be of the configured branch\n")
    git(repo, "add", "on-the-branch")
    git(repo, "commit", "-q", "-m", "on the branch")
    script = tmp_path / "user-data.sh"
    script.write_text(_rendered("build", "file:///src/repo"))
    has_lock = (repo / "requirements" / "runtime.txt").is_file()
    # Until the repository carries requirements/runtime.txt (`nox -s lock`), the test makes
    # one the same way, hash-pinned, so the user data's own install step is what runs.
    make_lock = (
        ""
        if has_lock
        else "python3 -m venv /tmp/lock && /tmp/lock/bin/pip install -q pip-tools && "
        "cd /src/repo && mkdir -p requirements && /tmp/lock/bin/pip-compile -q --generate-hashes --strip-extras "
        "-o requirements/runtime.txt pyproject.toml && git add requirements && "
        "git -c user.name=t -c user.email=t@t commit -q -m lock && cd / && "
    )
    steps = (
        f"{PRIME_APT_ARCHIVES}; set -e; bash /user-data.sh install_packages; {SAVE_APT_ARCHIVES}; "
        + make_lock
        + "bash /user-data.sh git_credentials install_releng import_signing_key; "
        "test -f /opt/releng/on-the-branch; "
        "/opt/venv/bin/python -m releng.aws.worker --help >/dev/null; "
        "/opt/venv/bin/python -c 'import boto3, docker, gnupg, debian, invoke, releng.aws.worker'; "
        "/opt/venv/bin/pip check; echo USERDATA-OK"
    )
    volumes = {
        str(script): {"bind": "/user-data.sh", "mode": "ro"},
        str(repo): {"bind": "/src/repo", "mode": "rw"},
    } | DOWNLOAD_CACHE_VOLUMES
    environment = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
                   "GIT_CONFIG_VALUE_0": "*"}  # fmt: skip
    # This machine's TLS trust for pip (an egress proxy's CA where there is one), as an
    # instance trusts PyPI with Debian's certificates.
    ca = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE") or ""
    if ca and Path(ca).is_file():
        volumes[ca] = {"bind": "/etc/releng-test-ca.crt", "mode": "ro"}
        environment["PIP_CERT"] = "/etc/releng-test-ca.crt"
    name = f"releng-userdata-{uuid.uuid4().hex[:8]}"
    container = docker_client.containers.run(
        base_image("debian-12-bookworm"),
        ["bash", "-c", steps],
        name=name,
        detach=True,
        volumes=volumes,
        environment=environment,
    )
    try:
        result = container.wait(timeout=1800)
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert result["StatusCode"] == 0, logs[-4000:]
    assert "USERDATA-OK" in logs
