"""The checks moto cannot make, run on the generated template and state machine (``nox -s lint``).

* cfn-lint (the newest; warnings fail too): what CloudFormation refuses or does differently;
* checkov on ``aws/template.yaml``, with the short skip list below, each with its reason;
* parliament on every role's policy (its community auditors too): no HIGH or MEDIUM finding;
* asl-validator (npm, pinned in :data:`ASL_VALIDATOR`, installed into the checkout by
  ``scripts/node-tools``) on ``aws/state-machine.json``.

A tool that is missing is a failure with the line that installs it, never a skip.

    python -m releng.aws.oracles [ROOT]
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TEMPLATE_FILE = "aws/template.yaml"
DEFINITION_FILE = "aws/state-machine.json"
ASL_VALIDATOR = "asl-validator@4.0.0"  # scripts/node-tools installs exactly this
NODE_TOOLS = ".tools/node"  # in the checkout (git-ignored), never global
ACCOUNT = "123456789012"
REGION = "us-east-1"

# checkov's checks that do not apply, each with its reason. Keep it short: a check leaves this
# list when the template can meet it.
CHECKOV_SKIPS = {
    # CloudFront in front of a public apt repository of signed packages:
    "CKV_AWS_34": "apt verifies every index by its signature; http stays for apt without https",
    "CKV_AWS_174": "the default *.cloudfront.net certificate: its TLS policy is CloudFront's",
    "CKV_AWS_68": "no WAF in front of a static, signed repository (the operator's choice)",
    "CKV_AWS_86": "CloudFront access logs cost money and are the operator's choice",
    # S3: scratch expires; downloads keep their own history (releng.publish state, snapshots).
    "CKV_AWS_18": "S3 access logging is the operator's choice",
    "CKV_AWS_21": "versioning: releng keeps the repository's history itself",
    # SQS and SNS: SQS-managed encryption is on by default (no KMS key to run); EventBridge
    # cannot publish to a topic under the AWS-managed SNS key, and the failure mail holds
    # execution names and S3 paths only.
    "CKV_AWS_27": "SQS-managed server-side encryption is the default",
    "CKV_AWS_26": "EventBridge cannot publish to an SNS topic under the AWS-managed key",
    # Lambda: the functions call AWS APIs only (no VPC), their queue has the dead-letter queue
    # (the redrive), their concurrency is the event source's MaximumConcurrency, and their
    # environment holds names and URLs, no secrets (those are in SSM).
    "CKV_AWS_117": "functions call AWS APIs only: no VPC",
    "CKV_AWS_116": "each function's queue has a dead-letter queue (the redrive)",
    "CKV_AWS_115": "concurrency is bounded by each event source's MaximumConcurrency",
    "CKV_AWS_173": "the environment holds names and URLs, no secrets",
}

# How a resource's Ref and Fn::GetAtt Arn read, by type, for the policies parliament reads.
_ARN = {
    "AWS::S3::Bucket": ("{n}", "arn:aws:s3:::{n}"),
    "AWS::SQS::Queue": (f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{{n}}", f"arn:aws:sqs:{REGION}:{ACCOUNT}:{{n}}"),
    "AWS::IAM::Role": ("{n}", f"arn:aws:iam::{ACCOUNT}:role/{{n}}"),
    "AWS::IAM::InstanceProfile": ("{n}", f"arn:aws:iam::{ACCOUNT}:instance-profile/{{n}}"),
    "AWS::StepFunctions::StateMachine": (f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{{n}}", ""),
    "AWS::Lambda::Function": ("{n}", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{{n}}"),
    "AWS::EC2::LaunchTemplate": ("lt-0123456789abcdef0", ""),
    "AWS::AutoScaling::AutoScalingGroup": ("releng-{n}", ""),
    "AWS::CloudFront::Distribution": ("E1ABCDEFGHIJKL", ""),
}  # fmt: skip

_NO_VALUE = object()


def resolve(node: Any, values: Mapping[str, Any], conditions: Mapping[str, bool]) -> Any:  # noqa: PLR0911  (one return per function)
    """A CloudFormation value with its intrinsic functions applied (Ref, Fn::GetAtt, Fn::Sub,
    Fn::Join, Fn::If, Fn::Base64); ``values`` maps names (``ScratchBucket``,
    ``ScratchBucket.Arn``, ``AWS::Region``) to what they stand for. AWS::NoValue drops the item."""
    import base64

    if isinstance(node, list):
        items = [resolve(v, values, conditions) for v in node]
        return [v for v in items if v is not _NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, arg),) = node.items()
        if key == "Ref":
            return _NO_VALUE if arg == "AWS::NoValue" else values[arg]
        if key == "Fn::GetAtt":
            return values[".".join(arg)]
        if key == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else arg
            scope = {**values, **resolve(extra, values, conditions)}
            return re.sub(r"\$\{([^}!]+)\}", lambda m: str(scope[m[1]]), text).replace("${!", "${")
        if key == "Fn::Join":
            sep, items = arg
            return sep.join(str(v) for v in resolve(items, values, conditions))
        if key == "Fn::If":
            name, yes, no = arg
            return resolve(yes if conditions[name] else no, values, conditions)
        if key == "Fn::Base64":
            return base64.b64encode(str(resolve(arg, values, conditions)).encode()).decode()
    out = {k: resolve(v, values, conditions) for k, v in node.items()}
    return {k: v for k, v in out.items() if v is not _NO_VALUE}


def _values(template: Mapping[str, Any]) -> dict[str, Any]:
    """Stand-in values for every name a policy can reference (parameters set, names real-looking)."""
    values: dict[str, Any] = {
        "AWS::Partition": "aws",
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::StackName": "releng",
    }
    for name, param in template.get("Parameters", {}).items():
        stand_in = (
            f"/releng/{name.lower()}" if name.endswith("Parameter") else f"releng-{name.lower()}"
        )
        values[name] = param.get("Default") or stand_in
    for name, res in template["Resources"].items():
        ref, arn = _ARN.get(res["Type"], ("{n}", "arn:aws:{n}"))
        short = f"releng-{name.lower()}"
        values[name] = ref.format(n=short)
        values[f"{name}.Arn"] = arn.format(n=short)
    return values


def role_policies(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each role's inline policy documents (``Role/policy``), resolved with every condition
    true (the most a role can be granted)."""
    values = _values(template)
    conditions = dict.fromkeys(template.get("Conditions", {}), True)
    found = {}
    for name, res in template["Resources"].items():
        if res["Type"] != "AWS::IAM::Role":
            continue
        for policy in res["Properties"].get("Policies", []):
            document = resolve(policy["PolicyDocument"], values, conditions)
            found[f"{name}/{policy['PolicyName']}"] = document
    return found


