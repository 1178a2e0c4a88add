"""AWS tasks: start executions, watch them, deploy the stack (releng.aws does the work)."""

from __future__ import annotations

import os
import time

from releng.cli import Context, note, out, out_json, project, task

_FAKE = "run the handlers and workers on this machine (moto or a dev stack: deploy-aws --dev)"
_TIMEOUT = "with --fake-ec2: give up waiting after this many seconds"
_RELEASE = "every version is a release, even one shaped like a date (as make-package --release)"


def _split(text: str) -> list[str]:
    return [p for p in text.replace(",", " ").split() if p]


def _build(
    c: Context,
    versions: list[str],
    distros: str,
    steps: str,
    *,
    fake_ec2: bool,
    timeout: int,
    arches: str = "",
    release: bool = False,
) -> None:
    """``release``: every version is a release, even one shaped like a date."""
    from releng.aws import run

    proj = project(c)
    config = {"fake_ec2": True} if fake_ec2 else {}
    wanted = {"distros": _split(distros), "steps": _split(steps), "architectures": _split(arches)}
    wanted["releases"], versions = (versions, []) if release else ([], versions)
    run.check(proj, versions=versions, config=config, **wanted)
    aws = run.connect(proj, os.environ)
    started = run.start(proj, aws, versions=versions, config=config, **wanted)
    for v in started.plan["versions"]:
        built = list(dict.fromkeys(b["arch"] for b in v["matrix"]))
        out(
            f"{v['version']} ({v['kind']}): {', '.join(v['distros'])} x {', '.join(built)}; "
            f"steps: {', '.join(v['steps'])}"
        )
    out(f"started {started.arn}")
    if not fake_ec2:
        note("follow it with: invoke show-aws-status --follow")
        return
    desc = run.run_fake_ec2(proj, aws, started, env=os.environ, timeout=timeout)
    _print_status(aws, started.stack.scratch_bucket, desc)
    if desc["status"] != "SUCCEEDED":
        from releng.errors import AwsError

        raise AwsError(f"execution {desc['status']}: {desc.get('cause') or desc.get('error', '')}")


@task(
    help={
        "versions": "versions, comma or space separated (X.Y.Z releases, YYYY.MM.DD nightlies); "
        "default: tonight's nightly",
        "distros": "distros to build, comma separated; default: distros/TARGETS",
        "arches": "architectures to build, comma separated; default: product.toml's "
        "[repositories] architectures (arm64 builds run on Graviton instances)",
        "steps": "steps to run, comma separated (make-source-tarball, make-binary-package, "
        "publish-binary-packages, publish-source-tarball, update-indices, invalidate-cloudfront); default: all",
        "fake_ec2": _FAKE,
        "timeout": _TIMEOUT,
        "release": _RELEASE,
    },
)
def build_on_aws(  # noqa: PLR0917  (invoke maps parameters to options)
    c: Context,
    versions: str = "",  # an option: invoke has no optional positional arguments
    distros: str = "",
    steps: str = "",
    fake_ec2: bool = False,
    timeout: int = 6 * 3600,
    arches: str = "",
    release: bool = False,
) -> None:
    """Start a Step Functions execution: versions x distros x architectures, tarball, packages,
    publish."""
    _build(
        c,
        _split(versions),
        distros,
        steps,
        fake_ec2=fake_ec2,
        timeout=timeout,
        arches=arches,
        release=release,
    )


@task(
    help={
        "version": "X.Y.Z or YYYY.MM.DD",
        "distro": "one distro directory name",
        "fake_ec2": _FAKE,
        "timeout": _TIMEOUT,
        "release": _RELEASE,
    }
)
def make_package_on_aws(  # noqa: PLR0917  (invoke maps parameters to options)
    c: Context,
    version: str,
    distro: str,
    fake_ec2: bool = False,
    timeout: int = 6 * 3600,
    release: bool = False,
) -> None:
    """Build (and publish) one version for one distro on AWS."""
    _build(c, [version], distro, "", fake_ec2=fake_ec2, timeout=timeout, release=release)


@task(
    positional=["versions"],
    help={
        "versions": "release versions, comma or space separated",
        "fake_ec2": _FAKE,
        "timeout": _TIMEOUT,
    },
)
def make_multiple_releases_on_aws(
    c: Context, versions: str, fake_ec2: bool = False, timeout: int = 6 * 3600
) -> None:
    """Build and publish several releases in one execution (e.g. a security release)."""
    _build(c, _split(versions), "", "", fake_ec2=fake_ec2, timeout=timeout, release=True)


def _print_status(aws: object, bucket: str, desc: dict[str, object], *, json: bool = False) -> None:
    from dataclasses import asdict

    from releng.aws import status

    client = aws.client  # type: ignore[attr-defined]
    rows = status.rows(client("s3"), bucket, str(desc["name"]))
    if json:
        keys = ("name", "executionArn", "status", "startDate", "stopDate", "error", "cause")
        out_json({**{k: desc[k] for k in keys if k in desc}, "rows": [asdict(r) for r in rows]})
        return
    for line in status.table(desc, rows):
        out(line)


