"""The worker loop: one EC2 instance (or one local process under --fake-ec2).

Long-poll a task queue; for each message: fetch inputs from S3, run the task's
invoke commands in the checkout with the output going to a log file, send
SendTaskHeartbeat (and extend the message's visibility) while they run, then
SendTaskSuccess with timing or SendTaskFailure naming the step, upload the
log to S3 and delete the message. A worker that dies leaves its message to
reappear after the visibility timeout, for another worker.

A worker takes as many tasks as come (instances are a bounded pool per queue).
Each task has one deadline, its message's send time plus the step's timeout
(the state's TimeoutSeconds): the worker stops the task's commands there, since
nobody waits for them any more, and takes the next one. ``--alive-file`` is
touched between polls and while a task runs; the user data's watchdog powers
off an instance whose worker stopped touching it.

The loop ends after ``idle_seconds`` without a message; on EC2 the user data
then shuts the instance down (instances terminate on shutdown).

    python -m releng.aws.worker --queue-url URL [--root DIR] [--idle-seconds N] [--alive-file F]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from releng.aws import status

log = logging.getLogger(__name__)

_DEAD_TOKEN = ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist")
VISIBILITY_SECONDS = 120
# How long a first heartbeat answered InvalidToken is retried before the task runs anyway. On
# AWS the first heartbeat succeeds; moto answers InvalidToken for every task without
# HeartbeatSeconds, so local workers (LocalLauncher, --fake-ec2) pass 0.
TOKEN_GRACE_SECONDS = 3.0


@dataclass(frozen=True, kw_only=True)
class Outcome:
    ok: bool
    seconds: float
    returncode: int
    command: str
    log: str


@dataclass(kw_only=True)
class Worker:
    """Takes tasks from one queue. Clients come in (a seam: moto in tests, AWS in production)."""

    queue_url: str
    root: Path
    sqs: Any
    sfn: Any
    s3: Any
    env: Mapping[str, str]  # the commands' environment (main() passes the process's)
    instance: str = field(default_factory=socket.gethostname)
    wait_seconds: int = 20
    visibility_seconds: int = VISIBILITY_SECONDS
    alive_file: Path | None = None
    token_grace_seconds: float = TOKEN_GRACE_SECONDS
    done: int = 0

    def _alive(self) -> None:
        if self.alive_file is not None:
            self.alive_file.touch()

    def run(self, *, idle_seconds: float, max_tasks: int = 0) -> int:
        """Process messages until idle for ``idle_seconds`` (or ``max_tasks`` done). Returns tasks done."""
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_seconds:
            self._alive()
            wait = max(
                1, min(self.wait_seconds, int(idle_seconds - (time.monotonic() - idle_since)) or 1)
            )
            reply = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=wait,
                VisibilityTimeout=self.visibility_seconds,
                MessageSystemAttributeNames=["SentTimestamp"],
            )
            for message in reply.get("Messages", []):
                self.handle(message)
                self.done += 1
                idle_since = time.monotonic()
                if max_tasks and self.done >= max_tasks:
                    return self.done
        log.info(
            "worker %s: idle for %ss, stopping after %d task(s)",
            self.instance,
            idle_seconds,
            self.done,
        )
        return self.done

    def handle(self, message: Mapping[str, Any]) -> Outcome:
        body = json.loads(message["Body"])
        token = body["token"]
        task = body["task"]
        heartbeat = int(body.get("heartbeat_seconds") or 600)
        name = " ".join(
            str(task.get(k) or "") for k in ("step", "version", "distro", "arch") if task.get(k)
        )
        deadline = _deadline(message, body)
        if deadline is not None and time.time() >= deadline:
            log.warning("worker %s: %s is past its deadline; dropping it", self.instance, name)
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            return Outcome(ok=False, seconds=0.0, returncode=-1, command="", log="")
        if not self._token_alive(token):
            # The execution gave up on this task (timed out, stopped) or it was answered already:
            # a message that reappeared after its worker died. Nobody waits for it; drop it.
            log.warning(
                "worker %s: %s belongs to a finished task; dropping it", self.instance, name
            )
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            return Outcome(ok=False, seconds=0.0, returncode=-1, command="", log="")
        log.info("worker %s: starting %s", self.instance, name)
        logs_dir = self.root / ".releng" / "worker-logs"
        logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = logs_dir / (task["log"]["key"].replace("/", "_"))
        bucket = task["log"]["bucket"]
        status.put_record(self.s3, bucket, task, "running", instance=self.instance)
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat,
            args=(token, message["ReceiptHandle"], heartbeat, stop),
            daemon=True,
        )
        beat.start()
        try:
            outcome = self._run(task, log_path, deadline=deadline)
        finally:
            stop.set()
            beat.join()
        log_url = self._upload_log(task, log_path)
        status.put_record(
            self.s3, bucket, task, "succeeded" if outcome.ok else "failed",
            instance=self.instance, seconds=round(outcome.seconds, 1), log=log_url,
        )  # fmt: skip
        self._answer(token, name, outcome, log_url)
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        log.info(
            "worker %s: %s %s in %.1fs",
            self.instance,
            name,
            "done" if outcome.ok else "FAILED",
            outcome.seconds,
        )
        return outcome

    def _token_alive(self, token: str) -> bool:
        """Whether the execution may still wait for this task: False only when Step Functions
        says the task timed out or does not exist.

        InvalidToken is retried for a few seconds, then taken as "unknown": moto registers a
        heartbeat only for tasks with HeartbeatSeconds (these have none, see the state
        machine) and only once its message is sent. The deadline bounds such a task anyway.
        """
        from botocore.exceptions import ClientError

        deadline = time.monotonic() + self.token_grace_seconds
        while True:
            try:
                self.sfn.send_task_heartbeat(taskToken=token)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in _DEAD_TOKEN:
                    raise
                if code != "InvalidToken":
                    return False
                if time.monotonic() >= deadline:
                    log.info("worker %s: the task token is not confirmed (%s)", self.instance, code)
                    return True
                time.sleep(0.5)
            else:
                return True

    def _answer(self, token: str, name: str, outcome: Outcome, log_url: str) -> None:
        """SendTaskSuccess/Failure; a token the execution no longer waits for is only logged."""
        from botocore.exceptions import ClientError

        try:
            self._send(token, name, outcome, log_url)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _DEAD_TOKEN:
                raise
            log.warning("worker %s: nobody waits for %s any more (%s)", self.instance, name, exc)

    def _send(self, token: str, name: str, outcome: Outcome, log_url: str) -> None:
        if outcome.ok:
            self.sfn.send_task_success(
                taskToken=token,
                output=json.dumps(
                    {
                        "status": "done",
                        "seconds": round(outcome.seconds, 1),
                        "instance": self.instance,
                        "log": log_url,
                    }
                ),
            )
        else:
            cause = f"{name}: `{outcome.command}` exited {outcome.returncode} on {self.instance}; log: {log_url}"
            self.sfn.send_task_failure(taskToken=token, error="Releng.StepFailed", cause=cause)

    def _heartbeat(self, token: str, receipt: str, heartbeat: int, stop: threading.Event) -> None:
        interval = max(1.0, min(heartbeat, self.visibility_seconds) / 3)
        while not stop.wait(interval):
            self._alive()
            try:  # the message first: it is what keeps another worker off this task
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url,
                    ReceiptHandle=receipt,
                    VisibilityTimeout=self.visibility_seconds,
                )
            except Exception as exc:
                log.warning("extending the message's visibility failed: %s", exc)
            try:
                self.sfn.send_task_heartbeat(taskToken=token)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    def _run(
        self, task: Mapping[str, Any], log_path: Path, *, deadline: float | None = None
    ) -> Outcome:
        start = time.monotonic()
        with log_path.open("w", encoding="utf-8") as logf:
            for fetch in task.get("fetch", []):
                self._fetch(fetch, logf)
            failed = self._commands(task.get("commands", []), logf, deadline)
            if failed is None:
                for upload in task.get("uploads", []):
                    self._upload(upload, logf)
            # "always": run whatever the outcome (the verify step's result goes to scratch on
            # a mismatch too); the first failure is the task's.
            after = self._commands(task.get("always", []), logf, deadline)
            failed = failed or after
        if failed is not None:
            command, returncode = failed
            return Outcome(
                ok=False,
                seconds=time.monotonic() - start,
                returncode=returncode,
                command=command,
                log=str(log_path),
            )
        return Outcome(
            ok=True, seconds=time.monotonic() - start, returncode=0, command="", log=str(log_path)
        )

    def _commands(
        self, commands: list[list[str]], logf: Any, deadline: float | None
    ) -> tuple[str, int] | None:
        """Run ``commands`` in order until one fails: that one's line and exit code."""
        for given in commands:
            argv = list(given)
            tasks_root = self.env.get("RELENG_TASKS_ROOT")
            if argv[:1] == ["invoke"] and tasks_root:  # a checkout without tasks.py (tests)
                argv = ["invoke", "--search-root", tasks_root, *argv[1:]]
            command = shlex.join(argv)
            log.info("worker %s: %s", self.instance, command)
            logf.write(f"$ {command}\n")
            logf.flush()
            returncode = _run_until(argv, cwd=self.root, env=self.env, out=logf, deadline=deadline)
            if returncode is None:
                logf.write(f"releng: stopped at the task's deadline ({command})\n")
                returncode = -signal.SIGTERM
            if returncode != 0:
                return command, returncode
        return None

    def _fetch(self, spec: Mapping[str, Any], logf: Any) -> None:
        """The files directly under ``prefix`` (``names``: only those) into ``dest``."""
        dest = self.root / spec["dest"]
        names = spec.get("names")
        dest.mkdir(parents=True, exist_ok=True)
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=spec["bucket"], Prefix=spec["prefix"]
        )
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"][len(spec["prefix"]) :]
                if not name or "/" in name or name.startswith("."):
                    continue
                if names is not None and name not in names:
                    continue
                logf.write(f"fetch s3://{spec['bucket']}/{obj['Key']} -> {dest / name}\n")
                self.s3.download_file(spec["bucket"], obj["Key"], str(dest / name))

    def _upload(self, spec: Mapping[str, str], logf: Any) -> None:
        for path in sorted(p for p in self.root.glob(spec["glob"]) if p.is_file()):
            key = spec["prefix"] + Path(path).name
            logf.write(f"upload {path} -> s3://{spec['bucket']}/{key}\n")
            self.s3.upload_file(path, spec["bucket"], key)

    def _upload_log(self, task: Mapping[str, Any], log_path: Path) -> str:
        bucket, key = task["log"]["bucket"], task["log"]["key"]
        try:
            self.s3.upload_file(str(log_path), bucket, key)
        except Exception as exc:
            log.warning("could not upload %s to s3://%s/%s: %s", log_path, bucket, key, exc)
            return str(log_path)
        return f"s3://{bucket}/{key}"


