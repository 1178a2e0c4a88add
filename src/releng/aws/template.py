"""The CloudFormation template, generated from Python like the state machine.

``invoke generate-aws`` writes ``aws/template.yaml``; a test fails when the
committed file differs, and cfn-lint checks it. Generating keeps the queues,
the per-handler functions and their least-privilege roles in step with
:mod:`releng.aws.steps`, and embeds ``aws/state-machine.json`` verbatim with its
placeholders mapped to queue URLs by ``DefinitionSubstitutions``.

Resources: scratch bucket (private), downloads bucket (public read by policy,
``releng.publish.public_read_policy``), a CloudFront distribution in front of
it, one queue per worker kind and per handler (each with a dead-letter queue;
publish is FIFO with one message group: one publisher at a time), IAM roles
(builders write only scratch, the publisher writes downloads, each function
only what it calls), the state machine, the Lambda functions with their SQS
event source mappings, worker launch templates whose instances terminate on
shutdown, a nightly schedule, and a health-check schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from releng.aws import statemachine
from releng.aws import steps as S
from releng.publish.flows import public_objects

TEMPLATE_FILE = "aws/template.yaml"
USERDATA_FILE = "aws/userdata/worker.sh"

Json = dict[str, Any]

# What each handler calls beyond answering its own task token.
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
_INSTANCE_TYPE = {
    S.TARBALL_QUEUE: "SmallInstanceType",
    S.BUILD_QUEUE: "BuilderInstanceType",
    S.PUBLISH_QUEUE: "SmallInstanceType",
}
_DISK_GB = {S.TARBALL_QUEUE: 30, S.BUILD_QUEUE: 256, S.PUBLISH_QUEUE: 30}


def _ref(name: str) -> Json:
    return {"Ref": name}


def _att(name: str, attr: str) -> Json:
    return {"Fn::GetAtt": [name, attr]}


def _sub(text: str) -> Json:
    return {"Fn::Sub": text}


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


def _queue_id(name: str) -> str:
    return f"{_camel(name)}Queue"


def _bucket_arns(bucket: str, keys: str = "*") -> list[Json]:
    return [_att(bucket, "Arn"), _sub(f"${{{bucket}.Arn}}/{keys}")]


def _statement(actions: list[str], resources: Any) -> Json:
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


def _role(service: str, statements: list[Json], *, managed: list[str] | None = None) -> Json:
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


_SEND_TASK = _statement(
    ["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"], "*"
)  # task tokens are not resources: AWS documents "*" here
_LAMBDA_LOGS = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


def _queues(res: Json) -> None:
    for name in (*S.WORKER_QUEUES, *QUEUE_HANDLERS):
        fifo = name == S.PUBLISH_QUEUE
        extra: Json = {"FifoQueue": True, "ContentBasedDeduplication": True} if fifo else {}
        qid = _queue_id(name)
        res[f"{qid}Dlq"] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {**extra, "MessageRetentionPeriod": 1209600},
        }
        res[qid] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                **extra,
                # Workers extend it while they run; short so a dead worker's task returns soon.
                "VisibilityTimeout": 120 if name in S.WORKER_QUEUES else 900,
                "RedrivePolicy": {
                    "deadLetterTargetArn": _att(f"{qid}Dlq", "Arn"),
                    "maxReceiveCount": 5,
                },
            },
        }


def _buckets(res: Json) -> None:
    block_all = {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    res["ScratchBucket"] = {
        "Type": "AWS::S3::Bucket",
        "Properties": {
            "PublicAccessBlockConfiguration": block_all,
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "LifecycleConfiguration": {
                "Rules": [
                    {"Id": "logs", "Prefix": "logs/", "Status": "Enabled", "ExpirationInDays": 90},
                    {
                        "Id": "status",
                        "Prefix": "status/",
                        "Status": "Enabled",
                        "ExpirationInDays": 90,
                    },
                ]
            },
        },
    }
    res["DownloadsBucket"] = {
        "Type": "AWS::S3::Bucket",
        "Properties": {
            "PublicAccessBlockConfiguration": {
                **block_all,
                "BlockPublicPolicy": False,
                "RestrictPublicBuckets": False,
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        },
    }
    # As releng.publish.public_read_policy: GetObject on the published trees and keyrings only.
    published = public_objects()
    res["DownloadsBucketPolicy"] = {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": _ref("DownloadsBucket"),
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "PublicReadOfPublishedTrees",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": [
                            {
                                "Fn::Sub": [
                                    f"${{DownloadsBucket.Arn}}/${{Prefix}}{p}",
                                    {
                                        "Prefix": {
                                            "Fn::If": ["HasPrefix", _sub("${DownloadsPrefix}/"), ""]
                                        }
                                    },
                                ]
                            }
                            for p in published
                        ],
                    }
                ],
            },
        },
    }
    res["Distribution"] = {
        "Type": "AWS::CloudFront::Distribution",
        "Properties": {
            "DistributionConfig": {
                "Enabled": True,
                "Comment": _sub("${AWS::StackName} downloads"),
                "Origins": [
                    {
                        "Id": "downloads",
                        "DomainName": _att("DownloadsBucket", "RegionalDomainName"),
                        "S3OriginConfig": {"OriginAccessIdentity": ""},
                    }
                ],
                "DefaultCacheBehavior": {
                    "TargetOriginId": "downloads",
                    "ViewerProtocolPolicy": "allow-all",  # apt verifies signatures; http is fine
                    "CachePolicyId": "658327ea-f89d-4fab-a63d-7e88639e58f6",  # Managed-CachingOptimized
                    "AllowedMethods": ["GET", "HEAD"],
                },
                "HttpVersion": "http2",
                "PriceClass": "PriceClass_100",
            }
        },
    }


def _worker_roles(res: Json, script: str) -> None:
    def queue_access(queues: list[str]) -> Json:
        return _statement(
            [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
            ],
            [_att(_queue_id(q), "Arn") for q in queues],
        )

    scratch_rw = _statement(
        ["s3:GetObject", "s3:PutObject", "s3:ListBucket"], _bucket_arns("ScratchBucket")
    )
    scratch_ro = _statement(["s3:GetObject", "s3:ListBucket"], _bucket_arns("ScratchBucket"))
    scratch_logs = _statement(
        ["s3:PutObject"],
        [_sub("${ScratchBucket.Arn}/logs/*"), _sub("${ScratchBucket.Arn}/status/*")],
    )
    downloads_rw = _statement(
        ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
        _bucket_arns("DownloadsBucket"),
    )
    signing = _statement(
        ["ssm:GetParameter"],
        [
            _sub(
                "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${SigningKeyParameter}"
            ),
            _sub(
                "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${SigningPassphraseParameter}"
            ),
        ],
    )
    invalidate = _statement(
        ["cloudfront:CreateInvalidation"],
        _sub("arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${Distribution}"),
    )
    # Builders write only scratch; the publisher reads scratch and writes downloads.
    res["BuilderRole"] = _role(
        "ec2.amazonaws.com",
        [queue_access([S.TARBALL_QUEUE, S.BUILD_QUEUE]), scratch_rw, _SEND_TASK, signing],
    )
    res["PublisherRole"] = _role(
        "ec2.amazonaws.com",
        [
            queue_access([S.PUBLISH_QUEUE]),
            scratch_ro,
            scratch_logs,
            downloads_rw,
            _SEND_TASK,
            signing,
            invalidate,
        ],
    )
    for role in ("Builder", "Publisher"):
        res[f"{role}Profile"] = {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"Roles": [_ref(f"{role}Role")]},
        }
    for queue in S.WORKER_QUEUES:
        profile = "PublisherProfile" if queue == S.PUBLISH_QUEUE else "BuilderProfile"
        safety = {S.TARBALL_QUEUE: 60, S.BUILD_QUEUE: 5 * 60, S.PUBLISH_QUEUE: 5 * 60}[queue]
        res[f"{_camel(queue)}LaunchTemplate"] = {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateData": {
                    "ImageId": _ref("ImageId"),
                    "InstanceType": _ref(_INSTANCE_TYPE[queue]),
                    "IamInstanceProfile": {"Arn": _att(profile, "Arn")},
                    "InstanceInitiatedShutdownBehavior": "terminate",
                    "MetadataOptions": {"HttpTokens": "required"},
                    "BlockDeviceMappings": [
                        {
                            "DeviceName": "/dev/xvda",
                            "Ebs": {
                                "VolumeSize": _DISK_GB[queue],
                                "VolumeType": "gp3",
                                "DeleteOnTermination": True,
                            },
                        }
                    ],
                    "UserData": {
                        "Fn::Base64": {
                            "Fn::Sub": [
                                script,
                                {
                                    "Queue": queue,
                                    "QueueUrl": _ref(_queue_id(queue)),
                                    "SafetyMinutes": str(safety),
                                },
                            ]
                        }
                    },
                }
            },
        }


def _handler_env(name: str) -> Json:
    return {
        "RELENG_HANDLER": name,
        "RELENG_STACK": _ref("AWS::StackName"),
        "RELENG_SCRATCH_BUCKET": _ref("ScratchBucket"),
        "RELENG_DOWNLOADS_BUCKET": _ref("DownloadsBucket"),
        "RELENG_DOWNLOADS_PREFIX": _ref("DownloadsPrefix"),
        "RELENG_CLOUDFRONT_DISTRIBUTION": _ref("Distribution"),
        "RELENG_QUEUE_URLS": _sub(
            "{" + ", ".join(f'"{q}": "${{{_queue_id(q)}}}"' for q in S.WORKER_QUEUES) + "}"
        ),
        "RELENG_LAUNCH_TEMPLATES": _sub(
            "{"
            + ", ".join(f'"{q}": "${{{_camel(q)}LaunchTemplate}}"' for q in S.WORKER_QUEUES)
            + "}"
        ),
    }


def _functions(res: Json) -> None:
    ec2 = [
        _statement(["ec2:RunInstances", "ec2:CreateTags", "ec2:DescribeInstances"], "*"),
        _statement(["iam:PassRole"], [_att("BuilderRole", "Arn"), _att("PublisherRole", "Arn")]),
    ]
    needs: dict[str, list[Json]] = {
        "read-scratch": [
            _statement(["s3:GetObject", "s3:ListBucket"], _bucket_arns("ScratchBucket"))
        ],
        "write-status": [_statement(["s3:PutObject"], _sub("${ScratchBucket.Arn}/status/*"))],
        "read-downloads": [
            _statement(["s3:GetObject", "s3:ListBucket"], _bucket_arns("DownloadsBucket"))
        ],
        "write-downloads": [
            _statement(
                ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
                _bucket_arns("DownloadsBucket"),
            )
        ],
        "cloudfront": [
            _statement(
                ["cloudfront:CreateInvalidation"],
                _sub(
                    "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${Distribution}"
                ),
            )
        ],
        "ec2": ec2,
    }
    code = {"S3Bucket": _ref("CodeBucket"), "S3Key": _ref("CodeKey")}
    for name in (*QUEUE_HANDLERS, "health_check"):
        fid = f"{_camel(name)}Function"
        statements: list[Json] = [_SEND_TASK]
        if name == "health_check":
            statements += [
                *ec2,
                _statement(
                    ["sqs:GetQueueAttributes"], [_att(_queue_id(q), "Arn") for q in S.WORKER_QUEUES]
                ),
            ]
        else:
            statements.append(
                _statement(
                    ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                    _att(_queue_id(name), "Arn"),
                )
            )
            for need in _HANDLER_NEEDS[name]:
                statements += needs[need]
        res[f"{fid}Role"] = _role("lambda.amazonaws.com", statements, managed=[_LAMBDA_LOGS])
        res[fid] = {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": _sub(f"${{AWS::StackName}}-{name.replace('_', '-')}"),
                "Runtime": "python3.12",
                "Handler": "handlers.health_check"
                if name == "health_check"
                else "handlers.handler",
                "Code": code,
                "Role": _att(f"{fid}Role", "Arn"),
                "Timeout": 900 if name in ("update_indices", "prepare_task") else 120,
                "MemorySize": 512,
                "Environment": {"Variables": _handler_env(name)},
            },
        }
        if name != "health_check":
            res[f"{fid}Events"] = {
                "Type": "AWS::Lambda::EventSourceMapping",
                "Properties": {
                    "EventSourceArn": _att(_queue_id(name), "Arn"),
                    "FunctionName": _ref(fid),
                    "BatchSize": 1,
                },
            }
    res["HealthCheckSchedule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "ScheduleExpression": "rate(5 minutes)",
            "Targets": [{"Id": "health-check", "Arn": _att("HealthCheckFunction", "Arn")}],
        },
    }
    res["HealthCheckPermission"] = {
        "Type": "AWS::Lambda::Permission",
        "Properties": {
            "Action": "lambda:InvokeFunction",
            "FunctionName": _ref("HealthCheckFunction"),
            "Principal": "events.amazonaws.com",
            "SourceArn": _att("HealthCheckSchedule", "Arn"),
        },
    }


def _state_machine(res: Json, definition: str) -> None:
    res["StateMachineRole"] = _role(
        "states.amazonaws.com",
        [
            _statement(
                ["sqs:SendMessage"],
                [_att(_queue_id(q), "Arn") for q in (*S.WORKER_QUEUES, *QUEUE_HANDLERS)],
            )
        ],
    )
    res["StateMachine"] = {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {
            "StateMachineName": _ref("AWS::StackName"),
            "RoleArn": _att("StateMachineRole", "Arn"),
            "DefinitionString": definition,
            "DefinitionSubstitutions": {
                S.queue_key(q): _ref(_queue_id(q)) for q in (*S.WORKER_QUEUES, *QUEUE_HANDLERS)
            },
        },
    }
    res["NightlyRole"] = _role(
        "events.amazonaws.com", [_statement(["states:StartExecution"], _ref("StateMachine"))]
    )
    res["NightlyRule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "ScheduleExpression": _ref("NightlySchedule"),
            "Targets": [
                {
                    "Id": "nightly",
                    "Arn": _ref("StateMachine"),
                    "RoleArn": _att("NightlyRole", "Arn"),
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
        "SmallInstanceType": {"Type": "String", "Default": "t3.small"},
        "ImageId": {
            "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            "Default": "/aws/service/debian/release/12/latest/amd64",
        },
        "CodeBucket": {
            "Type": "String",
            "Description": "bucket holding the Lambda zip (deploy-aws)",
        },
        "CodeKey": {"Type": "String"},
        "DownloadsPrefix": {"Type": "String", "Default": ""},
        "NightlySchedule": {"Type": "String", "Default": "cron(0 2 * * ? *)"},
        "SigningKeyParameter": {"Type": "String", "Default": "/releng/signing-key"},
        "SigningPassphraseParameter": {"Type": "String", "Default": "/releng/signing-passphrase"},
    }
    res: Json = {}
    _buckets(res)
    _queues(res)
    _worker_roles(res, userdata)
    _functions(res)
    _state_machine(res, definition)
    outputs: Json = {
        "StateMachineArn": {"Value": _ref("StateMachine")},
        "ScratchBucket": {"Value": _ref("ScratchBucket")},
        "DownloadsBucket": {"Value": _ref("DownloadsBucket")},
        "DownloadsPrefix": {"Value": _ref("DownloadsPrefix")},
        "DistributionId": {"Value": _ref("Distribution")},
        "DistributionDomain": {"Value": _att("Distribution", "DomainName")},
    }
    for q in (*S.WORKER_QUEUES, *S.HANDLERS):
        if q in S.WORKER_QUEUES or q in QUEUE_HANDLERS:
            outputs[S.queue_key(q)] = {"Value": _ref(_queue_id(q))}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "releng: build and publish signed apt repositories (generated by releng.aws.template)",
        "Parameters": params,
        "Conditions": {"HasPrefix": {"Fn::Not": [{"Fn::Equals": [_ref("DownloadsPrefix"), ""]}]}},
        "Resources": res,
        "Outputs": outputs,
    }


class _Dumper(yaml.SafeDumper):
    pass


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


def write(root: Path) -> Path:
    path = root / TEMPLATE_FILE
    path.write_text(dumps(root), encoding="utf-8")
    return path
