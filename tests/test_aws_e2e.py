"""End to end on this machine: the deployed state machine, real work, real apt.

What runs in place of AWS (see docs/aws.md): moto's server executes the
committed aws/state-machine.json (placeholders filled the way CloudFormation's
DefinitionSubstitutions fills them). Lambda code cannot run under moto here
(its runtime images cannot be pulled), so releng.aws.runner.HandlerRunner
consumes the handler queues in this process and calls the same
releng.aws.handlers.dispatch as the Lambda entry point; EC2 instances are
local processes running the same releng.aws.worker loop (--fake-ec2). The
workers do the real steps: source tarball, container builds, uploads to the
moto bucket, publishing with releng.publish.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from releng.aws import deploy, run
from releng.project import Project
from tests.fixtures.project import git
from tests.test_aws_pipeline import forget_executions

pytestmark = [pytest.mark.aws, pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DISTROS = ["debian-12-bookworm", "debian-13-trixie"]
# Short deadlines; the workers report (and extend their messages) every few seconds.
SHORT = {"timeouts": {"tarball": 300, "build": 900, "publish": 600}, "heartbeat_seconds": 10}


@pytest.fixture
def e2e(moto_server, project_copy, gpg_key, demo_build, monkeypatch):
    """A project copy signing with the test key, its [publish] buckets on a fresh dev stack.

    demo_build (session-wide, shared with the build tests) makes the base and builder images
    first, so the workers' container builds reuse them.
    """
    for distro in DISTROS:
        demo_build(distro)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", moto_server.region)
    env = dict(os.environ)
    env["RELENG_TASKS_ROOT"] = str(REPO)  # the copy has no tasks.py
    env["RELENG_SIGNING_PASSPHRASE"] = gpg_key.passphrase
    name = f"releng-{uuid.uuid4().hex[:8]}"
    root = project_copy.root
    product = root / "product.toml"
    text = product.read_text()
    text = text.replace('key = ""', f'key = "{gpg_key.fingerprint}"', 1)
    text = text.replace('gnupghome = ""', f'gnupghome = "{gpg_key.home}"', 1)
    text += (
        f'\n[publish]\nbucket = "{name}-downloads"\nscratch_bucket = "{name}-scratch"\n'
        f'\n[aws]\nstack_name = "{name}"\n'
    )
    # Release day: the publish step pushes the release tag and branch to this "public" repository.
    public = root.parent / "public.git"
    git(root.parent, "init", "-q", "--bare", str(public))
    text = text.replace(
        "[source]\n",
        f'[source]\npublic_repository = "{public}"\nrelease_branch = "{{name}}-{{major}}.{{minor}}"\n',
        1,
    )
    product.write_text(text)
    git(root, "commit", "-q", "-am", "test key, test stack")
    git(root, "branch", "tally-1.0")
    proj = Project.load(root)
    aws = run.connect(proj, env)
    stack = deploy.deploy_dev(aws.client, REPO, name)
    yield proj, aws, stack, env
    forget_executions(aws.client("stepfunctions"), name)


def _records(s3, bucket: str, execution: str) -> dict[tuple[str, str], dict]:
    out = {}
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=f"status/{execution}/").get("Contents", []):
        rec = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        out[(rec["step"], rec["distro"])] = rec
    return out


def _states_entered(sfn, arn: str) -> set[str]:
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return {
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    }


def _failed_logs(s3, records: dict) -> str:
    """The tail of every failed step's log, for the assertion message."""
    out = []
    for rec in records.values():
        if rec["state"] == "failed" and rec.get("log", "").startswith("s3://"):
            bucket, key = rec["log"][5:].split("/", 1)
            text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode(errors="replace")
            out.append(f"--- {rec['log']}\n{text[-3000:]}")
    return "\n".join(out)