def _deadline(message: Mapping[str, Any], body: Mapping[str, Any]) -> float | None:
    """When the state stops waiting for this task: sent + the step's timeout (epoch seconds)."""
    sent = message.get("Attributes", {}).get("SentTimestamp")
    timeout = body.get("timeout_seconds")
    if not sent or not timeout:
        return None
    return int(sent) / 1000 + int(timeout)


def _run_until(
    argv: list[str], *, cwd: Path, env: Mapping[str, str], out: Any, deadline: float | None
) -> int | None:
    """Run ``argv`` in its own process group; its exit code, or None when it was stopped at
    ``deadline`` (the group gets SIGTERM, then SIGKILL after 30 s)."""
    proc = subprocess.Popen(
        argv, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        return proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return None
    finally:
        if proc.poll() is None:  # interrupted: never leave a build behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    from releng import aws_clients

    parser = argparse.ArgumentParser(
        prog="python -m releng.aws.worker", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--root", default=".", type=Path)
    parser.add_argument("--idle-seconds", type=float, default=300)
    parser.add_argument("--wait-seconds", type=int, default=20)
    parser.add_argument("--visibility-seconds", type=int, default=VISIBILITY_SECONDS)
    parser.add_argument("--alive-file", type=Path, default=None)
    parser.add_argument(
        "--token-grace-seconds",
        type=float,
        default=TOKEN_GRACE_SECONDS,
        help="retry a first heartbeat answered InvalidToken this long before running the task "
        "(keep the default on AWS; moto answers InvalidToken for every task without "
        "HeartbeatSeconds, so local workers under --fake-ec2 pass 0)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    env = dict(os.environ)  # the edge: the instance's environment, read once
    region = aws_clients.region(env)
    sqs, sfn, s3 = (
        aws_clients.client(s, region_name=region, endpoint_url=env.get("AWS_ENDPOINT_URL", ""))
        for s in ("sqs", "stepfunctions", "s3")
    )
    worker = Worker(
        queue_url=args.queue_url,
        root=args.root.resolve(),
        sqs=sqs,
        sfn=sfn,
        s3=s3,
        env=env,
        instance=env.get("RELENG_INSTANCE_ID") or socket.gethostname(),
        wait_seconds=args.wait_seconds,
        visibility_seconds=args.visibility_seconds,
        alive_file=args.alive_file,
        token_grace_seconds=args.token_grace_seconds,
    )
    worker.run(idle_seconds=args.idle_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
