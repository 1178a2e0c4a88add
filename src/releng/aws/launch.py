"""Workers as EC2 instances: what launch_workers and health_check use on AWS."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

QUEUE_TAG = "releng:queue"


@dataclass(frozen=True, kw_only=True)
class Ec2Launcher:
    """Starts instances from the stack's launch template, one per queue (its instance type)."""

    ec2: Any
    launch_templates: dict[str, str]  # queue -> launch template id
    stack: str

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
        if count <= 0:
            return []
        reply = self.ec2.run_instances(
            LaunchTemplate={"LaunchTemplateId": self.launch_templates[queue]},
            MinCount=count,  # all or none: health_check tries again for what is missing
            MaxCount=count,
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
        )
        ids = [i["InstanceId"] for i in reply["Instances"]]
        log.info("launched %s for %s", ", ".join(ids), queue)
        return ids
