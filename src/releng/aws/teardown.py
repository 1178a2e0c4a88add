"""Tearing the stack down (``invoke destroy-aws``): stop its stray workers, empty the
buckets it owns, delete it; the downloads bucket (published packages, ``DeletionPolicy:
Retain``) stays unless asked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from releng.aws.deploy import artifacts_bucket, load_stack, wait_for_stack


def _empty_bucket(s3: Any, bucket: str) -> int:
    """Delete every object (and version) in ``bucket``; how many. A missing bucket: 0."""
    from botocore.exceptions import ClientError

    removed = 0
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            keys = [
                {"Key": o["Key"], "VersionId": o["VersionId"]}
                for o in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            for start in range(0, len(keys), 1000):
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[start : start + 1000]})
            removed += len(keys)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return 0
        raise
    return removed


@dataclass(frozen=True, kw_only=True)
class Teardown:
    stack: str
    terminated: list[str]
    emptied: list[str]
    kept: list[str]  # buckets retained with their published packages


def destroy(client: Any, name: str, *, delete_downloads: bool = False) -> Teardown:
    """Empty what the stack owns and delete it. The downloads bucket (published packages,
    ``DeletionPolicy: Retain``) is kept unless ``delete_downloads``; then it is emptied and
    deleted after the stack."""
    cfn, s3, sts = (client(s) for s in ("cloudformation", "s3", "sts"))
    stack = load_stack(cfn, name)
    region = s3.meta.region_name or "us-east-1"
    artifacts = artifacts_bucket(name, sts.get_caller_identity()["Account"], region)
    # The workers of the stack's Auto Scaling groups go with their groups (CloudFormation
    # empties a group before deleting it; terminating them here would only start
    # replacements). Any other instance tagged with the stack is stopped first.
    ec2 = client("ec2")
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": "tag:releng:stack", "Values": [name]},
            {
                "Name": "instance-state-name",
                "Values": ["pending", "running", "stopping", "stopped"],
            },
        ]
    )
    workers = [
        i["InstanceId"]
        for p in pages
        for r in p["Reservations"]
        for i in r["Instances"]
        if not any(t["Key"] == "aws:autoscaling:groupName" for t in i.get("Tags", []))
    ]
    if workers:
        ec2.terminate_instances(InstanceIds=workers)
    emptied = []
    for bucket in (stack.scratch_bucket, artifacts):
        _empty_bucket(s3, bucket)
        emptied.append(bucket)
    cfn.delete_stack(StackName=name)
    wait_for_stack(cfn, "stack_delete_complete", name)
    _delete_bucket(s3, artifacts)
    kept = [stack.downloads_bucket]
    if delete_downloads:
        _empty_bucket(s3, stack.downloads_bucket)
        _delete_bucket(s3, stack.downloads_bucket)
        emptied.append(stack.downloads_bucket)
        kept = []
    return Teardown(stack=name, terminated=workers, emptied=emptied, kept=kept)


def _delete_bucket(s3: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise
