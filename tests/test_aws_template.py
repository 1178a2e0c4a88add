"""The CloudFormation template: generated, committed, lint-clean, and deploying the committed ASL."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from releng.aws import statemachine, template
from releng.aws import steps as S

ROOT = Path(__file__).resolve().parents[1]


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    return {suffix: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None}


_CfnLoader.add_multi_constructor("!", _tag)


def _load() -> dict:
    return yaml.load((ROOT / template.TEMPLATE_FILE).read_text(), Loader=_CfnLoader)


def test_committed_template_is_the_generated_one() -> None:
    committed = (ROOT / template.TEMPLATE_FILE).read_text(encoding="utf-8")
    assert committed == template.dumps(ROOT), "run `invoke generate-aws` and commit aws/"


@pytest.mark.slow
def test_cfn_lint_passes_with_warnings_as_failures() -> None:
    """The newest cfn-lint (pyproject's floor is its latest release): its warnings are what
    CloudFormation rejects (W1101: YAML aliases) or AWS does differently."""
    exe = shutil.which("cfn-lint")
    assert exe, "cfn-lint is missing: pip install -e '.[test]'"
    floor = next(
        line.split(">=")[1].split('"')[0]
        for line in (ROOT / "pyproject.toml").read_text().splitlines()
        if '"cfn-lint>=' in line
    )
    from importlib.metadata import version

    assert tuple(map(int, version("cfn-lint").split("."))) >= tuple(map(int, floor.split(".")))
    # exit code: bit 2 errors, bit 4 warnings; both fail (informational notes, 8, do not)
    proc = subprocess.run(
        [exe, "--format", "parseable", str(ROOT / template.TEMPLATE_FILE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode & 6 == 0, proc.stdout + proc.stderr


def test_yaml_has_no_anchors_or_aliases() -> None:
    """CloudFormation rejects YAML anchors and aliases; PyYAML writes them for shared objects."""
    events = yaml.parse((ROOT / template.TEMPLATE_FILE).read_text(encoding="utf-8"))
    for event in events:
        assert not isinstance(event, yaml.AliasEvent), event
        assert getattr(event, "anchor", None) is None, event


def test_template_fits_a_template_url_not_a_template_body() -> None:
    """deploy() uploads the template and passes TemplateURL: TemplateBody takes 51,200 bytes,
    TemplateURL 1 MB. The check keeps the template within the URL limit with room to grow."""
    size = len((ROOT / template.TEMPLATE_FILE).read_bytes())
    assert 51_200 < size < 1_000_000 // 2


def test_state_machine_is_the_committed_definition_with_every_placeholder_mapped() -> None:
    props = _load()["Resources"]["StateMachine"]["Properties"]
    assert props["DefinitionString"] == (ROOT / statemachine.DEFINITION_FILE).read_text()
    assert sorted(props["DefinitionSubstitutions"]) == statemachine.placeholders()


def _statements(role: dict) -> str:
    return json.dumps(role["Properties"]["Policies"])


def test_least_privilege_builders_never_sign_nor_write_downloads() -> None:
    res = _load()["Resources"]
    roles = {q: res[template.worker_role_id(q)] for q in S.WORKER_QUEUES}
    builders = set(S.BUILD_QUEUE_OF_ARCH.values())
    assert builders == {"build", "build_arm64"}
    for builder in builders:
        assert "DownloadsBucket" not in _statements(roles[builder])
    assert "DownloadsBucket" not in _statements(roles["tarball"])
    assert "DownloadsBucket" in _statements(roles["publish"])
    rebuilders = set(S.VERIFY_QUEUE_OF_ARCH.values())
    assert rebuilders == {"verify", "verify_arm64"}
    for queue, role in roles.items():
        signs = "SigningKeyParameter" in _statements(role)
        assert signs == (queue not in builders | rebuilders), queue
        # the rebuilder's key: the rebuilders' only (they never read the archive's)
        assert ("RebuilderKeyParameter" in _statements(role)) == (queue in rebuilders), queue
    for rebuilder in rebuilders:
        assert "DownloadsBucket" not in _statements(roles[rebuilder])
    assert "CreateInvalidation" not in json.dumps(res["ParseInputFunctionRole"]["Properties"])
    for queue in S.WORKER_QUEUES:
        camel = "".join(p.capitalize() for p in queue.split("_"))
        data = res[f"{camel}LaunchTemplate"]["Properties"]["LaunchTemplateData"]
        assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    # arm64 builds run natively on Graviton: their own AMI (arm64) and instance type
    arm64 = res["BuildArm64LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert arm64["ImageId"] == {"Ref": "Arm64ImageId"}
    assert arm64["InstanceType"] == {"Ref": "Arm64BuilderInstanceType"}
    # and so do arm64 rebuilds, with the rebuilders' role (never a builder's)
    rebuild = res["VerifyArm64LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert (rebuild["ImageId"], rebuild["InstanceType"]) == (
        arm64["ImageId"],
        arm64["InstanceType"],
    )
    profile = res[rebuild["IamInstanceProfile"]["Arn"]["Fn::GetAtt"][0]]["Properties"]["Roles"]
    assert profile == [{"Ref": "VerifyArm64WorkerRole"}]
    assert _statements(roles["verify_arm64"]) == _statements(roles["verify"]).replace(
        "VerifyQueue", "VerifyArm64Queue"
    ).replace("-verify-workers", "-verify-arm64-workers")
    params = _load()["Parameters"]
    assert params["Arm64BuilderInstanceType"]["Default"].startswith("c7g.")
    assert res["PublishQueue"]["Properties"]["FifoQueue"] is True
    for name, resource in res.items():
        if resource["Type"] == "AWS::SQS::Queue" and not name.endswith("Dlq"):
            assert "RedrivePolicy" in resource["Properties"], name
    assert (
        res["ScratchBucket"]["Properties"]["PublicAccessBlockConfiguration"]["BlockPublicPolicy"]
        is True
    )


def test_handler_queues_outlast_their_functions_six_times() -> None:
    """AWS's advice for SQS event sources: visibility >= 6 x the function's timeout, or a
    throttled invocation reappears only after its task timed out; the state waits for it."""
    res = _load()["Resources"]
    machine = json.loads(res["StateMachine"]["Properties"]["DefinitionString"])
    states = {}

    def collect(d):
        for name, state in d["States"].items():
            states[name] = state
            if "ItemProcessor" in state:
                collect(state["ItemProcessor"])

    collect(machine)
    for handler in S.QUEUE_HANDLERS:
        camel = "".join(p.capitalize() for p in handler.split("_"))
        timeout = res[f"{camel}Function"]["Properties"]["Timeout"]
        visibility = res[f"{camel}Queue"]["Properties"]["VisibilityTimeout"]
        assert visibility >= 6 * timeout, handler
        waits = [
            s["TimeoutSeconds"]
            for s in states.values()
            if s.get("Type") == "Task"
            and s["Parameters"].get("QueueUrl") == "${" + S.queue_key(handler) + "}"
        ]
        assert waits, handler
        assert all(w > visibility + timeout for w in waits), handler


def test_cloudfront_serves_directory_index_pages() -> None:
    config = _load()["Resources"]["Distribution"]["Properties"]["DistributionConfig"]
    assert config["DefaultRootObject"] == "index.html"
    (assoc,) = config["DefaultCacheBehavior"]["FunctionAssociations"]
    assert assoc["EventType"] == "viewer-request"
    code = _load()["Resources"]["DirectoryIndexFunction"]["Properties"]["FunctionCode"]
    assert 'endsWith("/")' in code and "index.html" in code


@pytest.mark.slow
def test_lambda_zip_imports_on_its_own(tmp_path) -> None:
    """The Lambda code is self-contained: the entry point, releng and the boto3/botocore it
    was tested with all come from the zip (not the runtime's, not this checkout's), with the
    service models of every client the handlers make."""
    import io
    import os
    import sys
    import zipfile

    import boto3

    from releng.aws import deploy
    from releng.aws.catalog import Catalog
    from releng.project import Project

    data = deploy.lambda_zip(ROOT, Catalog.from_project(Project.load(ROOT)))
    assert len(data) < 50 * 1024 * 1024  # Lambda's limit for a zip
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path)
    clients = "; ".join(
        f"boto3.client({s!r}, region_name='eu-west-1')" for s in deploy.LAMBDA_SERVICES
    )
    code = (
        "import handlers, releng, releng.publish, boto3, botocore; "
        f"{clients}; "
        "print(releng.__file__); print(boto3.__file__); print(boto3.__version__); "
        "print(sorted(handlers._CATALOG.distros))"
    )
    env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": "us-east-1", "RELENG_STACK": "t",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}  # fmt: skip
    # the standard library only: no site-packages, not this checkout's src/
    paths = [p for p in sys.path[1:] if p and "-packages" not in p and not p.startswith(str(ROOT))]
    proc = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path[1:] = {paths!r}; {code}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    releng_file, boto3_file, version, distros = proc.stdout.splitlines()
    assert releng_file.startswith(str(tmp_path))
    assert boto3_file.startswith(str(tmp_path))
    assert version == boto3.__version__
    assert "debian-12-bookworm" in distros


@pytest.mark.aws
def test_deploy_uploads_to_its_region_and_passes_exactly_the_template_parameters(moto_server):
    """deploy()'s first half against moto in a region other than us-east-1: the artifacts
    bucket needs a LocationConstraint there; the template goes by URL (moto's CloudFormation
    reads it from the bucket, as AWS does); the parameters are exactly the template's (an
    unknown one is refused by CloudFormation, a missing one without default too). moto's
    CloudFormation cannot create the stack itself (no CloudFront distribution, function or
    bucket policy resources): docs/aws.md lists what that leaves untested."""
    import boto3

    from releng.aws import deploy
    from releng.aws.catalog import Catalog
    from releng.project import Project

    region = "eu-west-1"

    def client(service):
        return boto3.client(service, endpoint_url=moto_server.endpoint_url, region_name=region)

    ssm = client("ssm")
    ssm.put_parameter(Name="/releng/test/ami", Value="ami-12c6146b", Type="String")
    ssm.put_parameter(Name="/releng/test/arm64-ami", Value="ami-0a64b6b0e1d3c5f27", Type="String")
    project = Project.load(ROOT)
    name = f"deploy-{uuid.uuid4().hex[:8]}"
    params = {**deploy.parameters_from(project.config, repository_url="https://example.com/p.git"),
              "ImageId": "/releng/test/ami", "Arm64ImageId": "/releng/test/arm64-ami"}  # fmt: skip
    uploaded = deploy.upload_artifacts(
        client, ROOT, name, catalog=Catalog.from_project(project), parameters=params, vendor=False
    )
    s3 = client("s3")
    assert s3.get_bucket_location(Bucket=uploaded.bucket)["LocationConstraint"] == region
    assert uploaded.bucket.endswith(
        f"-{region}"
    )  # the same stack name in another region: another bucket
    assert uploaded.template_url.startswith(f"https://{uploaded.bucket}.s3.{region}.amazonaws.com/")
    key = uploaded.template_url.split(".amazonaws.com/", 1)[1]
    body = s3.get_object(Bucket=uploaded.bucket, Key=key)["Body"].read()
    assert body == (ROOT / template.TEMPLATE_FILE).read_bytes()
    assert s3.head_object(Bucket=uploaded.bucket, Key=uploaded.parameters["CodeKey"])
    assert uploaded.parameters["ImageId"] == "ami-12c6146b"
    assert uploaded.parameters["Arm64ImageId"] == "ami-0a64b6b0e1d3c5f27"  # the Graviton builders'
    ec2 = client("ec2")
    for param, kind in deploy.SUBNET_PARAMS.items():  # each type's group: zones that offer it
        chosen = ec2.describe_subnets(SubnetIds=uploaded.parameters[param].split(","))["Subnets"]
        offered = {o["Location"] for o in ec2.describe_instance_type_offerings(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": [params[kind]]}])["InstanceTypeOfferings"]}  # fmt: skip
        assert chosen and {s["AvailabilityZone"] for s in chosen} <= offered, param
    declared = _load()["Parameters"]
    assert set(uploaded.parameters) <= set(declared)
    assert {k for k, v in declared.items() if "Default" not in v} <= set(uploaded.parameters)
    # CloudFormation reads it from that URL (moto's validation parses it; AWS checks more)
    client("cloudformation").validate_template(TemplateURL=uploaded.template_url)
    # a second deploy reuses the bucket
    again = deploy.upload_artifacts(
        client, ROOT, name, catalog=Catalog.from_project(project), parameters=params, vendor=False
    )
    assert again.bucket == uploaded.bucket


def test_product_toml_must_name_the_stacks_buckets(make_project):
    """The workers' invoke commands read [publish] from the checkout they clone: deploy-aws
    prints the lines, and build-on-aws refuses to start while they differ."""
    from releng.aws import deploy
    from releng.errors import AwsError

    stack = deploy.Stack(
        name="releng", state_machine_arn="arn:sm", scratch_bucket="releng-scratchbucket-1a",
        downloads_bucket="releng-downloadsbucket-2b", distribution_id="E123",
        distribution_domain="d111.cloudfront.net", downloads_prefix="apt",
    )  # fmt: skip
    project = make_project('[publish]\nbucket = "old"\nscratch_bucket = "older"\n')
    with pytest.raises(AwsError, match="releng-scratchbucket-1a"):
        deploy.check_product_toml(project, stack)
    # The buckets right but no public_url: the keyring package would name a worker's disk.
    buckets = '[publish]\nbucket = "releng-downloadsbucket-2b"\n'
    buckets += 'scratch_bucket = "releng-scratchbucket-1a"\nprefix = "apt"\n'
    with pytest.raises(AwsError, match=r"public_url is not set.*'https://d111.cloudfront.net/apt'"):
        deploy.check_product_toml(make_project(buckets, name="no-url"), stack)
    lines = "\n".join(deploy.product_toml_lines(stack))
    fixed = make_project(lines + "\n", name="fixed")
    deploy.check_product_toml(fixed, stack)
    assert fixed.config.publish.cloudfront_distribution == "E123"
    assert fixed.config.publish.public_url == "https://d111.cloudfront.net/apt"
    # The domain is read back from the stack's outputs (the template's DistributionDomain).
    queues = {S.queue_key(q): "url" for q in (*S.WORKER_QUEUES, *S.QUEUE_HANDLERS)}
    back = deploy.Stack.from_outputs("releng", {**stack.outputs(), **queues})
    assert back.public_url == stack.public_url


def test_stack_parameters_carry_the_arm64_builders_settings() -> None:
    """[aws] arm64_instance_type and arm64_ami reach the Graviton launch template's
    parameters; an AMI that is neither an id nor an SSM name is one line naming the key."""
    import dataclasses

    from releng.aws import deploy
    from releng.errors import AwsError
    from releng.project import Project

    config = Project.load(ROOT).config
    params = deploy.parameters_from(config, repository_url="https://example.com/p.git")
    assert params["Arm64BuilderInstanceType"] == "c7g.4xlarge"
    assert params["Arm64ImageId"] == "/aws/service/debian/release/12/latest/arm64"
    aws = dataclasses.replace(config.aws, arm64_instance_type="m7g.large", arm64_ami="debian")
    with pytest.raises(AwsError, match=r"\[aws\] arm64_ami = 'debian' is neither an AMI id"):
        deploy.parameters_from(
            dataclasses.replace(config, aws=aws), repository_url="https://example.com/p.git"
        )
    aws = dataclasses.replace(aws, arm64_ami="ami-0a64b6b0e1d3c5f27")
    params = deploy.parameters_from(
        dataclasses.replace(config, aws=aws), repository_url="https://example.com/p.git"
    )
    assert (params["Arm64BuilderInstanceType"], params["Arm64ImageId"]) == (
        "m7g.large",
        "ami-0a64b6b0e1d3c5f27",
    )


def test_a_cache_bucket_other_than_scratch_is_granted_to_the_builders_alone(make_project):
    """[build] compiler_cache = "s3" in another bucket: deploy-aws passes its bucket and
    prefix, and only the builder role holds the (conditional) statements; in the scratch
    bucket, nothing more is passed (the builders use scratch already)."""
    from releng.aws import deploy

    publish = '[publish]\nscratch_bucket = "scratch"\n'
    cache = '[build]\ncompiler_cache = "s3"\ncache_url = "s3://ccache-shared/releng/cc"\n'
    other = make_project(publish + cache)
    params = deploy.parameters_from(other.config, repository_url="https://example.com/p.git")
    assert (params["CompilerCacheBucket"], params["CompilerCachePrefix"]) == (
        "ccache-shared",
        "releng/cc",
    )
    in_scratch = make_project(
        publish + '[build]\ncompiler_cache = "s3"\ncache_url = "s3://scratch/cc"\n', name="s"
    )
    params = deploy.parameters_from(in_scratch.config, repository_url="https://example.com/p.git")
    assert "CompilerCacheBucket" not in params
    res = _load()["Resources"]
    holders = [q for q in S.WORKER_QUEUES if "CompilerCacheBucket" in _statements(res[template.worker_role_id(q)])]  # fmt: skip
    assert holders == ["build", "build_arm64"]


def test_downloads_are_private_and_served_through_cloudfront_origin_access_control() -> None:
    """A deploy must work with the account's Block Public Access on: the downloads bucket
    blocks all public access, CloudFront reads it with OAC (checkov CKV_AWS_54/56), and only
    this distribution may read, only the published trees. Packages outlive the stack."""
    res = _load()["Resources"]
    bucket = res["DownloadsBucket"]
    assert all(bucket["Properties"]["PublicAccessBlockConfiguration"].values())
    assert bucket["DeletionPolicy"] == "Retain"
    (statement,) = res["DownloadsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert statement["Action"] == "s3:GetObject"
    source = statement["Condition"]["StringEquals"]["AWS:SourceArn"]
    assert "distribution/${Distribution}" in source["Fn::Sub"]
    assert not any(".releng" in json.dumps(r) for r in statement["Resource"])
    (origin,) = res["Distribution"]["Properties"]["DistributionConfig"]["Origins"]
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["DownloadsOriginAccessControl", "Id"]}
    oac = res["DownloadsOriginAccessControl"]["Properties"]["OriginAccessControlConfig"]
    assert (oac["OriginAccessControlOriginType"], oac["SigningBehavior"]) == ("s3", "always")


def test_the_nightly_schedule_is_created_off() -> None:
    """Live at once, the first nightly would run before product.toml names the stack's
    buckets (AccessDenied): deploy-aws enables it (test_aws_deploy)."""
    resources = _load()["Resources"]
    rule = resources["NightlyRule"]["Properties"]
    assert rule["State"] == "DISABLED"
    assert _load()["Outputs"]["NightlyRule"] == {"Value": {"Ref": "NightlyRule"}}


def test_throttled_handlers_wait_in_their_queue_and_timed_out_handler_states_retry() -> None:
    res = _load()["Resources"]
    machine = json.loads(res["StateMachine"]["Properties"]["DefinitionString"])
    for handler in S.QUEUE_HANDLERS:
        camel = "".join(p.capitalize() for p in handler.split("_"))
        props = res[f"{camel}FunctionEvents"]["Properties"]
        assert 2 <= props["ScalingConfig"]["MaximumConcurrency"] <= 1000, handler
    retried = [
        s for s in machine["States"].values()
        if s.get("Type") == "Task" and "handler" in s["Parameters"].get("MessageBody", {})
    ]  # fmt: skip
    assert retried
    for state in retried:
        assert any("States.Timeout" in r["ErrorEquals"] for r in state["Retry"]), state


def test_workers_are_started_by_their_queues_group_only() -> None:
    """No runtime role holds iam:PassRole or ec2:RunInstances (parliament's HIGH privilege
    escalation): each queue's Auto Scaling group starts its workers from the stack's launch
    template at the version the stack last wrote, in the subnets deploy-aws chose for its
    instance type, and the launch function may only raise the groups' desired capacity."""
    res = _load()["Resources"]
    for name, resource in res.items():
        if resource["Type"] == "AWS::IAM::Role":
            text = _statements(resource)
            assert "iam:PassRole" not in text and "ec2:RunInstances" not in text, name
    launcher = _statements(res["LaunchWorkersFunctionRole"])
    for queue, kind in S.WORKER_KINDS.items():
        camel = "".join(p.capitalize() for p in queue.split("_"))
        group = res[f"{camel}WorkerGroup"]["Properties"]
        assert group["LaunchTemplate"] == {
            "LaunchTemplateId": {"Ref": f"{camel}LaunchTemplate"},
            "Version": {"Fn::GetAtt": [f"{camel}LaunchTemplate", "LatestVersionNumber"]},
        }
        assert group["MinSize"] == "0" and "DesiredCapacity" not in group  # an update keeps it
        assert group["MaxSize"] == {"Ref": template.max_workers_param(queue)}
        assert group["VPCZoneIdentifier"] == {"Ref": template.subnet_param(kind.instance_param)}
        assert (
            f"autoScalingGroupName/${{AWS::StackName}}-{queue.replace('_', '-')}-workers"
            in launcher
        )
        assert "autoscaling:TerminateInstanceInAutoScalingGroup" in _statements(
            res[template.worker_role_id(queue)]
        )


