"""Day one and day two of a stack: create, a failed create, preview, update, teardown; the
deploy artifacts (zip bytes, bucket names); against moto's CloudFormation over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from releng.aws import deploy, teardown
from releng.aws.catalog import Catalog
from releng.errors import AwsError
from releng.project import Project

pytestmark = pytest.mark.aws

ROOT = Path(__file__).resolve().parents[1]


def _template(*names: str) -> str:
    """A small stack: one SSM parameter per name (moto creates these for real)."""
    return json.dumps(
        {
            "Resources": {
                n: {
                    "Type": "AWS::SSM::Parameter",
                    "Properties": {
                        "Name": f"/releng-test/{uuid.uuid4().hex[:8]}/{n}",
                        "Type": "String",
                        "Value": n,
                    },
                }
                for n in names
            }
        }
    )


def _upload(moto_server, body: str) -> str:
    s3 = moto_server.client("s3")
    bucket = f"deploy-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="t.json", Body=body.encode())
    return f"https://{bucket}.s3.us-east-1.amazonaws.com/t.json"


def _force_status(name: str, status: str) -> None:
    """What moto never does on its own: a stack whose create or update rolled back. The
    server runs in this process (tests/fixtures/moto.py), so its backend is reachable."""
    from moto.cloudformation.models import cloudformation_backends

    backend = cloudformation_backends["123456789012"]["us-east-1"]
    (stack,) = [s for s in backend.stacks.values() if s.name == name]
    stack.status = status


def test_a_failed_first_create_is_one_line_then_replaced_on_request(moto_server):
    """ROLLBACK_COMPLETE counts as existing but cannot be updated: deploy says so in one line
    naming --replace-failed, and with it deletes the stack and creates it again."""
    cfn = moto_server.client("cloudformation")
    name = f"rb-{uuid.uuid4().hex[:8]}"
    url = _upload(moto_server, _template("A"))
    assert deploy.apply(cfn, name, template_url=url, parameters={}) == "created"
    first = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackId"]
    _force_status(name, "ROLLBACK_COMPLETE")
    with pytest.raises(AwsError, match=r"ROLLBACK_COMPLETE.*--replace-failed") as err:
        deploy.apply(cfn, name, template_url=url, parameters={})
    assert "\n" not in str(err.value)
    assert cfn.describe_stacks(StackName=name)["Stacks"][0]["StackId"] == first  # untouched
    result = deploy.apply(cfn, name, template_url=url, parameters={}, replace_failed=True)
    assert result == "created"
    again = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert again["StackId"] != first
    assert again["StackStatus"] == "CREATE_COMPLETE"


def _stubbed_rollback(moto_server, name: str, after: list[str]):
    """The CloudFormation client with botocore's Stubber for the UPDATE_ROLLBACK_FAILED flow
    only: moto has no ContinueUpdateRollback (docs/aws.md, moto's gaps). ``after``: the stack's
    states the waiter reads once the rollback is continued."""
    from botocore.stub import ANY, Stubber

    cfn = moto_server.client("cloudformation")
    stubber = Stubber(cfn)
    stack_id = f"arn:aws:cloudformation:us-east-1:123456789012:stack/{name}/1"

    def stacks(status: str) -> dict:
        return {"Stacks": [{"StackName": name, "StackId": stack_id, "StackStatus": status,
                            "CreationTime": "2026-12-06T00:00:00Z"}]}  # fmt: skip

    stubber.add_response("describe_stacks", stacks("UPDATE_ROLLBACK_FAILED"), {"StackName": name})
    stubber.add_response("continue_update_rollback", {}, {"StackName": name})
    for status in after:
        stubber.add_response("describe_stacks", stacks(status), {"StackName": name})
    if after[-1] == "UPDATE_ROLLBACK_COMPLETE":
        stubber.add_response(
            "update_stack", {"StackId": stack_id},
            {"StackName": name, "TemplateURL": ANY, "Parameters": ANY, "Capabilities": ANY},
        )  # fmt: skip
        stubber.add_response("describe_stacks", stacks("UPDATE_COMPLETE"), {"StackName": name})
    return cfn, stubber


def test_a_failed_rollback_is_continued_then_the_update_applied_and_said_in_one_line(
    moto_server, caplog
):
    """UPDATE_ROLLBACK_FAILED (an update failed and so did its rollback) cannot be updated:
    deploy continues the rollback, waits for it, says so in one line, then updates."""
    import logging

    name = f"urf-{uuid.uuid4().hex[:8]}"
    cfn, stubber = _stubbed_rollback(moto_server, name, ["UPDATE_ROLLBACK_COMPLETE"])
    with stubber, caplog.at_level(logging.INFO, logger="releng.aws.deploy"):
        result = deploy.apply(cfn, name, template_url="https://t/x.yaml", parameters={})
        stubber.assert_no_pending_responses()
    assert result == "updated"
    (said,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == (
        f"stack {name} was UPDATE_ROLLBACK_FAILED: its failed update is rolled back now "
        "(continue-update-rollback); applying this deploy"
    )


def test_a_rollback_that_cannot_finish_is_one_line_naming_what_to_run(moto_server):
    name = f"urf-{uuid.uuid4().hex[:8]}"
    cfn, stubber = _stubbed_rollback(moto_server, name, ["UPDATE_ROLLBACK_FAILED"])
    with stubber, pytest.raises(AwsError) as err:
        deploy.apply(cfn, name, template_url="https://t/x.yaml", parameters={})
    assert "\n" not in str(err.value)
    assert f"continue-update-rollback --stack-name {name} --resources-to-skip" in str(err.value)
    stubber.assert_no_pending_responses()  # nothing was updated


def test_a_busy_stack_is_one_line(moto_server):
    cfn = moto_server.client("cloudformation")
    name = f"busy-{uuid.uuid4().hex[:8]}"
    url = _upload(moto_server, _template("A"))
    deploy.apply(cfn, name, template_url=url, parameters={})
    _force_status(name, "UPDATE_IN_PROGRESS")
    with pytest.raises(AwsError, match="is UPDATE_IN_PROGRESS; wait for it"):
        deploy.apply(cfn, name, template_url=url, parameters={})


def test_preview_lists_the_changes_and_applies_nothing(moto_server):
    cfn = moto_server.client("cloudformation")
    name = f"pv-{uuid.uuid4().hex[:8]}"
    # a stack that does not exist yet: the CREATE change set leaves no stack behind
    changes = deploy.preview(
        cfn, name, template_url=_upload(moto_server, _template("A")), parameters={}
    )
    assert [(c.action, c.logical_id) for c in changes] == [("Add", "A")]
    assert deploy.stack_status(cfn, name) in ("", "DELETE_COMPLETE")
    deploy.apply(cfn, name, template_url=_upload(moto_server, _template("A")), parameters={})
    before = cfn.describe_stack_resources(StackName=name)["StackResources"]
    changes = deploy.preview(
        cfn, name, template_url=_upload(moto_server, _template("A", "B")), parameters={}
    )
    assert ("Add", "B") in [(c.action, c.logical_id) for c in changes]
    assert cfn.describe_stack_resources(StackName=name)["StackResources"] == before
    assert cfn.list_change_sets(StackName=name)["Summaries"] == []
    assert deploy.stack_status(cfn, name) == "CREATE_COMPLETE"


def _dev_stack(moto_server, name: str) -> deploy.Stack:
    return deploy.deploy_dev(moto_server.client, ROOT, name)


@pytest.mark.parametrize("delete_downloads", [False, True])
def test_destroy_stops_workers_empties_and_deletes_and_keeps_the_downloads(
    moto_server, delete_downloads
):
    name = f"ds-{uuid.uuid4().hex[:8]}"
    stack = _dev_stack(moto_server, name)
    s3, ec2, cfn = (moto_server.client(s) for s in ("s3", "ec2", "cloudformation"))
    s3.put_object(Bucket=stack.scratch_bucket, Key="1.0.0/source/x.tar.gz", Body=b"x")
    s3.put_object(Bucket=stack.downloads_bucket, Key="dists/bookworm/Release", Body=b"r")
    worker = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "releng:stack", "Value": name}]}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    result = teardown.destroy(moto_server.client, name, delete_downloads=delete_downloads)
    assert result.terminated == [worker]
    state = ec2.describe_instances(InstanceIds=[worker])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] in ("shutting-down", "terminated")
    assert deploy.stack_status(cfn, name) in ("", "DELETE_COMPLETE")
    assert s3.list_objects_v2(Bucket=stack.scratch_bucket).get("KeyCount", 0) == 0
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    if delete_downloads:
        assert stack.downloads_bucket not in buckets
        assert result.kept == []
    else:  # published packages outlive the stack
        assert s3.get_object(Bucket=stack.downloads_bucket, Key="dists/bookworm/Release")
        assert result.kept == [stack.downloads_bucket]


def test_deploy_enables_the_nightly_schedule_the_stack_created_off(moto_server):
    events = moto_server.client("events")
    rule = f"nightly-{uuid.uuid4().hex[:8]}"
    events.put_rule(Name=rule, ScheduleExpression="cron(0 2 * * ? *)", State="DISABLED")
    stack = deploy.Stack(
        name="releng", state_machine_arn="arn:sm", scratch_bucket="s", downloads_bucket="d",
        nightly_rule=rule,
    )  # fmt: skip
    assert deploy.enable_nightly(events, stack) is True
    assert events.describe_rule(Name=rule)["State"] == "ENABLED"
    assert deploy.Stack.from_outputs("releng", _outputs(stack)).nightly_rule == rule


def _outputs(stack: deploy.Stack) -> dict[str, str]:
    from releng.aws import steps as S

    queues = {S.queue_key(q): "https://q" for q in (*S.WORKER_QUEUES, *S.QUEUE_HANDLERS)}
    return {**stack.outputs(), **queues}


def test_the_lambda_zip_is_the_same_bytes_for_the_same_inputs(tmp_path):
    """CodeKey is the zip's hash: a zip that changed with file times (a fresh clone) or the
    clock would update every function on every deploy."""
    catalog = Catalog.from_project(Project.load(ROOT))
    copies = []
    for n, stamp in enumerate((1_000_000_000, 1_700_000_000)):
        root = tmp_path / f"c{n}"
        shutil.copytree(ROOT / "src" / "releng", root / "src" / "releng")
        (root / "aws" / "lambda").mkdir(parents=True)
        shutil.copy(ROOT / deploy.LAMBDA_ENTRY, root / deploy.LAMBDA_ENTRY)
        for path in root.rglob("*"):
            os.utime(path, (stamp, stamp))
        copies.append(root)
    first = deploy.lambda_zip(copies[0], catalog, vendor=False)
    second = deploy.lambda_zip(copies[1], catalog, vendor=False)
    assert first == second


def test_stack_names_that_cannot_name_buckets_and_functions_are_refused():
    for bad in ("Releng", "releng_prod", "-releng", "releng--x", "r" * 60):
        with pytest.raises(AwsError, match="cannot name the stack's buckets"):
            deploy.check_stack_name(bad, "ap-southeast-2")
    deploy.check_stack_name("releng-prod", "ap-southeast-2")
    bucket = deploy.artifacts_bucket("releng-prod", "123456789012", "ap-southeast-2")
    assert bucket == "releng-prod-artifacts-123456789012-ap-southeast-2"


@pytest.mark.parametrize("key", ["git_credentials_parameter", "public_git_token_parameter"])
def test_ssm_parameter_names_need_their_leading_slash(key):
    """The roles' ARNs are `parameter` + the name: without the slash the ARN is wrong and
    the instance gets AccessDenied at boot; deploy-aws refuses first, naming the key."""
    import dataclasses

    config = Project.load(ROOT).config
    aws = dataclasses.replace(config.aws, **{key: "releng/deploy-key"})
    with pytest.raises(
        AwsError, match=rf"\[aws\] {key} = 'releng/deploy-key'.*'/releng/deploy-key'"
    ):
        deploy.parameters_from(
            dataclasses.replace(config, aws=aws), repository_url="https://example.com/p.git"
        )
    aws = dataclasses.replace(config.aws, **{key: "/releng/deploy-key"})
    deploy.parameters_from(
        dataclasses.replace(config, aws=aws), repository_url="https://example.com/p.git"
    )


def test_destroy_aws_asks_for_the_stack_name_and_deletes_nothing_without_it(moto_server):
    """`invoke destroy-aws` names the stack and wants it typed: without a terminal it is one
    line pointing at --force; a wrong name deletes nothing; --force deletes."""
    import subprocess

    name = f"cli-{uuid.uuid4().hex[:8]}"
    _dev_stack(moto_server, name)
    cfn = moto_server.client("cloudformation")
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server.endpoint_url, "AWS_REGION": "us-east-1",
           "RELENG_ROOT": str(ROOT)}  # fmt: skip

    def invoke(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["invoke", "--search-root", str(ROOT), "destroy-aws", "--stack", name, *args],
            env=env, input=stdin, capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip

    refused = invoke()
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: destroy-aws asks for the stack's name on a terminal; pass --force to delete "
        f"{name} without asking"
    )
    assert deploy.stack_status(cfn, name) == "CREATE_COMPLETE"
    done = invoke("--force")
    assert done.returncode == 0, done.stderr
    assert f"deleted stack {name}" in done.stdout
    assert f"kept s3://{name}-downloads" in done.stdout
    assert deploy.stack_status(cfn, name) in ("", "DELETE_COMPLETE")
