"""The AWS verify step (issue 26.5), piece by piece: where it sits in the state machine, when
prepare_task runs or skips it (moto's S3), what its worker runs, and the worker's ``always``
commands (tests/test_aws_commands.py parses its command lines, tests/test_aws_iam.py enforces
its role). The whole pipeline with real rebuilds is in tests/test_aws_pipeline.py."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from releng.aws import handlers, statemachine, status
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
    # arm64 has rebuilders of its own (Graviton); its build must be there first, as amd64's
    with pytest.raises(AwsError, match=r"no complete build of debian-12-bookworm arm64 1\.2\.3"):
        _prepare(ctx, "arm64")


def test_every_architecture_has_a_verify_queue_on_its_own_kind_of_instance() -> None:
    assert S.VERIFY_QUEUE_OF_ARCH == {"amd64": "verify", "arm64": "verify_arm64"}
    for arch, queue in S.VERIFY_QUEUE_OF_ARCH.items():
        kind, build = S.WORKER_KINDS[queue], S.WORKER_KINDS[S.BUILD_QUEUE_OF_ARCH[arch]]
        # the builder's instance type and AMI (its architecture), never its role
        assert (kind.instance_param, kind.image_param) == (build.instance_param, build.image_param)
        assert kind.permissions == ("scratch-read", "rebuild-write", "rebuilder-key")


DSC = """Format: 3.0 (quilt)
Source: tally
Version: 1.2.3-1~bookworm
Checksums-Sha256:
 {a} 10 tally_1.2.3.orig.tar.gz
 {b} 20 tally_1.2.3-1~bookworm.debian.tar.xz
Files:
 0123456789abcdef0123456789abcdef 10 tally_1.2.3.orig.tar.gz
"""


def _arm64_ready(ctx, catalog=None) -> tuple:  # noqa: F811
    """[verify] rebuild on, the arm64 build complete in scratch, the amd64 build not yet."""
    ctx.catalog = dataclasses.replace(catalog or CATALOG, verify_rebuild="require")
    s3, scratch = ctx.client("s3"), ctx.settings[handlers.SCRATCH_BUCKET]
    s3.put_object(Bucket=scratch, Key=f"1.2.3/{BOOKWORM}/arm64/.releng-complete.json", Body=b"{}")
    s3.put_object(Bucket=scratch, Key=f"1.2.3/{BOOKWORM}/arm64/tally_1.2.3-1~bookworm_arm64.deb",
                  Body=b"arm64 deb")  # fmt: skip
    return s3, scratch


def _verify_status(s3, scratch: str) -> dict:
    key = f"status/ex1/1.2.3/{BOOKWORM}/arm64/verify-rebuild.json"
    return json.loads(s3.get_object(Bucket=scratch, Key=key)["Body"].read())


def test_an_arm64_verify_waits_for_the_amd64_source_package_then_fetches_only_it(
    ctx,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The branches run in parallel: arm64's verify may be prepared before the amd64 build put
    its .dsc in scratch. prepare_task says so with the error the state retries (no worker is
    started); once the build is there, the task fetches the arm64 build and, from the amd64
    part, the .dsc and the files it lists (not the amd64 packages), onto the Graviton queue."""
    s3, scratch = _arm64_ready(ctx)
    since = []
    for _ in range(2):  # each retry: still waiting, since the first time
        with pytest.raises(handlers.SourcePending) as pending:
            _prepare(ctx, "arm64")
        assert handlers.error_name(pending.value) == S.SOURCE_PENDING
        record = _verify_status(s3, scratch)
        assert record["state"] == "waiting"
        since.append(record["since"])
    assert since[0] == since[1]
    assert str(pending.value) == (
        f"the arm64 build of {BOOKWORM} 1.2.3 is waiting for the amd64 build's source package "
        f"in s3://{scratch}/1.2.3/{BOOKWORM}/amd64/"
    )
    amd64 = f"1.2.3/{BOOKWORM}/amd64/"
    source = ["tally_1.2.3-1~bookworm.dsc", "tally_1.2.3.orig.tar.gz",
              "tally_1.2.3-1~bookworm.debian.tar.xz"]  # fmt: skip
    bodies = {source[0]: DSC.format(a="a" * 64, b="b" * 64).encode(), source[1]: b"orig",
              source[2]: b"debian", "tally_1.2.3-1~bookworm_amd64.deb": b"amd64 deb",
              "build.json": b"{}"}  # fmt: skip
    for name, body in bodies.items():
        s3.put_object(Bucket=scratch, Key=amd64 + name, Body=body)
    marker = {"files": dict.fromkeys(bodies, "0" * 64)}
    s3.put_object(Bucket=scratch, Key=amd64 + ".releng-complete.json",
                  Body=json.dumps(marker).encode())  # fmt: skip
    task = _prepare(ctx, "arm64")
    urls = json.loads(ctx.settings[handlers.QUEUE_URLS])
    assert (task["run"], task["queue"], task["queue_url"]) == (True, "verify_arm64", urls["verify_arm64"])  # fmt: skip
    dest = f"out/1.2.3/{BOOKWORM}/"
    assert task["fetch"] == [
        {"bucket": scratch, "prefix": f"1.2.3/{BOOKWORM}/arm64/", "dest": dest},
        {"bucket": scratch, "prefix": amd64, "dest": dest, "names": source},
    ]
    flags = ["--version", "1.2.3", "--release", "--arch", "arm64"]
    assert task["commands"] == [["invoke", "verify-rebuild", BOOKWORM, *flags]]
    assert task["always"] == [["invoke", "upload-build", *flags, "--rebuild", BOOKWORM]]
    # the worker fetches exactly that: the arm64 build and the source package beside it
    worker = Worker(queue_url="", root=tmp_path, sqs=None, sfn=None, s3=s3, env={})
    with (tmp_path / "fetch.log").open("w") as logf:
        for spec in task["fetch"]:
            worker._fetch(spec, logf)
    assert sorted(p.name for p in (tmp_path / dest).iterdir()) == sorted(
        [*source, "tally_1.2.3-1~bookworm_arm64.deb"]
    )


