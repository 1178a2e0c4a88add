"""Deploying the stack, and finding it again.

* :func:`deploy` (``invoke deploy-aws``): package the Lambda code (handlers,
  the few releng modules they import, a catalog.json of the distros, and the
  boto3/botocore this checkout was tested with) into an artifacts bucket made
  in the stack's region, upload ``aws/template.yaml`` beside it (larger than
  the 51,200 bytes CloudFormation takes inline) and create or update the stack
  from its URL, then push the code to every function.
* :func:`deploy_dev` (``invoke deploy-aws --dev``): the same queues, buckets and
  state machine made by direct API calls, for an endpoint without
  CloudFormation's full resource set (moto on this machine). The state machine
  is ``aws/state-machine.json`` rendered with :func:`releng.aws.statemachine.render`,
  the rule CloudFormation's DefinitionSubstitutions applies. Its description is
  recorded as the outputs of a small CloudFormation stack of the same name, so
  :func:`load_stack` finds both kinds the same way.

Tearing the stack down (``invoke destroy-aws``) is :mod:`releng.aws.teardown`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from releng.aws import handlers, statemachine
from releng.aws import steps as S
from releng.aws.catalog import CATALOG_FILE, Catalog
from releng.aws.launch import subnets_offering
from releng.aws.template import SIGNING_KEY_PARAMS, max_workers_param, subnet_param
from releng.compiler_cache import separate_cache_bucket
from releng.errors import AwsError
from releng.publish.flows import public_read_policy

log = logging.getLogger(__name__)

TEMPLATE_FILE = "aws/template.yaml"
LAMBDA_ENTRY = "aws/lambda/handlers.py"
# What the Lambda code needs: the handlers and the stdlib-only modules they import.
LAMBDA_MODULES = (
    "releng/__init__.py",
    "releng/errors.py",
    "releng/deb822.py",
    "releng/version.py",
    "releng/aws_clients.py",
    "releng/aws/__init__.py",
    "releng/aws/steps.py",
    "releng/aws/commands.py",
    "releng/aws/catalog.py",
    "releng/aws/request.py",
    "releng/aws/handlers.py",
    "releng/aws/launch.py",
    "releng/aws/status.py",
    # update_indices / invalidate_cloudfront use releng.publish (stdlib + boto3 only).
    "releng/publish/__init__.py",
    "releng/publish/flows.py",
    "releng/publish/sync.py",
    "releng/publish/s3.py",
    "releng/publish/layout.py",
    "releng/publish/manifest.py",
    "releng/publish/plan.py",
    "releng/publish/pull.py",
    "releng/publish/scratch.py",
    "releng/digest.py",
    "releng/textcheck.py",
    "releng/publish/lock.py",
    "releng/publish/cloudfront.py",
    "releng/publish/index_pages.py",
)


@dataclass(frozen=True, kw_only=True)
class Stack:
    """What a deployed stack provides; stored as its CloudFormation outputs."""

    name: str
    state_machine_arn: str
    scratch_bucket: str
    downloads_bucket: str
    downloads_prefix: str = ""
    distribution_id: str = ""
    distribution_domain: str = ""  # CloudFront's (none: a dev stack)
    nightly_rule: str = ""  # the EventBridge rule that starts the nightly (none: a dev stack)
    queue_urls: dict[str, str] = field(default_factory=dict)  # substitution key -> URL

    def worker_queue_urls(self) -> dict[str, str]:
        return {q: self.queue_urls[S.queue_key(q)] for q in S.WORKER_QUEUES}

    def handler_queue_urls(self) -> dict[str, str]:
        return {h: self.queue_urls[S.queue_key(h)] for h in S.QUEUE_HANDLERS}

    @property
    def public_url(self) -> str:
        """Where clients reach the repository through CloudFront ("" without a distribution)."""
        if not self.distribution_domain:
            return ""
        prefix = self.downloads_prefix.strip("/")
        return f"https://{self.distribution_domain}" + (f"/{prefix}" if prefix else "")

    def handler_settings(self) -> dict[str, str]:
        return {
            handlers.SCRATCH_BUCKET: self.scratch_bucket,
            handlers.DOWNLOADS_BUCKET: self.downloads_bucket,
            handlers.DOWNLOADS_PREFIX: self.downloads_prefix,
            handlers.DISTRIBUTION_ID: self.distribution_id,
            handlers.QUEUE_URLS: json.dumps(self.worker_queue_urls()),
        }

    def outputs(self) -> dict[str, str]:
        data = asdict(self)
        data.pop("name")
        queues = data.pop("queue_urls")
        return {_camel(k): str(v) for k, v in data.items()} | dict(queues)

    @classmethod
    def from_outputs(cls, name: str, outputs: dict[str, str]) -> Stack:
        keys = {S.queue_key(q) for q in (*S.WORKER_QUEUES, *S.QUEUE_HANDLERS)}
        missing = sorted(
            k
            for k in ({"StateMachineArn", "ScratchBucket", "DownloadsBucket"} | keys)
            if k not in outputs
        )
        if missing:
            raise AwsError(
                f"stack {name} lacks outputs {', '.join(missing)}; it predates this releng: run `invoke deploy-aws`"
            )
        return cls(
            name=name,
            state_machine_arn=outputs["StateMachineArn"],
            scratch_bucket=outputs["ScratchBucket"],
            downloads_bucket=outputs["DownloadsBucket"],
            downloads_prefix=outputs.get("DownloadsPrefix", ""),
            distribution_id=outputs.get("DistributionId", ""),
            distribution_domain=outputs.get("DistributionDomain", ""),
            nightly_rule=outputs.get("NightlyRule", ""),
            queue_urls={k: outputs[k] for k in keys},
        )


def _camel(snake: str) -> str:
    return "".join(p.capitalize() for p in snake.split("_")).replace("Arn", "Arn")


def load_stack(cfn: Any, name: str) -> Stack:
    """The stack's outputs, or an AwsError saying to deploy it."""
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            raise AwsError(
                f"stack {name!r} does not exist; create it with `invoke deploy-aws`"
            ) from None
        raise AwsError(f"cannot read stack {name!r}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    return Stack.from_outputs(name, outputs)


def _queue(sqs: Any, name: str, *, fifo: bool = False, visibility: int = 120) -> str:
    suffix = ".fifo" if fifo else ""
    fifo_attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "true"} if fifo else {}
    dlq = sqs.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=fifo_attrs)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    attrs = {
        **fifo_attrs,
        "VisibilityTimeout": str(visibility),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
    }
    return str(sqs.create_queue(QueueName=f"{name}{suffix}", Attributes=attrs)["QueueUrl"])


