"""The names shared by the state machine, the handlers, the workers and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from releng.errors import AwsError

MAKE_SOURCE_TARBALL: Final = "make-source-tarball"
MAKE_BINARY_PACKAGE: Final = "make-binary-package"
VERIFY_REBUILD: Final = "verify-rebuild"  # a second builder repeats it ([verify] rebuild)
PUBLISH_BINARY_PACKAGES: Final = "publish-binary-packages"
PUBLISH_SOURCE_TARBALL: Final = "publish-source-tarball"
UPDATE_INDICES: Final = "update-indices"
INVALIDATE_CLOUDFRONT: Final = "invalidate-cloudfront"

# Steps a user may select with --steps, in pipeline order.
STEPS: Final = (
    MAKE_SOURCE_TARBALL,
    MAKE_BINARY_PACKAGE,
    VERIFY_REBUILD,
    PUBLISH_BINARY_PACKAGES,
    PUBLISH_SOURCE_TARBALL,
    UPDATE_INDICES,
    INVALIDATE_CLOUDFRONT,
)

# Worker queues: which queue a worker step's message goes to.
TARBALL_QUEUE: Final = "tarball"
BUILD_QUEUE: Final = "build"
BUILD_ARM64_QUEUE: Final = "build_arm64"  # arm64 builds, natively on Graviton instances
PUBLISH_QUEUE: Final = "publish"  # FIFO, one message group: one publisher at a time
# The rebuilders: never a builder's instance, role or key (docs/aws.md, "The verify step").
VERIFY_QUEUE: Final = "verify"
VERIFY_ARM64_QUEUE: Final = "verify_arm64"  # arm64 rebuilds, natively on Graviton instances
WORKER_QUEUES: Final = (
    TARBALL_QUEUE,
    BUILD_QUEUE,
    BUILD_ARM64_QUEUE,
    PUBLISH_QUEUE,
    VERIFY_QUEUE,
    VERIFY_ARM64_QUEUE,
)
# make-binary-package's queue is its architecture's (prepare_task picks it; the others are
# the step's own). Each builds natively: the same worker code on an instance of that arch.
BUILD_QUEUE_OF_ARCH: Final = {"amd64": BUILD_QUEUE, "arm64": BUILD_ARM64_QUEUE}
# verify-rebuild rebuilds natively too, each architecture on its own rebuilders, always from
# the primary architecture's source package (the only build with a .dsc: prepare_task waits
# for it, see SOURCE_PENDING).
VERIFY_QUEUE_OF_ARCH: Final = {"amd64": VERIFY_QUEUE, "arm64": VERIFY_ARM64_QUEUE}
QUEUE_OF_STEP: Final = {
    MAKE_SOURCE_TARBALL: TARBALL_QUEUE,
    MAKE_BINARY_PACKAGE: BUILD_QUEUE,
    VERIFY_REBUILD: VERIFY_QUEUE,
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
# parse_input; health_check runs on a schedule, as a message on launch_workers' FIFO queue
# (EventBridge on AWS, the runner locally), so one function owns the pools.
QUEUE_HANDLERS: Final = tuple(
    h for h in HANDLERS if h not in ("get_distros_for_version", "health_check")
)


@dataclass(frozen=True, kw_only=True)
class WorkerKind:
    """One worker queue and the instances that serve it: one entry here gives a queue, an IAM
    role with exactly ``permissions`` (names in :mod:`releng.aws.template`), a launch template
    and a bounded pool (``[aws] max_workers``) without touching the rest."""

    queue: str
    instance_param: str  # the stack parameter holding its instance type
    image_param: str = "ImageId"  # the stack parameter holding its AMI (of its architecture)
    disk_gb: int
    max_workers: int  # default pool size; [aws] max_workers overrides it
    permissions: tuple[str, ...]
    message_group: str = ""  # a FIFO queue with this one group: one task at a time


def _on_graviton(kind: WorkerKind, queue: str) -> WorkerKind:
    """``kind``'s worker for arm64, on its own ``queue``: a Graviton instance type and an arm64
    image, the same disk, pool and permissions."""
    return replace(
        kind, queue=queue, instance_param="Arm64BuilderInstanceType", image_param="Arm64ImageId"
    )


# Builders never sign: no signing-key permission, whatever their user data does.
_BUILDER: Final = WorkerKind(
    queue=BUILD_QUEUE,
    instance_param="BuilderInstanceType",
    disk_gb=256,
    max_workers=16,
    permissions=("scratch-read", "scratch-write", "compiler-cache"),
)
# The rebuilders read the builds in scratch and write only their results beside them
# (<version>/<distro>/<arch>/rebuild/); they sign attestations with the rebuilder's key
# from its own SSM parameter, never the archive's (releng.aws.template._verify_permissions).
_REBUILDER: Final = WorkerKind(
    queue=VERIFY_QUEUE,
    instance_param="BuilderInstanceType",
    disk_gb=256,
    max_workers=16,
    permissions=("scratch-read", "rebuild-write", "rebuilder-key"),
)

WORKER_KINDS: Final = {
    TARBALL_QUEUE: WorkerKind(
        queue=TARBALL_QUEUE,
        instance_param="SmallInstanceType",
        disk_gb=30,
        max_workers=4,
        permissions=("scratch-read", "scratch-write", "signing-key"),
    ),
    BUILD_QUEUE: _BUILDER,
    # The same builder on Graviton: `make-package DISTRO --arch arm64` is the host's
    # architecture there (no cross toolchain, no qemu).
    BUILD_ARM64_QUEUE: _on_graviton(_BUILDER, BUILD_ARM64_QUEUE),
    PUBLISH_QUEUE: WorkerKind(
        queue=PUBLISH_QUEUE,
        instance_param="SmallInstanceType",
        disk_gb=30,
        max_workers=1,
        permissions=(
            "scratch-read",
            "scratch-delete",
            "downloads-write",
            "signing-key",
            "public-git-token",  # publish-release-source pushes the release tag and branch
            "cloudfront-invalidate",
        ),
        message_group="publish",
    ),
    VERIFY_QUEUE: _REBUILDER,
    # The same rebuilder on Graviton, for arm64 builds: a native rebuild, as the build was.
    VERIFY_ARM64_QUEUE: _on_graviton(_REBUILDER, VERIFY_ARM64_QUEUE),
}
assert tuple(WORKER_KINDS) == WORKER_QUEUES

# Queues that are FIFO with one message group: their tasks are taken one at a time.
# launch_workers runs serially so that two launches never both see a free slot in a pool.
MESSAGE_GROUPS: Final = {
    **{k.queue: k.message_group for k in WORKER_KINDS.values() if k.message_group},
    "launch_workers": "launch",
}

# prepare_task's error while an arch's verify waits for the primary architecture's build to put
# its source package in scratch (the branches run in parallel). The state retries it with
# backoff, at no cost (no worker waits); prepare_task itself ends the wait with a failure when
# that build failed or at the verify step's timeout, so the retries' own bound is a backstop.
SOURCE_PENDING: Final = "Releng.SourcePending"
SOURCE_PENDING_RETRY: Final = {
    "ErrorEquals": [SOURCE_PENDING],
    "IntervalSeconds": 10,
    "BackoffRate": 2,
    "MaxDelaySeconds": 300,
    "MaxAttempts": 200,  # at most 300 s apart: over 16 h, beyond any verify timeout
}

# Defaults, in seconds (the earlier system's: tarball 30 min, build 4 h, publish 4 h).
# Keyed by the step's own queue: "build" is every architecture's build deadline.
DEFAULT_TIMEOUTS: Final = {
    TARBALL_QUEUE: 30 * 60,
    BUILD_QUEUE: 4 * 3600,
    PUBLISH_QUEUE: 4 * 3600,
    VERIFY_QUEUE: 4 * 3600,  # one more build, and diffoscope when it differs
}
# A worker task's timeout runs from the moment its message is queued: it covers waiting for a
# slot in the pool, the instance's boot and the work. The worker enforces the same deadline.
DEFAULT_HEARTBEAT: Final = 10 * 60  # how often a worker reports progress (interval: a third)

# Lambda function timeouts; the handler queues' visibility timeout is six times the function's
# (AWS's advice for SQS event sources, so a throttled invocation is retried), and a handler
# state waits for one redelivery: visibility plus one more run.
HANDLER_FUNCTION_TIMEOUT: Final = {"update_indices": 900}
DEFAULT_FUNCTION_TIMEOUT: Final = 120
VISIBILITY_FACTOR: Final = 6
# Each handler queue's event source mapping invokes at most this many functions at once
# (SQS's MaximumConcurrency, 2..1000): throttling on an account with a low concurrency
# quota then waits in the queue instead of costing a redelivery.
MAX_CONCURRENCY: Final = 5


def function_timeout(handler: str) -> int:
    return HANDLER_FUNCTION_TIMEOUT.get(handler, DEFAULT_FUNCTION_TIMEOUT)


def handler_visibility(handler: str) -> int:
    return VISIBILITY_FACTOR * function_timeout(handler)


def handler_state_timeout(handler: str) -> int:
    return handler_visibility(handler) + function_timeout(handler) + 60


def build_queue(arch: str) -> str:
    """The worker queue of ``arch``'s builds; an AwsError for one no worker kind builds."""
    if arch not in BUILD_QUEUE_OF_ARCH:
        raise AwsError(
            f"no AWS builders for architecture {arch!r}; the build queues are for "
            f"{', '.join(BUILD_QUEUE_OF_ARCH)} (releng.aws.steps.WORKER_KINDS)"
        )
    return BUILD_QUEUE_OF_ARCH[arch]


def verify_queue(arch: str) -> str | None:
    """The worker queue of ``arch``'s rebuilds; None when AWS does not rebuild that arch."""
    return VERIFY_QUEUE_OF_ARCH.get(arch)


def queue_key(name: str) -> str:
    """The substitution name of a worker or handler queue: ``build`` -> ``BuildQueueUrl``."""
    return "".join(part.capitalize() for part in name.split("_")) + "QueueUrl"
