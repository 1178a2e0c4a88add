"""Lambda entry point: one function per handler, each fed by its queue (SQS event source mapping).

The function's environment names the handler (RELENG_HANDLER), the buckets and
queues; the logic is releng.aws.handlers, bundled beside this file with a
catalog.json of the distros and the boto3/botocore releng was tested with, by
`invoke deploy-aws`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3

from releng.aws import handlers
from releng.aws.catalog import CATALOG_FILE, Catalog
from releng.aws.launch import Ec2Launcher

_CATALOG = Catalog.from_json((Path(__file__).parent / CATALOG_FILE).read_text(encoding="utf-8"))
_CONTEXT = handlers.Context(
    client=boto3.client,
    catalog=_CATALOG,
    settings=os.environ,
    launcher=Ec2Launcher(
        ec2=boto3.client("ec2"),
        launch_templates=json.loads(os.environ.get("RELENG_LAUNCH_TEMPLATES", "{}")),
        stack=os.environ.get("RELENG_STACK", "releng"),
        subnets=[s for s in os.environ.get("RELENG_SUBNETS", "").split(",") if s],
    ),
)


def handler(event: dict[str, Any], context: object) -> None:
    """Answer each record's task token; raising returns the record to its queue for a retry."""
    del context
    for record in event.get("Records", []):
        handlers.dispatch(json.loads(record["body"]), _CONTEXT)


def health_check(event: dict[str, Any], context: object) -> dict[str, Any]:
    """The EventBridge schedule's target: start workers for tasks nobody took."""
    del context
    return handlers.health_check(event, _CONTEXT)
