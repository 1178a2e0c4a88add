"""The committed state machine is the generated one, and it is valid where it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from releng.aws import statemachine
from releng.aws import steps as S
from releng.errors import AwsError

ROOT = Path(__file__).resolve().parents[1]


def test_committed_definition_is_the_generated_one() -> None:
    committed = (ROOT / statemachine.DEFINITION_FILE).read_text(encoding="utf-8")
    assert committed == statemachine.dumps(), "run `invoke generate-aws` and commit aws/"


def test_every_queue_is_a_placeholder_and_render_fills_them() -> None:
    names = statemachine.placeholders()
    # a build's queue is its architecture's: prepare_task names it in the task
    builds = {
        S.queue_key(q) for q in (*S.BUILD_QUEUE_OF_ARCH.values(), *S.VERIFY_QUEUE_OF_ARCH.values())
    }
    assert set(names) == {S.queue_key(q) for q in (*S.WORKER_QUEUES, *S.HANDLERS)} - {
        S.queue_key("get_distros_for_version"),
        S.queue_key("health_check"),
        *builds,
    }
    text = statemachine.render(statemachine.dumps(), {n: f"https://sqs/{n}" for n in names})
    assert "${" not in text
    with pytest.raises(AwsError, match="TarballQueueUrl"):
        statemachine.render(statemachine.dumps(), {})


def test_worker_steps_have_one_deadline_and_catch() -> None:
    """A task may wait for a slot in its pool: no heartbeat timeout, one deadline (the state's
    TimeoutSecondsPath), which the worker is given too; no retry of a timed-out task."""
    tasks = {}

    def walk(states: dict) -> None:
        for name, state in states.items():
            tasks[name] = state
            for key in ("ItemProcessor",):
                if key in state:
                    walk(state[key]["States"])

    walk(statemachine.definition()["States"])
    for name in (
        "MakeSourceTarball",
        "MakeBinaryPackage",
        "PublishBinaryPackages",
        "PublishSourceTarball",
    ):
        state = tasks[name]
        assert state["Resource"] == statemachine.SQS_WAIT
        assert "HeartbeatSecondsPath" not in state
        assert state["TimeoutSecondsPath"].startswith("$.config.timeouts.")
        body = state["Parameters"]["MessageBody"]
        assert body["timeout_seconds.$"] == state["TimeoutSecondsPath"]
        retried = {e for r in state["Retry"] for e in r["ErrorEquals"]}
        assert not retried & {"States.Timeout", "States.HeartbeatTimeout", "States.ALL"}
        assert state["Catch"][0]["Next"] == f"{name}Failed"
    build = tasks["MakeBinaryPackage"]["Parameters"]
    assert build["QueueUrl.$"] == "$.tasks.MakeBinaryPackage.queue_url"
    assert tasks["LaunchMakeBinaryPackageWorker"]["Parameters"]["MessageBody"]["input"][
        "queue.$"
    ] == ("$.tasks.MakeBinaryPackage.queue")
    # the build Map: one item per distro and architecture
    distros = tasks["Distros"]
    assert distros["ItemsPath"] == "$.version.matrix"
    assert distros["ItemSelector"]["arch.$"] == "$$.Map.Item.Value.arch"
    assert tasks["PublishBinaryPackages"]["Parameters"]["MessageGroupId"] == "publish"
    # launches run one at a time: two never both see the same free slot in a pool
    assert tasks["LaunchMakeBinaryPackageWorker"]["Parameters"]["MessageGroupId"] == "launch"
    # publish only what was built
    prepare = tasks["PreparePublishBinaryPackages"]["Parameters"]["MessageBody"]["input"]
    assert prepare["builds.$"] == "$.builds"
    assert json.loads(statemachine.dumps())["StartAt"] == "ParseInput"