def _read_definition(root: Path) -> str:
    path = root / statemachine.DEFINITION_FILE
    if not path.is_file():
        raise AwsError(f"{path} is missing; run from a releng checkout or `invoke generate-aws`")
    return path.read_text(encoding="utf-8")


def deploy_dev(client: Any, root: Path, name: str, *, role_arn: str = "") -> Stack:
    """Create the stack's queues, buckets and state machine directly (see the module docstring)."""
    sqs, s3, sfn, cfn = (client(s) for s in ("sqs", "s3", "stepfunctions", "cloudformation"))
    scratch, downloads = f"{name}-scratch", f"{name}-downloads"
    for bucket in (scratch, downloads):
        create_bucket(s3, bucket)
    # As the template's DownloadsBucketPolicy: anonymous reads of the published trees only.
    s3.put_bucket_policy(Bucket=downloads, Policy=json.dumps(public_read_policy(downloads)))
    urls = {
        S.queue_key(q): _queue(sqs, f"{name}-{q}", fifo=q in S.MESSAGE_GROUPS)
        for q in S.WORKER_QUEUES
    }
    urls |= {
        S.queue_key(h): _queue(
            sqs,
            f"{name}-fn-{h.replace('_', '-')}",
            fifo=h in S.MESSAGE_GROUPS,
            visibility=S.handler_visibility(h),
        )
        for h in S.QUEUE_HANDLERS
    }
    text = statemachine.render(_read_definition(root), urls)
    role = role_arn or "arn:aws:iam::123456789012:role/releng-state-machine"
    # Replaced rather than updated: moto 5.2 deep-copies a state machine with its past
    # executions on StartExecution and fails once one has run ("cannot pickle RLock"), so a
    # dev stack gets a fresh state machine per deploy. Buckets and queues are kept.
    for machine in sfn.list_state_machines()["stateMachines"]:
        if machine["name"] == name:
            sfn.delete_state_machine(stateMachineArn=machine["stateMachineArn"])
    arn = sfn.create_state_machine(name=name, definition=text, roleArn=role)["stateMachineArn"]
    stack = Stack(
        name=name,
        state_machine_arn=arn,
        scratch_bucket=scratch,
        downloads_bucket=downloads,
        queue_urls=urls,
    )
    template = {
        "Resources": {
            "Marker": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {
                    "Name": f"/releng/{name}/dev-stack",
                    "Type": "String",
                    "Value": name,
                },
            }
        },
        "Outputs": {k: {"Value": v} for k, v in stack.outputs().items()},
    }
    try:
        cfn.describe_stacks(StackName=name)
        cfn.delete_stack(StackName=name)
    except Exception:  # noqa: S110  (no previous record of this dev stack)
        pass
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(template))
    log.info("dev stack %s: state machine %s", name, arn)
    return stack


