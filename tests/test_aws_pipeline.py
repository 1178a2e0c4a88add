"""The state machine running on moto's executor, with handlers and workers on this machine.

What runs in place of AWS here: moto's server executes aws/state-machine.json
(the committed definition, with queue URLs filled in by the same rule as
CloudFormation's DefinitionSubstitutions). Lambda code cannot run under moto
(its runtime images cannot be pulled), so the handler queues are consumed by
releng.aws.runner.HandlerRunner in the test process, calling the same
releng.aws.handlers.dispatch the Lambda entry point calls. EC2 instances are
local processes running the same releng.aws.worker loop (--fake-ec2).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from releng.aws import deploy, run
from releng.aws import steps as S
from releng.aws.request import InputError
from releng.aws.runner import LocalLauncher
from releng.aws.worker import Worker
from releng.errors import AwsError
from releng.project import Project
from tests.fixtures.project import git

pytestmark = [pytest.mark.aws, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", moto_server.region)
    env = dict(os.environ)
    env["RELENG_TASKS_ROOT"] = str(REPO)  # the project copy has no tasks.py
    return env


def signed_project(root: Path, key, stack_name: str) -> Project:
    """A release needs a real signing key: point product.toml at the test key."""
    product = root / "product.toml"
    text = product.read_text()
    text = text.replace('key = ""', f'key = "{key.fingerprint}"', 1)
    text = text.replace('gnupghome = ""', f'gnupghome = "{key.home}"', 1)
    text += (
        f'\n[publish]\nbucket = "{stack_name}-downloads"\nscratch_bucket = "{stack_name}-scratch"\n'
    )
    product.write_text(text + f'\n[aws]\nstack_name = "{stack_name}"\n')
    git(root, "commit", "-q", "-am", "sign with the test key; test stack")
    return Project.load(root)


def deployed(root: Path, key, aws_env: dict[str, str]) -> tuple[Project, run.Aws, deploy.Stack]:
    """The project at ``root`` signing with the test ``key``, with a dev stack of its own (a
    fresh name) deployed on moto; the workers' environment gets the key's passphrase."""
    name = f"releng-{uuid.uuid4().hex[:8]}"
    aws_env["RELENG_SIGNING_PASSPHRASE"] = key.passphrase
    project = signed_project(root, key, name)
    aws = run.connect(project, aws_env)
    deploy.deploy_dev(aws.client, REPO, name)
    return project, aws, deploy.load_stack(aws.client("cloudformation"), name)


@pytest.fixture
def proj(moto_server, project_copy, gpg_key, aws_env):
    """The project copy, signing with the test key, with its own dev stack deployed on moto."""
    project, aws, _stack = deployed(project_copy.root, gpg_key, aws_env)
    yield project
    forget_executions(aws.client("stepfunctions"), project.config.aws.stack_name)


def forget_executions(sfn, name: str) -> None:
    """Delete the test's state machine: moto deep-copies its whole backend (every machine with
    its executions) on StartExecution and fails on a finished execution's lock, so a machine
    that has run must not outlive its test."""
    for machine in sfn.list_state_machines()["stateMachines"]:
        if machine["name"] == name:
            sfn.delete_state_machine(stateMachineArn=machine["stateMachineArn"])


@pytest.fixture
def stack(proj, aws_env):
    return deploy.load_stack(
        run.connect(proj, aws_env).client("cloudformation"), proj.config.aws.stack_name
    )


def test_tarball_step_runs_once_then_is_skipped(moto_server, proj, stack, aws_env):
    aws = run.connect(proj, aws_env)
    s3 = moto_server.client("s3")
    config = {"timeouts": {"tarball": 120}, "heartbeat_seconds": 60}
    started = run.start(proj, aws, versions=["1.0.0"], steps=["make-source-tarball"], config=config)
    desc = run.run_fake_ec2(proj, aws, started, env=aws_env, timeout=300, idle_seconds=5)
    assert desc["status"] == "SUCCEEDED", desc
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.scratch_bucket)["Contents"]]
    assert "1.0.0/source/tally-1.0.0.tar.gz" in keys
    assert "1.0.0/source/tally-1.0.0.tar.gz.asc" in keys
    log_keys = [k for k in keys if k.startswith(f"logs/{started.name}/")]
    assert log_keys == [f"logs/{started.name}/1.0.0/all/make-source-tarball.log"]

    # moto cannot start a second execution of a state machine that has run one (it deep-copies
    # the machine with its executions' locks): redeploy the dev stack, which replaces only the
    # state machine (same definition); the buckets and queues, where resuming looks, stay.
    deploy.deploy_dev(aws.client, REPO, proj.config.aws.stack_name)
    again = run.start(proj, aws, versions=["1.0.0"], steps=["make-source-tarball"], config=config)
    desc = run.run_fake_ec2(proj, aws, again, env=aws_env, timeout=300, idle_seconds=5)
    assert desc["status"] == "SUCCEEDED", desc
    record = json.loads(
        s3.get_object(
            Bucket=stack.scratch_bucket,
            Key=f"status/{again.name}/1.0.0/all/make-source-tarball.json",
        )["Body"].read()
    )
    assert record["state"] == "skipped"
    assert "exists" in record["reason"]


def test_bad_input_starts_nothing(moto_server, proj, stack, aws_env):
    aws = run.connect(proj, aws_env)
    sfn = moto_server.client("stepfunctions")
    with pytest.raises(
        InputError, match=r"unknown distro 'debian-99-nope'; valid distros: .*debian-12-bookworm"
    ):
        run.start(proj, aws, versions=["1.0.0"], distros=["debian-99-nope"])
    with pytest.raises(
        InputError, match="unknown step 'compile'; valid steps: make-source-tarball"
    ):
        run.start(proj, aws, versions=["1.0.0"], steps=["compile"])
    with pytest.raises(InputError, match=r"version 'v1\.0' does not start with a digit"):
        run.start(proj, aws, versions=["v1.0"])
    with pytest.raises(
        InputError, match=r"architecture 'arm64' is not in \[repositories\] architectures"
    ):
        run.start(proj, aws, versions=["1.0.0"], architectures=["arm64"])
    assert sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"] == []


def test_missing_stack_and_region_are_one_line(moto_server, project_copy, aws_env):
    proj = project_copy
    aws = run.connect(proj, aws_env)
    with pytest.raises(
        AwsError, match=r"stack 'releng' does not exist; create it with `invoke deploy-aws`"
    ):
        run.start(proj, aws, versions=["1.0.0"])
    env = {k: v for k, v in aws_env.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    with pytest.raises(AwsError, match="no AWS region"):
        run.connect(proj, env)


class HangingFirstWorker(LocalLauncher):
    """The first worker finds an `invoke` that never returns: a build hung on its instance."""

    def __init__(self, shim_dir: Path, **kw):
        super().__init__(**kw)
        self.shim_dir = shim_dir

    def launch(self, queue, count):
        if self.processes:
            return super().launch(queue, count)
        normal = self.env
        self.env = {**normal, "PATH": f"{self.shim_dir}:{normal['PATH']}"}
        try:
            return super().launch(queue, count)
        finally:
            self.env = normal


def _kill_when_running(
    s3, bucket: str, execution: str, launcher: LocalLauncher
) -> threading.Thread:
    key = f"status/{execution}/1.0.0/all/make-source-tarball.json"

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            except s3.exceptions.NoSuchKey:
                record = {}
            if record.get("state") == "running":
                os.killpg(launcher.processes[0][1].pid, signal.SIGKILL)  # the instance dies
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _hanging_launcher(proj, stack, aws_env, tmp_path) -> HangingFirstWorker:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "invoke").write_text("#!/bin/sh\nexec sleep 600\n")
    (shim / "invoke").chmod(0o755)
    env = {
        **aws_env,
        "AWS_ENDPOINT_URL": aws_env["AWS_ENDPOINT_URL"],
        "RELENG_ROOT": str(proj.root),
    }
    return HangingFirstWorker(
        shim, root=proj.root, queue_urls=stack.worker_queue_urls(), env=env,
        idle_seconds=5, visibility_seconds=5,
    )  # fmt: skip


@pytest.mark.parametrize(
    "replacement", [True, False], ids=["another-worker-finishes", "step-fails-named"]
)
def test_killed_worker(moto_server, proj, stack, aws_env, tmp_path, replacement):  # noqa: PLR0917
    """A worker killed mid-task: its message returns after the visibility timeout and the health
    check starts another worker that finishes; with no replacement the step fails by name."""
    aws = run.connect(proj, aws_env)
    s3 = moto_server.client("s3")
    launcher = _hanging_launcher(proj, stack, aws_env, tmp_path)
    # Without a replacement the step must time out: 20 s is ample for the hung worker to start
    # and be killed, and all the test waits for (120 s gave the replacement time to finish).
    timeout = 120 if replacement else 20
    config = {"timeouts": {"tarball": timeout}, "heartbeat_seconds": 30 if replacement else 6}
    started = run.start(proj, aws, versions=["1.0.0"], steps=["make-source-tarball"], config=config)
    watcher = _kill_when_running(s3, stack.scratch_bucket, started.name, launcher)
    desc = run.run_fake_ec2(
        proj, aws, started, env=aws_env, timeout=300, launcher=launcher,
        health_every=2 if replacement else 0,
    )  # fmt: skip
    watcher.join()
    assert launcher.processes[0][1].returncode == -signal.SIGKILL
    record = json.loads(
        s3.get_object(
            Bucket=stack.scratch_bucket,
            Key=f"status/{started.name}/1.0.0/all/make-source-tarball.json",
        )["Body"].read()
    )
    if replacement:
        assert desc["status"] == "SUCCEEDED", desc
        assert record["state"] == "succeeded"
        # A replacement finished it: the health check's first one, or (on a loaded machine,
        # where that one may idle out before the dead worker's message comes back) a later one.
        replacements = {f"local-tarball-{n}" for n in range(1, len(launcher.processes))}
        assert record["instance"] in replacements, (record["instance"], replacements)
    else:
        assert desc["status"] == "FAILED"
        assert desc["cause"] == "make-source-tarball 1.0.0: States.Timeout"
        # The dead worker's message comes back; a later worker drops it without doing the work.
        worker = Worker(
            queue_url=stack.worker_queue_urls()["tarball"], root=proj.root, sqs=moto_server.client("sqs"),
            sfn=moto_server.client("stepfunctions"), s3=s3, env=aws_env, wait_seconds=10,
            visibility_seconds=5,
        )  # fmt: skip
        assert worker.run(idle_seconds=15, max_tasks=1) == 1
        assert not (proj.root / "out" / "tally-1.0.0.tar.gz").exists()
        attrs = moto_server.client("sqs").get_queue_attributes(
            QueueUrl=stack.worker_queue_urls()["tarball"], AttributeNames=["All"]
        )["Attributes"]
        assert (
            attrs["ApproximateNumberOfMessages"]
            == attrs["ApproximateNumberOfMessagesNotVisible"]
            == "0"
        )


@pytest.mark.parametrize(
    ("args", "env_drop", "message"),
    [
        (
            ["--distros", "debian-99-nope"],
            (),
            "error: unknown distro 'debian-99-nope'; valid distros: ",
        ),
        (["--steps", "compile"], (), "error: unknown step 'compile'; valid steps: "),
        (["--versions", "v1.2"], (), "error: version 'v1.2' does not start with a digit"),
        (
            ["--arches", "arm64"],
            (),
            "error: architecture 'arm64' is not in [repositories] architectures of product.toml "
            "(amd64)",
        ),
        ([], ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), "error: no AWS credentials"),
        ([], ("AWS_REGION", "AWS_DEFAULT_REGION"), "error: no AWS region"),
        ([], (), "error: stack 'releng' does not exist; create it with `invoke deploy-aws`"),
    ],
    ids=["distro", "step", "version", "arch", "credentials", "region", "stack"],
)
def test_build_on_aws_refuses_bad_input_in_one_line(  # noqa: PLR0917  (pytest parameters)
    moto_server, aws_env, tmp_path, args, env_drop, message
):
    env = {k: v for k, v in aws_env.items() if k not in env_drop}
    env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    env["RELENG_ROOT"] = str(REPO)
    proc = subprocess.run(
        ["invoke", "--search-root", str(REPO), "build-on-aws", *args],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "started" not in proc.stdout


def test_cli_deploy_dev_then_nightly_with_fake_ec2(moto_server, project_copy, aws_env):
    """`invoke deploy-aws --dev` then `invoke build-on-aws --fake-ec2`, as a developer runs them."""
    name = f"releng-{uuid.uuid4().hex[:8]}"
    root = project_copy.root
    product = root / "product.toml"
    product.write_text(
        product.read_text()
        + f'\n[publish]\nbucket = "{name}-downloads"\nscratch_bucket = "{name}-scratch"\n'
        + f'\n[aws]\nstack_name = "{name}"\n'
    )
    shutil.copytree(REPO / "aws", root / "aws")  # a checkout has aws/; the copy fixture does not
    git(root, "add", "aws")
    git(root, "commit", "-q", "-am", "test stack")
    env = {**aws_env, "RELENG_ROOT": str(root)}

    def invoke(*args):
        return subprocess.run(
            ["invoke", "--search-root", str(REPO), *args],
            env=env, capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip

    deployed = invoke("deploy-aws", "--dev")
    assert deployed.returncode == 0, deployed.stderr
    assert f"stack {name}: state machine arn:aws:states:" in deployed.stdout
    try:
        built = invoke(
            "build-on-aws", "--versions", "2026.11.20", "--steps", "make-source-tarball", "--fake-ec2",
            "--timeout", "300",
        )  # fmt: skip
        status = invoke("show-aws-status", "--json")
    finally:
        forget_executions(moto_server.client("stepfunctions"), name)
    assert built.returncode == 0, built.stdout + built.stderr
    assert (
        "2026.11.20 (nightly): debian-11-bullseye, debian-12-bookworm, debian-13-trixie, "
        "ubuntu-16.04-xenial, ubuntu-22.04-jammy, ubuntu-24.04-noble x amd64" in built.stdout
    )
    rows = [line.split() for line in built.stdout.splitlines()]
    row = next(r for r in rows if r[3:4] == ["make-source-tarball"])
    assert row[:5] == ["2026.11.20", "-", "-", "make-source-tarball", "succeeded"], built.stdout
    assert row[6] == "local-tarball-0"
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)  # one JSON object, the same rows as data
    assert report["status"] == "SUCCEEDED"
    step = next(r for r in report["rows"] if r["step"] == "make-source-tarball")
    assert (step["version"], step["state"], step["instance"]) == (
        "2026.11.20",
        "succeeded",
        "local-tarball-0",
    )


# A build that embeds the build host's name on Debian 12 only (tests/test_rebuild.py plants
# the same everywhere): bookworm's rebuild differs, and diffoscope names
# usr/share/tally/build-host; noble's (the same shared debian/ tree) reproduces.
PLANTED = """
execute_after_dh_auto_install:
\tif grep -q '^12' /etc/debian_version; then \\
\t  pkg=$$(dh_listpackages | head -n 1); mkdir -p debian/$$pkg/usr/share/$$pkg; \\
\t  uname -n > debian/$$pkg/usr/share/$$pkg/build-host; \\
\tfi
"""


class OneContainerJobAtATime(LocalLauncher):
    """At most one build or verify worker alive at once (the shared test machine's rule: one
    container build at a time); the others' tasks wait in their queues for the health check."""

    def launch(self, queue: str, count: int) -> list[str]:
        jobs = (S.BUILD_QUEUE, S.VERIFY_QUEUE)
        if queue in jobs and any(self.live(q) for q in jobs):
            return []
        return super().launch(queue, min(count, 1) if queue in jobs else count)