def _tool(name: str, root: Path) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _run(argv: list[str], root: Path, *, what: str = "") -> subprocess.CompletedProcess[str]:
    log.info("%s", what or shlex.join(argv))
    return subprocess.run(argv, cwd=root, capture_output=True, text=True, check=False)


def cfn_lint(root: Path) -> list[str]:
    exe = _tool("cfn-lint", root)
    if exe is None:
        return ["cfn-lint is not installed: nox installs it from requirements/lock.txt"]
    proc = _run([exe, "--format", "parseable", TEMPLATE_FILE], root)
    # exit code: bit 2 errors, bit 4 warnings; both fail (informational notes, 8, do not)
    return [] if proc.returncode & 6 == 0 else [f"cfn-lint:\n{proc.stdout}{proc.stderr}"]


def checkov(root: Path) -> list[str]:
    exe = _tool("checkov", root)
    if exe is None:
        return ["checkov is not installed: nox installs it from requirements/lock.txt"]
    proc = _run(
        [exe, "--quiet", "--compact", "--skip-download", "--framework", "cloudformation",
         "--file", TEMPLATE_FILE,
         "--skip-check", ",".join(sorted(CHECKOV_SKIPS))],
        root,
    )  # fmt: skip
    return [] if proc.returncode == 0 else [f"checkov:\n{proc.stdout}{proc.stderr}"]


def parliament(root: Path) -> list[str]:
    import yaml

    exe = _tool("parliament", root)
    if exe is None:
        return ["parliament is not installed: nox installs it from requirements/lock.txt"]
    template = yaml.safe_load((root / TEMPLATE_FILE).read_text(encoding="utf-8"))
    problems = []
    for role, document in role_policies(template).items():
        proc = _run(
            [exe, "--json", "--include-community-auditors", "--minimum_severity", "MEDIUM",
             "--string", json.dumps(document)],
            root,
            what=f"parliament {role}",
        )  # fmt: skip
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if proc.returncode not in (0, 1) or (proc.returncode and not lines):
            problems.append(f"parliament failed on {role}: {proc.stderr.strip()[-500:]}")
        problems += [f"parliament: {role}: {line}" for line in lines]
    return problems


def asl_validator(root: Path) -> list[str]:
    exe = root / NODE_TOOLS / "node_modules" / ".bin" / "asl-validator"
    if not exe.exists():
        return [f"asl-validator is not installed: run scripts/node-tools (npm {ASL_VALIDATOR})"]
    proc = _run([str(exe), "--json-path", DEFINITION_FILE], root)
    return [] if proc.returncode == 0 else [f"asl-validator:\n{proc.stdout}{proc.stderr}"]


ORACLES: dict[str, Callable[[Path], list[str]]] = {
    "cfn-lint": cfn_lint,
    "checkov": checkov,
    "parliament": parliament,
    "asl-validator": asl_validator,
}


def check(root: Path) -> list[str]:
    """Every oracle's problems (empty: all pass)."""
    problems = []
    for name, oracle in ORACLES.items():
        found = oracle(root)
        log.info("%s: %s", name, "ok" if not found else f"{len(found)} problem(s)")
        problems += found
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(name)s > %(message)s", stream=sys.stderr)
    problems = check(Path(args[0] if args else ".").resolve())
    for problem in problems:
        log.error("%s", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