def create_bucket(s3: Any, bucket: str) -> None:
    """Create ``bucket`` in the client's region (us-east-1 takes no LocationConstraint, every
    other region requires one)."""
    region = s3.meta.region_name or "us-east-1"
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})


# The AWS SDK the handlers were tested with, bundled rather than taken from the Lambda
# runtime (whose boto3 lags and changes under the functions). botocore's service models are
# kept only for the services the handlers call (and their endpoints), which makes the zip
# about a tenth of the size.
VENDORED_DISTRIBUTIONS = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "six",
    "urllib3",
)
LAMBDA_SERVICES = ("s3", "sqs", "autoscaling", "stepfunctions", "cloudfront", "sts")


def _vendored_files() -> list[tuple[Path, str]]:
    files: list[tuple[Path, str]] = []
    for name in VENDORED_DISTRIBUTIONS:
        dist = importlib.metadata.distribution(name)
        for entry in dist.files or []:
            rel = entry.as_posix()
            if rel.startswith("..") or "__pycache__" in rel or ".dist-info/" in rel:
                continue
            parts = rel.split("/")
            other_service = len(parts) > 3 and parts[2] not in LAMBDA_SERVICES
            if parts[:2] == ["botocore", "data"] and other_service:
                continue
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                files.append((path, rel))
    return files


def lambda_zip(root: Path, catalog: Catalog, *, vendor: bool = True) -> bytes:
    """The Lambda code: the thin entry point, the releng modules it needs, catalog.json and
    (``vendor``) the installed boto3 and botocore with their dependencies."""
    entries: dict[str, bytes] = {"handlers.py": (root / LAMBDA_ENTRY).read_bytes()}
    for module in LAMBDA_MODULES:
        path = root / "src" / module
        if path.exists():
            entries[module] = path.read_bytes()
    entries[CATALOG_FILE] = catalog.to_json().encode()
    if vendor:
        entries |= {rel: path.read_bytes() for path, rel in _vendored_files()}
    # Same inputs, same bytes: no file times (a fresh clone's are its clone time), no modes,
    # a fixed order. CodeKey is the zip's hash, so an unchanged zip updates no function.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, entries[name])
    return buf.getvalue()


DEBIAN_AMI_PARAMETER = "/aws/service/debian/release/12/latest/amd64"
DEBIAN_ARM64_AMI_PARAMETER = "/aws/service/debian/release/12/latest/arm64"
# The stack parameter of each worker kind's AMI, and where it comes from by default.
# Each instance type's subnets parameter -> the parameter naming the type.
SUBNET_PARAMS = {subnet_param(k.instance_param): k.instance_param for k in S.WORKER_KINDS.values()}
AMI_DEFAULTS = {"ImageId": DEBIAN_AMI_PARAMETER, "Arm64ImageId": DEBIAN_ARM64_AMI_PARAMETER}
_AMI_SETTING = {"ImageId": "ami", "Arm64ImageId": "arm64_ami"}


def resolve_ami(ssm: Any, ami: str, *, key: str = "ami") -> str:
    """An AMI id as given, or the one the SSM parameter ``ami`` holds now (``key``: the
    [aws] setting it came from)."""
    if not ami.startswith("/"):
        return ami
    from botocore.exceptions import ClientError

    try:
        return str(ssm.get_parameter(Name=ami)["Parameter"]["Value"])
    except ClientError as exc:
        raise AwsError(
            f"cannot read the AMI parameter {ami} in {ssm.meta.region_name}: {exc}; set "
            f"[aws] {key} to an AMI id or to an SSM parameter that exists in this region"
        ) from None


def template_url(s3: Any, bucket: str, key: str) -> str:
    """The S3 URL CloudFormation reads the template from (the bucket is in the stack's region)."""
    return f"https://{bucket}.s3.{s3.meta.region_name}.amazonaws.com/{key}"


