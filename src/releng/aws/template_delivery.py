"""The template's delivery part: the buckets, the CloudFront distribution that serves the
downloads through origin access control, and the failure mail (SNS). Generated into
``aws/template.yaml`` by :mod:`releng.aws.template`."""

from __future__ import annotations

from releng.aws.cfn import Json, att, distribution_arn, ref, sub
from releng.publish.flows import public_objects

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


def buckets(res: Json) -> None:
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
            "Bucket": ref("DownloadsBucket"),
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
                                            "Fn::If": ["HasPrefix", sub("${DownloadsPrefix}/"), ""]
                                        }
                                    },
                                ]
                            }
                            for p in published
                        ],
                        "Condition": {"StringEquals": {"AWS:SourceArn": distribution_arn()}},
                    }
                ],
            },
        },
    }
    res["DownloadsOriginAccessControl"] = {
        "Type": "AWS::CloudFront::OriginAccessControl",
        "Properties": {
            "OriginAccessControlConfig": {
                "Name": sub("${AWS::StackName}-downloads"),
                "OriginAccessControlOriginType": "s3",
                "SigningBehavior": "always",
                "SigningProtocol": "sigv4",
            }
        },
    }
    res["DirectoryIndexFunction"] = {
        "Type": "AWS::CloudFront::Function",
        "Properties": {
            "Name": sub("${AWS::StackName}-directory-index"),
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
                "Comment": sub("${AWS::StackName} downloads"),
                "Origins": [
                    {
                        "Id": "downloads",
                        "DomainName": att("DownloadsBucket", "RegionalDomainName"),
                        "S3OriginConfig": {"OriginAccessIdentity": ""},  # OAC instead
                        "OriginAccessControlId": att("DownloadsOriginAccessControl", "Id"),
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
                            "FunctionARN": att("DirectoryIndexFunction", "FunctionARN"),
                        }
                    ],
                },
                "HttpVersion": "http2",
                "PriceClass": "PriceClass_100",
            }
        },
    }


# What the failure email says: the execution, how it ended, the first failures with their
# logs (the Fail state's cause: CheckForFailures' summary) and where to look further.
_NOTIFY_TEMPLATE = (
    '"releng: execution <name> of <machine> ended <status>. <cause> '
    "Every step: invoke show-aws-status --execution <name>; every failure: "
    's3://<scratch>/logs/<name>/failures.json"'
)


def notifications(res: Json) -> None:
    """An SNS topic that gets one message per failed, timed-out or aborted execution, with an
    email subscription when [aws] notify_email is set."""
    res["FailureTopic"] = {
        "Type": "AWS::SNS::Topic",
        "Properties": {"DisplayName": sub("${AWS::StackName} failures")},
    }
    res["FailureEmail"] = {
        "Type": "AWS::SNS::Subscription",
        "Condition": "HasNotifyEmail",
        "Properties": {
            "TopicArn": ref("FailureTopic"),
            "Protocol": "email",
            "Endpoint": ref("NotifyEmail"),
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
                    "stateMachineArn": [ref("StateMachine")],
                },
            },
            "Targets": [
                {
                    "Id": "failure-topic",
                    "Arn": ref("FailureTopic"),
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
                                {"Scratch": ref("ScratchBucket")},
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
            "Topics": [ref("FailureTopic")],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sns:Publish",
                        "Resource": ref("FailureTopic"),
                        "Condition": {"ArnEquals": {"aws:SourceArn": att("FailureRule", "Arn")}},
                    }
                ],
            },
        },
    }
