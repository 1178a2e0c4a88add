#!/bin/bash
# EC2 user data of a releng worker: a CloudFormation Fn::Sub template (dollar-brace names are
# stack values; shell variables are written without braces). The instance installs the engine
# and releng from this repository at the stack's branch, works its queue for as many tasks as
# come (one of its queue's Auto Scaling group), uploads its own log when idle, leaves its
# group and powers off; instances terminate on shutdown. `bash worker.sh STEP...` runs only the named steps (the tests do).
set -eu -o pipefail

# The stack's values, once.
QUEUE_URL="${QueueUrl}"
SCRATCH_BUCKET="${ScratchBucket}"
REPOSITORY_URL="${RepositoryUrl}"
BRANCH="${Branch}"
GIT_CREDENTIALS_PARAMETER="${GitCredentialsParameter}"
SIGNS="${Signs}"
PUSHES="${Pushes}"
PUBLIC_GIT_TOKEN_PARAMETER="${PublicGitTokenParameter}"
# one parameter per signing key ([signing] key; two while a rotation overlaps), empty slots blank
SIGNING_KEY_PARAMETERS="${SigningKeyParameter} ${SigningKey2Parameter} ${SigningKey3Parameter}"
SIGNING_PASSPHRASE_PARAMETER="${SigningPassphraseParameter}"
REBUILDS="${Rebuilds}"
REBUILDER_KEY_PARAMETER="${RebuilderKeyParameter}"
REBUILDER_PASSPHRASE_PARAMETER="${RebuilderPassphraseParameter}"
export AWS_DEFAULT_REGION="${AWS::Region}" DEBIAN_FRONTEND=noninteractive

ALIVE=/run/releng-worker.alive
STALE_SECONDS=1800
# The environment may name these (the tests do); main() asks the instance metadata.
WORKER_LOG=$(printenv RELENG_WORKER_LOG || echo /var/log/releng-worker.log)
INSTANCE=$(printenv RELENG_INSTANCE_ID || echo unknown)
SETUP_ERROR=$(printenv RELENG_SETUP_ERROR || echo unknown)

# No fixed lifetime: a worker runs many tasks, each with its own deadline (the worker stops a
# task's commands at it). The watchdog powers off only an instance whose worker stopped
# reporting (the worker touches ALIVE between polls and while a task runs) or whose set-up hung.
start_watchdog() {
  touch "$ALIVE"
  (
    while sleep 60; do
      if [ $(($(date +%s) - $(stat -c %Y "$ALIVE"))) -gt "$STALE_SECONDS" ]; then
        leave_group
        shutdown -h now "releng: the worker stopped reporting"
      fi
    done
  ) &
}

# The group started this instance and would start a replacement for one that powers off: a
# worker that is done leaves it, lowering its desired capacity (the launcher only raises it).
# Its task, if any, went back to the queue; the next health check sizes the group to it.
leave_group() {
  local try
  for try in 1 2 3; do
    if aws autoscaling terminate-instance-in-auto-scaling-group --instance-id "$INSTANCE" \
        --should-decrement-desired-capacity >/dev/null; then
      return 0
    fi
    sleep $((try * 10))
  done
  echo "releng: could not leave the Auto Scaling group; it will start a replacement" >&2
}

upload_log_and_power_off() {
  aws s3 cp "$WORKER_LOG" "s3://$SCRATCH_BUCKET/logs/instances/$INSTANCE.log" || true
  leave_group
  shutdown -h now
}

# A set-up that fails (a wrong repository URL or branch, PyPI unreachable) would leave the
# tasks queued and the health check starting workers that fail the same way until the
# deadline. Instead this instance fails every task waiting on its queue with the set-up error
# and its log (the execution records each once), so the queue is empty, then leaves its group
# (the EXIT trap): nothing relaunches.
fail_queued_tasks() {
  local log_url="s3://$SCRATCH_BUCKET/logs/instances/$INSTANCE.log" msg receipt body token
  aws s3 cp "$WORKER_LOG" "$log_url" || true
  while msg=$(aws sqs receive-message --queue-url "$QUEUE_URL" --max-number-of-messages 1 \
      --wait-time-seconds 1 --visibility-timeout 60 \
      --query 'Messages[0].[ReceiptHandle,Body]' --output text); do
    if [ -z "$msg" ] || [ "$msg" = None ]; then
      break
    fi
    IFS=$'\t' read -r receipt body <<<"$msg"
    token=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])' <<<"$body")
    aws stepfunctions send-task-failure --task-token "$token" --error Releng.SetupFailed \
      --cause "worker set-up failed on $INSTANCE: $SETUP_ERROR; log: $log_url" || true
    aws sqs delete-message --queue-url "$QUEUE_URL" --receipt-handle "$receipt"
  done
}

setup_failed() {
  trap - ERR
  SETUP_ERROR="$1"
  echo "releng: set-up failed: $SETUP_ERROR" >&2
  fail_queued_tasks
}