# Longest function name suffix (releng.aws.steps.HANDLERS): Lambda names take 64 characters.
_LONGEST_FUNCTION = max(len(h) for h in S.HANDLERS) + 1
# A full SSM parameter name: the roles' ARNs are ``parameter`` + the name, so the leading
# slash is required (a name without one would give ``parameterNAME`` and AccessDenied at boot).
SSM_NAME = re.compile(r"(/[A-Za-z0-9_.-]+)+")
_STACK_NAME = re.compile(r"[a-z][a-z0-9-]*[a-z0-9]")


def artifacts_bucket(name: str, account: str, region: str) -> str:
    """Where deploy-aws puts the Lambda zip and the template: one per stack, account and
    region (Lambda takes code only from a bucket in its own region)."""
    return f"{name}-artifacts-{account}-{region}"


def check_stack_name(name: str, region: str) -> None:
    """An AwsError unless ``name`` can name the stack, its functions and its artifacts bucket."""
    longest = min(64 - _LONGEST_FUNCTION, 63 - len(artifacts_bucket("", "0" * 12, region)))
    if not _STACK_NAME.fullmatch(name) or "--" in name or len(name) > longest:
        raise AwsError(
            f"stack name {name!r} cannot name the stack's buckets and functions: use lower-case "
            f"letters, digits and single hyphens, starting with a letter, at most {longest} "
            "characters ([aws] stack_name or --stack)"
        )


@dataclass(frozen=True, kw_only=True)
class Artifacts:
    """What deploy() uploaded: where CloudFormation reads the template, and the parameters."""

    bucket: str
    template_url: str
    parameters: dict[str, str]


