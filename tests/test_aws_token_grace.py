"""The worker's grace for a heartbeat answered InvalidToken: a setting, 0 for local workers.

On AWS the first heartbeat of a task succeeds; moto answers InvalidToken for every task
without HeartbeatSeconds, so the 3 s of grace cost every local task 3 s (issue 25.3).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from releng.aws import worker as W
from releng.aws.runner import LocalLauncher

pytestmark = pytest.mark.aws


def _queue_with_one_task(moto_server: Any, tmp_path: Path) -> tuple[str, str]:
    sqs, s3 = moto_server.client("sqs"), moto_server.client("s3")
    name = f"grace-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    s3.create_bucket(Bucket=name)
    task = {"step": "make-source-tarball", "version": "1.0.0", "distro": "", "execution": "e",
            "log": {"bucket": name, "key": "logs/e/1.0.0/all/make-source-tarball.log"},
            "commands": [["touch", str(tmp_path / "ran")]]}  # fmt: skip
    body = {"token": "not-a-token", "task": task, "heartbeat_seconds": 600}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    return url, name


@pytest.mark.parametrize(("grace", "at_least", "at_most"), [(0.0, 1, 1), (2.0, 2, 100)])
def test_an_unconfirmed_token_is_retried_for_the_grace_then_the_task_runs(
    moto_server: Any, tmp_path: Path, grace: float, at_least: int, at_most: int
) -> None:
    url, _ = _queue_with_one_task(moto_server, tmp_path)
    sfn = moto_server.client("stepfunctions")
    heartbeats: list[str] = []
    sfn.meta.events.register(
        "before-call.sfn.SendTaskHeartbeat", lambda **kw: heartbeats.append(kw["event_name"])
    )
    worker = W.Worker(
        queue_url=url, root=tmp_path, sqs=moto_server.client("sqs"), sfn=sfn,
        s3=moto_server.client("s3"), env={"PATH": "/usr/bin:/bin"}, wait_seconds=1,
        token_grace_seconds=grace,
    )  # fmt: skip
    assert worker.run(idle_seconds=3, max_tasks=1) == 1
    assert (tmp_path / "ran").exists()  # an unconfirmed token still runs its task
    assert at_least <= len(heartbeats) <= at_most, heartbeats


def test_local_workers_take_no_grace_and_run_their_task(moto_server: Any, tmp_path: Path) -> None:
    url, _ = _queue_with_one_task(moto_server, tmp_path)
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_ENDPOINT_URL": moto_server.endpoint_url,
        "AWS_DEFAULT_REGION": moto_server.region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    launcher = LocalLauncher(
        root=tmp_path, queue_urls={"tarball": url}, env=env, idle_seconds=2,
        logs_dir=tmp_path / "logs",
    )  # fmt: skip
    assert launcher.token_grace_seconds == 0
    launcher.launch("tarball", 1)
    ((_, proc),) = launcher.processes
    assert proc.wait(timeout=60) == 0, (tmp_path / "logs" / "local-tarball-0.log").read_text()
    assert (tmp_path / "ran").exists()
    assert proc.args[proc.args.index("--token-grace-seconds") + 1] == "0.0"
