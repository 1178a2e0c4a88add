"""The CloudFormation template, generated from Python like the state machine.

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
from releng.compiler_cache import S3Location, iam_statements
from releng.publish.flows import public_objects

TEMPLATE_FILE = "aws/template.yaml"
USERDATA_FILE = "aws/userdata/worker.sh"

Json = dict[str, Any]

# CloudFront viewer-request function: a request for a directory gets its index page.
DIRECTORY_INDEX_JS = """\
function handler(event) {
  var request = event.request;
  if (request.uri.endsWith("/")) {
    request.uri += "index.html";
  }
  return request;
}
"""

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
        fifo = name in S.MESSAGE_GROUPS
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
                # Workers extend it while they run: short, so a dead worker's task returns
                # soon. Handler queues: six times the function's timeout (AWS's advice for
                # Lambda event sources), so a throttled invocation is retried.
                "VisibilityTimeout": 120 if name in S.WORKER_QUEUES else S.handler_visibility(name),
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
    # Private: CloudFront reads it with origin access control (OAC), so a deploy works with
    # the account's Block Public Access on, and clients never see an S3 URL.
    res["DownloadsBucket"] = {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",  # published packages outlive the stack (destroy-aws)
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "PublicAccessBlockConfiguration": block_all,
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
        },
    }
    # As releng.publish.public_read_policy, for CloudFront only: GetObject on the published
    # trees and keyrings (never .releng/, the lock and the state), by this distribution.
    published = public_objects()
    res["DownloadsBucketPolicy"] = {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": _ref("DownloadsBucket"),
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "CloudFrontReadsPublishedTrees",
                        "Effect": "Allow",
                        "Principal": {"Service": "cloudfront.amazonaws.com"},
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
                        "Condition": {"StringEquals": {"AWS:SourceArn": _distribution_arn()}},
                    }
                ],
            },
        },
    }
    res["DownloadsOriginAccessControl"] = {
        "Type": "AWS::CloudFront::OriginAccessControl",
        "Properties": {
            "OriginAccessControlConfig": {
                "Name": _sub("${AWS::StackName}-downloads"),
                "OriginAccessControlOriginType": "s3",
                "SigningBehavior": "always",
                "SigningProtocol": "sigv4",
            }
        },
    }
    res["DirectoryIndexFunction"] = {
        "Type": "AWS::CloudFront::Function",
        "Properties": {
            "Name": _sub("${AWS::StackName}-directory-index"),
            "AutoPublish": True,
            "FunctionConfig": {"Comment": "dir/ -> dir/index.html", "Runtime": "cloudfront-js-2.0"},
            "FunctionCode": DIRECTORY_INDEX_JS,
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
                        "S3OriginConfig": {"OriginAccessIdentity": ""},  # OAC instead
                        "OriginAccessControlId": _att("DownloadsOriginAccessControl", "Id"),
                    }
                ],
                # An S3 REST origin serves no index documents: "/" and every "dir/" the
                # index pages link to would be 403 without these two.
                "DefaultRootObject": "index.html",
                "DefaultCacheBehavior": {
                    "TargetOriginId": "downloads",
                    "ViewerProtocolPolicy": "allow-all",  # apt verifies signatures; http is fine
                    "CachePolicyId": "658327ea-f89d-4fab-a63d-7e88639e58f6",  # Managed-CachingOptimized
                    "AllowedMethods": ["GET", "HEAD"],
                    "FunctionAssociations": [
                        {
                            "EventType": "viewer-request",
                            "FunctionARN": _att("DirectoryIndexFunction", "FunctionARN"),
                        }
                    ],
                },
                "HttpVersion": "http2",
                "PriceClass": "PriceClass_100",
            }
        },
    }


# The roles' SSM ARNs are ``parameter`` + the name: the name must start with a slash.
_SSM_NAME = "^(/[A-Za-z0-9_.-]+)+$"
_SSM_NAME_OR_EMPTY = "^((/[A-Za-z0-9_.-]+)+)?$"


def _parameter_arn(param: str) -> Json:
    return _sub(
        f"arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter${{{param}}}"
    )


def _distribution_arn() -> Json:
    return _sub("arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${Distribution}")


def _worker_permissions() -> dict[str, list[Json]]:
    """What a worker kind may be granted, by the names ``steps.WORKER_KINDS`` uses."""
    return {
        # fetch the source tarball; the worker's checks of what exists (ListBucket: a missing
        # key is a 404, not a 403)
        "scratch-read": [
            _statement(["s3:GetObject", "s3:ListBucket"], _bucket_arns("ScratchBucket"))
        ],
        # upload-build: deletes the completion marker first, then puts the files
        "scratch-write": [
            _statement(["s3:PutObject", "s3:DeleteObject"], _sub("${ScratchBucket.Arn}/*"))
        ],
        # update-repos removes the builds it published; publish-source only reads
        "scratch-delete": [_statement(["s3:DeleteObject"], _sub("${ScratchBucket.Arn}/*"))],
        "downloads-write": [
            _statement(
                ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
                _bucket_arns("DownloadsBucket"),
            )
        ],
        "signing-key": [
            _statement(
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
                    _statement(["ssm:GetParameter"], _parameter_arn("PublicGitTokenParameter")),
                    _ref("AWS::NoValue"),
                ]
            }
        ],
        "cloudfront-invalidate": [
            _statement(["cloudfront:CreateInvalidation"], _distribution_arn())
        ],
        # [build] compiler_cache = "s3" in a bucket other than scratch: its prefix only
        "compiler-cache": [
            {"Fn::If": ["HasCompilerCacheBucket", _subs(st), _ref("AWS::NoValue")]}
            for st in iam_statements(
                S3Location(bucket="${CompilerCacheBucket}", prefix="${CompilerCachePrefix}"),
                partition="${AWS::Partition}",
            )
        ],
    }


def _subs(node: Any) -> Any:
    """``node`` with each string that holds a ``${...}`` as an Fn::Sub of it."""
    if isinstance(node, dict):
        return {k: _subs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_subs(v) for v in node]
    return _sub(node) if isinstance(node, str) and "${" in node else node


def worker_role_id(queue: str) -> str:
    return f"{_camel(queue)}WorkerRole"


def _worker_roles(res: Json, script: str) -> None:
    permissions = _worker_permissions()
    for queue, kind in S.WORKER_KINDS.items():
        statements = [
            _statement(
                [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                ],
                _att(_queue_id(queue), "Arn"),
            ),
            _SEND_TASK,
            # the worker's own records: status, task logs, the instance's log
            _statement(
                ["s3:PutObject"],
                [_sub("${ScratchBucket.Arn}/logs/*"), _sub("${ScratchBucket.Arn}/status/*")],
            ),
            # a private repository's deploy key (every worker clones it), when one is configured
            {
                "Fn::If": [
                    "HasGitCredentials",
                    _statement(["ssm:GetParameter"], _parameter_arn("GitCredentialsParameter")),
                    _ref("AWS::NoValue"),
                ]
            },
        ]
        for name in kind.permissions:
            statements += permissions[name]
        role = worker_role_id(queue)
        res[role] = _role("ec2.amazonaws.com", statements)
        res[f"{_camel(queue)}WorkerProfile"] = {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"Roles": [_ref(role)]},
        }
        res[f"{_camel(queue)}LaunchTemplate"] = {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateData": {
                    "ImageId": _ref(kind.image_param),  # an AMI of the kind's architecture
                    "InstanceType": _ref(kind.instance_param),
                    "IamInstanceProfile": {"Arn": _att(f"{_camel(queue)}WorkerProfile", "Arn")},
                    "InstanceInitiatedShutdownBehavior": "terminate",
                    "MetadataOptions": {"HttpTokens": "required"},
                    "SecurityGroupIds": {
                        "Fn::If": [
                            "HasSecurityGroups",
                            _ref("SecurityGroupIds"),
                            _ref("AWS::NoValue"),
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
                            "Tags": [{"Key": "releng:stack", "Value": _ref("AWS::StackName")}],
                        }
                    ],
                    "UserData": {
                        "Fn::Base64": {
                            "Fn::Sub": [
                                script,
                                {
                                    "Queue": queue,
                                    "QueueUrl": _ref(_queue_id(queue)),
                                    "Signs": "yes" if "signing-key" in kind.permissions else "no",
                                    "Pushes": (
                                        "yes" if "public-git-token" in kind.permissions else "no"
                                    ),
                                },
                            ]
                        }
                    },
                }
            },
        }


def _launch_template_arn(queue: str) -> Json:
    return _sub(
        "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:launch-template/"
        f"${{{_camel(queue)}LaunchTemplate}}"
    )


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
        # The version each update wrote: CloudFormation never moves a template's default
        # version, so launching without one would keep the first deploy's settings forever.
        "RELENG_LAUNCH_TEMPLATES": _sub(
            "{"
            + ", ".join(
                f'"{q}": {{"id": "${{{_camel(q)}LaunchTemplate}}", '
                f'"version": "${{{_camel(q)}LaunchTemplate.LatestVersionNumber}}"}}'
                for q in S.WORKER_QUEUES
            )
            + "}"
        ),
        "RELENG_MAX_WORKERS": _ref("MaxWorkers"),
        "RELENG_SUBNETS": {"Fn::Join": [",", _ref("SubnetIds")]},
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
        _statement(["ec2:RunInstances"], "*")
        | {"Condition": {**templates, "Bool": {"ec2:IsLaunchTemplateResource": "true"}}},
        _statement(
            ["ec2:RunInstances"],
            [
                _sub(f"arn:${{AWS::Partition}}:ec2:${{AWS::Region}}:${{AWS::AccountId}}:{kind}/*")
                for kind in ("subnet", "network-interface", "security-group")
            ],
        )
        | {"Condition": templates},
        # instances are tagged as they are created, never afterwards
        _statement(["ec2:CreateTags"], "*")
        | {"Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
        # the pool's size, the template's instance type and the zones that offer it
        _statement(
            [
                "ec2:DescribeInstances",
                "ec2:DescribeLaunchTemplateVersions",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeSubnets",
            ],
            "*",  # Describe* take no resource ARNs
        ),
        _statement(["iam:PassRole"], [_att(worker_role_id(q), "Arn") for q in S.WORKER_QUEUES])
        | {"Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        # the pools are sized to the queued work
        _statement(
            ["sqs:GetQueueAttributes"], [_att(_queue_id(q), "Arn") for q in S.WORKER_QUEUES]
        ),
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
        "cloudfront": [_statement(["cloudfront:CreateInvalidation"], _distribution_arn())],
        "ec2": ec2,
    }
    code = {"S3Bucket": _ref("CodeBucket"), "S3Key": _ref("CodeKey")}
    for name in QUEUE_HANDLERS:
        fid = f"{_camel(name)}Function"
        # tracebacks and the failure report go to S3 (the execution's state keeps references)
        statements: list[Json] = [
            _SEND_TASK,
            _statement(["s3:PutObject"], _sub("${ScratchBucket.Arn}/logs/*")),
            _statement(
                ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                _att(_queue_id(name), "Arn"),
            ),
        ]
        for need in _HANDLER_NEEDS[name]:
            statements += needs[need]
        res[f"{fid}Role"] = _role("lambda.amazonaws.com", statements, managed=[_LAMBDA_LOGS])
        res[fid] = {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": _sub(f"${{AWS::StackName}}-{name.replace('_', '-')}"),
                "Runtime": "python3.12",
                "Handler": "handlers.handler",
                "Code": code,
                "Role": _att(f"{fid}Role", "Arn"),
                "Timeout": S.function_timeout(name),
                "MemorySize": 512,
                "Environment": {"Variables": _handler_env(name)},
            },
        }
        res[f"{fid}Events"] = {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": _att(_queue_id(name), "Arn"),
                "FunctionName": _ref(fid),
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
    launch_queue = _queue_id("launch_workers")
    res["HealthCheckSchedule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "ScheduleExpression": "rate(5 minutes)",
            "Targets": [
                {
                    "Id": "health-check",
                    "Arn": _att(launch_queue, "Arn"),
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
            "Queues": [_ref(launch_queue)],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": _att(launch_queue, "Arn"),
                        "Condition": {
                            "ArnEquals": {"aws:SourceArn": _att("HealthCheckSchedule", "Arn")}
                        },
                    }
                ],
            },
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
            # the queues the definition names (a build's queue comes from prepare_task)
            "DefinitionSubstitutions": {
                S.queue_key(q): _ref(_queue_id(q))
                for q in (*S.WORKER_QUEUES, *QUEUE_HANDLERS)
                if "${" + S.queue_key(q) + "}" in definition
            },
        },
    }
    res["NightlyRole"] = _role(
        "events.amazonaws.com", [_statement(["states:StartExecution"], _ref("StateMachine"))]
    )
    res["NightlyRule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "Name": _sub("${AWS::StackName}-nightly"),
            # Created off: `invoke deploy-aws` enables it once product.toml names this
            # stack's buckets (the workers read them); live at once, the first nightly
            # would fail with AccessDenied.
            "State": "DISABLED",
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


# What the failure email says: the execution, how it ended, the first failures with their
# logs (the Fail state's cause: CheckForFailures' summary) and where to look further.
_NOTIFY_TEMPLATE = (
    '"releng: execution <name> of <machine> ended <status>. <cause> '
    "Every step: invoke aws-status --execution <name>; every failure: "
    's3://<scratch>/logs/<name>/failures.json"'
)


def _notifications(res: Json) -> None:
    """An SNS topic that gets one message per failed, timed-out or aborted execution, with an
    email subscription when [aws] notify_email is set."""
    res["FailureTopic"] = {
        "Type": "AWS::SNS::Topic",
        "Properties": {"DisplayName": _sub("${AWS::StackName} failures")},
    }
    res["FailureEmail"] = {
        "Type": "AWS::SNS::Subscription",
        "Condition": "HasNotifyEmail",
        "Properties": {
            "TopicArn": _ref("FailureTopic"),
            "Protocol": "email",
            "Endpoint": _ref("NotifyEmail"),
        },
    }
    res["FailureRule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "EventPattern": {
                "source": ["aws.states"],
                "detail-type": ["Step Functions Execution Status Change"],
                "detail": {
                    "status": ["FAILED", "TIMED_OUT", "ABORTED"],
                    "stateMachineArn": [_ref("StateMachine")],
                },
            },
            "Targets": [
                {
                    "Id": "failure-topic",
                    "Arn": _ref("FailureTopic"),
                    "InputTransformer": {
                        "InputPathsMap": {
                            "name": "$.detail.name",
                            "status": "$.detail.status",
                            "cause": "$.detail.cause",
                            "machine": "$.detail.stateMachineArn",
                        },
                        "InputTemplate": {
                            "Fn::Sub": [
                                _NOTIFY_TEMPLATE.replace("<scratch>", "${Scratch}"),
                                {"Scratch": _ref("ScratchBucket")},
                            ]
                        },
                    },
                }
            ],
        },
    }
    res["FailureTopicPolicy"] = {
        "Type": "AWS::SNS::TopicPolicy",
        "Properties": {
            "Topics": [_ref("FailureTopic")],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sns:Publish",
                        "Resource": _ref("FailureTopic"),
                        "Condition": {"ArnEquals": {"aws:SourceArn": _att("FailureRule", "Arn")}},
                    }
                ],
            },
        },
    }


def _not_empty(value: Json) -> Json:
    return {"Fn::Not": [{"Fn::Equals": [value, ""]}]}


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
    _buckets(res)
    _queues(res)
    _worker_roles(res, userdata)
    _functions(res)
    _state_machine(res, definition)
    _notifications(res)
    outputs: Json = {
        "StateMachineArn": {"Value": _ref("StateMachine")},
        "ScratchBucket": {"Value": _ref("ScratchBucket")},
        "DownloadsBucket": {"Value": _ref("DownloadsBucket")},
        "DownloadsPrefix": {"Value": _ref("DownloadsPrefix")},
        "DistributionId": {"Value": _ref("Distribution")},
        "DistributionDomain": {"Value": _att("Distribution", "DomainName")},
        "NightlyRule": {"Value": _ref("NightlyRule")},
        "FailureTopic": {"Value": _ref("FailureTopic")},
    }
    for q in (*S.WORKER_QUEUES, *S.HANDLERS):
        if q in S.WORKER_QUEUES or q in QUEUE_HANDLERS:
            outputs[S.queue_key(q)] = {"Value": _ref(_queue_id(q))}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "releng: build and publish signed apt repositories (generated by releng.aws.template)",
        "Parameters": params,
        "Conditions": {
            "HasPrefix": _not_empty(_ref("DownloadsPrefix")),
            "HasSecurityGroups": _not_empty({"Fn::Join": ["", _ref("SecurityGroupIds")]}),
            "HasGitCredentials": _not_empty(_ref("GitCredentialsParameter")),
            "HasPublicGitToken": _not_empty(_ref("PublicGitTokenParameter")),
            "HasCompilerCacheBucket": _not_empty(_ref("CompilerCacheBucket")),
            "HasNotifyEmail": _not_empty(_ref("NotifyEmail")),
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