def upload_artifacts(
    client: Any,
    root: Path,
    name: str,
    *,
    catalog: Catalog,
    parameters: dict[str, str],
    vendor: bool = True,
) -> Artifacts:
    """The artifacts bucket (made in the client's region, private), the Lambda zip and the
    template in it, and the stack's parameters with the AMIs resolved, each instance type's
    subnets chosen (in zones that offer it) and the code's place."""
    from botocore.exceptions import ClientError

    s3, sts, ssm = (client(s) for s in ("s3", "sts", "ssm"))
    region = s3.meta.region_name or "us-east-1"
    check_stack_name(name, region)
    account = sts.get_caller_identity()["Account"]
    artifacts = artifacts_bucket(name, account, region)
    try:
        s3.head_bucket(Bucket=artifacts)
    except ClientError:
        create_bucket(s3, artifacts)
        s3.put_public_access_block(
            Bucket=artifacts,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
    code = lambda_zip(root, catalog, vendor=vendor)
    key = f"lambda/{hashlib.sha256(code).hexdigest()}.zip"
    s3.put_object(Bucket=artifacts, Key=key, Body=code)
    body = (root / TEMPLATE_FILE).read_bytes()
    template_key = f"templates/{hashlib.sha256(body).hexdigest()}.yaml"
    s3.put_object(Bucket=artifacts, Key=template_key, Body=body)
    amis = {
        param: resolve_ami(ssm, parameters.get(param) or default, key=_AMI_SETTING[param])
        for param, default in AMI_DEFAULTS.items()
    }
    ec2 = client("ec2")
    subnets = {
        param: ",".join(
            subnets_offering(
                ec2, [s for s in parameters.get(param, "").split(",") if s], parameters[kind]
            )
        )
        for param, kind in SUBNET_PARAMS.items()
    }
    return Artifacts(
        bucket=artifacts,
        template_url=template_url(s3, artifacts, template_key),
        parameters={**parameters, **amis, **subnets, "CodeBucket": artifacts, "CodeKey": key},
    )


# Stack states deploy() cannot go on from, with what to do instead.
_BUSY = "_IN_PROGRESS"


def stack_status(cfn: Any, name: str) -> str:
    """The stack's StackStatus, or "" when there is no such stack."""
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return ""
        raise AwsError(f"cannot read stack {name!r}: {exc}") from None
    return str(stacks[0].get("StackStatus", "")) if stacks else ""


def _events_hint(name: str) -> str:
    return f"aws cloudformation describe-stack-events --stack-name {name}"


def wait_for_stack(cfn: Any, waiter: str, name: str) -> None:
    from botocore.exceptions import WaiterError

    try:
        cfn.get_waiter(waiter).wait(StackName=name, WaiterConfig={"Delay": 5, "MaxAttempts": 720})
    except WaiterError as exc:
        raise AwsError(
            f"stack {name} did not deploy ({exc}); its events say why: {_events_hint(name)}"
        ) from None


def _continue_rollback(cfn: Any, name: str) -> None:
    """A stack whose update failed and whose rollback failed too (a resource changed or
    deleted by hand) cannot be updated: continue the rollback, then say so in one line."""
    from botocore.exceptions import WaiterError

    log.info("stack %s is UPDATE_ROLLBACK_FAILED: continuing its rollback", name)
    cfn.continue_update_rollback(StackName=name)
    try:
        cfn.get_waiter("stack_rollback_complete").wait(
            StackName=name, WaiterConfig={"Delay": 5, "MaxAttempts": 720}
        )
    except WaiterError:
        raise AwsError(
            f"stack {name} could not finish rolling back its failed update ({_events_hint(name)} "
            "says which resource); fix that resource, or skip it with `aws cloudformation "
            f"continue-update-rollback --stack-name {name} --resources-to-skip LOGICAL_ID`, "
            "then run `invoke deploy-aws` again"
        ) from None
    log.warning(
        "stack %s was UPDATE_ROLLBACK_FAILED: its failed update is rolled back now "
        "(continue-update-rollback); applying this deploy",
        name,
    )


def apply(
    cfn: Any,
    name: str,
    *,
    template_url: str,
    parameters: dict[str, str],
    replace_failed: bool = False,
) -> str:
    """Create or update the stack from ``template_url``; "created", "updated" or "unchanged".

    A stack whose first create failed (ROLLBACK_COMPLETE) cannot be updated: one line says
    so, or with ``replace_failed`` it is deleted and created again. A stack left in
    UPDATE_ROLLBACK_FAILED is rolled back first (continue-update-rollback)."""
    from botocore.exceptions import ClientError

    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]
    args = {"StackName": name, "TemplateURL": template_url, "Parameters": params,
            "Capabilities": ["CAPABILITY_IAM"]}  # fmt: skip
    status = stack_status(cfn, name)
    if status.endswith(_BUSY) and status != "REVIEW_IN_PROGRESS":
        raise AwsError(f"stack {name} is {status}; wait for it to finish, then deploy again")
    if status == "ROLLBACK_COMPLETE":
        if not replace_failed:
            raise AwsError(
                f"stack {name} is ROLLBACK_COMPLETE: its first create failed ({_events_hint(name)} "
                "says why) and it cannot be updated; fix the cause, then delete and create it "
                "with `invoke deploy-aws --replace-failed`"
            )
        log.info("stack %s: deleting the failed create", name)
        cfn.delete_stack(StackName=name)
        wait_for_stack(cfn, "stack_delete_complete", name)
        status = ""
    if status == "UPDATE_ROLLBACK_FAILED":
        _continue_rollback(cfn, name)
    if status in ("", "REVIEW_IN_PROGRESS"):
        cfn.create_stack(**args)
        wait_for_stack(cfn, "stack_create_complete", name)
        return "created"
    try:
        cfn.update_stack(**args)
    except ClientError as exc:
        if "No updates are to be performed" in str(exc):
            return "unchanged"
        raise AwsError(f"updating stack {name} failed: {exc}") from None
    wait_for_stack(cfn, "stack_update_complete", name)
    return "updated"


@dataclass(frozen=True, kw_only=True)
class Change:
    """One line of a change set: what CloudFormation would do to one resource."""

    action: str  # Add, Modify, Remove
    logical_id: str
    type: str
    replacement: str = ""  # True, False, Conditional (Modify only)


