"""Each handler called directly, against moto's server over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest

from releng.aws import handlers, status
from releng.aws import steps as S
from releng.aws.catalog import Catalog, DistroInfo
from releng.aws.launch import AutoScalingLauncher, subnets_offering
from releng.aws.request import InputError
from releng.errors import AwsError

pytestmark = pytest.mark.aws

ROOT = Path(__file__).resolve().parents[1]

CATALOG = Catalog(
    product="tally",
    distros={
        "debian-12-bookworm": DistroInfo(
            id="debian-12-bookworm", codename="bookworm", pkgver="1~bookworm"
        ),
        "debian-13-trixie": DistroInfo(id="debian-13-trixie", codename="trixie", pkgver="1~trixie"),
    },
    targets=["debian-12-bookworm", "debian-13-trixie"],
    architectures=["amd64", "arm64"],
)


def _groups(moto_server, name: str, instance_type: str) -> dict[str, str]:
    """Each worker queue's Auto Scaling group, as the stack makes it: from its launch template,
    MinSize 0, MaxSize the queue's pool, in the default VPC's subnets."""
    ec2, autoscaling = moto_server.client("ec2"), moto_server.client("autoscaling")
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]][:2]  # fmt: skip
    groups = {}
    for q, kind in S.WORKER_KINDS.items():
        lt = ec2.create_launch_template(
            LaunchTemplateName=f"{name}-{q}",
            LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": instance_type},
        )["LaunchTemplate"]["LaunchTemplateId"]
        groups[q] = f"{name}-{q.replace('_', '-')}-workers"
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=groups[q], LaunchTemplate={"LaunchTemplateId": lt, "Version": "1"},
            MinSize=0, MaxSize=kind.max_workers, VPCZoneIdentifier=",".join(subnets),
        )  # fmt: skip
    return groups


@pytest.fixture
def ctx(moto_server):
    name = f"h-{uuid.uuid4().hex[:8]}"
    s3, sqs = (moto_server.client(s) for s in ("s3", "sqs"))
    for bucket in (f"{name}-scratch", f"{name}-downloads"):
        s3.create_bucket(Bucket=bucket)
    urls = {q: sqs.create_queue(QueueName=f"{name}-{q}")["QueueUrl"] for q in S.WORKER_QUEUES}
    groups = _groups(moto_server, name, "t3.small")
    return handlers.Context(
        client=moto_server.client,
        catalog=CATALOG,
        settings={
            handlers.SCRATCH_BUCKET: f"{name}-scratch",
            handlers.DOWNLOADS_BUCKET: f"{name}-downloads",
            handlers.QUEUE_URLS: json.dumps(urls),
        },
        launcher=AutoScalingLauncher(autoscaling=moto_server.client("autoscaling"), groups=groups),
        today=lambda: dt.date(2026, 11, 22),
    )


def test_parse_input_defaults_to_tonights_nightly_and_the_targets(ctx):
    plan = handlers.parse_input({}, ctx)
    assert [v["version"] for v in plan["versions"]] == ["2026.11.22"]
    assert plan["versions"][0]["distros"] == CATALOG.targets
    # the build Map: distro x architecture, product.toml's architectures by default
    assert plan["versions"][0]["matrix"] == [
        {"distro": d, "arch": a} for d in CATALOG.targets for a in ("amd64", "arm64")
    ]
    assert plan["config"]["timeouts"][S.BUILD_QUEUE] == 4 * 3600
    arm64 = handlers.parse_input({"architectures": ["arm64"]}, ctx)["versions"][0]["matrix"]
    assert arm64 == [{"distro": d, "arch": "arm64"} for d in CATALOG.targets]


def test_parse_input_names_the_valid_choices(ctx):
    with pytest.raises(
        InputError,
        match="unknown distro 'nope'; valid distros: debian-12-bookworm, debian-13-trixie",
    ):
        handlers.parse_input({"versions": ["1.2.3"], "distros": ["nope"]}, ctx)
    with pytest.raises(InputError, match="unknown step 'deploy'; valid steps: make-source-tarball"):
        handlers.parse_input({"steps": ["deploy"]}, ctx)
    with pytest.raises(
        InputError, match=r"unknown timeout 'gpu'; allowed: tarball, build, publish"
    ):
        handlers.parse_input({"config": {"timeouts": {"gpu": 5}}}, ctx)
    with pytest.raises(
        InputError,
        match=r"architecture 'riscv64' is not in \[repositories\] architectures of product.toml "
        r"\(amd64, arm64\)",
    ):
        handlers.parse_input({"architectures": ["riscv64"]}, ctx)


def test_a_release_shaped_like_a_date_stays_a_release_in_every_command(ctx):
    """`build-on-aws --release` / make-multiple-releases-on-aws send "releases": the plan
    says release, and each worker command carries --release (else a nightly is built)."""
    plan = handlers.parse_input({"versions": ["2026.11.21"], "releases": ["2024.01.15"]}, ctx)
    kinds = {v["version"]: v["kind"] for v in plan["versions"]}
    assert kinds == {"2026.11.21": "nightly", "2024.01.15": "release"}
    release = next(v for v in plan["versions"] if v["version"] == "2024.01.15")
    commands = []
    for step, extra in (
        (S.MAKE_SOURCE_TARBALL, {}),
        (S.MAKE_BINARY_PACKAGE, {"distro": "debian-12-bookworm", "arch": "amd64"}),
        (S.PUBLISH_BINARY_PACKAGES, {"builds": [{"distro": "debian-12-bookworm"}]}),
        (S.PUBLISH_SOURCE_TARBALL, {}),
    ):
        event = {"step": step, "version": release, "execution": "e", **extra}
        task = handlers.prepare_task(event, ctx)
        assert task["run"] is True, task
        commands += task["commands"]
    assert len(commands) == 6
    for command in commands:
        assert "2024.01.15" in command and "--release" in command, command
    nightly = next(v for v in plan["versions"] if v["version"] == "2026.11.21")
    event = {"step": S.MAKE_SOURCE_TARBALL, "version": nightly, "execution": "e"}
    assert "--release" not in handlers.prepare_task(event, ctx)["commands"][0]


def test_get_distros_for_version(ctx):
    release = {"version": "1.2.3", "kind": "release"}
    assert handlers.get_distros_for_version({"version": release}, ctx) == CATALOG.targets
    assert handlers.get_distros_for_version(
        {"version": release, "distros": ["debian-13-trixie"]}, ctx
    ) == ["debian-13-trixie"]
    # a version without its kind is refused: text is never re-parsed into a guess
    with pytest.raises(InputError, match="has no kind"):
        handlers.get_distros_for_version({"version": {"version": "2026.11.22"}}, ctx)


def _prepare(ctx, step, distro="", **extra):
    plan = handlers.parse_input({"versions": ["1.2.3"]}, ctx)["versions"][0]
    return handlers.prepare_task(
        {"step": step, "version": plan, "distro": distro, "execution": "ex1", **extra}, ctx
    )


def test_prepare_task_runs_until_the_output_is_in_s3(ctx):
    """Per (version, distro, arch): each architecture's build has its own queue, scratch
    part, completion marker, log and status record, and one done does not skip the other."""
    s3 = ctx.client("s3")
    scratch = ctx.settings[handlers.SCRATCH_BUCKET]
    urls = json.loads(ctx.settings[handlers.QUEUE_URLS])
    bookworm = "debian-12-bookworm"
    task = _prepare(ctx, S.MAKE_BINARY_PACKAGE, bookworm, arch="amd64")
    assert task["run"] is True
    assert (task["queue"], task["queue_url"]) == ("build", urls["build"])
    arm64 = _prepare(ctx, S.MAKE_BINARY_PACKAGE, bookworm, arch="arm64")
    assert (arm64["queue"], arm64["queue_url"]) == ("build_arm64", urls["build_arm64"])
    # natively on the arm64 instance: the same commands with --arch arm64
    assert arm64["commands"] == [
        ["invoke", "make-package", bookworm, "--version", "1.2.3", "--release", "--arch", "arm64"],
        ["invoke", "upload-build", "--version", "1.2.3", "--release", "--arch", "arm64", bookworm],
    ]
    assert arm64["log"] == {
        "bucket": scratch,
        "key": f"logs/ex1/1.2.3/{bookworm}/arm64/make-binary-package.log",
    }
    s3.put_object(Bucket=scratch, Key=f"1.2.3/{bookworm}/amd64/.releng-complete.json", Body=b"{}")
    task = _prepare(ctx, S.MAKE_BINARY_PACKAGE, bookworm, arch="amd64")
    assert task["run"] is False
    assert "built" in task["reason"]
    assert _prepare(ctx, S.MAKE_BINARY_PACKAGE, bookworm, arch="arm64")["run"] is True
    # The published repository counts too: a build deleted from scratch is not redone.
    downloads = ctx.settings[handlers.DOWNLOADS_BUCKET]
    s3.put_object(
        Bucket=downloads,
        Key="dists/trixie/main/binary-amd64/Packages",
        Body=b"Package: tally\nVersion: 1.2.3-1~trixie\nArchitecture: amd64\n",
    )
    assert _prepare(ctx, S.MAKE_BINARY_PACKAGE, "debian-13-trixie", arch="amd64")["run"] is False
    assert _prepare(ctx, S.MAKE_BINARY_PACKAGE, "debian-13-trixie", arch="arm64")["run"] is True
    status = json.loads(
        s3.get_object(
            Bucket=scratch, Key="status/ex1/1.2.3/debian-13-trixie/amd64/make-binary-package.json"
        )["Body"].read()
    )
    assert (status["state"], status["arch"]) == ("skipped", "amd64")
    # an architecture without AWS builders fails that build's branch in one line
    with pytest.raises(AwsError, match="no AWS builders for architecture 'riscv64'"):
        _prepare(ctx, S.MAKE_BINARY_PACKAGE, bookworm, arch="riscv64")


def test_prepare_task_publish_steps(ctx):
    assert _prepare(ctx, S.PUBLISH_BINARY_PACKAGES, builds=[])["reason"] == "no distro was built"
    built = [{"distro": "debian-12-bookworm", "arch": a} for a in ("amd64", "arm64")]
    task = _prepare(ctx, S.PUBLISH_BINARY_PACKAGES, builds=built)
    assert task["run"] is True
    assert task["commands"][0][:4] == ["invoke", "update-repos", "--version", "1.2.3"]
    plan = handlers.parse_input({"versions": ["2026.11.21"]}, ctx)["versions"][0]
    nightly = handlers.prepare_task(
        {"step": S.PUBLISH_SOURCE_TARBALL, "version": plan, "execution": "e"}, ctx
    )
    assert nightly["run"] is False
    assert nightly["reason"] == "nightlies publish no source tarball"


def test_launch_workers_fills_a_bounded_pool_and_reuses_it(ctx):
    launched = handlers.launch_workers({"queue": S.BUILD_QUEUE, "count": 2}, ctx)["launched"]
    assert len(launched) == 2
    assert ctx.launcher.live(S.BUILD_QUEUE) == 2
    # two live workers and nothing queued: the next task goes to one of them
    assert handlers.launch_workers({"queue": S.BUILD_QUEUE, "count": 1}, ctx)["launched"] == []
    # a long queue grows the pool only up to its maximum
    ctx.settings = {**ctx.settings, handlers.MAX_WORKERS: json.dumps({S.BUILD_QUEUE: 3})}
    url = json.loads(ctx.settings[handlers.QUEUE_URLS])[S.BUILD_QUEUE]
    for _ in range(5):
        ctx.client("sqs").send_message(QueueUrl=url, MessageBody="{}")
    assert len(handlers.launch_workers({"queue": S.BUILD_QUEUE}, ctx)["launched"]) == 1
    assert handlers.launch_workers({"queue": S.BUILD_QUEUE}, ctx)["launched"] == []
    assert ctx.launcher.live(S.BUILD_QUEUE) == 3
    # one publisher at most
    assert (
        len(handlers.launch_workers({"queue": S.PUBLISH_QUEUE, "count": 3}, ctx)["launched"]) == 1
    )
    assert handlers.launch_workers({"queue": S.PUBLISH_QUEUE, "count": 1}, ctx)["launched"] == []


def test_a_pool_never_grows_past_its_groups_maximum(ctx, moto_server):
    """MaxSize is [aws] max_workers for the queue (AWS refuses a desired capacity above it;
    moto does not, so the launcher bounds it itself)."""
    autoscaling = moto_server.client("autoscaling")
    group = ctx.launcher.groups[S.PUBLISH_QUEUE]
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=group, MaxSize=2)
    ctx.settings = {**ctx.settings, handlers.MAX_WORKERS: json.dumps({S.PUBLISH_QUEUE: 9})}
    assert (
        len(handlers.launch_workers({"queue": S.PUBLISH_QUEUE, "count": 5}, ctx)["launched"]) == 2
    )
    (desc,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
        "AutoScalingGroups"]  # fmt: skip
    assert desc["DesiredCapacity"] == 2


def test_workers_launch_from_the_template_version_the_stack_last_wrote(ctx, moto_server):
    """A stack update adds a launch template version without moving the default one; the
    group's LaunchTemplate Version is the template's LatestVersionNumber, which CloudFormation
    resolves again at each update (moto's CloudFormation does not update a group: the update is
    made here as it makes it). The next worker comes from the new version."""
    import yaml

    res = yaml.safe_load((ROOT / "aws/template.yaml").read_text())["Resources"]
    for q in S.WORKER_QUEUES:
        camel = "".join(p.capitalize() for p in q.split("_"))
        version = res[f"{camel}WorkerGroup"]["Properties"]["LaunchTemplate"]["Version"]
        assert version == {"Fn::GetAtt": [f"{camel}LaunchTemplate", "LatestVersionNumber"]}
    ec2, autoscaling = moto_server.client("ec2"), moto_server.client("autoscaling")
    group = ctx.launcher.groups[S.BUILD_QUEUE]
    (desc,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
        "AutoScalingGroups"]  # fmt: skip
    lt = desc["LaunchTemplate"]["LaunchTemplateId"]
    latest = ec2.create_launch_template_version(  # the update: another instance type
        LaunchTemplateId=lt,
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.large"},
    )["LaunchTemplateVersion"]["VersionNumber"]
    default = ec2.describe_launch_templates(LaunchTemplateIds=[lt])["LaunchTemplates"][0]
    assert default["DefaultVersionNumber"] == 1  # as CloudFormation leaves it
    autoscaling.update_auto_scaling_group(
        AutoScalingGroupName=group, LaunchTemplate={"LaunchTemplateId": lt, "Version": str(latest)}
    )
    assert len(handlers.launch_workers({"queue": S.BUILD_QUEUE}, ctx)["launched"]) == 1
    (desc,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
        "AutoScalingGroups"]  # fmt: skip
    assert [i["InstanceType"] for i in desc["Instances"]] == ["t3.large"]


def test_a_zone_without_the_instance_type_is_not_given_to_its_group(moto_server):
    """c7g.4xlarge is not offered in us-east-1e: deploy-aws gives the Graviton builders' group
    only subnets whose zones offer the type (describe-instance-type-offerings), so the group
    never tries there; a capacity refusal in one zone is the group's to retry in the others.
    No subnet at all that fits is one line naming the zones that would."""
    ec2 = moto_server.client("ec2")
    zone = {s["AvailabilityZone"]: s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]}  # fmt: skip
    offered = {o["Location"] for o in ec2.describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": ["c7g.4xlarge"]}])["InstanceTypeOfferings"]}  # fmt: skip
    assert "us-east-1e" in zone and "us-east-1e" not in offered
    configured = [zone["us-east-1e"], zone["us-east-1a"], zone["us-east-1b"]]
    assert subnets_offering(ec2, configured, "c7g.4xlarge") == configured[1:]
    default_vpc = subnets_offering(ec2, [], "c7g.4xlarge")  # no [aws] subnets
    assert sorted(default_vpc) == sorted(s for z, s in zone.items() if z in offered)
    with pytest.raises(
        AwsError,
        match=r"no subnet of subnet-\w+ is in a zone offering c7g.4xlarge; it is offered in us-east-1a",
    ):
        subnets_offering(ec2, [zone["us-east-1e"]], "c7g.4xlarge")


def test_a_health_message_without_a_token_runs_the_health_check(ctx):
    """The scheduled health check arrives on launch_workers' queue (one owner of the pools)
    as a message without a task token: dispatch runs it and answers nobody."""
    sqs = ctx.client("sqs")
    urls = json.loads(ctx.settings[handlers.QUEUE_URLS])
    sqs.send_message(QueueUrl=urls[S.BUILD_QUEUE], MessageBody="{}")  # a task nobody took
    assert handlers.dispatch({**handlers.HEALTH_CHECK_MESSAGE, "time": "t"}, ctx) is True
    assert ctx.launcher.live(S.BUILD_QUEUE) == 1


def test_health_check_launches_for_waiting_tasks_only(ctx):
    sqs = ctx.client("sqs")
    urls = json.loads(ctx.settings[handlers.QUEUE_URLS])
    assert handlers.health_check({}, ctx) == {"launched": {}}
    sqs.send_message(QueueUrl=urls[S.TARBALL_QUEUE], MessageBody="{}")
    launched = handlers.health_check({}, ctx)["launched"]
    assert list(launched) == [S.TARBALL_QUEUE]
    assert len(launched[S.TARBALL_QUEUE]) == 1
    # A live worker for that queue exists now: no second one for the same message.
    assert handlers.health_check({}, ctx) == {"launched": {}}


def test_check_if_repos_changed_and_check_for_failures(ctx):
    results = [
        {"tasks": {"PublishBinaryPackages": {"step": S.PUBLISH_BINARY_PACKAGES, "version": "1.2.3",
                                             "run": True, "result": {"status": "done"}}}},
        {"failed": True, "step": S.MAKE_BINARY_PACKAGE, "version": "1.2.4", "distro": "debian-13-trixie",
         "error": {"Error": "States.Timeout", "Cause": None}},
    ]  # fmt: skip
    assert handlers.check_if_repos_changed({"results": results}, ctx)["changed"] is True
    assert handlers.check_if_repos_changed({"results": results[1:]}, ctx)["changed"] is False
    report = handlers.check_for_failures({"execution": "ex9", "results": results}, ctx)
    assert report["count"] == 1
    assert report["summary"] == "make-binary-package 1.2.4 debian-13-trixie: States.Timeout"
    scratch = ctx.settings[handlers.SCRATCH_BUCKET]
    assert report["report"] == f"s3://{scratch}/logs/ex9/failures.json"
    body = ctx.client("s3").get_object(Bucket=scratch, Key="logs/ex9/failures.json")["Body"]
    (failure,) = json.loads(body.read())
    assert (
        failure["log"] == f"s3://{scratch}/logs/ex9/1.2.4/debian-13-trixie/make-binary-package.log"
    )


def test_update_indices_then_invalidate_cloudfront(ctx, moto_server):
    cf = moto_server.client("cloudfront")
    dist = cf.create_distribution(
        DistributionConfig={
            "CallerReference": uuid.uuid4().hex,
            "Comment": "test",
            "Enabled": True,
            "Origins": {"Quantity": 1, "Items": [{"Id": "o", "DomainName": "example.s3.amazonaws.com",
                                                  "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
            "DefaultCacheBehavior": {"TargetOriginId": "o", "ViewerProtocolPolicy": "allow-all",
                                     "MinTTL": 0, "ForwardedValues": {"QueryString": False,
                                                                      "Cookies": {"Forward": "none"}}},
        }
    )["Distribution"]["Id"]  # fmt: skip
    ctx.settings = {**ctx.settings, handlers.DISTRIBUTION_ID: dist}
    indices = handlers.update_indices({}, ctx)
    assert indices == {"pages": 0, "invalidate": []}
    assert handlers.invalidate_cloudfront({"indices": indices}, ctx) == {"invalidation": None}
    paths = {"invalidate": ["/dists/bookworm/*"]}
    result = handlers.invalidate_cloudfront({"indices": paths, "execution": "night-1"}, ctx)
    assert result["invalidation"]
    listed = cf.list_invalidations(DistributionId=dist)["InvalidationList"]["Items"]
    assert [i["Id"] for i in listed] == [result["invalidation"]]
    # the next nightly changes the same paths: a new invalidation, not the old one returned
    # (CloudFront answers a CallerReference it has seen with that invalidation)
    nxt = handlers.invalidate_cloudfront({"indices": paths, "execution": "night-2"}, ctx)
    assert nxt["invalidation"] not in (None, result["invalidation"])
    refs = {
        cf.get_invalidation(DistributionId=dist, Id=i)["Invalidation"]["InvalidationBatch"][
            "CallerReference"
        ]
        for i in (result["invalidation"], nxt["invalidation"])
    }
    assert len(refs) == 2


def test_aws_status_lists_versions_in_dpkg_order_then_steps_in_run_order(ctx):
    s3 = ctx.client("s3")
    scratch = ctx.settings[handlers.SCRATCH_BUCKET]
    for version in ("1.10.0", "1.9.0", "1.9.0~rc1"):
        for step, distro in ((S.PUBLISH_BINARY_PACKAGES, ""), (S.MAKE_SOURCE_TARBALL, "")):
            task = {"step": step, "version": version, "distro": distro, "execution": "ex"}
            status.put_record(s3, scratch, task, "succeeded")
    rows = status.rows(s3, scratch, "ex")
    assert [(r.version, r.step) for r in rows] == [
        (v, step)
        for v in ("1.9.0~rc1", "1.9.0", "1.10.0")
        for step in (S.MAKE_SOURCE_TARBALL, S.PUBLISH_BINARY_PACKAGES)
    ]
