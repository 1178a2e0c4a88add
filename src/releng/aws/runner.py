"""Local stand-ins for Lambda's SQS event source mappings and for EC2 (``--fake-ec2``).

:class:`HandlerRunner` long-polls every handler queue and calls
:func:`releng.aws.handlers.dispatch` (what each handler's Lambda function does
on AWS), and runs ``health_check`` every few seconds (what the stack's
EventBridge schedule does on AWS). :class:`LocalLauncher` starts
``python -m releng.aws.worker`` processes (the code the EC2 user data runs)
instead of raising a worker group's desired capacity.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from releng.aws import handlers
from releng.aws import steps as S

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class LocalLauncher:
    """Workers as local processes in ``root``, one process group each (killable as a unit)."""

    root: Path
    queue_urls: Mapping[str, str]
    env: Mapping[str, str]
    idle_seconds: float = 30
    visibility_seconds: int = 120
    logs_dir: Path | None = None
    # moto-only: moto answers InvalidToken to the heartbeat of every task without
    # HeartbeatSeconds, so the worker's grace for it (3 s on AWS) would only add 3 s per task.
    token_grace_seconds: float = 0.0
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def live(self, queue: str) -> int:
        with self._lock:
            return sum(1 for q, p in self.processes if q == queue and p.poll() is None)

    def launch(self, queue: str, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            with self._lock:
                n = len(self.processes)
                worker_id = f"local-{queue}-{n}"
                argv = [
                    sys.executable, "-m", "releng.aws.worker",
                    "--queue-url", self.queue_urls[queue],
                    "--root", str(self.root),
                    "--idle-seconds", str(self.idle_seconds),
                    "--wait-seconds", "2",
                    "--visibility-seconds", str(self.visibility_seconds),
                    "--token-grace-seconds", str(self.token_grace_seconds),
                ]  # fmt: skip
                logs = self.logs_dir or self.root / ".releng" / "worker-logs"
                logs.mkdir(parents=True, exist_ok=True)
                with (logs / f"{worker_id}.log").open("ab") as out:
                    proc = subprocess.Popen(
                        argv, cwd=self.root, env={**self.env, "RELENG_INSTANCE_ID": worker_id},
                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    )  # fmt: skip
                self.processes.append((queue, proc))
            log.info("launched local worker %s (pid %d) for %s", worker_id, proc.pid, queue)
            ids.append(worker_id)
        return ids

    def stop(self) -> None:
        """Terminate every worker still running (what terminating the instances does)."""
        with self._lock:
            for _, proc in self.processes:
                if proc.poll() is None:
                    proc.terminate()
            for _, proc in self.processes:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@dataclass(kw_only=True)
class HandlerRunner:
    """Consumes the handler queues in threads until :meth:`stop`.

    As Lambda's event source mappings do, a queue's messages are handled concurrently, up to
    ``concurrency`` at once (steps.MAX_CONCURRENCY, the mappings' MaximumConcurrency), except
    on a FIFO queue with one message group (launch_workers), whose messages run one at a time
    in order."""

    ctx: handlers.Context
    queue_urls: Mapping[str, str]  # handler name -> queue URL
    health_every: float = 5.0
    concurrency: int = S.MAX_CONCURRENCY
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _pools: list[ThreadPoolExecutor] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __enter__(self) -> HandlerRunner:
        for name in S.HANDLERS:
            if name not in self.queue_urls:
                continue
            url = self.queue_urls[name]
            if name in S.MESSAGE_GROUPS or self.concurrency <= 1:
                self._spawn(functools.partial(self._poll, url), name)
                continue
            pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"handler-{name}")
            self._pools.append(pool)
            slots = threading.BoundedSemaphore(self.concurrency)
            self._spawn(functools.partial(self._poll_concurrently, url, pool, slots), name)
        if self.health_every > 0:
            self._spawn(self._health, "health_check")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for pool in self._pools:
            pool.shutdown(wait=True)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=self._guard(target), name=f"handler-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    target()
                except Exception as exc:
                    log.exception("handler runner")
                    self.errors.append(repr(exc))
                    self._stop.wait(1)

        return run

    def _poll(self, url: str) -> None:
        """One at a time, in order (a FIFO queue's one message group)."""
        sqs: Any = self.ctx.client("sqs")
        reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in reply.get("Messages", []):
            self._dispatch(sqs, url, message)

    def _dispatch(self, sqs: Any, url: str, message: Mapping[str, Any]) -> None:
        handlers.dispatch(json.loads(message["Body"]), self.ctx)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def _poll_concurrently(
        self, url: str, pool: ThreadPoolExecutor, slots: threading.BoundedSemaphore
    ) -> None:
        """Take as many messages as there are free slots (at most 10, SQS's batch) and hand each
        to the pool: a slow handler holds its slot only, not the queue."""
        if not slots.acquire(timeout=1):
            return
        free = 1
        while free < 10 and slots.acquire(blocking=False):
            free += 1
        sqs: Any = self.ctx.client("sqs")
        try:
            reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=free, WaitTimeSeconds=1)
        except BaseException:
            for _ in range(free):
                slots.release()
            raise
        messages = reply.get("Messages", [])
        for _ in range(free - len(messages)):
            slots.release()

        def one(message: Mapping[str, Any]) -> None:
            try:
                self._dispatch(sqs, url, message)
            except Exception as exc:  # dispatch answers the token itself; this is SQS failing
                log.exception("handler runner")
                self.errors.append(repr(exc))
            finally:
                slots.release()

        for message in messages:
            pool.submit(one, message)

    def _health(self) -> None:
        """What the stack's schedule does: a health message on launch_workers' FIFO queue, so
        the health check runs between launches (one owner of the pools), never beside one."""
        if not self._stop.wait(self.health_every):
            import uuid

            sqs: Any = self.ctx.client("sqs")
            sqs.send_message(
                QueueUrl=self.queue_urls["launch_workers"],
                MessageBody=json.dumps(handlers.HEALTH_CHECK_MESSAGE),
                MessageGroupId=S.MESSAGE_GROUPS["launch_workers"],
                MessageDeduplicationId=uuid.uuid4().hex,
            )