def preview(cfn: Any, name: str, *, template_url: str, parameters: dict[str, str]) -> list[Change]:
    """What deploying would change, from a change set that is then deleted: nothing applied."""
    import uuid

    status = stack_status(cfn, name)
    kind = "UPDATE" if status and status != "REVIEW_IN_PROGRESS" else "CREATE"
    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]
    change_set = f"releng-preview-{uuid.uuid4().hex[:12]}"
    arn = cfn.create_change_set(
        StackName=name, ChangeSetName=change_set, TemplateURL=template_url, Parameters=params,
        Capabilities=["CAPABILITY_IAM"], ChangeSetType=kind,
    )["Id"]  # fmt: skip
    try:
        desc = cfn.describe_change_set(ChangeSetName=arn, StackName=name)
        for _ in range(360):
            if desc.get("Status") not in ("CREATE_PENDING", "CREATE_IN_PROGRESS"):
                break
            import time

            time.sleep(5)
            desc = cfn.describe_change_set(ChangeSetName=arn, StackName=name)
        if desc.get("Status") == "FAILED" and "didn't contain changes" not in str(
            desc.get("StatusReason", "")
        ):
            raise AwsError(f"the change set for {name} failed: {desc.get('StatusReason', '')}")
        return [
            Change(
                action=str(c["ResourceChange"].get("Action", "")),
                logical_id=str(c["ResourceChange"].get("LogicalResourceId", "")),
                type=str(c["ResourceChange"].get("ResourceType", "")),
                replacement=str(c["ResourceChange"].get("Replacement", "")),
            )
            for c in desc.get("Changes", [])
            if "ResourceChange" in c
        ]
    finally:
        cfn.delete_change_set(ChangeSetName=arn, StackName=name)
        if kind == "CREATE":  # the change set made a REVIEW_IN_PROGRESS stack: nothing stays
            cfn.delete_stack(StackName=name)


def deploy(
    client: Any,
    root: Path,
    name: str,
    *,
    catalog: Catalog,
    parameters: dict[str, str],
    vendor: bool = True,
    replace_failed: bool = False,
) -> Stack:
    """Create or update the CloudFormation stack (its Lambda code changes with it)."""
    uploaded = upload_artifacts(
        client, root, name, catalog=catalog, parameters=parameters, vendor=vendor
    )
    cfn = client("cloudformation")
    log.info("deploying stack %s from %s", name, uploaded.template_url)
    apply(
        cfn,
        name,
        template_url=uploaded.template_url,
        parameters=uploaded.parameters,
        replace_failed=replace_failed,
    )
    # The functions' code changes with the stack: CodeKey is the zip's hash.
    return load_stack(cfn, name)


def enable_nightly(events: Any, stack: Stack) -> bool:
    """Turn the stack's nightly schedule on (created off, see releng.aws.template); False when
    the stack has none (a dev stack)."""
    if not stack.nightly_rule:
        return False
    events.enable_rule(Name=stack.nightly_rule)
    return True


SIGNING_KEY_PREFIX = "/releng/signing-key"


def signing_key_parameters(keys: tuple[str, ...]) -> dict[str, str]:
    """The SSM parameter of each signing key, ``/releng/signing-key/<FPR>``, in the template's
    slots (empty slots: ""); no key configured: the template's default, one parameter
    ``/releng/signing-key``. More keys than slots, or a key that is not a fingerprint or key
    id, is one line."""
    if not keys:
        return {}
    if len(keys) > len(SIGNING_KEY_PARAMS):
        raise AwsError(
            f"product.toml: [signing] key lists {len(keys)} keys; the stack reads at most "
            f"{len(SIGNING_KEY_PARAMS)} from SSM: retire one first (invoke rotate-keys --retire)"
        )
    for key in keys:
        if not re.fullmatch(r"(0x)?[0-9A-Fa-f]{8,40}", key):
            raise AwsError(
                f"product.toml: [signing] key {key!r} is not a fingerprint; on AWS each key is "
                f"read from the SSM parameter {SIGNING_KEY_PREFIX}/<FINGERPRINT>: write its "
                "fingerprint (gpg --list-secret-keys --with-colons, the fpr line)"
            )
    names = [f"{SIGNING_KEY_PREFIX}/{key.removeprefix('0x').upper()}" for key in keys]
    names += [""] * (len(SIGNING_KEY_PARAMS) - len(names))
    return dict(zip(SIGNING_KEY_PARAMS, names, strict=True))


def parameters(project: Any) -> dict[str, str]:
    """The stack's parameters from product.toml's [aws] section."""
    return parameters_from(project.config)


