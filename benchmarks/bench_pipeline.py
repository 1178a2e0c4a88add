"""The AWS pipeline's own overhead, on moto with local workers (``--fake-ec2``); prints a table.

    python benchmarks/bench_pipeline.py [--versions 2] [--distros a,b,c] [--json FILE]

One execution of 2 nightlies x 3 distros with every step, in a throwaway copy of this
repository signed by a throwaway key, against a moto server of its own on 127.0.0.1:
moto runs aws/state-machine.json, this process plays the Lambda handlers
(releng.aws.runner.HandlerRunner) and the workers are local processes
(releng.aws.runner.LocalLauncher), as in tests/test_aws_pipeline.py.

The product's ``make-package`` takes about 0 s: an ``invoke`` shim first on the workers'
PATH answers ``make-package`` by writing one small .deb (dpkg-deb) into
``out/<version>/<distro>/`` and hands every other command to the real invoke, so the
source tarball, upload-build, update-repos and the rest run for real.

From Step Functions' execution history (moto keeps one) and the workers' status records:
per state, how often it ran and its mean wall time; for the worker steps, the part spent
in the step's commands and the rest (the overhead: handler round trips, worker start,
queue polling, S3). Then the whole: StartExecution to the last publish, minus the time
the critical path spent in commands. Targets (issue 25): <= 5 s per step, <= 60 s whole.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from releng.aws.runner import LocalLauncher  # noqa: E402

# The InvalidToken grace local workers take (moto-only; 3 s on AWS, where it never applies).
TOKEN_GRACE = LocalLauncher.token_grace_seconds

DISTROS = "debian-12-bookworm,debian-13-trixie,ubuntu-24.04-noble"
MAPS = {
    name
    for name, state in json.loads((ROOT / "aws" / "state-machine.json").read_text())[
        "States"
    ].items()
    if state["Type"] == "Map"
} | {"Distros"}  # the Map inside Versions' iterator

# Answers make-package in ~0 s with one real .deb; everything else goes to the real invoke.
SHIM = r"""#!{python}
import os, subprocess, sys
args = sys.argv[1:]
if args[:1] == ["--search-root"]:
    args = args[2:]
if args[:1] == ["make-package"]:
    distro, version = args[1], args[args.index("--version") + 1]
    arch = args[args.index("--arch") + 1] if "--arch" in args else "amd64"
    out = os.path.join(os.environ["RELENG_ROOT"], "out", version, distro)
    build = os.path.join(out, ".pkg")
    os.makedirs(os.path.join(build, "DEBIAN"), exist_ok=True)
    deb_version = f"{{version}}-1~{{distro.replace('.', '')}}"
    with open(os.path.join(build, "DEBIAN", "control"), "w") as f:
        f.write(f"Package: tally\nVersion: {{deb_version}}\nArchitecture: {{arch}}\n"
                "Maintainer: bench <bench@releng.invalid>\nDescription: bench\n bench\n")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "--build", build,
                    os.path.join(out, f"tally_{{deb_version}}_{{arch}}.deb")],
                   check=True, stdout=subprocess.DEVNULL)
    sys.exit(0)
os.execv({invoke!r}, [{invoke!r}, *sys.argv[1:]])
"""


def _project(work: Path, name: str) -> tuple[Any, str]:
    from tests.fixtures.gpg import make_key
    from tests.fixtures.project import copy_repo, git

    from releng.project import Project

    root = copy_repo(work / "repo")
    key = make_key(work / "gnupg", name="bench signing key")
    product = root / "product.toml"
    text = product.read_text()
    text = text.replace('key = ""', f'key = "{key.fingerprint}"', 1)
    text = text.replace('gnupghome = ""', f'gnupghome = "{key.home}"', 1)
    text += f'\n[publish]\nbucket = "{name}-downloads"\nscratch_bucket = "{name}-scratch"\n'
    text += f'\n[aws]\nstack_name = "{name}"\n'
    product.write_text(text)
    git(root, "commit", "-q", "-am", "bench: test key and stack")
    return Project.load(root), key.passphrase


def _pairs(events: list[dict[str, Any]]) -> dict[str, list[float]]:
    """State name -> [entered, exited, entered, exited, ...] times in seconds since the start.

    In a Map the iterations of one state interleave; the sum of exits minus the sum of
    entries is the total time in that state whatever the pairing, which is all we use.
    """
    start = events[0]["timestamp"]
    out: dict[str, list[float]] = defaultdict(list)
    for e in events:
        kind = e["type"]
        details = e.get("stateEnteredEventDetails") or e.get("stateExitedEventDetails")
        if details and kind.endswith(("StateEntered", "StateExited")):
            t = (e["timestamp"] - start).total_seconds()
            out[details["name"]].append(t if kind.endswith("Entered") else -t)
    return out


class _LaunchLog(logging.Handler):
    """When LocalLauncher started each worker: ``launched local worker <id> ...``."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("launched local worker "):
            self.times[str(record.args[0])] = record.created  # type: ignore[index]


