"""CloudFormation's intrinsic functions and IAM shapes, as the template generator writes them."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def ref(name: str) -> Json:
    return {"Ref": name}


def att(name: str, attr: str) -> Json:
    return {"Fn::GetAtt": [name, attr]}


def sub(text: str) -> Json:
    return {"Fn::Sub": text}


def camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


def queue_id(name: str) -> str:
    return f"{camel(name)}Queue"


def bucket_arns(bucket: str, keys: str = "*") -> list[Json]:
    return [att(bucket, "Arn"), sub(f"${{{bucket}.Arn}}/{keys}")]


def statement(actions: list[str], resources: Any) -> Json:
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


def role(service: str, statements: list[Json], *, managed: list[str] | None = None) -> Json:
    props: Json = {
        "AssumeRolePolicyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
            ],
        },
        "Policies": [
            {
                "PolicyName": "releng",
                "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
            }
        ],
    }
    if managed:
        props["ManagedPolicyArns"] = managed
    return {"Type": "AWS::IAM::Role", "Properties": props}


SEND_TASK = statement(
    ["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"], "*"
)  # task tokens are not resources: AWS documents "*" here
LAMBDA_LOGS = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


def distribution_arn() -> Json:
    return sub("arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${Distribution}")


def subs(node: Any) -> Any:
    """``node`` with each string that holds a ``${...}`` as an Fn::Sub of it."""
    if isinstance(node, dict):
        return {k: subs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [subs(v) for v in node]
    return sub(node) if isinstance(node, str) and "${" in node else node


def not_empty(value: Json) -> Json:
    return {"Fn::Not": [{"Fn::Equals": [value, ""]}]}