def parameters_from(config: Any, *, repository_url: str = "") -> dict[str, str]:
    """:func:`parameters` of a ProductConfig (``repository_url`` in place of an empty one)."""
    cfg = config.aws
    repository = cfg.repository_url or repository_url
    if not repository:
        raise AwsError(
            "product.toml: [aws] repository_url is empty; workers clone it, e.g. "
            "repository_url = 'https://github.com/example/packaging.git'"
        )
    unknown = sorted(set(cfg.max_workers) - set(S.WORKER_KINDS))
    if unknown:
        raise AwsError(
            f"product.toml: [aws] max_workers names unknown queues {', '.join(unknown)}; "
            f"valid: {', '.join(S.WORKER_KINDS)}"
        )
    if any(n < 1 for n in cfg.max_workers.values()):
        raise AwsError("product.toml: [aws] max_workers values must be at least 1")
    if cfg.notify_email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", cfg.notify_email):
        raise AwsError(
            f"product.toml: [aws] notify_email = {cfg.notify_email!r} is not an email address"
        )
    for key in ("git_credentials_parameter", "public_git_token_parameter"):
        given = getattr(cfg, key)
        if given and not SSM_NAME.fullmatch(given):
            raise AwsError(
                f"product.toml: [aws] {key} = {given!r} is not a full SSM parameter name; "
                f"write it with its leading slash, e.g. '/{given.strip('/')}'"
            )
    params = {
        **signing_key_parameters(config.signing.keys),
        "RepositoryUrl": repository,
        "Branch": cfg.branch,
        "BuilderInstanceType": cfg.builder_instance_type,
        "Arm64BuilderInstanceType": cfg.arm64_instance_type,
        "SmallInstanceType": cfg.small_instance_type,
        # [aws] subnets as given (empty: the default VPC's); deploy() keeps, for each instance
        # type, those in zones that offer it
        **{p: ",".join(cfg.subnets) for p in SUBNET_PARAMS},
        "SecurityGroupIds": ",".join(cfg.security_groups),
        "GitCredentialsParameter": cfg.git_credentials_parameter,
        "PublicGitTokenParameter": cfg.public_git_token_parameter,
        **{
            max_workers_param(q): str(cfg.max_workers.get(q, k.max_workers))
            for q, k in S.WORKER_KINDS.items()
        },
        "DownloadsPrefix": config.publish.prefix.strip("/"),
        "NotifyEmail": cfg.notify_email,
    }
    cache = separate_cache_bucket(config)
    if cache is not None:
        params["CompilerCacheBucket"] = cache.bucket
        params["CompilerCachePrefix"] = cache.prefix
    for param, given in (("ImageId", cfg.ami), ("Arm64ImageId", cfg.arm64_ami)):
        ami = given or AMI_DEFAULTS[param]
        if not ami.startswith(("ami-", "/")):
            raise AwsError(
                f"product.toml: [aws] {_AMI_SETTING[param]} = {given!r} is neither an AMI id "
                f"(ami-...) nor an SSM parameter name ({AMI_DEFAULTS[param]})"
            )
        params[param] = ami  # a parameter name is resolved by deploy()
    return params


def product_toml_lines(stack: Stack) -> list[str]:
    """What product.toml's [publish] must say for the workers' commands to use this stack."""
    lines = [
        "[publish]",
        f'bucket = "{stack.downloads_bucket}"',
        f'scratch_bucket = "{stack.scratch_bucket}"',
    ]
    if stack.downloads_prefix:
        lines.append(f'prefix = "{stack.downloads_prefix}"')
    if stack.distribution_id:
        lines.append(f'cloudfront_distribution = "{stack.distribution_id}"')
    if stack.public_url:
        lines.append(f'public_url = "{stack.public_url}"  # or your own domain in front of it')
    return lines


def check_product_toml(project: Any, stack: Stack) -> None:
    """An AwsError when product.toml's [publish] names other buckets than the stack's (the
    workers' commands read them from the checkout they clone), or no public_url while the
    stack has a CloudFront distribution."""
    cfg = project.config.publish
    if (cfg.bucket, cfg.scratch_bucket) != (stack.downloads_bucket, stack.scratch_bucket):
        raise AwsError(
            f"product.toml's [publish] names bucket {cfg.bucket!r} and scratch_bucket "
            f"{cfg.scratch_bucket!r}, but stack {stack.name} has {stack.downloads_bucket!r} "
            f"and {stack.scratch_bucket!r}; set them (`invoke deploy-aws` prints the lines), "
            "commit and push to the branch the workers clone"
        )
    if stack.public_url and not cfg.public_url:
        raise AwsError(
            "product.toml's [publish] public_url is not set: the keyring package's apt source "
            "and the front page would name a worker's disk, which no client reaches; set it "
            f"to {stack.public_url!r} (or your own domain in front of it; `invoke deploy-aws` "
            "prints the line), commit and push to the branch the workers clone"
        )
