#!/bin/bash
# EC2 user data of a releng worker (a CloudFormation Fn::Sub template: dollar-brace names are stack
# values; shell variables are written without braces). The instance installs the engine
# and this repository at the stack's branch, works the queue until it is idle, uploads
# its own log, and powers off; instances terminate on shutdown.
set -eu -o pipefail
exec > /var/log/releng-worker.log 2>&1

# Safety net: whatever happens below, the instance is gone within the task timeout.
shutdown -h +${SafetyMinutes} "releng safety shutdown" || true
trap 'aws s3 cp /var/log/releng-worker.log "s3://${ScratchBucket}/logs/instances/$INSTANCE.log" || true; shutdown -h now' EXIT

TOKEN=$(curl -sS -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
INSTANCE=$(curl -sS -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/instance-id)
export AWS_DEFAULT_REGION=${AWS::Region} RELENG_INSTANCE_ID=$INSTANCE

apt-get update -q
apt-get install -y -q docker.io git python3-venv mmdebstrap awscli gnupg
systemctl start docker

git clone --branch "${Branch}" --depth 1 "${RepositoryUrl}" /opt/releng
cd /opt/releng
python3 -m venv /opt/venv
/opt/venv/bin/pip install -q -e .
export PATH=/opt/venv/bin:$PATH

# Tarball makers and the publisher sign: the key comes from SSM (SecureString), never
# from the repository; builders never see it.
if [ "${Queue}" != build ]; then
  export GNUPGHOME=/root/.gnupg RELENG_SIGNING_PASSPHRASE
  mkdir -p -m 700 "$GNUPGHOME"
  aws ssm get-parameter --with-decryption --name "${SigningKeyParameter}" --query Parameter.Value --output text | gpg --batch --import
  RELENG_SIGNING_PASSPHRASE=$(aws ssm get-parameter --with-decryption --name "${SigningPassphraseParameter}" --query Parameter.Value --output text)
fi

python3 -m releng.aws.worker --queue-url "${QueueUrl}" --root /opt/releng --idle-seconds 300
