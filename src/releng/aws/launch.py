"""Workers on AWS: one EC2 Auto Scaling group per worker queue (what launch_workers and
health_check use there).

The stack creates each group from its queue's launch template at the version the stack last
wrote, in the subnets whose zones offer the queue's instance type (``invoke deploy-aws``
chooses them), with MinSize 0. The launcher only raises a group's desired capacity; a worker
that ends (idle, set-up failed, stuck) leaves its group with TerminateInstanceInAutoScalingGroup
and ShouldDecrementDesiredCapacity, so capacity goes down only with a worker that is done.
Nothing at run time may start an instance of its choosing or pass a role: the Auto Scaling
service does both, from the stack's templates only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from releng.errors import AwsError

log = logging.getLogger(__name__)

QUEUE_TAG = "releng:queue"
STACK_TAG = "releng:stack"


def worker_groups(text: str) -> dict[str, str]:
    """The functions' ``RELENG_WORKER_GROUPS``: queue -> its Auto Scaling group's name."""
    try:
        data = json.loads(text or "{}")
        groups = {str(q): str(g) for q, g in data.items()}
    except (ValueError, TypeError, AttributeError):
        raise AwsError(
            f"RELENG_WORKER_GROUPS is not queue -> Auto Scaling group: {text[:200]!r}; "
            "redeploy with `invoke deploy-aws`"
        ) from None
    return groups


@dataclass(frozen=True, kw_only=True)
class AutoScalingLauncher:
    """A queue's pool is its Auto Scaling group: live = the desired capacity (instances
    running, starting, or still to be started), launch = raise it, never above MaxSize.

    A zone without capacity or without the instance type is the group's business: it tries
    its other subnets and keeps trying (its own backoff) while the task waits in its queue."""

    autoscaling: Any
    groups: Mapping[str, str]  # queue -> Auto Scaling group name

    def _group(self, queue: str) -> dict[str, Any]:
        name = self.groups.get(queue, "")
        found = (
            self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
                "AutoScalingGroups"
            ]
            if name
            else []
        )
        if not found:
            raise AwsError(
                f"the stack has no Auto Scaling group for the {queue} workers "
                f"({name or 'none named'}); redeploy with `invoke deploy-aws`"
            )
        return dict(found[0])

    def live(self, queue: str) -> int:
        return int(self._group(queue)["DesiredCapacity"])

    def launch(self, queue: str, count: int) -> list[str]:
        """Raise the group's desired capacity by up to ``count`` (its MaxSize bounds it); one
        entry per worker asked for (``group#slot``: the group starts the instances)."""
        group = self._group(queue)
        name = str(group["AutoScalingGroupName"])
        desired = int(group["DesiredCapacity"])
        wanted = min(int(group["MaxSize"]), desired + max(0, count))
        if wanted <= desired:
            return []
        self.autoscaling.set_desired_capacity(
            AutoScalingGroupName=name, DesiredCapacity=wanted, HonorCooldown=False
        )
        log.info("%s: desired capacity of %s %d -> %d", queue, name, desired, wanted)
        return [f"{name}#{slot}" for slot in range(desired + 1, wanted + 1)]


def subnets_offering(ec2: Any, subnets: Sequence[str], instance_type: str) -> list[str]:
    """Of ``subnets`` (none: the default VPC's, one per zone), those in a zone that offers
    ``instance_type`` (c7g.4xlarge is not offered everywhere; EC2 refuses it as Unsupported).
    An AwsError when none does, naming the zones that would."""
    if subnets:
        found = ec2.describe_subnets(SubnetIds=list(subnets))["Subnets"]
    else:
        found = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
            "Subnets"
        ]
    zone_of = {str(s["SubnetId"]): str(s["AvailabilityZone"]) for s in found}
    order = list(subnets) or sorted(zone_of, key=lambda s: zone_of[s])
    offers = ec2.describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": [instance_type]}],
    )["InstanceTypeOfferings"]
    zones = {str(o["Location"]) for o in offers}
    fitting = [s for s in order if zone_of.get(s) in zones]
    if not fitting:
        where = ", ".join(order) if subnets else "the default VPC (no [aws] subnets)"
        raise AwsError(
            f"no subnet of {where} is in a zone offering {instance_type}; it is offered in "
            f"{', '.join(sorted(zones)) or 'no zone of this region'}: add a subnet there to "
            "[aws] subnets of product.toml or choose another instance type"
        )
    skipped = [s for s in order if s not in fitting]
    if skipped:
        log.info(
            "%s is not offered in the zones of %s: not used", instance_type, ", ".join(skipped)
        )
    return fitting
