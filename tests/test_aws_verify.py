"""The AWS verify step (issue 26.5), piece by piece: where it sits in the state machine, when
prepare_task runs or skips it (moto's S3), what its worker runs, and the worker's ``always``
commands (tests/test_aws_commands.py parses its command lines, tests/test_aws_iam.py enforces
its role). The whole pipeline with real rebuilds is in tests/test_aws_pipeline.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from releng.aws import handlers, statemachine
from releng.aws import steps as S
from releng.aws.worker import Worker
from releng.errors import AwsError
from tests.test_aws_handlers import CATALOG, ctx  # noqa: F401  (the fixture, reused)

pytestmark = pytest.mark.aws

BOOKWORM = "debian-12-bookworm"


def test_the_distro_branch_is_build_then_verify_unless_the_policy_is_off() -> None:
    versions = statemachine.definition()["States"]["Versions"]["ItemProcessor"]["States"]
    branch = versions["Distros"]["ItemProcessor"]["States"]
    for done in ("MakeBinaryPackageSkipped", "MakeBinaryPackageRan"):
        assert branch[done]["Next"] == "VerifyRebuildWanted"
    wanted = branch["VerifyRebuildWanted"]
    assert wanted["Choices"] == [
        {"Variable": "$.config.verify_rebuild", "StringEquals": "off", "Next": "BinaryPackageDone"}
    ]
    assert wanted["Default"] == "PrepareVerifyRebuild"
    # its own queue (prepare_task names it, as a build's), its own deadline
    assert branch["VerifyRebuild"]["Parameters"]["QueueUrl.$"] == "$.tasks.VerifyRebuild.queue_url"
    assert branch["VerifyRebuild"]["TimeoutSecondsPath"] == "$.config.timeouts.verify"
    for done in ("VerifyRebuildSkipped", "VerifyRebuildRan"):
        assert branch[done]["Next"] == "BinaryPackageDone"
    # a mismatch ends this branch with a failure record: the publish leaves its build out
    failed = branch["VerifyRebuildFailed"]
    assert failed["End"] is True
    assert failed["Parameters"]["step"] == S.VERIFY_REBUILD
    assert branch["VerifyRebuild"]["Catch"][0]["Next"] == "VerifyRebuildFailed"
    # the publish comes after every branch
    assert versions["Distros"]["Next"] == "PreparePublishBinaryPackages"


def test_parse_input_carries_the_policy_into_the_config(ctx) -> None:  # noqa: F811
    assert handlers.parse_input({}, ctx)["config"]["verify_rebuild"] == "off"
    ctx.catalog = dataclasses.replace(CATALOG, verify_rebuild="require")
    assert handlers.parse_input({}, ctx)["config"]["verify_rebuild"] == "require"


def _prepare(ctx, arch: str = "amd64") -> dict:  # noqa: F811
    plan = handlers.parse_input({"versions": ["1.2.3"]}, ctx)["versions"][0]
    event = {"step": S.VERIFY_REBUILD, "version": plan, "distro": BOOKWORM, "arch": arch,
             "execution": "ex1"}  # fmt: skip
    return handlers.prepare_task(event, ctx)


def test_prepare_task_runs_the_verify_until_a_reproducing_rebuild_is_in_scratch(ctx) -> None:  # noqa: F811
    s3 = ctx.client("s3")
    scratch = ctx.settings[handlers.SCRATCH_BUCKET]
    urls = json.loads(ctx.settings[handlers.QUEUE_URLS])
    assert _prepare(ctx)["reason"] == '[verify] rebuild is "off"'
    ctx.catalog = dataclasses.replace(CATALOG, verify_rebuild="report")
    with pytest.raises(AwsError, match=r"no complete build of debian-12-bookworm amd64 1\.2\.3"):
        _prepare(ctx)
    build = f"1.2.3/{BOOKWORM}/amd64/"
    s3.put_object(Bucket=scratch, Key=build + ".releng-complete.json", Body=b"{}")
    task = _prepare(ctx)
    assert task["run"] is True
    assert (task["queue"], task["queue_url"]) == ("verify", urls["verify"])  # not a builder's
    assert task["fetch"] == [{"bucket": scratch, "prefix": build, "dest": f"out/1.2.3/{BOOKWORM}/"}]
    flags = ["--version", "1.2.3", "--release", "--arch", "amd64"]
    assert task["commands"] == [["invoke", "verify-rebuild", BOOKWORM, *flags]]
    assert task["always"] == [["invoke", "upload-build", *flags, "--rebuild", BOOKWORM]]
    assert task["log"]["key"] == f"logs/ex1/1.2.3/{BOOKWORM}/amd64/verify-rebuild.log"
    # a rebuild that differed is tried again; one that reproduced the build is not
    marker = build + "rebuild/.releng-complete.json"
    s3.put_object(Bucket=scratch, Key=marker, Body=json.dumps({"result": "differs"}).encode())
    assert _prepare(ctx)["run"] is True
    s3.put_object(Bucket=scratch, Key=marker, Body=json.dumps({"result": "reproduced"}).encode())
    skipped = _prepare(ctx)
    assert (skipped["run"], skipped["reason"]) == (
        False,
        f"verified: s3://{scratch}/{marker} exists",
    )
    record = json.loads(
        s3.get_object(Bucket=scratch, Key=f"status/ex1/1.2.3/{BOOKWORM}/amd64/verify-rebuild.json")[
            "Body"
        ].read()
    )
    assert record["state"] == "skipped"
    # arm64's build has no source package to rebuild from: no rebuilders for it
    assert _prepare(ctx, "arm64")["reason"] == "no rebuilders for arm64 on AWS (amd64 only)"


def test_the_always_commands_run_after_a_failure_and_the_first_failure_is_the_tasks(
    tmp_path: Path,
) -> None:
    worker = Worker(queue_url="", root=tmp_path, sqs=None, sfn=None, s3=None,
                    env={"PATH": "/usr/bin:/bin"}, instance="test")  # fmt: skip
    task = {
        "commands": [["sh", "-c", "echo diffoscope says; exit 3"], ["touch", "never"]],
        "always": [["touch", "uploaded"], ["sh", "-c", "exit 4"]],
    }
    outcome = worker._run(task, tmp_path / "task.log")
    assert (outcome.ok, outcome.returncode) == (False, 3)
    assert outcome.command == "sh -c 'echo diffoscope says; exit 3'"
    assert (tmp_path / "uploaded").is_file()
    assert not (tmp_path / "never").exists()
    assert "diffoscope says" in (tmp_path / "task.log").read_text()
    # commands that succeed and an "always" that fails: the task fails with it
    outcome = worker._run({"commands": [["true"]], "always": [["false"]]}, tmp_path / "b.log")
    assert (outcome.ok, outcome.command) == (False, "false")