def _launcher(proj, stack, aws_env) -> OneContainerJobAtATime:
    env = {**aws_env, "RELENG_ROOT": str(proj.root)}
    return OneContainerJobAtATime(
        root=proj.root, queue_urls=stack.worker_queue_urls(), env=env, idle_seconds=5
    )


def _history(sfn, arn: str) -> list[str]:
    """The states entered, in order (a Map's branches interleave)."""
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]


@pytest.mark.docker  # two builds and their rebuilds in containers
def test_verify_rebuild_between_build_and_publish_holds_back_a_mismatch_and_resumes(
    moto_server, project_copy, gpg_key, aws_env, base_image
):
    """[verify] rebuild = "require", two distros, bookworm's build planted with its host's name.
    The first run builds both and verifies each on the verify queue's own worker: noble's
    rebuild reproduces it, bookworm's differs and fails that branch only, with diffoscope's
    report in its log. The rerun skips what is done (the finished verify too) and publishes
    noble; bookworm stays in scratch, unpublished, with its rebuild's reports beside it."""
    bookworm, noble = "debian-12-bookworm", "ubuntu-24.04-noble"
    for distro in (bookworm, noble):
        base_image(distro)
    root = project_copy.root
    rules = root / "distros" / bookworm / "debian" / "rules"
    rules.write_text(rules.read_text() + PLANTED)
    (root / "product.toml").write_text(
        (root / "product.toml").read_text() + '\n[verify]\nrebuild = "require"\n'
    )
    proj, aws, stack = deployed(root, gpg_key, aws_env)
    name = proj.config.aws.stack_name
    s3, sfn = moto_server.client("s3"), moto_server.client("stepfunctions")
    config = {"timeouts": {"tarball": 300, "build": 1500, "verify": 1500, "publish": 600},
              "heartbeat_seconds": 30}  # fmt: skip
    scratch = stack.scratch_bucket

    def status(execution: str, step: str, distro: str = "", arch: str = "amd64") -> dict:
        part = f"{distro}/{arch}" if distro else "all"
        key = f"status/{execution}/1.0.0/{part}/{step}.json"
        return json.loads(s3.get_object(Bucket=scratch, Key=key)["Body"].read())

    try:
        first = run.start(
            proj, aws, versions=["1.0.0"], distros=[bookworm, noble], config=config,
            steps=["make-source-tarball", "make-binary-package", "verify-rebuild"],
        )  # fmt: skip
        assert first.plan["config"]["verify_rebuild"] == "require"
        desc = run.run_fake_ec2(proj, aws, first, env=aws_env, timeout=3000,
                                launcher=_launcher(proj, stack, aws_env))  # fmt: skip
        # the mismatch fails its own branch only: the execution lists it, and nothing else
        assert desc["status"] == "FAILED", desc
        failures = json.loads(
            s3.get_object(Bucket=scratch, Key=f"logs/{first.name}/failures.json")["Body"].read()
        )
        logs = {
            f["distro"]: s3.get_object(
                Bucket=scratch, Key=f["log"].removeprefix(f"s3://{scratch}/")
            )["Body"]
            .read()
            .decode()[-4000:]
            for f in failures
        }
        assert [(f["step"], f["distro"]) for f in failures] == [("verify-rebuild", bookworm)], logs
        assert failures[0]["error"] == "Releng.StepFailed", failures
        for distro in (bookworm, noble):
            assert status(first.name, "make-binary-package", distro)["state"] == "succeeded"
        ran = status(first.name, "verify-rebuild", noble)
        assert ran["state"] == "succeeded"
        assert ran["instance"].startswith("local-verify-")  # a worker of its own, not a builder
        assert status(first.name, "verify-rebuild", bookworm)["state"] == "failed"
        # each branch: the build, then its verify
        order = _history(sfn, first.arn)
        assert order.index("MakeBinaryPackage") < order.index("VerifyRebuild")
        # diffoscope's report is in the failure log, and beside the build in scratch
        log_key = failures[0]["log"].removeprefix(f"s3://{scratch}/")
        text = s3.get_object(Bucket=scratch, Key=log_key)["Body"].read().decode()
        assert "DIFFERS" in text, text[-3000:]
        assert "+++ /srv/rebuilt/tally_1.0.0-1~deb12u1_amd64.deb" in text, text[
            -3000:
        ]  # diffoscope's
        assert "./usr/share/tally/build-host" in text, text[-3000:]
        held = f"1.0.0/{bookworm}/amd64/rebuild/"
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=scratch, Prefix=held)["Contents"]}
        assert any(k.endswith(".diffoscope.txt") for k in keys), keys
        verified = f"1.0.0/{noble}/amd64/rebuild/"
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=scratch, Prefix=verified)["Contents"]}
        assert any(k.endswith(".intoto.json.asc") for k in keys), keys

        # The rerun (noble): its build and its finished verify are skipped, then the publish.
        deploy.deploy_dev(aws.client, REPO, name)  # moto: see the tarball test above
        again = run.start(
            proj, aws, versions=["1.0.0"], distros=[noble], config=config,
            steps=["make-source-tarball", "make-binary-package", "verify-rebuild",
                   "publish-binary-packages"],
        )  # fmt: skip
        desc = run.run_fake_ec2(proj, aws, again, env=aws_env, timeout=1200,
                                launcher=_launcher(proj, stack, aws_env))  # fmt: skip
        assert desc["status"] == "SUCCEEDED", desc
        skipped = status(again.name, "verify-rebuild", noble)
        assert skipped["state"] == "skipped"
        assert (
            skipped["reason"] == f"verified: s3://{scratch}/{verified}.releng-complete.json exists"
        )
        assert status(again.name, "make-binary-package", noble)["state"] == "skipped"
        assert status(again.name, "publish-binary-packages")["state"] == "succeeded"
        order = _history(sfn, again.arn)
        assert order.index("VerifyRebuildSkipped") < order.index("PublishBinaryPackages")
    finally:
        forget_executions(sfn, name)
    downloads = stack.downloads_bucket
    packages = s3.get_object(Bucket=downloads, Key="dists/noble/main/binary-amd64/Packages.gz")
    assert b"Package: tally" in gzip.decompress(packages["Body"].read())
    published = {o["Key"] for o in s3.list_objects_v2(Bucket=downloads)["Contents"]}
    assert not [k for k in published if k.startswith("dists/bookworm/")], sorted(published)
    # noble's attestations beside the repository, mirrored from the pool, listed in the index
    attested = [k for k in published if k.startswith("attestations/pool/") and "tally_" in k]
    assert any(k.endswith(".intoto.json.asc") for k in attested), sorted(published)
    index = json.loads(
        s3.get_object(Bucket=downloads, Key="attestations/index.json")["Body"].read()
    )
    assert index, index
    # bookworm stays in scratch, unpublished: its build and its differing rebuild
    left = {o["Key"] for o in s3.list_objects_v2(Bucket=scratch, Prefix="1.0.0/")["Contents"]}
    assert f"1.0.0/{bookworm}/amd64/.releng-complete.json" in left
    assert not [k for k in left if k.startswith(f"1.0.0/{noble}/")]  # published: removed
