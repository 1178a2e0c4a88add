"""Workers as EC2 instances: what launch_workers and health_check use on AWS."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from releng.errors import AwsError

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
        "Unsupported",  # the zone does not offer the instance type (c7g in some zones)
    }
)
# Refusals that another subnet (zone) may not give.
_ZONAL_ERRORS = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientFreeAddressesInSubnet",
        "Unsupported",
    }
)


def launch_templates(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The functions' ``RELENG_LAUNCH_TEMPLATES`` (queue -> {"id", "version"}, the version
    the stack last wrote): (queue -> id, queue -> version)."""
    try:
        data = json.loads(text or "{}")
        ids = {str(q): str(t["id"]) for q, t in data.items()}
        versions = {str(q): str(t["version"]) for q, t in data.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise AwsError(
            f"RELENG_LAUNCH_TEMPLATES is not queue -> {{id, version}}: {text[:200]!r}; "
            "redeploy with `invoke deploy-aws`"
        ) from None
    return ids, versions


@dataclass(frozen=True, kw_only=True)
class Ec2Launcher:
    """Starts instances from the stack's launch template for a queue (its instance type),
    in the configured subnets (none: the default VPC)."""

    ec2: Any
    launch_templates: Mapping[str, str]  # queue -> launch template id
    stack: str
    subnets: Sequence[str] = field(default_factory=tuple)
    # queue -> the launch template version the stack last wrote (its LatestVersionNumber).
    # CloudFormation adds a version on each update but never moves the default one, so a
    # launch without a version would keep the first deploy's AMI, type and user data.
    versions: Mapping[str, str] = field(default_factory=dict)

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
        subnets = self._subnets(queue)
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

    def _template(self, queue: str) -> dict[str, str]:
        template = {"LaunchTemplateId": self.launch_templates[queue]}
        if self.versions.get(queue):
            template["Version"] = self.versions[queue]
        return template

    def _subnets(self, queue: str) -> list[str]:
        """The subnets to try, in zones that offer the queue's instance type (EC2 refuses
        the others with ``Unsupported``); none configured: the default VPC's. ``[""]``: let
        EC2 choose (no subnet is known to fit)."""
        template = self._template(queue)
        data = self.ec2.describe_launch_template_versions(
            LaunchTemplateId=template["LaunchTemplateId"],
            Versions=[template.get("Version", "$Default")],
        )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        kind = data.get("InstanceType", "")
        if self.subnets:
            found = self.ec2.describe_subnets(SubnetIds=list(self.subnets))["Subnets"]
        else:
            found = self.ec2.describe_subnets(
                Filters=[{"Name": "default-for-az", "Values": ["true"]}]
            )["Subnets"]
        zone_of = {s["SubnetId"]: s["AvailabilityZone"] for s in found}
        order = list(self.subnets) or sorted(zone_of, key=lambda s: zone_of[s])
        if not kind:
            return order or [""]
        offers = self.ec2.describe_instance_type_offerings(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": [kind]}],
        )["InstanceTypeOfferings"]
        zones = {o["Location"] for o in offers}
        fitting = [s for s in order if zone_of.get(s) in zones]
        if order and not fitting:
            log.warning(
                "%s: no subnet of %s is in a zone offering %s (%s); EC2 will refuse",
                queue, ", ".join(order), kind, ", ".join(sorted(zones)) or "none",
            )  # fmt: skip
        return fitting or [*self.subnets] or [""]

    def _run(self, queue: str, subnet: str) -> list[str]:
        extra: dict[str, Any] = {"SubnetId": subnet} if subnet else {}
        reply = self.ec2.run_instances(
            LaunchTemplate=self._template(queue),
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
