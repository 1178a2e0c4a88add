"""The execution's state in the worst case stays under Step Functions' 256 KiB limit.

20 releases x 8 distros x 2 architectures (docs/aws.md's largest run), every build succeeded,
every build failed with the longest failure a handler reports (a deep traceback: it goes to
S3, the state keeps a line and its place), or half of each. The state
is assembled from the real handlers' outputs and the Pass states' Parameters of the
deployed definition (so a change to either changes what is measured); the measure is the
JSON text Step Functions counts, at CheckForFailures, where the state is largest, and the
SQS message that carries it to the handler.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest

from releng.aws import handlers, run, statemachine
from releng.aws import steps as S
from releng.aws.catalog import Catalog, DistroInfo

pytestmark = pytest.mark.aws

LIMIT = 256 * 1024
DISTROS = [f"debian-{n}-suite{n}" for n in range(8)]
VERSIONS = [f"1.{minor}.{patch}" for minor in range(4) for patch in range(5)]
CATALOG = Catalog(
    product="tally",
    distros={d: DistroInfo(id=d, codename=d.rsplit("-", 1)[1], pkgver="1") for d in DISTROS},
    targets=DISTROS,
    architectures=["amd64", "arm64"],
)


def _path(path: str, state: Any, context: Any) -> Any:
    node, parts = (context, path[3:]) if path.startswith("$$.") else (state, path[2:])
    for part in parts.split(".") if parts else []:
        node = node[part]
    return node


def _apply(parameters: dict[str, Any], state: Any, context: Any = None) -> dict[str, Any]:
    """ASL Parameters (JSONPath subset the definition uses) applied to ``state``."""
    out = {}
    for key, value in parameters.items():
        if key.endswith(".$"):
            out[key[:-2]] = _path(value, state, context)
        elif isinstance(value, dict):
            out[key] = _apply(value, state, context)
        else:
            out[key] = value
    return out


def _states() -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(states: dict[str, Any]) -> None:
        for name, state in states.items():
            found[name] = state
            if "ItemProcessor" in state:
                walk(state["ItemProcessor"]["States"])

    walk(statemachine.definition()["States"])
    return found


def _deep_failure(ctx: handlers.Context, depth: int = 150) -> str:
    def dive(n: int) -> None:
        if n == 0:
            raise RuntimeError("x" * 2000)  # a long message too
        dive(n - 1)

    try:
        dive(depth)
    except RuntimeError as exc:
        return handlers._failure_cause(exc, "prepare_task", EXECUTION, ctx)
    raise AssertionError("unreachable")


EXECUTION = run.execution_name(VERSIONS)  # as long as build-on-aws makes them
BUDGET = LIMIT * 3 // 4  # the documented worst case stays under 75% of the limit


def _ran(states, name: str, owner: dict[str, Any], *, scratch: str, ctx, context) -> None:
    """Prepare ``name`` with the real handler, then the Pass state that keeps its record:
    ``{name}Ran`` after a worker's answer, ``{name}Skipped`` when nothing had to run."""
    body = states[f"Prepare{name}"]["Parameters"]["MessageBody"]["input"]
    task = handlers.prepare_task(_apply(body, owner, context), ctx)
    owner["tasks"][name] = task
    if task["run"]:
        task["result"] = {
            "status": "done", "seconds": 12345.6, "instance": "i-0123456789abcdef0",
            "log": f"s3://{scratch}/{task['log']['key']}",
        }  # fmt: skip
        owner["tasks"][name] = _apply(states[f"{name}Ran"]["Parameters"], owner)
    else:
        owner["tasks"][name] = _apply(states[f"{name}Skipped"]["Parameters"], owner)


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "mixed"])
def test_worst_case_state_fits(moto_server, outcome) -> None:
    """Every build succeeded, every build failed, or every other one: the state at
    CheckForFailures stays under 75% of 256 KiB, and so does the SQS message carrying it."""
    s3 = moto_server.client("s3")
    sqs = moto_server.client("sqs")
    name = f"p-{uuid.uuid4().hex[:8]}"
    scratch, downloads = f"{name}-scratch", f"{name}-downloads"
    for bucket in (scratch, downloads):
        s3.create_bucket(Bucket=bucket)
    urls = {q: sqs.create_queue(QueueName=f"{name}-{q}")["QueueUrl"] for q in S.WORKER_QUEUES}
    ctx = handlers.Context(
        client=moto_server.client,
        catalog=CATALOG,
        settings={
            handlers.SCRATCH_BUCKET: scratch,
            handlers.DOWNLOADS_BUCKET: downloads,
            handlers.QUEUE_URLS: json.dumps(urls),
        },
        launcher=None,  # type: ignore[arg-type]  (no launches here)
        today=lambda: dt.date(2026, 11, 30),
    )
    states = _states()
    plan = handlers.parse_input({"releases": VERSIONS}, ctx)
    plan["execution"] = EXECUTION
    context = {"Execution": {"Name": EXECUTION}}
    cause = _deep_failure(ctx)
    assert len(cause) <= handlers.MAX_CAUSE
    assert f"traceback: s3://{scratch}/logs/{EXECUTION}/handlers/prepare_task-" in cause

    results = []
    failed = 0
    for version in plan["versions"]:
        branch: dict[str, Any] = {"version": version, "config": plan["config"], "tasks": {}}
        _ran(states, "MakeSourceTarball", branch, scratch=scratch, ctx=ctx, context=context)
        builds = []
        for n, build in enumerate(version["matrix"]):
            item = _apply(states["Distros"]["ItemSelector"], branch, {"Map": {"Item": {"Value": build}}})  # fmt: skip
            item["tasks"] = {}
            if outcome == "failed" or (outcome == "mixed" and n % 2):
                item["error"] = {"Error": "Releng.Bug", "Cause": cause}
                builds.append(_apply(states["MakeBinaryPackageFailed"]["Parameters"], item))
                failed += 1
                continue
            _ran(states, "MakeBinaryPackage", item, scratch=scratch, ctx=ctx, context=context)
            assert item["tasks"]["MakeBinaryPackage"]["run"] is True
            builds.append(_apply(states["BinaryPackageDone"]["Parameters"], item))
        branch["builds"] = builds
        _ran(states, "PublishBinaryPackages", branch, scratch=scratch, ctx=ctx, context=context)
        # nothing built: nothing published
        assert branch["tasks"]["PublishBinaryPackages"]["run"] is (outcome != "failed")
        _ran(states, "PublishSourceTarball", branch, scratch=scratch, ctx=ctx, context=context)
        results.append(_apply(states["VersionDone"]["Parameters"], branch))

    state: dict[str, Any] = {**plan, "results": results}
    state["repos"] = handlers.check_if_repos_changed(
        _apply(states["CheckIfReposChanged"]["Parameters"]["MessageBody"]["input"], state), ctx
    )
    state["failures"] = handlers.check_for_failures(state, ctx)
    assert state["failures"]["count"] == failed
    size = len(json.dumps(state, separators=(",", ":")).encode())
    message = {"handler": "check_for_failures", "token": "t" * 1024, "execution": EXECUTION,
               "input": state}  # fmt: skip
    print(f"worst-case state, {outcome}: {size} bytes ({size / LIMIT:.1%} of 256 KiB)")
    assert size < BUDGET, f"{size / LIMIT:.1%} of 256 KiB"
    assert len(json.dumps(message).encode()) < BUDGET  # SQS's message limit, the same number
    if failed:  # the Fail state's cause: the first failures and where the rest are
        summary = state["failures"]["summary"]
        assert len(summary) < 32_768
        assert summary.endswith(f"every failure: s3://{scratch}/logs/{EXECUTION}/failures.json")