instance_id() {
  local token
  token=$(curl -sS -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
  curl -sS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/instance-id
}

# cloud-init and unattended-upgrades may hold dpkg's lock at boot: wait for it, do not fail.
apt_get() {
  apt-get -q -o DPkg::Lock::Timeout=900 "$@"
}

install_packages() {
  apt_get update
  apt_get install -y --no-install-recommends \
    ca-certificates curl git openssh-client gnupg python3-venv python3-pip awscli \
    docker.io mmdebstrap
}

# A private repository: an SSH deploy key from SSM (read-only; every worker clones).
git_credentials() {
  if [ -n "$GIT_CREDENTIALS_PARAMETER" ]; then
    install -d -m 700 /root/.ssh
    aws ssm get-parameter --with-decryption --name "$GIT_CREDENTIALS_PARAMETER" \
      --query Parameter.Value --output text >/root/.ssh/releng-deploy-key
    chmod 600 /root/.ssh/releng-deploy-key
    export GIT_SSH_COMMAND="ssh -i /root/.ssh/releng-deploy-key -o StrictHostKeyChecking=accept-new"
  fi
}

# releng at the stack's branch, its dependencies pinned by hash (requirements/runtime.txt).
install_releng() {
  git clone --branch "$BRANCH" --depth 1 "$REPOSITORY_URL" /opt/releng
  python3 -m venv /opt/venv
  /opt/venv/bin/pip install -q --require-hashes -r /opt/releng/requirements/runtime.txt
  /opt/venv/bin/pip install -q --no-deps /opt/releng
}

# Tarball makers and the publisher sign: every key comes from SSM (SecureString), never from
# the repository. Builders have no permission to read them and never ask.
import_signing_key() {
  local parameter
  if [ "$SIGNS" = yes ]; then
    GNUPGHOME=$(printenv GNUPGHOME || echo /root/.gnupg)
    export GNUPGHOME RELENG_SIGNING_PASSPHRASE
    install -d -m 700 "$GNUPGHOME"
    for parameter in $SIGNING_KEY_PARAMETERS; do
      aws ssm get-parameter --with-decryption --name "$parameter" \
        --query Parameter.Value --output text | gpg --batch --import
    done
    RELENG_SIGNING_PASSPHRASE=$(aws ssm get-parameter --with-decryption \
      --name "$SIGNING_PASSPHRASE_PARAMETER" --query Parameter.Value --output text)
  fi
}

# The rebuilders (verify queue) sign attestations with the rebuilder's key, from SSM parameters
# of its own ([verify] key names it; the passphrase goes where [verify] passphrase_env says by
# default). Their role cannot read the archive signing key, and they never ask.
import_rebuilder_key() {
  if [ "$REBUILDS" = yes ]; then
    export GNUPGHOME=/root/.gnupg RELENG_REBUILDER_PASSPHRASE
    install -d -m 700 "$GNUPGHOME"
    aws ssm get-parameter --with-decryption --name "$REBUILDER_KEY_PARAMETER" \
      --query Parameter.Value --output text | gpg --batch --import
    RELENG_REBUILDER_PASSPHRASE=$(aws ssm get-parameter --with-decryption \
      --name "$REBUILDER_PASSPHRASE_PARAMETER" --query Parameter.Value --output text)
  fi
}

# The publisher pushes a release's tag and branch to the public repository with an HTTPS
# token from SSM, handed to git through GIT_ASKPASS by releng (never on a command line or in
# a log). Only the publisher's role may read it; other workers never ask.
public_git_token() {
  if [ "$PUSHES" = yes ] && [ -n "$PUBLIC_GIT_TOKEN_PARAMETER" ]; then
    RELENG_GIT_TOKEN=$(aws ssm get-parameter --with-decryption \
      --name "$PUBLIC_GIT_TOKEN_PARAMETER" --query Parameter.Value --output text)
    export RELENG_GIT_TOKEN
  fi
}

run_worker() {
  systemctl start docker
  cd /opt/releng
  /opt/venv/bin/python -m releng.aws.worker --queue-url "$QUEUE_URL" --root /opt/releng \
    --idle-seconds 300 --alive-file "$ALIVE"
}

main() {
  exec >"$WORKER_LOG" 2>&1
  INSTANCE=$(instance_id)
  export RELENG_INSTANCE_ID=$INSTANCE
  start_watchdog
  trap upload_log_and_power_off EXIT
  set -E
  trap 'setup_failed "$BASH_COMMAND exited $?"' ERR
  install_packages
  git_credentials
  install_releng
  import_signing_key
  import_rebuilder_key
  public_git_token
  trap - ERR
  export PATH=/opt/venv/bin:$PATH
  run_worker
}

if [ $# -eq 0 ]; then
  main
else
  for step in "$@"; do "$step"; done
fi