def test_an_arm64_verify_whose_amd64_build_failed_or_is_not_coming_fails_in_one_line(
    ctx,  # noqa: F811
) -> None:
    s3, scratch = _arm64_ready(ctx)
    log = f"s3://{scratch}/logs/ex1/1.2.3/{BOOKWORM}/amd64/make-binary-package.log"
    failed = {"step": S.MAKE_BINARY_PACKAGE, "version": "1.2.3", "distro": BOOKWORM,
              "arch": "amd64", "execution": "ex1"}  # fmt: skip
    status.put_record(s3, scratch, failed, "failed", log=log)
    with pytest.raises(AwsError) as exc:
        _prepare(ctx, "arm64")
    assert not isinstance(exc.value, handlers.SourcePending)  # not retried: the branch fails
    assert str(exc.value) == (
        f"cannot verify the arm64 build of {BOOKWORM} 1.2.3: the amd64 build, whose source "
        f"package it rebuilds from, failed (log: {log})"
    )
    # an execution that builds arm64 only has no amd64 build coming
    s3.delete_object(Bucket=scratch, Key=status.record_key("ex1", "1.2.3", BOOKWORM, S.MAKE_BINARY_PACKAGE, "amd64"))  # fmt: skip
    plan = handlers.parse_input({"versions": ["1.2.3"], "architectures": ["arm64"]}, ctx)
    event = {"step": S.VERIFY_REBUILD, "version": plan["versions"][0], "distro": BOOKWORM,
             "arch": "arm64", "execution": "ex1", "config": plan["config"]}  # fmt: skip
    with pytest.raises(AwsError, match=r"in the same execution \(--arches amd64,arm64\)$") as exc:
        handlers.prepare_task(event, ctx)
    assert not isinstance(exc.value, handlers.SourcePending)
    # waiting is bounded by the verify step's timeout, counted from the first wait
    plan = handlers.parse_input({"versions": ["1.2.3"], "config": {"timeouts": {"verify": 1}}}, ctx)
    event = {**event, "version": plan["versions"][0], "config": plan["config"]}
    with pytest.raises(handlers.SourcePending):
        handlers.prepare_task(event, ctx)
    time.sleep(1.1)
    with pytest.raises(AwsError, match=r"is not in .* after \d+ s \(the verify step's timeout\)"):
        handlers.prepare_task(event, ctx)


def test_the_arm64_verify_is_retried_while_its_source_package_is_pending() -> None:
    """Only the verify's prepare state retries SourcePending, first, with backoff; its catch
    (a failure record ending the branch) takes every other error."""
    branch = statemachine.definition()["States"]["Versions"]["ItemProcessor"]["States"]["Distros"][
        "ItemProcessor"
    ]["States"]
    prepare = branch["PrepareVerifyRebuild"]
    assert prepare["Retry"][0] == S.SOURCE_PENDING_RETRY
    assert prepare["Retry"][0]["ErrorEquals"] == ["Releng.SourcePending"]
    assert prepare["Catch"][0]["Next"] == "VerifyRebuildFailed"
    assert S.SOURCE_PENDING not in json.dumps(branch["PrepareMakeBinaryPackage"])


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
