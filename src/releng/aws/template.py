"""The CloudFormation template, generated from Python like the state machine.

Its parts: this module (parameters, queues, roles, launch templates, functions, the state
machine and its schedules), :mod:`releng.aws.template_delivery` (buckets, CloudFront, the
failure mail) and :mod:`releng.aws.cfn` (intrinsic functions and IAM shapes).

``invoke generate-aws`` writes ``aws/template.yaml``; a test fails when the
committed file differs, and cfn-lint checks it. Generating keeps the queues,
the per-handler functions and their least-privilege roles in step with
:mod:`releng.aws.steps`, and embeds ``aws/state-machine.json`` verbatim with its
placeholders mapped to queue URLs by ``DefinitionSubstitutions``.

Resources: scratch bucket (private), downloads bucket (private, read by the
CloudFront distribution in front of it through origin access control), one queue per worker kind and per handler (each with a dead-letter queue;
publish is FIFO with one message group: one publisher at a time), IAM roles
(builders write only scratch, the publisher writes downloads, each function
only what it calls), the state machine, the Lambda functions with their SQS
event source mappings, worker launch templates whose instances terminate on
shutdown, a nightly schedule, and a health-check schedule.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from releng.aws import statemachine
from releng.aws import steps as S
from releng.aws.cfn import (
    LAMBDA_LOGS,
    SEND_TASK,
    Json,
    att,
    bucket_arns,
    camel,
    distribution_arn,
    not_empty,
    queue_id,
    ref,
    role,
    statement,
    sub,
    subs,
)
from releng.aws.template_delivery import buckets, notifications
from releng.compiler_cache import S3Location, iam_statements

TEMPLATE_FILE = "aws/template.yaml"
USERDATA_FILE = "aws/userdata/worker.sh"


# What each handler calls beyond answering its own task token and writing its tracebacks
# and reports under logs/ in scratch (every handler may).
_HANDLER_NEEDS: dict[str, tuple[str, ...]] = {
    "parse_input": (),
    "prepare_task": ("read-scratch", "write-status", "read-downloads"),
    "launch_workers": ("ec2",),
    "check_if_repos_changed": (),
    "update_indices": ("write-downloads",),
    "invalidate_cloudfront": ("cloudfront",),
    "check_for_failures": (),
}
QUEUE_HANDLERS = S.QUEUE_HANDLERS
assert set(QUEUE_HANDLERS) == set(_HANDLER_NEEDS)


def _queues(res: Json) -> None:
    for name in (*S.WORKER_QUEUES, *QUEUE_HANDLERS):
        fifo = name in S.MESSAGE_GROUPS
        extra: Json = {"FifoQueue": True, "ContentBasedDeduplication": True} if fifo else {}
        qid = queue_id(name)
        res[f"{qid}Dlq"] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {**extra, "MessageRetentionPeriod": 1209600},
        }
        res[qid] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                **extra,
                # Workers extend it while they run: short, so a dead worker's task returns
                # soon. Handler queues: six times the function's timeout (AWS's advice for
                # Lambda event sources), so a throttled invocation is retried.
                "VisibilityTimeout": 120 if name in S.WORKER_QUEUES else S.handler_visibility(name),
                "RedrivePolicy": {
                    "deadLetterTargetArn": att(f"{qid}Dlq", "Arn"),
                    "maxReceiveCount": 5,
                },
            },
        }


# The roles' SSM ARNs are ``parameter`` + the name: the name must start with a slash.
_SSM_NAME = "^(/[A-Za-z0-9_.-]+)+$"
_SSM_NAME_OR_EMPTY = "^((/[A-Za-z0-9_.-]+)+)?$"


def _parameter_arn(param: str) -> Json:
    return sub(
        f"arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter${{{param}}}"
    )


def _worker_permissions() -> dict[str, list[Json]]:
    """What a worker kind may be granted, by the names ``steps.WORKER_KINDS`` uses."""
    return {
        # fetch the source tarball; the worker's checks of what exists (ListBucket: a missing
        # key is a 404, not a 403)
        "scratch-read": [
            statement(["s3:GetObject", "s3:ListBucket"], bucket_arns("ScratchBucket"))
        ],
        # upload-build: deletes the completion marker first, then puts the files
        "scratch-write": [
            statement(["s3:PutObject", "s3:DeleteObject"], sub("${ScratchBucket.Arn}/*"))
        ],
        # update-repos removes the builds it published; publish-source only reads
        "scratch-delete": [statement(["s3:DeleteObject"], sub("${ScratchBucket.Arn}/*"))],
        "downloads-write": [
            statement(
                ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
                bucket_arns("DownloadsBucket"),
            )
        ],
        "signing-key": [
            statement(
                ["ssm:GetParameter"],
                [
                    _parameter_arn("SigningKeyParameter"),
                    _parameter_arn("SigningPassphraseParameter"),
                ],
            )
        ],
        # The HTTPS token publish-release-source pushes the release tag with: the publisher only.
        "public-git-token": [
            {
                "Fn::If": [
                    "HasPublicGitToken",
                    statement(["ssm:GetParameter"], _parameter_arn("PublicGitTokenParameter")),
                    ref("AWS::NoValue"),
                ]
            }
        ],
        "cloudfront-invalidate": [statement(["cloudfront:CreateInvalidation"], distribution_arn())],
        **_verify_permissions(),
        # [build] compiler_cache = "s3" in a bucket other than scratch: its prefix only
        "compiler-cache": [
            {"Fn::If": ["HasCompilerCacheBucket", subs(st), ref("AWS::NoValue")]}
            for st in iam_statements(
                S3Location(bucket="${CompilerCacheBucket}", prefix="${CompilerCachePrefix}"),
                partition="${AWS::Partition}",
            )
        ],
    }


def _verify_permissions() -> dict[str, list[Json]]:
    """The rebuilders' own grants (steps.WORKER_KINDS["verify"]): beside scratch-read, they
    write only verify-rebuild's results (``<version>/<distro>/<arch>/rebuild/...``: upload-build
    --rebuild deletes its completion marker first, then puts the files) and read the
    rebuilder's key from its own SSM parameters, never the archive signing key's."""
    return {
        "rebuild-write": [
            statement(
                ["s3:PutObject", "s3:DeleteObject"], sub("${ScratchBucket.Arn}/*/*/*/rebuild/*")
            )
        ],
        "rebuilder-key": [
            statement(
                ["ssm:GetParameter"],
                [
                    _parameter_arn("RebuilderKeyParameter"),
                    _parameter_arn("RebuilderPassphraseParameter"),
                ],
            )
        ],
    }


def worker_role_id(queue: str) -> str:
    return f"{camel(queue)}WorkerRole"


def _worker_roles(res: Json, script: str) -> None:
    permissions = _worker_permissions()
    for queue, kind in S.WORKER_KINDS.items():
        statements = [
            statement(
                [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                ],
                att(queue_id(queue), "Arn"),
            ),
            SEND_TASK,
            # the worker's own records: status, task logs, the instance's log
            statement(
                ["s3:PutObject"],
                [sub("${ScratchBucket.Arn}/logs/*"), sub("${ScratchBucket.Arn}/status/*")],
            ),
            # a private repository's deploy key (every worker clones it), when one is configured
            {
                "Fn::If": [
                    "HasGitCredentials",
                    statement(["ssm:GetParameter"], _parameter_arn("GitCredentialsParameter")),
                    ref("AWS::NoValue"),
                ]
            },
        ]
        for name in kind.permissions:
            statements += permissions[name]
        role_id = worker_role_id(queue)
        res[role_id] = role("ec2.amazonaws.com", statements)
        res[f"{camel(queue)}WorkerProfile"] = {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"Roles": [ref(role_id)]},
        }
        res[f"{camel(queue)}LaunchTemplate"] = {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateData": {
                    "ImageId": ref(kind.image_param),  # an AMI of the kind's architecture
                    "InstanceType": ref(kind.instance_param),
                    "IamInstanceProfile": {"Arn": att(f"{camel(queue)}WorkerProfile", "Arn")},
                    "InstanceInitiatedShutdownBehavior": "terminate",
                    "MetadataOptions": {"HttpTokens": "required"},
                    "SecurityGroupIds": {
                        "Fn::If": [
                            "HasSecurityGroups",
                            ref("SecurityGroupIds"),
                            ref("AWS::NoValue"),
                        ]
                    },
                    "BlockDeviceMappings": [
                        {
                            "DeviceName": "/dev/xvda",
                            "Ebs": {
                                "VolumeSize": kind.disk_gb,
                                "VolumeType": "gp3",
                                "DeleteOnTermination": True,
                            },
                        }
                    ],
                    "TagSpecifications": [
                        {
                            "ResourceType": "volume",
                            "Tags": [{"Key": "releng:stack", "Value": ref("AWS::StackName")}],
                        }
                    ],
                    "UserData": {
                        "Fn::Base64": {
                            "Fn::Sub": [
                                script,
                                {
                                    "Queue": queue,
                                    "QueueUrl": ref(queue_id(queue)),
                                    "Signs": "yes" if "signing-key" in kind.permissions else "no",
                                    "Pushes": (
                                        "yes" if "public-git-token" in kind.permissions else "no"
                                    ),
                                    "Rebuilds": (
                                        "yes" if "rebuilder-key" in kind.permissions else "no"
                                    ),
                                },
                            ]
                        }
                    },
                }
            },
        }


def _launch_template_arn(queue: str) -> Json:
    return sub(
        "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:launch-template/"
        f"${{{camel(queue)}LaunchTemplate}}"
    )


def _handler_env(name: str) -> Json:
    return {
        "RELENG_HANDLER": name,
        "RELENG_STACK": ref("AWS::StackName"),
        "RELENG_SCRATCH_BUCKET": ref("ScratchBucket"),
        "RELENG_DOWNLOADS_BUCKET": ref("DownloadsBucket"),
        "RELENG_DOWNLOADS_PREFIX": ref("DownloadsPrefix"),
        "RELENG_CLOUDFRONT_DISTRIBUTION": ref("Distribution"),
        "RELENG_QUEUE_URLS": sub(
            "{" + ", ".join(f'"{q}": "${{{queue_id(q)}}}"' for q in S.WORKER_QUEUES) + "}"
        ),
        # The version each update wrote: CloudFormation never moves a template's default
        # version, so launching without one would keep the first deploy's settings forever.
        "RELENG_LAUNCH_TEMPLATES": sub(
            "{"
            + ", ".join(
                f'"{q}": {{"id": "${{{camel(q)}LaunchTemplate}}", '
                f'"version": "${{{camel(q)}LaunchTemplate.LatestVersionNumber}}"}}'
                for q in S.WORKER_QUEUES
            )
            + "}"
        ),
        "RELENG_MAX_WORKERS": ref("MaxWorkers"),
        "RELENG_SUBNETS": {"Fn::Join": [",", ref("SubnetIds")]},
    }


def _functions(res: Json) -> None:
    templates = {
        "ArnLike": {"ec2:LaunchTemplate": [_launch_template_arn(q) for q in S.WORKER_QUEUES]}
    }
    ec2 = [
        # RunInstances only from the stack's launch templates, and only with what they say
        # (AMI, user data, instance profile, volumes): no other image or user data runs with
        # the workers' roles. The subnet, its network interface and the security groups are
        # the launcher's choice (another zone on a capacity refusal).
        statement(["ec2:RunInstances"], "*")
        | {"Condition": {**templates, "Bool": {"ec2:IsLaunchTemplateResource": "true"}}},
        statement(
            ["ec2:RunInstances"],
            [
                sub(f"arn:${{AWS::Partition}}:ec2:${{AWS::Region}}:${{AWS::AccountId}}:{kind}/*")
                for kind in ("subnet", "network-interface", "security-group")
            ],
        )
        | {"Condition": templates},
        # instances are tagged as they are created, never afterwards
        statement(["ec2:CreateTags"], "*")
        | {"Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
        # the pool's size, the template's instance type and the zones that offer it
        statement(
            [
                "ec2:DescribeInstances",
                "ec2:DescribeLaunchTemplateVersions",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeSubnets",
            ],
            "*",  # Describe* take no resource ARNs
        ),
        statement(["iam:PassRole"], [att(worker_role_id(q), "Arn") for q in S.WORKER_QUEUES])
        | {"Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        # the pools are sized to the queued work
        statement(["sqs:GetQueueAttributes"], [att(queue_id(q), "Arn") for q in S.WORKER_QUEUES]),
    ]
    needs: dict[str, list[Json]] = {
        "read-scratch": [
            statement(["s3:GetObject", "s3:ListBucket"], bucket_arns("ScratchBucket"))
        ],
        "write-status": [statement(["s3:PutObject"], sub("${ScratchBucket.Arn}/status/*"))],
        "read-downloads": [
            statement(["s3:GetObject", "s3:ListBucket"], bucket_arns("DownloadsBucket"))
        ],
        "write-downloads": [
            statement(
                ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
                bucket_arns("DownloadsBucket"),
            )
        ],
        "cloudfront": [statement(["cloudfront:CreateInvalidation"], distribution_arn())],
        "ec2": ec2,
    }
    code = {"S3Bucket": ref("CodeBucket"), "S3Key": ref("CodeKey")}
    for name in QUEUE_HANDLERS:
        fid = f"{camel(name)}Function"
        # tracebacks and the failure report go to S3 (the execution's state keeps references)
        statements: list[Json] = [
            SEND_TASK,
            statement(["s3:PutObject"], sub("${ScratchBucket.Arn}/logs/*")),
            statement(
                ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                att(queue_id(name), "Arn"),
            ),
        ]
        for need in _HANDLER_NEEDS[name]:
            statements += needs[need]
        res[f"{fid}Role"] = role("lambda.amazonaws.com", statements, managed=[LAMBDA_LOGS])
        res[fid] = {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": sub(f"${{AWS::StackName}}-{name.replace('_', '-')}"),
                "Runtime": "python3.12",
                "Handler": "handlers.handler",
                "Code": code,
                "Role": att(f"{fid}Role", "Arn"),
                "Timeout": S.function_timeout(name),
                "MemorySize": 512,
                "Environment": {"Variables": _handler_env(name)},
            },
        }
        res[f"{fid}Events"] = {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": att(queue_id(name), "Arn"),
                "FunctionName": ref(fid),
                "BatchSize": 1,
                # At most this many concurrent invocations per queue (2 is SQS's least):
                # a new account's low concurrency quota then queues messages instead of
                # throttling them, which would return them only after the visibility.
                "ScalingConfig": {"MaximumConcurrency": S.MAX_CONCURRENCY},
            },
        }
    # The health check is a message on launch_workers' FIFO queue, in its one message group:
    # one owner of every pool, so a health check and a launch never both see a free slot
    # and start two workers for one task.
    launch_queue = queue_id("launch_workers")
    res["HealthCheckSchedule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "ScheduleExpression": "rate(5 minutes)",
            "Targets": [
                {
                    "Id": "health-check",
                    "Arn": att(launch_queue, "Arn"),
                    "SqsParameters": {"MessageGroupId": S.MESSAGE_GROUPS["launch_workers"]},
                    # the time makes each message unique (content-based deduplication)
                    "InputTransformer": {
                        "InputPathsMap": {"time": "$.time"},
                        "InputTemplate": '{"handler": "health_check", "time": <time>}',
                    },
                }
            ],
        },
    }
    res["HealthCheckQueuePolicy"] = {
        "Type": "AWS::SQS::QueuePolicy",
        "Properties": {
            "Queues": [ref(launch_queue)],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": att(launch_queue, "Arn"),
                        "Condition": {
                            "ArnEquals": {"aws:SourceArn": att("HealthCheckSchedule", "Arn")}
                        },
                    }
                ],
            },
        },
    }


def _state_machine(res: Json, definition: str) -> None:
    res["StateMachineRole"] = role(
        "states.amazonaws.com",
        [
            statement(
                ["sqs:SendMessage"],
                [att(queue_id(q), "Arn") for q in (*S.WORKER_QUEUES, *QUEUE_HANDLERS)],
            )
        ],
    )
    res["StateMachine"] = {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {
            "StateMachineName": ref("AWS::StackName"),
            "RoleArn": att("StateMachineRole", "Arn"),
            "DefinitionString": definition,
            # the queues the definition names (a build's queue comes from prepare_task)
            "DefinitionSubstitutions": {
                S.queue_key(q): ref(queue_id(q))
                for q in (*S.WORKER_QUEUES, *QUEUE_HANDLERS)
                if "${" + S.queue_key(q) + "}" in definition
            },
        },
    }
    res["NightlyRole"] = role(
        "events.amazonaws.com", [statement(["states:StartExecution"], ref("StateMachine"))]
    )
    res["NightlyRule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "Name": sub("${AWS::StackName}-nightly"),
            # Created off: `invoke deploy-aws` enables it once product.toml names this
            # stack's buckets (the workers read them); live at once, the first nightly
            # would fail with AccessDenied.
            "State": "DISABLED",
            "ScheduleExpression": ref("NightlySchedule"),
            "Targets": [
                {
                    "Id": "nightly",
                    "Arn": ref("StateMachine"),
                    "RoleArn": att("NightlyRole", "Arn"),
                    "Input": "{}",
                }
            ],
        },
    }


def template(definition: str, userdata: str) -> Json:
    """The whole template for ``definition`` (the committed state machine JSON)."""
    params: Json = {
        "RepositoryUrl": {"Type": "String", "Description": "git URL of this packaging repository"},
        "Branch": {"Type": "String", "Default": "main"},
        "BuilderInstanceType": {"Type": "String", "Default": "c6i.4xlarge"},
        "Arm64BuilderInstanceType": {
            "Type": "String",
            "Default": "c7g.4xlarge",
            "Description": "the arm64 builders' instance type (Graviton)",
        },
        "SmallInstanceType": {"Type": "String", "Default": "t3.small"},
        # deploy-aws resolves [aws] ami and arm64_ami (AMI ids or SSM parameter names, by
        # default Debian 12's latest for amd64 and arm64) at each deploy and passes the ids.
        "ImageId": {"Type": "AWS::EC2::Image::Id"},
        "Arm64ImageId": {"Type": "AWS::EC2::Image::Id"},
        # Networking: empty lists use the default VPC (its subnets give public IPs). Subnets
        # of another VPC need a route out (NAT or public IPs): workers reach git, apt and AWS.
        "SubnetIds": {"Type": "CommaDelimitedList", "Default": ""},
        "SecurityGroupIds": {"Type": "CommaDelimitedList", "Default": ""},
        "MaxWorkers": {
            "Type": "String",
            "Description": "JSON: queue -> the most instances alive at once",
            "Default": json.dumps({q: k.max_workers for q, k in S.WORKER_KINDS.items()}),
        },
        "GitCredentialsParameter": {
            "Type": "String",
            "Default": "",
            "AllowedPattern": _SSM_NAME_OR_EMPTY,
            "Description": "SSM SecureString with an SSH deploy key for a private repository",
        },
        "PublicGitTokenParameter": {
            "Type": "String",
            "Default": "",
            "AllowedPattern": _SSM_NAME_OR_EMPTY,
            "Description": "SSM SecureString with the HTTPS token that pushes release tags to "
            "[source] public_repository (read by the publisher only)",
        },
        "CodeBucket": {
            "Type": "String",
            "Description": "bucket holding the Lambda zip (deploy-aws)",
        },
        "CodeKey": {"Type": "String"},
        "DownloadsPrefix": {"Type": "String", "Default": ""},
        "NightlySchedule": {"Type": "String", "Default": "cron(0 2 * * ? *)"},
        "SigningKeyParameter": {
            "Type": "String",
            "Default": "/releng/signing-key",
            "AllowedPattern": _SSM_NAME,
        },
        "SigningPassphraseParameter": {
            "Type": "String",
            "Default": "/releng/signing-passphrase",
            "AllowedPattern": _SSM_NAME,
        },
        # The rebuilders' key (verify-rebuild's attestations; [verify] key names its
        # fingerprint): only the verify workers' role reads these, and never the two above.
        "RebuilderKeyParameter": {
            "Type": "String",
            "Default": "/releng/rebuilder-key",
            "AllowedPattern": _SSM_NAME,
        },
        "RebuilderPassphraseParameter": {
            "Type": "String",
            "Default": "/releng/rebuilder-passphrase",
            "AllowedPattern": _SSM_NAME,
        },
        "CompilerCacheBucket": {
            "Type": "String",
            "Default": "",
            "Description": "[build] cache_url's bucket when it is not the scratch bucket: the "
            "builders may list, read and write CompilerCachePrefix there",
        },
        "CompilerCachePrefix": {"Type": "String", "Default": "compiler-cache"},
        "NotifyEmail": {
            "Type": "String",
            "Default": "",
            "Description": "[aws] notify_email: one email per failed or timed-out execution",
        },
    }
    res: Json = {}
    buckets(res)
    _queues(res)
    _worker_roles(res, userdata)
    _functions(res)
    _state_machine(res, definition)
    notifications(res)
    outputs: Json = {
        "StateMachineArn": {"Value": ref("StateMachine")},
        "ScratchBucket": {"Value": ref("ScratchBucket")},
        "DownloadsBucket": {"Value": ref("DownloadsBucket")},
        "DownloadsPrefix": {"Value": ref("DownloadsPrefix")},
        "DistributionId": {"Value": ref("Distribution")},
        "DistributionDomain": {"Value": att("Distribution", "DomainName")},
        "NightlyRule": {"Value": ref("NightlyRule")},
        "FailureTopic": {"Value": ref("FailureTopic")},
    }
    for q in (*S.WORKER_QUEUES, *S.HANDLERS):
        if q in S.WORKER_QUEUES or q in QUEUE_HANDLERS:
            outputs[S.queue_key(q)] = {"Value": ref(queue_id(q))}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "releng: build and publish signed apt repositories (generated by releng.aws.template)",
        "Parameters": params,
        "Conditions": {
            "HasPrefix": not_empty(ref("DownloadsPrefix")),
            "HasSecurityGroups": not_empty({"Fn::Join": ["", ref("SecurityGroupIds")]}),
            "HasGitCredentials": not_empty(ref("GitCredentialsParameter")),
            "HasPublicGitToken": not_empty(ref("PublicGitTokenParameter")),
            "HasCompilerCacheBucket": not_empty(ref("CompilerCacheBucket")),
            "HasNotifyEmail": not_empty(ref("NotifyEmail")),
        },
        "Resources": res,
        "Outputs": outputs,
    }


class _Dumper(yaml.SafeDumper):
    """Plain YAML: CloudFormation rejects anchors and aliases (cfn-lint W1101), which PyYAML
    writes for every object used twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dumps(root: Path) -> str:
    definition = (root / statemachine.DEFINITION_FILE).read_text(encoding="utf-8")
    userdata = (root / USERDATA_FILE).read_text(encoding="utf-8")
    body = yaml.dump(template(definition, userdata), Dumper=_Dumper, sort_keys=False, width=120)
    return (
        "# Generated by releng.aws.template (`invoke generate-aws`); do not edit by hand.\n" + body
    )


def render_sub(text: str, values: dict[str, str]) -> str:
    """``text`` as CloudFormation's Fn::Sub renders it: ``${Name}`` -> its value, ``${!Name}``
    -> ``${Name}`` (the tests render the user data with a stack's real values this way)."""
    import re

    def one(match: re.Match[str]) -> str:
        name = match[1]
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name not in values:
            raise KeyError(f"no value for ${{{name}}}")
        return values[name]

    return re.sub(r"\$\{([^}]+)\}", one, text)


def write(root: Path) -> Path:
    path = root / TEMPLATE_FILE
    path.write_text(dumps(root), encoding="utf-8")
    return path