def _apt_install(moto_server, bucket: str, keyring: Path, image: str, codename: str) -> str:
    """apt in a fresh container installs tally from the bucket over HTTP and runs it."""
    url = f"{moto_server.endpoint_url}/{bucket}"
    script = (
        f"echo 'deb [signed-by=/key.gpg] {url} {codename} main' > /etc/apt/sources.list.d/releng.list"
        " && apt-get -o Dir::Etc::SourceList=/dev/null update -q"
        " && apt-get -o Dir::Etc::SourceList=/dev/null install -y -q tally"
        " && echo one two three | tally -w"
    )
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "host", "-v", f"{keyring}:/key.gpg:ro", image, "sh", "-c", script],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_release_end_to_end_then_rerun_builds_nothing(moto_server, e2e, gpg_key, tmp_path):
    proj, aws, stack, env = e2e
    s3 = moto_server.client("s3")
    started = run.start(proj, aws, versions=["1.0.0"], distros=DISTROS, config=SHORT)
    desc = run.run_fake_ec2(proj, aws, started, env=env, timeout=1500, idle_seconds=10)
    records = _records(s3, stack.scratch_bucket, started.name)
    assert desc["status"] == "SUCCEEDED", (desc.get("cause"), _failed_logs(s3, records))
    for distro in DISTROS:
        assert records[("make-binary-package", distro)]["state"] == "succeeded"
    assert records[("publish-binary-packages", "")]["state"] == "succeeded"
    assert records[("publish-source-tarball", "")]["state"] == "succeeded"
    s3.head_object(Bucket=stack.downloads_bucket, Key="source/tally-1.0.0.tar.gz")
    # ... and only then the release tag and branch went to the public repository.
    public = proj.root.parent / "public.git"
    for ref in ("refs/tags/tally-v1.0.0", "refs/heads/tally-1.0"):
        assert git(public, "rev-parse", ref) == git(proj.root, "rev-parse", ref)
    sfn = moto_server.client("stepfunctions")
    assert {"UpdateIndices", "InvalidateCloudfront"} <= _states_entered(sfn, started.arn)
    keyring = gpg_key.public_keyring(tmp_path / "key.gpg")
    assert "3" in _apt_install(
        moto_server, stack.downloads_bucket, keyring, "debian:bookworm", "bookworm"
    )

    status = subprocess.run(
        ["invoke", "--search-root", str(REPO), "show-aws-status"],
        env={**env, "RELENG_ROOT": str(proj.root)}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert f"{started.name}: SUCCEEDED" in status.stdout
    rows = [line.split() for line in status.stdout.splitlines()]
    built = [
        r for r in rows if r[:4] in (["1.0.0", d, "amd64", "make-binary-package"] for d in DISTROS)
    ]
    assert [r[4] for r in built] == ["succeeded", "succeeded"], status.stdout
    assert all(r[5].endswith("s") and r[6].startswith("local-build-") for r in built), status.stdout

    # Resume: the same input again does no build and publishes nothing new.
    deploy.deploy_dev(aws.client, REPO, proj.config.aws.stack_name)  # moto: see test_aws_pipeline
    again = run.start(proj, aws, versions=["1.0.0"], distros=DISTROS, config=SHORT)
    desc = run.run_fake_ec2(proj, aws, again, env=env, timeout=600, idle_seconds=10)
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    records = _records(s3, stack.scratch_bucket, again.name)
    assert "UpdateIndices" not in _states_entered(sfn, again.arn)  # nothing was published
    assert {k: r["state"] for k, r in records.items()} == {
        ("make-source-tarball", ""): "skipped",
        ("make-binary-package", DISTROS[0]): "skipped",
        ("make-binary-package", DISTROS[1]): "skipped",
        ("publish-binary-packages", ""): "skipped",
        ("publish-source-tarball", ""): "skipped",
    }


def test_two_releases_in_one_execution_publish_one_at_a_time(moto_server, e2e):
    """make-multiple-releases-on-aws: both lines build at once; the FIFO publish queue hands the
    two publishes to one publisher in turn, and the repository ends up with both versions."""
    from releng.aws import handlers
    from releng.aws.catalog import Catalog

    proj, aws, stack, env = e2e
    git(proj.root, "tag", "tally-v1.0.1")
    distro = DISTROS[0]
    started = run.start(proj, aws, versions=["1.0.0", "1.0.1"], distros=[distro], config=SHORT)
    desc = run.run_fake_ec2(proj, aws, started, env=env, timeout=1500, idle_seconds=10)
    s3 = moto_server.client("s3")
    records = _records(s3, stack.scratch_bucket, started.name)
    assert desc["status"] == "SUCCEEDED", (desc.get("cause"), _failed_logs(s3, records))
    ctx = handlers.Context(
        client=moto_server.client,
        catalog=Catalog.from_project(proj),
        settings=stack.handler_settings(),
        launcher=None,  # type: ignore[arg-type]  (not used by published_versions)
    )
    served = handlers.published_versions(ctx, "bookworm")
    assert {("tally", "1.0.0-1~deb12u1"), ("tally", "1.0.1-1~deb12u1")} <= served
    # One at a time: no two publishes overlap, whichever publisher process ran them.
    spans = []
    for path in (proj.root / ".releng" / "worker-logs").glob("local-publish-*.log"):
        start = None
        for line in path.read_text().splitlines():
            stamp = line[:23]
            if ": starting " in line:
                start = stamp
            elif start and (" done in " in line or " FAILED in " in line):
                spans.append((start, stamp))
                start = None
    spans.sort()
    assert len(spans) == 4, spans  # binary packages and source, for both versions
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
