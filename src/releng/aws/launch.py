"""Workers as EC2 instances: what launch_workers and health_check use on AWS."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

QUEUE_TAG = "releng:queue"

# RunInstances refusals that pass: no capacity of the type in a zone (another subnet may have
# it), or the account's quota is used up (instances ending free it). The task stays queued
# and the next health check (every 5 minutes) tries again; the build is not failed for it.
CAPACITY_ERRORS = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientFreeAddressesInSubnet",
        "VcpuLimitExceeded",
        "InstanceLimitExceeded",
        "RequestLimitExceeded",
    }
)
# Refusals that another subnet (zone) may not give.
_ZONAL_ERRORS = frozenset(
    {"InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientFreeAddressesInSubnet"}
)


@dataclass(frozen=True, kw_only=True)
class Ec2Launcher:
    """Starts instances from the stack's launch template for a queue (its instance type),
    in the configured subnets (none: the default VPC)."""

    ec2: Any
    launch_templates: dict[str, str]  # queue -> launch template id
    stack: str
    subnets: Sequence[str] = field(default_factory=tuple)

    def live(self, queue: str) -> int:
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": f"tag:{QUEUE_TAG}", "Values": [queue]},
                {"Name": "tag:releng:stack", "Values": [self.stack]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )
        return sum(len(r["Instances"]) for page in pages for r in page["Reservations"])

    def launch(self, queue: str, count: int) -> list[str]:
        """Up to ``count`` instances, one request each (so a quota that fits five of ten
        gives five); fewer or none when EC2 refuses for capacity or quota."""
        from botocore.exceptions import ClientError

        ids: list[str] = []
        subnets = [*self.subnets] or [""]
        while len(ids) < count and subnets:
            try:
                ids += self._run(queue, subnets[0])
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in CAPACITY_ERRORS:
                    raise
                log.warning(
                    "%s: EC2 refused %d instance(s)%s: %s; the task waits in its queue",
                    queue, count - len(ids), f" in {subnets[0]}" if subnets[0] else "", code,
                )  # fmt: skip
                if code not in _ZONAL_ERRORS:
                    break
                subnets.pop(0)  # another zone may have the capacity
        if ids:
            log.info("launched %s for %s", ", ".join(ids), queue)
        return ids

    def _run(self, queue: str, subnet: str) -> list[str]:
        extra: dict[str, Any] = {"SubnetId": subnet} if subnet else {}
        reply = self.ec2.run_instances(
            LaunchTemplate={"LaunchTemplateId": self.launch_templates[queue]},
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": QUEUE_TAG, "Value": queue},
                        {"Key": "releng:stack", "Value": self.stack},
                        {"Key": "Name", "Value": f"{self.stack}-{queue}-worker"},
                    ],
                }
            ],
            **extra,
        )
        return [i["InstanceId"] for i in reply["Instances"]]