_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+: worker (\S+): (.*)$")


def _worker_phases(logs: Path, launched: dict[str, float]) -> dict[str, dict[str, list[float]]]:
    """Per worker queue: seconds from launch to the first message, of InvalidToken grace
    and in commands, from each worker's log (its first task only: later ones reuse it)."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(logs.glob("local-*.log")):
        worker = path.stem
        queue = worker.removeprefix("local-").rsplit("-", 1)[0]
        confirmed = started = None
        for line in path.read_text(errors="replace").splitlines():
            m = _LINE.match(line)
            if not m or m[2] != worker:
                continue
            t = dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if m[3].startswith("the task token is not confirmed") and confirmed is None:
                confirmed = t
            elif m[3].startswith("starting ") and started is None:
                started = t
            elif " done in " in m[3] and started is not None:
                seconds = float(m[3].rsplit(" in ", 1)[1].rstrip("s"))
                received = (confirmed - TOKEN_GRACE) if confirmed is not None else started
                out[queue]["start"].append(received - launched.get(worker, received))
                out[queue]["grace"].append(started - received)
                out[queue]["commands"].append(seconds)
                break
    return out


STEP_OF_STATE = {
    "MakeSourceTarball": "make-source-tarball",
    "MakeBinaryPackage": "make-binary-package",
    "PublishBinaryPackages": "publish-binary-packages",
    "PublishSourceTarball": "publish-source-tarball",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=2, help="how many nightlies")
    parser.add_argument("--distros", default=DISTROS, help="comma-separated distro ids")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args()

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    from releng.aws import deploy, run, status

    launches = _LaunchLog()
    logging.getLogger("releng.aws.runner").addHandler(launches)
    logging.getLogger("releng.aws.runner").setLevel(logging.INFO)
    from tests.fixtures.moto import start_moto_server

    server, url = start_moto_server()
    work = Path(tempfile.mkdtemp(prefix="releng-bench-pipeline-"))
    name = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        proj, passphrase = _project(work, name)
        invoke = shutil.which("invoke")
        if invoke is None:
            sys.exit("invoke is not on PATH: run this in the checkout's venv (nox -s benchmarks)")
        shim = work / "shim"
        shim.mkdir()
        (shim / "invoke").write_text(SHIM.format(python=sys.executable, invoke=invoke))
        (shim / "invoke").chmod(0o755)
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": url,
            "AWS_REGION": "us-east-1",
            "PATH": f"{shim}:{os.environ['PATH']}",
            "RELENG_TASKS_ROOT": str(ROOT),  # the copy has no tasks.py
            "RELENG_SIGNING_PASSPHRASE": passphrase,
        }
        aws = run.connect(proj, env)
        deploy.deploy_dev(aws.client, ROOT, name)
        today = dt.datetime.now(dt.UTC).date()
        versions = [
            (today - dt.timedelta(days=i)).strftime("%Y.%m.%d") for i in range(args.versions)
        ]
        distros = args.distros.split(",")
        config = {"timeouts": {"tarball": 600, "build": 600, "publish": 600}}
        t0 = time.monotonic()
        started = run.start(proj, aws, versions=versions, distros=distros, config=config)
        desc = run.run_fake_ec2(proj, aws, started, env=env, timeout=1800, idle_seconds=30)
        wall_to_end = time.monotonic() - t0
        sfn = aws.client("stepfunctions")
        events: list[dict[str, Any]] = []
        kw: dict[str, Any] = {"executionArn": started.arn, "maxResults": 1000}
        while True:
            page = sfn.get_execution_history(**kw)
            events += page["events"]
            if not page.get("nextToken"):
                break
            kw["nextToken"] = page["nextToken"]
        rows = status.rows(aws.client("s3"), started.stack.scratch_bucket, started.name)
        phases = _worker_phases(proj.root / ".releng" / "worker-logs", launches.times)
    finally:
        server.stop()
    if desc["status"] != "SUCCEEDED":
        sys.exit(f"the execution ended {desc['status']}: {desc.get('cause', '')}")
    report(events, rows, wall_to_end, versions, distros, args.json)
    print("\nwhere a worker step's overhead goes (means over its tasks):")
    print(f"{'queue':<10} {'n':>3} {'start':>7} {'grace':>7} {'commands':>9}")
    for queue, ph in sorted(phases.items()):
        print(
            f"{queue:<10} {len(ph['start']):>3} {statistics.mean(ph['start']):7.2f} "
            f"{statistics.mean(ph['grace']):7.2f} {statistics.mean(ph['commands']):9.2f}"
        )
    print(
        "start: the worker launched until it has its message (Python, imports, boto3 clients,\n"
        "the first receive); grace: the worker's InvalidToken retries before it starts (moto\n"
        "registers no heartbeat for these tasks; local workers take --token-grace-seconds "
        f"{TOKEN_GRACE:g}; AWS workers 3 s, where the first heartbeat succeeds)"
    )
    shutil.rmtree(work, ignore_errors=True)


def report(  # noqa: PLR0917  (a plain report of six figures)
    events: list[dict[str, Any]],
    rows: list[Any],
    wall_to_end: float,
    versions: list[str],
    distros: list[str],
    json_out: str,
) -> None:
    times = _pairs(events)
    command: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if getattr(r, "seconds", None) is not None:
            command[r.step].append(float(r.seconds))
    print(f"{len(versions)} versions x {len(distros)} distros, make-package ~0 s (a shim)")
    print(f"{'state':<34} {'n':>3} {'mean s':>7} {'in cmds':>8} {'overhead':>9}")
    figures: dict[str, Any] = {"states": {}}
    for state, ts in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        n = sum(1 for t in ts if t >= 0)
        if n == 0 or sum(1 for t in ts if t < 0) != n:
            continue
        mean = -sum(ts) / n  # sum(exit) - sum(enter), per entry
        step = STEP_OF_STATE.get(state, "")
        in_cmds = statistics.mean(command[step]) if command.get(step) else 0.0
        overhead = mean - in_cmds
        flag = (
            "  (a Map: the states inside it)"
            if state in MAPS
            else ("  > 5 s" if overhead > 5 else "")
        )
        print(f"{state:<34} {n:>3} {mean:7.2f} {in_cmds:8.2f} {overhead:9.2f}{flag}")
        figures["states"][state] = {"n": n, "mean": mean, "commands": in_cmds}
    start = events[0]["timestamp"]
    last_publish = max(
        (
            (e["timestamp"] - start).total_seconds()
            for e in events
            if e["type"].endswith("StateExited")
            and e["stateExitedEventDetails"]["name"].startswith("Publish")
        ),
        default=float("nan"),
    )
    end = (events[-1]["timestamp"] - start).total_seconds()
    # The critical path's commands: per version the tarball, its slowest build, then the
    # publishes; versions run side by side (the Versions Map), so the slowest version's.
    crit = max(command.get("make-source-tarball", [0.0]), default=0.0)
    crit += max(command.get("make-binary-package", [0.0]), default=0.0)
    crit += max(command.get("publish-binary-packages", [0.0]), default=0.0)
    crit += max(command.get("publish-source-tarball", [0.0]), default=0.0)
    print(f"StartExecution -> last publish        {last_publish:7.1f} s")
    print(f"StartExecution -> execution ended     {end:7.1f} s (client saw {wall_to_end:.1f} s)")
    print(f"critical path in commands (approx.)   {crit:7.1f} s")
    print(f"overhead to the last publish          {last_publish - crit:7.1f} s  (target <= 60 s)")
    figures |= {
        "last_publish": last_publish,
        "end": end,
        "client_wall": wall_to_end,
        "critical_commands": crit,
        "commands": dict(command),
    }
    if json_out:
        Path(json_out).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
