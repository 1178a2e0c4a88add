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
from releng.aws.launch import AutoScalingLauncher
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
        "SigningKey2Parameter": "",
        "SigningKey3Parameter": "",
        "SigningPassphraseParameter": "/releng/signing-passphrase",
        "Queue": local["Queue"],
        "QueueUrl": f"https://sqs.eu-central-1.amazonaws.com/123456789012/releng-{queue}",
        "Signs": local["Signs"],
        "Pushes": local["Pushes"],
        "Rebuilds": local["Rebuilds"],
        "RebuilderKeyParameter": "/releng/rebuilder-key",
        "RebuilderPassphraseParameter": "/releng/rebuilder-passphrase",
        "PublicGitTokenParameter": "/releng/public-git-token",
    }
    return template.render_sub(script, values)


@pytest.mark.slow
@pytest.mark.parametrize("queue", ["tarball", "build", "publish", "verify"])
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
    assert signs == (queue not in ("build", "verify"))
    # the rebuilders import the rebuilder's key instead, and only they
    assert ('REBUILDS="yes"' in script.read_text()) == (queue == "verify")


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


@pytest.mark.aws
def test_a_failed_setup_fails_the_queued_tasks_once_instead_of_relaunching(moto_server, tmp_path):
    """A worker whose set-up fails (wrong branch, PyPI unreachable) fails every task waiting on
    its queue with the set-up error and its log, so the queue is empty, and leaves its Auto
    Scaling group lowering the desired capacity: neither the group nor the health check starts
    anybody else; before, the tasks stayed queued and workers were relaunched until the
    deadline."""
    import json
    import sys
    import time

    sqs, sfn, s3 = (moto_server.client(s) for s in ("sqs", "stepfunctions", "s3"))
    name = f"ud-{uuid.uuid4().hex[:8]}"
    scratch = f"{name}-scratch"
    s3.create_bucket(Bucket=scratch)
    url = sqs.create_queue(QueueName=f"{name}-build")["QueueUrl"]
    wait = {"Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            "Parameters": {"QueueUrl": url, "MessageBody": {"token.$": "$$.Task.Token"}},
            "End": True}  # fmt: skip
    definition = {"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": True, "Branches": [
        {"StartAt": "A", "States": {"A": wait}}, {"StartAt": "B", "States": {"B": wait}}]}}}  # fmt: skip
    arn = sfn.create_state_machine(
        name=name, definition=json.dumps(definition),
        roleArn="arn:aws:iam::123456789012:role/releng-test",
    )["stateMachineArn"]  # fmt: skip
    execution = sfn.start_execution(stateMachineArn=arn)["executionArn"]
    deadline = time.monotonic() + 60
    while True:
        attrs = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        if attrs["Attributes"]["ApproximateNumberOfMessages"] == "2":
            break
        assert time.monotonic() < deadline, "the two tasks never reached the queue"
        time.sleep(0.5)
    script = tmp_path / "user-data.sh"
    rendered = _rendered("build", "https://git.example.com/packaging.git")
    rendered = rendered.replace("eu-central-1", "us-east-1")
    rendered = rendered.replace(
        "https://sqs.us-east-1.amazonaws.com/123456789012/releng-build", url
    )
    script.write_text(rendered.replace("releng-scratchbucket-1x2y3z", scratch))
    # the worker, started by its queue's group as the launcher asks
    ec2, autoscaling = moto_server.client("ec2"), moto_server.client("autoscaling")
    lt = ec2.create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.small"}
    )["LaunchTemplate"]["LaunchTemplateId"]  # fmt: skip
    group = f"{name}-build-workers"
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=group, LaunchTemplate={"LaunchTemplateId": lt, "Version": "1"},
        MinSize=0, MaxSize=4, AvailabilityZones=["us-east-1a"],
    )  # fmt: skip
    launcher = AutoScalingLauncher(autoscaling=autoscaling, groups={"build": group})
    assert len(launcher.launch("build", 1)) == 1
    (instance,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
        "AutoScalingGroups"][0]["Instances"]  # fmt: skip
    log = tmp_path / "worker.log"
    log.write_text("fatal: Remote branch release-line not found in upstream origin\n")
    # aws-cli 1 ignores AWS_ENDPOINT_URL: a shim hands moto's endpoint to the real CLI
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "aws").write_text(
        f'#!/bin/sh\nexec {Path(sys.executable).parent / "aws"} --endpoint-url "$AWS_ENDPOINT_URL" "$@"\n'
    )
    (shims / "aws").chmod(0o755)
    env = {
        "PATH": f"{shims}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "AWS_ENDPOINT_URL": moto_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "RELENG_WORKER_LOG": str(log), "RELENG_INSTANCE_ID": instance["InstanceId"],
        "RELENG_SETUP_ERROR": "git clone --branch release-line exited 128",
    }  # fmt: skip
    proc = subprocess.run(["bash", str(script), "fail_queued_tasks", "leave_group"], env=env,
                          capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    while (desc := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline + 60
        time.sleep(0.5)
    assert desc["status"] == "FAILED"
    events = sfn.get_execution_history(executionArn=execution)["events"]
    failed = [e["taskFailedEventDetails"] for e in events if "taskFailedEventDetails" in e]
    assert len(failed) == 2  # each task once
    key = f"logs/instances/{instance['InstanceId']}.log"
    for detail in failed:  # (moto keeps no cause: the error and the uploaded log show it)
        assert detail["error"] == "Releng.SetupFailed"
    assert b"Remote branch" in s3.get_object(Bucket=scratch, Key=key)["Body"].read()
    # the worker left its group: no replacement, and the health check has nothing to start
    assert launcher.live("build") == 0
    (left,) = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"]
    assert left["Instances"][0]["State"]["Name"] in ("shutting-down", "terminated")


@pytest.mark.aws
def test_a_signing_worker_imports_every_configured_key_from_ssm(moto_server, gpg_key, other_gpg_key, tmp_path):  # fmt: skip
    """During a rotation's overlap two keys sign: the user data reads each key's parameter
    (deploy-aws passes /releng/signing-key/<FPR> per configured key) into the worker's keyring."""
    import subprocess
    import sys

    import gnupg

    ssm = moto_server.client("ssm")
    names = []
    for key in (gpg_key, other_gpg_key):
        armoured = gnupg.GPG(gnupghome=str(key.home)).export_keys(
            key.fingerprint, secret=True, passphrase=key.passphrase
        )
        names.append(f"/releng/signing-key/{key.fingerprint}-{uuid.uuid4().hex[:6]}")
        ssm.put_parameter(Name=names[-1], Value=armoured, Type="SecureString", Tier="Advanced")
    ssm.put_parameter(Name=f"{names[0]}-passphrase", Value="pw", Type="SecureString")
    script = _rendered("publish", "https://git.example.com/packaging.git")
    script = script.replace('"/releng/signing-key  "', f'"{names[0]} {names[1]} "')
    script = script.replace("/releng/signing-passphrase", f"{names[0]}-passphrase")
    script = script.replace("eu-central-1", "us-east-1")
    (tmp_path / "user-data.sh").write_text(script)
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "aws").write_text(
        f'#!/bin/sh\nexec {Path(sys.executable).parent / "aws"} --endpoint-url "$AWS_ENDPOINT_URL" "$@"\n'
    )
    (shims / "aws").chmod(0o755)
    home = tmp_path / "gnupg"
    env = {
        "PATH": f"{shims}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "AWS_ENDPOINT_URL": moto_server.endpoint_url, "GNUPGHOME": str(home),
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    }  # fmt: skip
    proc = subprocess.run(["bash", str(tmp_path / "user-data.sh"), "import_signing_key"], env=env,
                          capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    secret = {k["fingerprint"] for k in gnupg.GPG(gnupghome=str(home)).list_keys(secret=True)}
    assert secret == {gpg_key.fingerprint, other_gpg_key.fingerprint}
