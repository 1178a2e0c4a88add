"""The names shared by the state machine, the handlers, the workers and the CLI."""

from __future__ import annotations

from typing import Final

MAKE_SOURCE_TARBALL: Final = "make-source-tarball"
MAKE_BINARY_PACKAGE: Final = "make-binary-package"
PUBLISH_BINARY_PACKAGES: Final = "publish-binary-packages"
PUBLISH_SOURCE_TARBALL: Final = "publish-source-tarball"
UPDATE_INDICES: Final = "update-indices"
INVALIDATE_CLOUDFRONT: Final = "invalidate-cloudfront"

# Steps a user may select with --steps, in pipeline order.
STEPS: Final = (
    MAKE_SOURCE_TARBALL,
    MAKE_BINARY_PACKAGE,
    PUBLISH_BINARY_PACKAGES,
    PUBLISH_SOURCE_TARBALL,
    UPDATE_INDICES,
    INVALIDATE_CLOUDFRONT,
)

# Worker queues: which queue a worker step's message goes to.
TARBALL_QUEUE: Final = "tarball"
BUILD_QUEUE: Final = "build"
PUBLISH_QUEUE: Final = "publish"  # FIFO, one message group: one publisher at a time
WORKER_QUEUES: Final = (TARBALL_QUEUE, BUILD_QUEUE, PUBLISH_QUEUE)
QUEUE_OF_STEP: Final = {
    MAKE_SOURCE_TARBALL: TARBALL_QUEUE,
    MAKE_BINARY_PACKAGE: BUILD_QUEUE,
    PUBLISH_BINARY_PACKAGES: PUBLISH_QUEUE,
    PUBLISH_SOURCE_TARBALL: PUBLISH_QUEUE,
}

# Handlers reached through their own queue (one Lambda function each).
HANDLERS: Final = (
    "parse_input",
    "get_distros_for_version",
    "prepare_task",
    "launch_workers",
    "check_if_repos_changed",
    "update_indices",
    "invalidate_cloudfront",
    "check_for_failures",
    "health_check",
)

# Handlers the state machine reaches through a queue. get_distros_for_version runs inside
# parse_input; health_check runs on a schedule (EventBridge on AWS, the runner locally).
QUEUE_HANDLERS: Final = tuple(
    h for h in HANDLERS if h not in ("get_distros_for_version", "health_check")
)

# Defaults, in seconds (the earlier system's: tarball 30 min, build 4 h, publish 4 h).
DEFAULT_TIMEOUTS: Final = {TARBALL_QUEUE: 30 * 60, BUILD_QUEUE: 4 * 3600, PUBLISH_QUEUE: 4 * 3600}
DEFAULT_HEARTBEAT: Final = 10 * 60  # covers an instance's boot before its first heartbeat
HANDLER_TIMEOUT: Final = 15 * 60  # Lambda's maximum


def queue_key(name: str) -> str:
    """The substitution name of a worker or handler queue: ``build`` -> ``BuildQueueUrl``."""
    return "".join(part.capitalize() for part in name.split("_")) + "QueueUrl"
