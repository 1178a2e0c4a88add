"""Starting executions: what ``invoke build-on-aws`` and its shorthands call.

Plan, then act: credentials and region, the input (versions, distros, steps)
and the stack are all checked before anything starts. With ``fake_ec2`` this
process also plays the parts AWS would: it consumes the handler queues (the
Lambda functions) and runs workers as local processes (the EC2 instances),
until the execution ends.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from releng import aws_clients
from releng.aws import request
from releng.aws.catalog import Catalog
from releng.aws.deploy import Stack, check_product_toml, load_stack
from releng.errors import AwsError
from releng.project import Project

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Aws:
    """boto3 clients for one region (and endpoint, e.g. moto's, from AWS_ENDPOINT_URL)."""

    region: str
    endpoint_url: str | None = None

    def client(self, service: str) -> Any:
        return aws_clients.client(
            service, region_name=self.region, endpoint_url=self.endpoint_url or ""
        )


def connect(project: Project, env: Mapping[str, str]) -> Aws:
    """Region and credentials, or one line saying how to provide them."""
    import boto3

    region = aws_clients.region(env, project.config.aws.region)
    if not region:
        raise AwsError("no AWS region: set AWS_REGION or [aws] region in product.toml")
    if boto3.Session(region_name=region).get_credentials() is None:
        raise AwsError(
            "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE "
            "(or run on an instance with a role)"
        )
    return Aws(region=region, endpoint_url=env.get("AWS_ENDPOINT_URL") or None)


def execution_name(versions: Sequence[str], now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S%f")
    name = "-".join(versions)[:40] + "-" + stamp
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:80]


def _raw(
    versions: Sequence[str],
    distros: Sequence[str],
    steps: Sequence[str],
    config: Mapping[str, Any] | None,
    *,
    architectures: Sequence[str] = (),
    releases: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "versions": list(versions),
        **({"releases": list(releases)} if releases else {}),
        "distros": list(distros),
        **({"architectures": list(architectures)} if architectures else {}),
        "steps": list(steps),
        "config": dict(config or {}),
    }


def check(
    project: Project,
    *,
    versions: Sequence[str],
    distros: Sequence[str] = (),
    steps: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    architectures: Sequence[str] = (),
    releases: Sequence[str] = (),
) -> dict[str, Any]:
    """The plan for this input, or an InputError; no AWS call (the invoke tasks run it first).
    ``releases``: versions that are releases even when shaped like a date (``--release``)."""
    raw = _raw(versions, distros, steps, config, architectures=architectures, releases=releases)
    return request.normalise(raw, Catalog.from_project(project))


@dataclass(frozen=True, kw_only=True)
class Started:
    arn: str
    name: str
    plan: dict[str, Any]
    stack: Stack


def start(
    project: Project,
    aws: Aws,
    *,
    versions: Sequence[str],
    distros: Sequence[str] = (),
    steps: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    architectures: Sequence[str] = (),
    releases: Sequence[str] = (),
) -> Started:
    """Validate everything, then start one execution. Nothing starts when anything is wrong."""
    raw = _raw(versions, distros, steps, config, architectures=architectures, releases=releases)
    plan = check(
        project,
        versions=versions,
        distros=distros,
        steps=steps,
        config=config,
        architectures=architectures,
        releases=releases,
    )
    stack = load_stack(aws.client("cloudformation"), project.config.aws.stack_name)
    check_product_toml(project, stack)
    name = execution_name([v["version"] for v in plan["versions"]])
    arn = aws.client("stepfunctions").start_execution(
        stateMachineArn=stack.state_machine_arn, name=name, input=json.dumps(raw)
    )["executionArn"]
    log.info("started %s", arn)
    return Started(arn=arn, name=name, plan=plan, stack=stack)


def wait(aws: Aws, arn: str, *, timeout: float, poll: float = 2.0) -> dict[str, Any]:
    """The execution's description once it is no longer RUNNING (or an AwsError after timeout)."""
    sfn = aws.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while True:
        desc: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            return desc
        if time.monotonic() > deadline:
            raise AwsError(
                f"execution {arn} still running after {timeout:.0f}s; see `invoke show-aws-status`"
            )
        time.sleep(poll)


def run_fake_ec2(
    project: Project,
    aws: Aws,
    started: Started,
    *,
    env: Mapping[str, str],
    timeout: float,
    idle_seconds: float = 20,
    visibility_seconds: int = 120,
    health_every: float = 5,
    launcher: Any = None,
) -> dict[str, Any]:
    """Play Lambda and EC2 locally until the execution ends; its final description.

    ``launcher``: a :class:`releng.aws.runner.LocalLauncher` to use instead of a fresh one.
    """
    from releng.aws import handlers
    from releng.aws.runner import HandlerRunner, LocalLauncher

    stack = started.stack
    worker_env = dict(env)
    if aws.endpoint_url:
        worker_env["AWS_ENDPOINT_URL"] = aws.endpoint_url
    worker_env.setdefault("AWS_DEFAULT_REGION", aws.region)
    worker_env["RELENG_ROOT"] = str(project.root)
    launcher = launcher or LocalLauncher(
        root=project.root,
        queue_urls=stack.worker_queue_urls(),
        env=worker_env,
        idle_seconds=idle_seconds,
        visibility_seconds=visibility_seconds,
    )
    ctx = handlers.Context(
        client=aws.client,
        catalog=Catalog.from_project(project),
        settings=stack.handler_settings(),
        launcher=launcher,
    )
    try:
        with HandlerRunner(
            ctx=ctx, queue_urls=stack.handler_queue_urls(), health_every=health_every
        ):
            return wait(aws, started.arn, timeout=timeout)
    finally:
        launcher.stop()
