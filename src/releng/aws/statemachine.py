"""The state machine, as Amazon States Language generated from Python.

``invoke generate-state-machine`` (or :func:`write`) writes ``aws/state-machine.json``;
a test fails when the committed file differs from :func:`definition`. The JSON
holds ``${...}`` placeholders for queue URLs, filled by CloudFormation's
``DefinitionSubstitutions`` on AWS and by :func:`render` (same rule) everywhere
else, so the definition that runs in the end-to-end test is the deployed one.

Every task is ``arn:aws:states:::sqs:sendMessage.waitForTaskToken``:

* worker steps go to the tarball, build and publish queues, where EC2 workers
  (:mod:`releng.aws.worker`) take them; a build goes to its architecture's queue
  (``build``, ``build_arm64``: Graviton instances), which prepare_task names; their
  timeouts come from ``$.config`` so a test can make them short;
* handler steps go to one queue per handler, consumed on AWS by that handler's
  Lambda function through an SQS event source mapping. Both AWS and moto's
  executor run this pattern; moto cannot run Lambda code here (its runtime
  images cannot be pulled), and the same definition needs no change when a
  local runner consumes the handler queues instead.

A failure in one distro or version is caught into a record
``{"failed": true, "step", "version", "distro", "error"}`` that ends its branch;
siblings go on, and CheckForFailures fails the execution listing them all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from releng.aws import steps as S
from releng.errors import AwsError

DEFINITION_FILE = "aws/state-machine.json"
SQS_WAIT = "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9]+)\}")

State = dict[str, Any]

# Service-side errors (throttling, a handler's AWS call failing) retry with backoff:
# the earlier system's Lambda policy, 5 x (5 s, x2).
_HANDLER_RETRY = [
    {
        "ErrorEquals": ["Releng.ServiceError", "SQS.SdkClientException", "SQS.AmazonSQSException"],
        "IntervalSeconds": 5,
        "MaxAttempts": 5,
        "BackoffRate": 2,
    },
    # A handler message nobody answered in time (its function throttled past a redelivery):
    # handlers are idempotent, so the state sends it again rather than failing the step.
    {"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 5, "MaxAttempts": 2, "BackoffRate": 2},
]
# Worker tasks retry only the sending of their message. A worker that dies is retried by SQS:
# it stops extending its message's visibility, the message returns to the queue and another
# worker of the pool takes it (health_check starts one if none is alive). There is no
# HeartbeatSeconds and no retry on States.Timeout: a task may wait in the queue for a slot
# in its bounded pool, so silence is not death, and TimeoutSecondsPath is the one deadline
# of a task (queueing, boot and work), which the worker enforces too by stopping the work.
_WORKER_RETRY = [
    {
        "ErrorEquals": ["SQS.SdkClientException", "SQS.AmazonSQSException"],
        "IntervalSeconds": 5,
        "MaxAttempts": 5,
        "BackoffRate": 2,
    },
]


def _handler(
    handler: str,
    *,
    parameters: Mapping[str, Any] | None = None,
    result_path: str | None,
    next_state: str | None,
    result_selector: Mapping[str, Any] | None = None,
) -> State:
    """A task answered by ``releng.aws.handlers.<handler>`` through its queue."""
    body: dict[str, Any] = {
        "handler": handler,
        "token.$": "$$.Task.Token",
        "execution.$": "$$.Execution.Name",
    }
    if parameters is None:
        body["input.$"] = "$"
    else:
        body["input"] = dict(parameters)
    params: dict[str, Any] = {"QueueUrl": "${" + S.queue_key(handler) + "}", "MessageBody": body}
    if handler in S.MESSAGE_GROUPS:
        params["MessageGroupId"] = S.MESSAGE_GROUPS[handler]
    state: State = {
        "Type": "Task",
        "Resource": SQS_WAIT,
        "Parameters": params,
        "TimeoutSeconds": S.handler_state_timeout(handler),
        "Retry": _HANDLER_RETRY,
        "ResultPath": result_path,
    }
    if result_selector is not None:
        state["ResultSelector"] = dict(result_selector)
    if next_state is None:
        state["End"] = True
    else:
        state["Next"] = next_state
    return state


def _failure_record(step: str, *, distro: bool) -> State:
    return {
        "Type": "Pass",
        "Parameters": {
            "failed": True,
            "step": step,
            "version.$": "$.version.version",
            "error.$": "$.error",
            **({"distro.$": "$.distro", "arch.$": "$.arch"} if distro else {"distro": ""}),
        },
        "End": True,
    }


def _catch(target: str) -> list[dict[str, Any]]:
    return [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": target}]


def _worker_step(
    name: str, step: str, *, distro: bool, after: str, builds: bool = False
) -> dict[str, State]:
    """Prepare (skip when the output exists) -> launch a worker -> the task on its queue."""
    queue = S.QUEUE_OF_STEP[step]
    slot = f"$.tasks.{name}"  # each step keeps its own record: check_for_failures reads them all
    prepare_input: dict[str, Any] = {
        "step": step,
        "version.$": "$.version",
        "config.$": "$.config",
        "execution.$": "$$.Execution.Name",
    }
    if distro:
        prepare_input["distro.$"] = "$.distro"
        prepare_input["arch.$"] = "$.arch"
    if builds:  # publish only what was built: prepare_task skips when every build failed
        prepare_input["builds.$"] = "$.builds"
    failed = f"{name}Failed"
    timeout = f"$.config.timeouts.{queue}"  # a build's, whatever its architecture's queue
    message: dict[str, Any] = {
        "token.$": "$$.Task.Token",
        "task.$": slot,
        "heartbeat_seconds.$": "$.config.heartbeat_seconds",
        "timeout_seconds.$": timeout,  # the worker's deadline for it
    }
    parameters: dict[str, Any] = {"MessageBody": message}
    if distro:  # a build goes to its architecture's queue, which prepare_task names
        parameters["QueueUrl.$"] = f"{slot}.queue_url"
    else:
        parameters["QueueUrl"] = "${" + S.queue_key(queue) + "}"
    if queue in S.MESSAGE_GROUPS:
        # One FIFO message group: SQS hands out one publish task at a time, across versions.
        parameters["MessageGroupId"] = S.MESSAGE_GROUPS[queue]
    prepare = _handler(
        "prepare_task", parameters=prepare_input, result_path=slot, next_state=f"{name}Needed"
    )
    prepare["Catch"] = _catch(failed)
    if step == S.VERIFY_REBUILD:  # another architecture's waits for the primary's .dsc
        prepare["Retry"] = [S.SOURCE_PENDING_RETRY, *_HANDLER_RETRY]
    launch = _handler(
        "launch_workers",
        parameters={
            **({"queue.$": f"{slot}.queue"} if distro else {"queue": queue}),
            "count": 1,
            "config.$": "$.config",
            "task.$": slot,
        },
        result_path=None,
        next_state=name,
    )
    launch["Catch"] = _catch(failed)
    # What the step leaves in the state once its worker task is sent: the record later states
    # read (check_if_repos_changed, check_for_failures), not the task (commands, fetches,
    # queue URL, log place: about 1 KB that 20 x 8 x 2 builds would carry to the end).
    record: dict[str, Any] = {"step.$": f"{slot}.step", "version.$": f"{slot}.version"}
    if distro:
        record |= {"distro.$": f"{slot}.distro", "arch.$": f"{slot}.arch"}
    return {
        f"Prepare{name}": prepare,
        f"{name}Needed": {
            "Type": "Choice",
            "Choices": [
                {"Variable": f"{slot}.run", "BooleanEquals": True, "Next": f"Launch{name}Worker"}
            ],
            "Default": f"{name}Skipped",
        },
        f"{name}Skipped": {
            "Type": "Pass",
            "Parameters": {**record, "run": False, "reason.$": f"{slot}.reason"},
            "ResultPath": slot,
            "Next": after,
        },
        f"{name}Ran": {
            "Type": "Pass",
            "Parameters": {**record, "run": True, "result.$": f"{slot}.result"},
            "ResultPath": slot,
            "Next": after,
        },
        f"Launch{name}Worker": launch,
        name: {
            "Type": "Task",
            "Resource": SQS_WAIT,
            "Parameters": parameters,
            "TimeoutSecondsPath": timeout,
            "Retry": _WORKER_RETRY,
            "ResultPath": f"{slot}.result",
            "Catch": _catch(failed),
            "Next": f"{name}Ran",
        },
        failed: _failure_record(step, distro=distro),
    }


def _distro_branch() -> State:
    states: dict[str, State] = _worker_step(
        "MakeBinaryPackage", S.MAKE_BINARY_PACKAGE, distro=True, after="VerifyRebuildWanted"
    )
    # [verify] rebuild (parse_input puts it into the config): not "off", a second worker of
    # its own rebuilds the build before the publish; a mismatch ends this branch with a
    # failure record, so the publish leaves this build out and its siblings go on.
    states["VerifyRebuildWanted"] = {
        "Type": "Choice",
        "Choices": [
            {
                "Variable": "$.config.verify_rebuild",
                "StringEquals": "off",
                "Next": "BinaryPackageDone",
            }
        ],
        "Default": "PrepareVerifyRebuild",
    }
    states.update(
        _worker_step("VerifyRebuild", S.VERIFY_REBUILD, distro=True, after="BinaryPackageDone")
    )
    states["BinaryPackageDone"] = {
        "Type": "Pass",
        # what _built and check_for_failures read; the version is its branch's
        "Parameters": {
            "distro.$": "$.distro",
            "arch.$": "$.arch",
            "run.$": "$.tasks.MakeBinaryPackage.run",
        },
        "End": True,
    }
    return {
        "ProcessorConfig": {"Mode": "INLINE"},
        "StartAt": "PrepareMakeBinaryPackage",
        "States": states,
    }


def _version_branch() -> State:
    states: dict[str, State] = {}
    states.update(
        _worker_step("MakeSourceTarball", S.MAKE_SOURCE_TARBALL, distro=False, after="Distros")
    )
    states["Distros"] = {
        "Type": "Map",
        "ItemsPath": "$.version.matrix",  # one item per distro and architecture
        "ItemSelector": {
            "distro.$": "$$.Map.Item.Value.distro",
            "arch.$": "$$.Map.Item.Value.arch",
            "version.$": "$.version",
            "config.$": "$.config",
        },
        "MaxConcurrency": 0,
        "ItemProcessor": _distro_branch(),
        "ResultPath": "$.builds",
        "Next": "PreparePublishBinaryPackages",
    }
    states.update(
        _worker_step(
            "PublishBinaryPackages",
            S.PUBLISH_BINARY_PACKAGES,
            distro=False,
            after="PreparePublishSourceTarball",
            builds=True,
        )
    )
    states.update(
        _worker_step(
            "PublishSourceTarball", S.PUBLISH_SOURCE_TARBALL, distro=False, after="VersionDone"
        )
    )
    # What a version leaves in the execution's state: its records, not its plan and config
    # again (20 versions x 8 distros must stay far below the 256 KiB state limit).
    states["VersionDone"] = {
        "Type": "Pass",
        "Parameters": {
            "version.$": "$.version.version",
            "tasks.$": "$.tasks",
            "builds.$": "$.builds",
        },
        "End": True,
    }
    return {
        "ProcessorConfig": {"Mode": "INLINE"},
        "StartAt": "PrepareMakeSourceTarball",
        "States": states,
    }


def _after_all(
    step: str, handler: str, *, parameters: dict[str, Any], result_path: str, next_state: str
) -> dict[str, State]:
    """UpdateIndices / InvalidateCloudFront: a handler whose failure is recorded, not raised."""
    name = "".join(p.capitalize() for p in handler.split("_"))
    state = _handler(handler, parameters=parameters, result_path=result_path, next_state=next_state)
    state["Catch"] = [
        {
            "ErrorEquals": ["States.ALL"],
            "ResultPath": f"{result_path}.error",
            "Next": f"{name}Failed",
        }
    ]
    return {
        name: state,
        f"{name}Failed": {
            "Type": "Pass",
            "InputPath": f"{result_path}.error",
            "Parameters": {
                "failed": True,
                "step": step,
                "version": "",
                "distro": "",
                "error.$": "$",
            },
            "ResultPath": result_path,
            "Next": next_state,
        },
    }


def definition() -> dict[str, Any]:
    """The whole state machine, as a JSON-able dict."""
    states: dict[str, State] = {
        "ParseInput": _handler("parse_input", result_path="$", next_state="Versions"),
        "Versions": {
            "Type": "Map",
            "ItemsPath": "$.versions",
            "ItemSelector": {"version.$": "$$.Map.Item.Value", "config.$": "$.config"},
            "MaxConcurrency": 0,
            "ItemProcessor": _version_branch(),
            "ResultPath": "$.results",
            "Next": "CheckIfReposChanged",
        },
        "CheckIfReposChanged": _handler(
            "check_if_repos_changed",
            parameters={"config.$": "$.config", "results.$": "$.results"},
            result_path="$.repos",
            next_state="ReposChanged",
        ),
        "ReposChanged": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.repos.changed", "BooleanEquals": True, "Next": "UpdateIndices"}
            ],
            "Default": "CheckForFailures",
        },
        # Sequential on purpose: pages first, then one invalidation that includes them.
        **_after_all(
            S.UPDATE_INDICES,
            "update_indices",
            parameters={"config.$": "$.config", "repos.$": "$.repos"},
            result_path="$.indices",
            next_state="InvalidateCloudfront",
        ),
        **_after_all(
            S.INVALIDATE_CLOUDFRONT,
            "invalidate_cloudfront",
            parameters={
                "config.$": "$.config",
                "indices.$": "$.indices",
                "execution.$": "$$.Execution.Name",
            },
            result_path="$.invalidation",
            next_state="CheckForFailures",
        ),
        "CheckForFailures": _handler(
            "check_for_failures", result_path="$.failures", next_state="AnyFailures"
        ),
        "AnyFailures": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.failures.count", "NumericGreaterThan": 0, "Next": "Failed"}
            ],
            "Default": "Succeeded",
        },
        "Failed": {
            "Type": "Fail",
            "Error": "Releng.StepsFailed",
            "CausePath": "$.failures.summary",
        },
        "Succeeded": {"Type": "Succeed"},
    }
    return {
        "Comment": "releng: versions x distros x architectures -> source tarball, binary packages, "
        "[verify rebuild], publish "
        "(generated by releng.aws.statemachine; do not edit by hand)",
        "StartAt": "ParseInput",
        "States": states,
    }


def placeholders() -> list[str]:
    """Every ``${Name}`` the definition needs filled in."""
    return sorted(set(_PLACEHOLDER.findall(dumps())))


def dumps() -> str:
    return json.dumps(definition(), indent=2, sort_keys=True) + "\n"


def write(root: Path) -> Path:
    path = root / DEFINITION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(), encoding="utf-8")
    return path


def render(text: str, substitutions: Mapping[str, str]) -> str:
    """Fill ``${Name}`` placeholders the way CloudFormation's DefinitionSubstitutions does."""
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(substitutions))
    if missing:
        raise AwsError(
            f"state machine placeholders without a value: {', '.join(missing)}; "
            "deploy the stack with `invoke deploy-aws` (it provides them)"
        )
    return _PLACEHOLDER.sub(lambda m: substitutions[m[1]], text)