@task(
    help={
        "execution": "execution name or ARN; default: the latest",
        "follow": "refresh until it ends",
        "json": "print one JSON object per refresh: the execution and its rows",
    }
)
def show_aws_status(
    c: Context, execution: str = "", follow: bool = False, json: bool = False
) -> None:
    """Every version x distro x step: state, duration, instance; failures with their log."""
    from releng.aws import run
    from releng.aws.deploy import load_stack
    from releng.errors import AwsError

    proj = project(c)
    aws = run.connect(proj, os.environ)
    stack = load_stack(aws.client("cloudformation"), proj.config.aws.stack_name)
    sfn = aws.client("stepfunctions")
    arn = execution
    if not arn.startswith("arn:"):
        listed = sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]
        match = [e for e in listed if not execution or e["name"] == execution]
        if not match:
            raise AwsError(
                f"no execution {execution or '(none yet)'} on {stack.state_machine_arn}; "
                "start one with `invoke build-on-aws`"
            )
        arn = max(match, key=lambda e: e["startDate"])["executionArn"]
    while True:
        desc = sfn.describe_execution(executionArn=arn)
        _print_status(aws, stack.scratch_bucket, desc, json=json)
        if not follow or desc["status"] != "RUNNING":
            return
        time.sleep(10)
        if not json:
            out()


@task(
    help={
        "dev": "create queues, buckets and the state machine directly (moto or a sandbox), "
        "no Lambda or EC2",
        "stack": "stack name; default: [aws] stack_name",
        "preview": "show the change set the deploy would apply, and apply nothing",
        "replace_failed": "a stack whose first create failed (ROLLBACK_COMPLETE): delete it and "
        "create it again",
    }
)
def deploy_aws(
    c: Context, dev: bool = False, stack: str = "", preview: bool = False,
    replace_failed: bool = False,
) -> None:  # fmt: skip
    """Create or update the CloudFormation stack and the Lambda code (--preview: show only)."""
    from releng.aws import deploy, run
    from releng.aws.catalog import Catalog
    from releng.errors import AwsError

    proj = project(c)
    aws = run.connect(proj, os.environ)
    name = stack or proj.config.aws.stack_name
    if dev:
        result = deploy.deploy_dev(aws.client, proj.root, name)
    elif preview:
        uploaded = deploy.upload_artifacts(
            aws.client, proj.root, name, catalog=Catalog.from_project(proj),
            parameters=deploy.parameters(proj),
        )  # fmt: skip
        changes = deploy.preview(
            aws.client("cloudformation"), name,
            template_url=uploaded.template_url, parameters=uploaded.parameters,
        )  # fmt: skip
        for change in changes:
            replace = f" (replacement: {change.replacement})" if change.replacement else ""
            out(f"{change.action:<7} {change.logical_id}  {change.type}{replace}")
        out(f"stack {name}: {len(changes)} change(s); nothing applied (--preview)")
        return
    else:
        result = deploy.deploy(
            aws.client,
            proj.root,
            name,
            catalog=Catalog.from_project(proj),
            parameters=deploy.parameters(proj),
            replace_failed=replace_failed,
        )
    out(f"stack {result.name}: state machine {result.state_machine_arn}")
    out(f"scratch s3://{result.scratch_bucket}  downloads s3://{result.downloads_bucket}")
    try:
        deploy.check_product_toml(proj, result)
    except AwsError:
        out(
            "product.toml must name the stack's buckets and its public URL (workers read "
            "them); set, commit, push:"
        )
        for line in deploy.product_toml_lines(result):
            out(f"  {line}")
        if result.nightly_rule:
            note("the nightly schedule stays off until then; run `invoke deploy-aws` again")
        return
    if deploy.enable_nightly(aws.client("events"), result):
        out(f"nightly schedule {result.nightly_rule}: on")


@task(
    help={
        "stack": "stack name; default: [aws] stack_name",
        "delete_downloads": "also empty and delete the downloads bucket (published packages); "
        "kept by default",
        "force": "do not ask for the stack's name first",
    }
)
def destroy_aws(
    c: Context, stack: str = "", delete_downloads: bool = False, force: bool = False
) -> None:
    """Stop the stack's workers, empty its buckets and delete it (the downloads are kept)."""
    import sys

    from releng.aws import deploy, run, teardown
    from releng.errors import AwsError

    proj = project(c)
    aws = run.connect(proj, os.environ)
    name = stack or proj.config.aws.stack_name
    deploy.load_stack(aws.client("cloudformation"), name)  # it exists: say so before asking
    if not force:
        if not sys.stdin.isatty():
            raise AwsError(
                f"destroy-aws asks for the stack's name on a terminal; pass --force to delete {name} without asking"
            )
        kept = "its downloads bucket too" if delete_downloads else "the downloads bucket is kept"
        answer = input(f"delete stack {name} and its scratch data ({kept})? type its name: ")
        if answer.strip() != name:
            raise AwsError(f"not deleted: {answer.strip()!r} is not {name!r}")
    result = teardown.destroy(aws.client, name, delete_downloads=delete_downloads)
    if result.terminated:
        out(f"terminated {', '.join(result.terminated)}")
    out(f"deleted stack {name}; emptied {', '.join(result.emptied)}")
    for bucket in result.kept:
        out(f"kept s3://{bucket} (published packages; --delete-downloads removes it)")


@task
def generate_aws(c: Context) -> None:
    """Regenerate aws/state-machine.json and aws/template.yaml from releng.aws (commit both)."""
    from releng.aws import statemachine, template

    proj = project(c)
    out(str(statemachine.write(proj.root)))
    out(str(template.write(proj.root)))
