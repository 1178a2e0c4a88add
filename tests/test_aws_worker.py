"""The worker's deadline: one per task (queued + the step's timeout), enforced by the worker
as by the state, so a pool's worker never keeps running a task nobody waits for."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from releng.aws import worker as W

pytestmark = pytest.mark.aws


def test_commands_are_stopped_at_the_deadline_with_their_children(tmp_path) -> None:
    marker = tmp_path / "child-survived"
    script = f"(sleep 3; touch {marker}) & sleep 60"
    with (tmp_path / "log").open("w") as out:
        code = W._run_until(
            ["bash", "-c", script], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, out=out,
            deadline=time.time() + 1,
        )  # fmt: skip
    assert code is None  # stopped, not exited
    time.sleep(3)
    assert not marker.exists()  # the whole process group went
    with (tmp_path / "log").open("w") as out:
        assert W._run_until(["true"], cwd=tmp_path, env={}, out=out, deadline=None) == 0


def test_a_message_past_its_deadline_is_dropped_unrun(moto_server, tmp_path) -> None:
    sqs, s3 = moto_server.client("sqs"), moto_server.client("s3")
    name = f"w-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    s3.create_bucket(Bucket=name)
    task = {"step": "make-source-tarball", "version": "1.0.0", "distro": "", "execution": "e",
            "log": {"bucket": name, "key": "logs/e/1.0.0/all/make-source-tarball.log"},
            "commands": [["touch", str(tmp_path / "ran")]]}  # fmt: skip
    body = {"token": "t", "task": task, "heartbeat_seconds": 600, "timeout_seconds": 1}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    time.sleep(1.5)
    worker = W.Worker(
        queue_url=url, root=tmp_path, sqs=sqs, sfn=moto_server.client("stepfunctions"), s3=s3,
        env={"PATH": "/usr/bin:/bin"}, wait_seconds=1, alive_file=tmp_path / "alive",
    )  # fmt: skip
    assert worker.run(idle_seconds=3, max_tasks=1) == 1
    assert not (tmp_path / "ran").exists()
    assert s3.list_objects_v2(Bucket=name).get("KeyCount", 0) == 0  # no status, no log
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"][
            "ApproximateNumberOfMessages"
        ]
        == "0"
    )
    assert (tmp_path / "alive").exists()  # the watchdog's file is touched while it polls