def test_parliament_finds_nothing_high_or_medium_in_any_role() -> None:
    """The oracle `nox -s lint` runs (releng.aws.oracles), on every role, nothing accepted."""
    from releng.aws import oracles

    assert oracles.parliament(ROOT) == []
    policies = oracles.role_policies(_load())
    assert set(policies) >= {f"{template.worker_role_id(q)}/releng" for q in S.WORKER_QUEUES}
    assert not hasattr(oracles, "PARLIAMENT_ACCEPTED")


def test_a_missing_oracle_fails_instead_of_skipping(tmp_path) -> None:
    from releng.aws import oracles

    (problem,) = oracles.asl_validator(tmp_path)
    assert "asl-validator is not installed: run scripts/node-tools" in problem


def test_the_health_check_runs_in_the_launch_queue_one_owner_of_the_pools() -> None:
    """launch_workers and a health check running side by side could both see a free slot and
    start two workers for one task: the schedule puts a message on launch_workers' FIFO queue,
    in its one message group, instead of invoking a function of its own."""
    res = _load()["Resources"]
    assert "HealthCheckFunction" not in res
    (target,) = res["HealthCheckSchedule"]["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["LaunchWorkersQueue", "Arn"]}
    assert target["SqsParameters"]["MessageGroupId"] == S.MESSAGE_GROUPS["launch_workers"]
    assert res["LaunchWorkersQueue"]["Properties"]["FifoQueue"] is True
    body = target["InputTransformer"]["InputTemplate"].replace("<time>", '"2026-12-06T02:00:00Z"')
    assert json.loads(body)["handler"] == "health_check"
    (allow,) = res["HealthCheckQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}


def test_a_failed_or_timed_out_execution_sends_one_message_with_the_summary_and_logs(
    make_project,
) -> None:
    """An SNS topic gets one message per failed, timed-out or aborted execution of this stack's
    state machine: the cause (CheckForFailures' summary, the first failures with their logs),
    the show-aws-status command and the failure list's place; [aws] notify_email subscribes."""
    from releng.aws import deploy
    from releng.errors import AwsError

    res = _load()["Resources"]
    pattern = res["FailureRule"]["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.states"]
    assert sorted(pattern["detail"]["status"]) == ["ABORTED", "FAILED", "TIMED_OUT"]
    assert pattern["detail"]["stateMachineArn"] == [{"Ref": "StateMachine"}]
    (target,) = res["FailureRule"]["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": "FailureTopic"}
    text, _ = target["InputTransformer"]["InputTemplate"]["Fn::Sub"]
    for part in (
        "<cause>",
        "invoke show-aws-status --execution <name>",
        "/logs/<name>/failures.json",
    ):
        assert part in text
    assert res["FailureEmail"]["Condition"] == "HasNotifyEmail"
    assert res["FailureEmail"]["Properties"]["Endpoint"] == {"Ref": "NotifyEmail"}
    repo = '[aws]\nrepository_url = "https://example.com/p.git"\n'
    mailed = make_project(repo + 'notify_email = "release@example.com"\n')
    assert deploy.parameters(mailed)["NotifyEmail"] == "release@example.com"
    assert deploy.parameters(make_project(repo, name="quiet"))["NotifyEmail"] == ""
    with pytest.raises(AwsError, match=r"\[aws\] notify_email = 'release' is not an email"):
        deploy.parameters(make_project(repo + 'notify_email = "release"\n', name="bad"))


def _condition(node, values: dict) -> bool:
    """A template condition (Fn::Not, Fn::Equals, Fn::Join over Refs) for these parameters."""
    from releng.aws.oracles import resolve

    ((fn, args),) = node.items()
    if fn == "Fn::Not":
        return not _condition(args[0], values)
    assert fn == "Fn::Equals", fn
    left, right = (resolve(a, values, {}) for a in args)
    return bool(left == right)


def test_the_signing_roles_are_granted_exactly_the_configured_keys_parameters(make_project):
    """[signing] key lists two fingerprints (a rotation's overlap): deploy-aws passes one SSM
    parameter per key, and the tarball and publish roles may read exactly those (and the
    passphrase); the builders none. More keys than the stack reads, or a name that is not a
    fingerprint, is one line."""
    from releng.aws import deploy
    from releng.aws.oracles import _values, resolve
    from releng.errors import AwsError

    old, new = "A" * 40, "0123456789ABCDEF0123456789ABCDEF01234567"
    project = make_project(f'[signing]\nkey = ["{old}", "{new}"]\n')
    params = deploy.parameters_from(project.config, repository_url="https://example.com/p.git")
    tmpl = _load()
    values = {**_values(tmpl), **params}
    for name, param in tmpl["Parameters"].items():
        values.setdefault(name, param.get("Default", ""))
    conditions = {c: _condition(node, values) for c, node in tmpl["Conditions"].items()}
    prefix = "arn:aws:ssm:us-east-1:123456789012:parameter"
    for queue, kind in S.WORKER_KINDS.items():
        role = tmpl["Resources"][template.worker_role_id(queue)]
        document = resolve(role["Properties"]["Policies"][0]["PolicyDocument"], values, conditions)
        arns = {
            arn
            for st in document["Statement"]
            if "ssm:GetParameter" in st["Action"]
            for arn in ([st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"])
            if arn.startswith(f"{prefix}/releng/signing-key")
        }
        wanted = {f"{prefix}/releng/signing-key/{old}", f"{prefix}/releng/signing-key/{new}"}
        assert arns == (wanted if "signing-key" in kind.permissions else set()), queue
    one = make_project(f'[signing]\nkey = "{new}"\n', name="one")
    params = deploy.parameters_from(one.config, repository_url="https://example.com/p.git")
    assert (params["SigningKeyParameter"], params["SigningKey2Parameter"]) == (
        f"/releng/signing-key/{new}",
        "",
    )
    four = make_project(
        f'[signing]\nkey = ["{old}", "{new}", "{"B" * 40}", "{"C" * 40}"]\n', name="four"
    )
    with pytest.raises(AwsError, match=r"lists 4 keys; the stack reads at most 3 .*--retire"):
        deploy.parameters_from(four.config, repository_url="https://example.com/p.git")
    email = make_project('[signing]\nkey = "releng@example.com"\n', name="email")
    with pytest.raises(AwsError, match=r"'releng@example.com' is not a fingerprint"):
        deploy.parameters_from(email.config, repository_url="https://example.com/p.git")
