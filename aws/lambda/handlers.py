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

from releng import aws_clients
from releng.aws import handlers
from releng.aws.catalog import CATALOG_FILE, Catalog
from releng.aws.launch import AutoScalingLauncher, worker_groups

# The edge: the function's environment is read here, once, and handed in.
_ENV = dict(os.environ)
_REGION = aws_clients.region(_ENV)
_CATALOG = Catalog.from_json((Path(__file__).parent / CATALOG_FILE).read_text(encoding="utf-8"))
_GROUPS = worker_groups(_ENV.get("RELENG_WORKER_GROUPS", "{}"))


def _client(service: str) -> Any:
    return aws_clients.client(service, region_name=_REGION)


_CONTEXT = handlers.Context(
    client=_client,
    catalog=_CATALOG,
    settings=_ENV,
    launcher=AutoScalingLauncher(autoscaling=_client("autoscaling"), groups=_GROUPS),
)


def handler(event: dict[str, Any], context: object) -> None:
    """Answer each record's task token; raising returns the record to its queue for a retry."""
    del context
    for record in event.get("Records", []):
        handlers.dispatch(json.loads(record["body"]), _CONTEXT)
