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
shutdown, one Auto Scaling group per worker queue (the pool; :mod:`releng.aws.launch`),
a nightly schedule, and a health-check schedule.
"""

from __future__ import annotations

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
from releng.aws.launch import QUEUE_TAG, STACK_TAG
from releng.aws.template_delivery import buckets, notifications
from releng.compiler_cache import S3Location, iam_statements

TEMPLATE_FILE = "aws/template.yaml"
USERDATA_FILE = "aws/userdata/worker.sh"


# What each handler calls beyond answering its own task token and writing its tracebacks
# and reports under logs/ in scratch (every handler may).
_HANDLER_NEEDS: dict[str, tuple[str, ...]] = {
    "parse_input": (),
    "prepare_task": ("read-scratch", "write-status", "read-downloads"),
    "launch_workers": ("pools",),
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


# One SSM parameter per signing key ([signing] key, several during a rotation's overlap): the
# first is required, the others may be empty. An IAM statement cannot map over a list
# parameter, so the slots are fixed; deploy-aws refuses more keys than slots.
SIGNING_KEY_PARAMS = ("SigningKeyParameter", "SigningKey2Parameter", "SigningKey3Parameter")


def _signing_key_condition(param: str) -> str:
    return f"Has{param.removesuffix('Parameter')}"


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
        # every signing key's parameter (exactly those configured) and the one passphrase
        "signing-key": [
            statement(
                ["ssm:GetParameter"],
                [
                    _parameter_arn(SIGNING_KEY_PARAMS[0]),
                    *(
                        {
                            "Fn::If": [
                                _signing_key_condition(p),
                                _parameter_arn(p),
                                ref("AWS::NoValue"),
                            ]
                        }
                        for p in SIGNING_KEY_PARAMS[1:]
                    ),
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


def subnet_param(instance_param: str) -> str:
    """The parameter with the subnets of an instance type's queues (``BuilderSubnetIds``):
    deploy-aws passes those in zones that offer the type."""
    return instance_param.removesuffix("InstanceType") + "SubnetIds"


def max_workers_param(queue: str) -> str:
    """The parameter with a queue's pool size (its Auto Scaling group's MaxSize)."""
    return f"{camel(queue)}MaxWorkers"


def _group_name(queue: str) -> str:
    """A worker queue's Auto Scaling group, as a Fn::Sub text (the stack's name in it, so the
    roles name it without a reference: the group needs the template, which needs the role)."""
    return f"${{AWS::StackName}}-{queue.replace('_', '-')}-workers"


def _group_arn(queue: str) -> Json:
    return sub(
        "arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}:autoScalingGroup:*:"
        f"autoScalingGroupName/{_group_name(queue)}"
    )


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
            # A worker that ends (idle, set-up failed, stuck) leaves its group and lowers its
            # desired capacity; else the group would start a replacement.
            statement(["autoscaling:TerminateInstanceInAutoScalingGroup"], _group_arn(queue)),
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
        res[f"{camel(queue)}WorkerGroup"] = _group(queue, kind.instance_param)


def _group(queue: str, instance_param: str) -> Json:
    """The queue's pool: started by the Auto Scaling service from the launch template at the
    version the stack last wrote (CloudFormation adds a version on each update but never
    moves the default one), in the subnets whose zones offer the instance type. Its desired
    capacity is the launcher's (raised) and the workers' (lowered as each leaves): the
    template never sets it, so an update does not reset it."""
    lt = f"{camel(queue)}LaunchTemplate"
    return {
        "Type": "AWS::AutoScaling::AutoScalingGroup",
        "Properties": {
            "AutoScalingGroupName": sub(_group_name(queue)),
            "LaunchTemplate": {
                "LaunchTemplateId": ref(lt),
                "Version": att(lt, "LatestVersionNumber"),
            },
            "MinSize": "0",
            "MaxSize": ref(max_workers_param(queue)),
            "VPCZoneIdentifier": ref(subnet_param(instance_param)),
            # A busy worker is never chosen to go when capacity is rebalanced across zones.
            "NewInstancesProtectedFromScaleIn": True,
            "Tags": [
                {"Key": QUEUE_TAG, "Value": queue, "PropagateAtLaunch": True},
                {"Key": STACK_TAG, "Value": ref("AWS::StackName"), "PropagateAtLaunch": True},
                {
                    "Key": "Name",
                    "Value": sub(f"${{AWS::StackName}}-{queue}-worker"),
                    "PropagateAtLaunch": True,
                },
            ],
        },
    }


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
        "RELENG_WORKER_GROUPS": sub(
            "{" + ", ".join(f'"{q}": "{_group_name(q)}"' for q in S.WORKER_QUEUES) + "}"
        ),
        "RELENG_MAX_WORKERS": sub(
            "{" + ", ".join(f'"{q}": ${{{max_workers_param(q)}}}' for q in S.WORKER_QUEUES) + "}"
        ),
    }


def _functions(res: Json) -> None:
    # The pools: the launcher only raises a group's desired capacity. The Auto Scaling service
    # starts the instances from the stack's launch templates and passes their roles; nothing
    # here may run an instance or pass a role of its own.
    pools = [
        statement(["autoscaling:SetDesiredCapacity"], [_group_arn(q) for q in S.WORKER_QUEUES]),
        statement(["autoscaling:DescribeAutoScalingGroups"], "*"),  # takes no resource ARNs
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
        "pools": pools,
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
        # Networking: deploy-aws passes, for each instance type, the subnets ([aws] subnets, or
        # the default VPC's, whose subnets give public IPs) in zones that offer it. Subnets of
        # another VPC need a route out (NAT or public IPs): workers reach git, apt and AWS.
        **{
            subnet_param(p): {
                "Type": "List<AWS::EC2::Subnet::Id>",
                "Description": f"subnets in zones that offer the {p} (deploy-aws)",
            }
            for p in sorted({k.instance_param for k in S.WORKER_KINDS.values()})
        },
        "SecurityGroupIds": {"Type": "CommaDelimitedList", "Default": ""},
        **{
            max_workers_param(q): {
                "Type": "Number",
                "MinValue": 1,
                "Default": k.max_workers,
                "Description": f"[aws] max_workers: the most {q} workers alive at once",
            }
            for q, k in S.WORKER_KINDS.items()
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
            "Description": "SSM SecureString with the first signing key ([signing] key), "
            "/releng/signing-key/<FPR> (deploy-aws)",
        },
        **{
            p: {
                "Type": "String",
                "Default": "",
                "AllowedPattern": _SSM_NAME_OR_EMPTY,
                "Description": "SSM SecureString with a further signing key (a rotation's "
                "overlap), /releng/signing-key/<FPR> (deploy-aws)",
            }
            for p in SIGNING_KEY_PARAMS[1:]
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
            **{_signing_key_condition(p): not_empty(ref(p)) for p in SIGNING_KEY_PARAMS[1:]},
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
