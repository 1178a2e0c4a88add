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

import json
import os
import uuid
from pathlib import Path

import pytest

from releng.aws import deploy, run
from releng.aws.request import InputError
from releng.errors import AwsError

pytestmark = [pytest.mark.aws, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", moto_server.region)
    env = dict(os.environ)
    env["RELENG_TASKS_ROOT"] = str(REPO)
    return env


@pytest.fixture
def stack(moto_server, project_copy, aws_env):
    name = f"releng-{uuid.uuid4().hex[:8]}"
    (project_copy.root / "product.toml").write_text(
        (project_copy.root / "product.toml").read_text() + f'\n[aws]\nstack_name = "{name}"\n'
    )
    aws = run.connect(project_copy, aws_env)
    return deploy.deploy_dev(aws.client, REPO, name)


def _project(project_copy):
    from releng.project import Project

    return Project.load(project_copy.root)


def test_tarball_step_runs_once_then_is_skipped(moto_server, project_copy, stack, aws_env):
    proj = _project(project_copy)
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


def test_bad_input_starts_nothing(moto_server, project_copy, stack, aws_env):
    proj = _project(project_copy)
    aws = run.connect(proj, aws_env)
    sfn = moto_server.client("stepfunctions")
    with pytest.raises(
        InputError, match="unknown distro 'debian-99-nope'; valid distros: .*debian-12-bookworm"
    ):
        run.start(proj, aws, versions=["1.0.0"], distros=["debian-99-nope"])
    with pytest.raises(
        InputError, match="unknown step 'compile'; valid steps: make-source-tarball"
    ):
        run.start(proj, aws, versions=["1.0.0"], steps=["compile"])
    with pytest.raises(InputError, match="version '1.0' is neither"):
        run.start(proj, aws, versions=["1.0"])
    assert sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"] == []


def test_missing_stack_and_region_are_one_line(moto_server, project_copy, aws_env):
    proj = _project(project_copy)
    aws = run.connect(proj, aws_env)
    with pytest.raises(
        AwsError, match=r"stack 'releng' does not exist; create it with `invoke deploy-aws`"
    ):
        run.start(proj, aws, versions=["1.0.0"])
    env = {k: v for k, v in aws_env.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    with pytest.raises(AwsError, match="no AWS region"):
        run.connect(proj, env)
