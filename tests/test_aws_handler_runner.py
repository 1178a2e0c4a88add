"""The local stand-in for Lambda's SQS event source mappings (releng.aws.runner.HandlerRunner):
a handler queue's messages are handled concurrently, up to MaximumConcurrency, as Lambda does
(issue 25.3, docs/speed.md section 2); launch_workers' FIFO queue stays one at a time.

Real moto SQS queues; the handlers are stand-ins that meet at a barrier (or count who is
inside), and Step Functions' answers are recorded, since no execution waits for them."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest

from releng.aws import handlers
from releng.aws import steps as S
from releng.aws.runner import HandlerRunner
from tests.test_aws_handlers import CATALOG

pytestmark = pytest.mark.aws


class Answers:
    """Step Functions' side of dispatch: the task tokens answered, and how."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: list[str] = []
        self.failed: list[tuple[str, str]] = []

    def send_task_success(self, *, taskToken: str, output: str) -> None:
        with self.lock:
            self.ok.append(taskToken)

    def send_task_failure(self, *, taskToken: str, error: str, cause: str) -> None:
        with self.lock:
            self.failed.append((taskToken, cause))


def _runner(moto_server, handler: str, answers: Answers) -> tuple[HandlerRunner, str]:
    sqs = moto_server.client("sqs")
    name = f"r-{uuid.uuid4().hex[:8]}"
    fifo = handler in S.MESSAGE_GROUPS
    attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "true"} if fifo else {}
    url = sqs.create_queue(QueueName=f"{name}-{handler}" + (".fifo" if fifo else ""),
                           Attributes={**attrs, "VisibilityTimeout": "120"})["QueueUrl"]  # fmt: skip
    ctx = handlers.Context(
        client=lambda s: answers if s == "stepfunctions" else moto_server.client(s),
        catalog=CATALOG, settings={}, launcher=None,  # type: ignore[arg-type]
    )  # fmt: skip
    return HandlerRunner(ctx=ctx, queue_urls={handler: url}, health_every=0), url


def _send(moto_server, url: str, handler: str, n: int) -> list[str]:
    tokens = [f"token-{i}" for i in range(n)]
    extra = {"MessageGroupId": S.MESSAGE_GROUPS[handler]} if handler in S.MESSAGE_GROUPS else {}
    for token in tokens:
        body = {"handler": handler, "token": token, "input": {}}
        moto_server.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(body), **extra)
    return tokens


def _wait(answers: Answers, n: int) -> None:
    deadline = time.monotonic() + 60
    while len(answers.ok) + len(answers.failed) < n and time.monotonic() < deadline:
        time.sleep(0.1)


def test_a_handler_queues_messages_are_handled_concurrently(moto_server, monkeypatch) -> None:
    """Three prepare_task messages, each waiting inside the handler until all three are:
    handled one at a time, the first would give up at the barrier (a failure answered)."""
    meet = threading.Barrier(3, timeout=20)

    def prepare_task(event: Any, ctx: handlers.Context) -> dict[str, Any]:
        meet.wait()
        return {"run": False}

    monkeypatch.setitem(handlers.HANDLERS, "prepare_task", prepare_task)
    answers = Answers()
    runner, url = _runner(moto_server, "prepare_task", answers)
    tokens = _send(moto_server, url, "prepare_task", 3)
    with runner:
        _wait(answers, 3)
    assert answers.failed == []
    assert sorted(answers.ok) == tokens
    assert runner.errors == []
    attrs = moto_server.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"  # each deleted once
    assert attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_at_most_max_concurrency_at_once_and_launch_workers_one_at_a_time(
    moto_server, monkeypatch
) -> None:
    inside, most = 0, {"prepare_task": 0, "launch_workers": 0}
    lock = threading.Lock()

    def counting(handler: str):
        def run(event: Any, ctx: handlers.Context) -> dict[str, Any]:
            nonlocal inside
            with lock:
                inside += 1
                most[handler] = max(most[handler], inside)
            time.sleep(0.3)
            with lock:
                inside -= 1
            return {}

        return run

    for handler, n in (("prepare_task", 12), ("launch_workers", 4)):
        monkeypatch.setitem(handlers.HANDLERS, handler, counting(handler))
        answers = Answers()
        runner, url = _runner(moto_server, handler, answers)
        tokens = _send(moto_server, url, handler, n)
        with runner:
            _wait(answers, n)
        if handler == "launch_workers":
            assert answers.ok == tokens  # in the order sent
        else:
            assert sorted(answers.ok) == sorted(tokens)
        assert runner.errors == []
    assert 1 < most["prepare_task"] <= S.MAX_CONCURRENCY
    assert most["launch_workers"] == 1  # FIFO, one message group: in order, one at a time
