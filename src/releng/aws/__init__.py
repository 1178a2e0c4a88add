"""Orchestration on AWS: Step Functions, handler queues, EC2 workers on SQS, CloudFormation.

Shape (see docs/aws.md): the state machine in :mod:`releng.aws.statemachine` is
generated from Python and committed as ``aws/state-machine.json``. Every task
state is an SQS ``sendMessage.waitForTaskToken``: worker steps go to the
tarball/build/publish queues consumed by EC2 workers (:mod:`releng.aws.worker`),
handler steps go to one queue per handler consumed by a Lambda function (an
SQS event source mapping) that runs :mod:`releng.aws.handlers` and answers the
token. The same JSON runs on AWS and against moto on this machine.
"""

from __future__ import annotations
