"""The generated roles, enforced: every worker's and handler's real operations run as an IAM
user holding exactly its role's statements, on a moto server that enforces IAM.

An action missing from a role fails here (AccessDenied), as it would on the first real run;
so does a build role that can read the signing key. How far moto's evaluation goes (and
where the tests complete it with moto's own evaluator) is in tests/fixtures/iam.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError

from releng.aws import handlers, template
from releng.aws import steps as S
from releng.aws.catalog import Catalog
from releng.aws.deploy import create_bucket
from releng.aws.launch import AutoScalingLauncher
from releng.aws.status import record_key
from releng.aws.worker import Worker
from releng.digest import file_sha256
from releng.errors import PublishError
from releng.gpg import Signer
from releng.project import Project
from releng.publish.flows import (
    Destination,
    LockOptions,
    publish_source,
    scratch_builds,
    update_repos,
    upload_build,
)
from releng.publish.scratch import fetch_builds, scratch_rebuilds, upload_rebuild
from releng.publish.sync import S3Url, SyncOptions
from releng.rebuild.policy import check_rebuild_policy, unverified
from releng.version import Version
from tests.apt_debs import make_deb
from tests.fixtures.iam import ACCOUNT, REGION, IamMoto, allowed, resolve
from tests.fixtures.moto import create_distribution

pytestmark = pytest.mark.aws

ROOT = Path(__file__).resolve().parents[1]
DISTRO = "debian-12-bookworm"
VERSION = Version.parse("1.0.0")
SIGNING_KEY = "/releng/signing-key"
SIGNING_PASSPHRASE = "/releng/signing-passphrase"
PUBLIC_GIT_TOKEN = "/releng/public-git-token"
REBUILDER_KEY = "/releng/rebuilder-key"
REBUILDER_PASSPHRASE = "/releng/rebuilder-passphrase"
CACHE_PREFIX = "releng/cc"
ROLE_IDS = {
    **{q: template.worker_role_id(q) for q in S.WORKER_QUEUES},
    **{h: "".join(p.capitalize() for p in h.split("_")) + "FunctionRole" for h in S.QUEUE_HANDLERS},
    # the scheduled health check is a message on launch_workers' queue: its function runs it
    "health_check": "LaunchWorkersFunctionRole",
}


class Stack:
    """The stack's resources made by the admin on the enforcing server, and its roles' policies
    resolved to them."""

    def __init__(self, server: IamMoto) -> None:
        self.server = server
        tag = uuid.uuid4().hex[:8]
        self.name = f"iam-{tag}"
        self.scratch, self.downloads = f"{self.name}-scratch", f"{self.name}-downloads"
        self.cache = f"{self.name}-ccache"  # [build] cache_url in a bucket of its own
        s3, sqs, ec2 = (server.client(s) for s in ("s3", "sqs", "ec2"))
        for bucket in (self.scratch, self.downloads, self.cache):
            create_bucket(s3, bucket)
        self.queue_urls: dict[str, str] = {}
        for name in (*S.WORKER_QUEUES, *S.QUEUE_HANDLERS):
            fifo = name in S.MESSAGE_GROUPS
            attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "true"} if fifo else {}
            qname = f"{self.name}-{name.replace('_', '-')}" + (".fifo" if fifo else "")
            self.queue_urls[name] = sqs.create_queue(QueueName=qname, Attributes=attrs)["QueueUrl"]
        self.distribution = create_distribution(
            server.client("cloudfront"), f"{self.downloads}.s3.amazonaws.com"
        )
        # each queue's pool, named as the template names it
        autoscaling = server.client("autoscaling")
        self.groups: dict[str, str] = {}
        self.group_arns: dict[str, str] = {}
        for q in S.WORKER_QUEUES:
            lt = ec2.create_launch_template(
                LaunchTemplateName=f"{self.name}-{q}",
                LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.small"},
            )["LaunchTemplate"]["LaunchTemplateId"]
            self.groups[q] = f"{self.name}-{q.replace('_', '-')}-workers"
            autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=self.groups[q], MinSize=0, MaxSize=2,
                LaunchTemplate={"LaunchTemplateId": lt, "Version": "1"},
                AvailabilityZones=[f"{REGION}a"],
            )  # fmt: skip
            (desc,) = autoscaling.describe_auto_scaling_groups(
                AutoScalingGroupNames=[self.groups[q]]
            )["AutoScalingGroups"]
            self.group_arns[q] = desc["AutoScalingGroupARN"]
        ssm = server.client("ssm")
        ssm.put_parameter(Name=SIGNING_KEY, Value="-----BEGIN PGP PRIVATE KEY BLOCK-----", Type="SecureString", Overwrite=True)  # fmt: skip
        ssm.put_parameter(Name=SIGNING_PASSPHRASE, Value="secret", Type="SecureString", Overwrite=True)  # fmt: skip
        ssm.put_parameter(Name=PUBLIC_GIT_TOKEN, Value="ghp_token", Type="SecureString", Overwrite=True)  # fmt: skip
        ssm.put_parameter(Name=REBUILDER_KEY, Value="-----BEGIN PGP PRIVATE KEY BLOCK-----", Type="SecureString", Overwrite=True)  # fmt: skip
        ssm.put_parameter(Name=REBUILDER_PASSPHRASE, Value="rebuilder", Type="SecureString", Overwrite=True)  # fmt: skip
        self.documents = self._documents()
        self.credentials = {
            role: server.user(f"{self.name}-{role}", doc) for role, doc in self.documents.items()
        }

    def arn(self, service: str, rest: str) -> str:
        return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{rest}"

    def _documents(self) -> dict[str, dict]:
        tmpl = yaml.safe_load((ROOT / template.TEMPLATE_FILE).read_text(encoding="utf-8"))
        values: dict[str, object] = {
            "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
            "AWS::StackName": self.name, "SigningKeyParameter": SIGNING_KEY,
            "SigningPassphraseParameter": SIGNING_PASSPHRASE, "GitCredentialsParameter": "",
            "SigningKey2Parameter": "", "SigningKey3Parameter": "",
            "PublicGitTokenParameter": PUBLIC_GIT_TOKEN,
            "RebuilderKeyParameter": REBUILDER_KEY, "RebuilderPassphraseParameter": REBUILDER_PASSPHRASE,
            "DownloadsPrefix": "", "Distribution": self.distribution,
            "ScratchBucket": self.scratch, "ScratchBucket.Arn": f"arn:aws:s3:::{self.scratch}",
            "DownloadsBucket": self.downloads,
            "DownloadsBucket.Arn": f"arn:aws:s3:::{self.downloads}",
            "CompilerCacheBucket": self.cache, "CompilerCachePrefix": CACHE_PREFIX,
        }  # fmt: skip
        for name, url in self.queue_urls.items():
            qid = "".join(p.capitalize() for p in name.split("_")) + "Queue"
            values[qid] = url
            values[f"{qid}.Arn"] = self.arn("sqs", url.rsplit("/", 1)[1])
        for role_id in ROLE_IDS.values():
            values[f"{role_id}.Arn"] = f"arn:aws:iam::{ACCOUNT}:role/{self.name}-{role_id}"
        conditions = dict.fromkeys(tmpl["Conditions"], False)
        conditions["HasPublicGitToken"] = True  # release day: the publisher pushes with a token
        conditions["HasCompilerCacheBucket"] = True
        resources = tmpl["Resources"]
        return {
            role: resolve(
                resources[role_id]["Properties"]["Policies"][0]["PolicyDocument"],
                values,
                conditions,
            )
            for role, role_id in ROLE_IDS.items()
        }

    def client(self, role: str, service: str):
        return self.server.client(service, self.credentials[role])

    def factory(self, role: str):
        return lambda service: self.client(role, service)


@pytest.fixture(scope="module")
def stack(iam_moto) -> Stack:
    return Stack(iam_moto)


@pytest.fixture
def signer(gpg_key) -> Signer:
    return Signer(gnupghome=gpg_key.home, key=gpg_key.fingerprint, passphrase=gpg_key.passphrase)


def _denied(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("accessdenied", "access denied", "not authorized"))


def _source_files(project) -> list[Path]:
    tarball = project.tarball_path(VERSION)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    sums = tarball.with_name(f"{project.config.package_name(VERSION)}-1.0.0.SHA256SUMS")
    files = [tarball, tarball.with_name(tarball.name + ".asc"), sums, sums.with_name(sums.name + ".asc")]  # fmt: skip
    for path in files:
        path.write_bytes(f"{path.name}\n".encode())
    return files


def _build(project) -> None:
    out = project.build_dir(VERSION, DISTRO)
    out.mkdir(parents=True, exist_ok=True)
    make_deb(out, "tally", "1.0.0-1~bookworm")


def _two_arch_build(project, version: Version = VERSION) -> Project:
    """``project`` with product.toml's architectures amd64 and arm64, and both builds of
    ``version`` in out/<V>/<DISTRO>/ as make-package leaves them: each its packages and its
    stamp."""
    text = (project.root / "product.toml").read_text()
    two = text.replace('architectures = ["amd64"]', 'architectures = ["amd64", "arm64"]', 1)
    assert two != text
    (project.root / "product.toml").write_text(two)
    project = Project.load(project.root)
    out = project.build_dir(version, DISTRO)
    out.mkdir(parents=True, exist_ok=True)
    for arch, stamp in (("amd64", "build.json"), ("arm64", "build-arm64.json")):
        deb = make_deb(out, "tally", f"{version.text}-1~bookworm", arch=arch)
        (out / stamp).write_text(json.dumps({"architecture": arch, "files": [deb.name]}))
    return project


def _run_worker(stack: Stack, role: str, task: dict, tmp_path: Path, caplog) -> None:
    """One task through the real worker loop, as the worker role: receive, visibility, status
    records, fetch, the commands, log upload, answer, delete. The token is not a real one
    (moto runs no execution here): Step Functions' answer must be "no such task", not
    AccessDenied."""
    queue = role
    body = {"token": f"token-{uuid.uuid4().hex}", "task": task, "heartbeat_seconds": 3,
            "timeout_seconds": 600}  # fmt: skip
    extra = {"MessageGroupId": S.MESSAGE_GROUPS[queue]} if queue in S.MESSAGE_GROUPS else {}
    stack.server.client("sqs").send_message(
        QueueUrl=stack.queue_urls[queue], MessageBody=json.dumps(body), **extra
    )
    worker = Worker(
        queue_url=stack.queue_urls[queue], root=tmp_path, sqs=stack.client(role, "sqs"),
        sfn=stack.client(role, "stepfunctions"), s3=stack.client(role, "s3"),
        env={"PATH": "/usr/bin:/bin"}, instance=f"i-{role}", wait_seconds=1, visibility_seconds=30,
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert worker.run(idle_seconds=5, max_tasks=1) == 1
    assert not _denied(Exception(caplog.text)), caplog.text
    assert "extending the message's visibility failed" not in caplog.text
    s3 = stack.server.client("s3")
    status = json.loads(
        s3.get_object(
            Bucket=stack.scratch,
            Key=record_key(
                "iam", task["version"], task["distro"], task["step"], task.get("arch", "")
            ),
        )["Body"].read()
    )
    assert status["state"] == "succeeded", status
    assert s3.get_object(Bucket=stack.scratch, Key=task["log"]["key"])["Body"].read()


def _task(stack: Stack, step: str, distro: str = "", arch: str = "") -> dict:
    return {
        "step": step, "version": VERSION.text, "distro": distro, "arch": arch, "execution": "iam",
        "log": {"bucket": stack.scratch,
                "key": handlers.log_key("iam", VERSION.text, distro, step, arch)},
        "commands": [["sleep", "2"]],  # the heartbeat thread extends the message meanwhile
        "fetch": [{"bucket": stack.scratch, "prefix": f"{VERSION.text}/source/", "dest": "out/"}],
    }  # fmt: skip


def test_tarball_worker(stack, project_copy, tmp_path, caplog) -> None:
    s3 = stack.client("tarball", "s3")
    _source_files(project_copy)
    for _ in range(2):  # the second upload starts by deleting the first one's completion marker
        upload_build(s3, project_copy, VERSION, "source", scratch=stack.scratch)
    _run_worker(stack, "tarball", _task(stack, S.MAKE_SOURCE_TARBALL), tmp_path, caplog)
    ssm = stack.client("tarball", "ssm")
    for name in (SIGNING_KEY, SIGNING_PASSPHRASE):
        assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]


def test_build_worker_and_it_cannot_read_the_signing_key(stack, project_copy, tmp_path, caplog) -> None:  # fmt: skip
    s3 = stack.client("build", "s3")
    _build(project_copy)
    for _ in range(2):
        upload_build(s3, project_copy, VERSION, DISTRO, scratch=stack.scratch)
    assert DISTRO in scratch_builds(s3, stack.scratch, VERSION)
    _run_worker(stack, "build", _task(stack, S.MAKE_BINARY_PACKAGE, DISTRO), tmp_path, caplog)
    with pytest.raises(ClientError) as denied:
        stack.client("build", "ssm").get_parameter(Name=SIGNING_KEY, WithDecryption=True)
    assert _denied(denied.value)
    # and it may not write the public bucket
    with pytest.raises(ClientError) as denied:
        s3.put_object(Bucket=stack.downloads, Key="dists/x", Body=b"x")
    assert _denied(denied.value)


def test_arm64_build_worker_and_it_cannot_read_the_signing_key(
    stack, project_copy, tmp_path, caplog
) -> None:
    """The Graviton builders' role: its own queue, its architecture's part of scratch."""
    project = _two_arch_build(project_copy)
    s3 = stack.client("build_arm64", "s3")
    for _ in range(2):
        upload_build(s3, project, VERSION, DISTRO, scratch=stack.scratch, arch="arm64")
    # its own part: the arm64 stamp and packages only, whatever else out/<V>/<DISTRO>/ holds
    part = scratch_builds(s3, stack.scratch, VERSION)[DISTRO]["arm64"]
    assert sorted(part) == ["build-arm64.json", "tally_1.0.0-1~bookworm_arm64.deb"]
    task = _task(stack, S.MAKE_BINARY_PACKAGE, DISTRO, "arm64")
    _run_worker(stack, "build_arm64", task, tmp_path, caplog)
    with pytest.raises(ClientError) as denied:
        stack.client("build_arm64", "ssm").get_parameter(Name=SIGNING_KEY, WithDecryption=True)
    assert _denied(denied.value)


def test_the_build_worker_shares_a_compiler_cache_bucket_within_its_prefix(stack, tmp_path) -> None:  # fmt: skip
    """The s3 mode's real sync as the builder role, the cache in a bucket of its own: upload,
    listing and download under the prefix; nothing outside it, and no other role there."""
    from releng.compiler_cache import S3Cache, S3Location

    location = S3Location.parse(f"s3://{stack.cache}/{CACHE_PREFIX}")
    cache = S3Cache(stack.client("build", "s3"), location, distro_id=DISTRO, arch="amd64")
    (tmp_path / "here" / "a" / "b").mkdir(parents=True)
    (tmp_path / "here" / "a" / "b" / "0123abcdR").write_bytes(b"an object file")
    assert cache.upload(tmp_path / "here", {}) == (1, 14)
    remote = cache.listing()
    assert list(remote) == ["a/b/0123abcdR"]
    (tmp_path / "there").mkdir()
    got = cache.download(tmp_path / "there", remote, limit=10**6, uid=os.getuid(), gid=os.getgid())
    assert got == (1, 14)
    assert (tmp_path / "there" / "a" / "b" / "0123abcdR").read_bytes() == b"an object file"
    s3 = stack.client("build", "s3")
    with pytest.raises(ClientError) as denied:
        s3.put_object(Bucket=stack.cache, Key="elsewhere/x", Body=b"x")
    assert _denied(denied.value)
    for role in ("tarball", "publish"):
        with pytest.raises(ClientError) as denied:
            stack.client(role, "s3").get_object(Bucket=stack.cache, Key=f"{cache.prefix}a/b/0123abcdR")  # fmt: skip
        assert _denied(denied.value), role
    # the Graviton builders share it too, in their architecture's part
    arm64 = S3Cache(stack.client("build_arm64", "s3"), location, distro_id=DISTRO, arch="arm64")
    assert arm64.upload(tmp_path / "here", {}) == (1, 14)
    assert list(arm64.listing()) == ["a/b/0123abcdR"]


def test_publish_worker(stack, project_copy, signer, tmp_path, caplog) -> None:
    """The publisher collects every architecture's part of a distro's build (uploaded by
    the amd64 and the arm64 builders) into one include."""
    project_copy = _two_arch_build(project_copy)
    upload_build(stack.client("build", "s3"), project_copy, VERSION, DISTRO,
                 scratch=stack.scratch, arch="amd64")  # fmt: skip
    upload_build(stack.client("build_arm64", "s3"), project_copy, VERSION, DISTRO,
                 scratch=stack.scratch, arch="arm64")  # fmt: skip
    admin = stack.server.client("s3")
    _source_files(project_copy)
    upload_build(admin, project_copy, VERSION, "source", scratch=stack.scratch)
    s3 = stack.client("publish", "s3")
    dest = Destination(
        s3=s3, url=S3Url(stack.downloads, ""), cloudfront=stack.client("publish", "cloudfront"),
        distribution_id=stack.distribution, sync=SyncOptions(grace=dt.timedelta(0)),
        lock=LockOptions(timeout=60, poll=0.2), title="tally packages",
    )  # fmt: skip
    result = update_repos(
        project_copy, signer, version=VERSION, dest=dest, scratch=stack.scratch,
        work=tmp_path / "work",
    )  # fmt: skip
    assert result.included == {DISTRO: ("bookworm", "bookworm-1.0")}
    for arch in ("amd64", "arm64"):  # each architecture's index lists its own build
        packages = admin.get_object(
            Bucket=stack.downloads, Key=f"dists/bookworm/main/binary-{arch}/Packages.gz"
        )["Body"].read()
        assert f"Architecture: {arch}\n".encode() in gzip.decompress(packages), arch
    assert result.scratch_deleted > 0  # the publisher removes what it published from scratch
    assert scratch_builds(admin, stack.scratch, VERSION) == {}
    assert publish_source(s3, project_copy, VERSION, scratch=stack.scratch, dest=dest)
    _run_worker(stack, "publish", _task(stack, S.PUBLISH_BINARY_PACKAGES), tmp_path, caplog)
    assert stack.client("publish", "ssm").get_parameter(Name=SIGNING_KEY, WithDecryption=True)


def _summary(rebuild: Path, result: str) -> None:
    """rebuild.json: the result, and the sha256 of each package of the build beside it."""
    packages = {p.name: {"first": file_sha256(p)} for p in rebuild.parent.glob("*.deb")}
    summary = {"result": result, "architecture": "amd64", "packages": packages}
    (rebuild / "rebuild.json").write_text(json.dumps(summary))


def _rebuild_result(project, result: str = "reproduced") -> list[str]:
    """out/<V>/<DISTRO>/rebuild/ as verify-rebuild leaves it (its shape, not a real rebuild)."""
    rebuild = project.build_dir(VERSION, DISTRO) / "rebuild"
    (rebuild / "attestations").mkdir(parents=True, exist_ok=True)
    _summary(rebuild, result)
    (rebuild / "attestations" / "tally.deb.intoto.json").write_text("{}")
    (rebuild / "attestations" / "tally.deb.intoto.json.asc").write_text("signature")
    return ["attestations/tally.deb.intoto.json", "attestations/tally.deb.intoto.json.asc",
            "rebuild.json"]  # fmt: skip


def test_verify_worker_writes_only_its_rebuild_prefix_and_never_the_signing_key(
    stack, project_copy, tmp_path, caplog
) -> None:
    """The rebuilders (issue 26.5): read the build in scratch, put verify-rebuild's result
    beside it (twice: the second upload deletes the first one's marker), read the rebuilder's
    key; refused the archive signing key, the build's own files, the public bucket."""
    _build(project_copy)
    upload_build(stack.client("build", "s3"), project_copy, VERSION, DISTRO, scratch=stack.scratch)
    s3 = stack.client("verify", "s3")
    build = f"{VERSION.text}/{DISTRO}/amd64/"
    assert s3.get_object(Bucket=stack.scratch, Key=build + ".releng-complete.json")["Body"].read()
    listed = _rebuild_result(project_copy)
    for _ in range(2):
        assert upload_rebuild(s3, project_copy, VERSION, DISTRO, scratch=stack.scratch, arch="amd64") == listed  # fmt: skip
    assert scratch_rebuilds(s3, stack.scratch, VERSION)[(DISTRO, "amd64")]["result"] == "reproduced"
    task = _task(stack, S.VERIFY_REBUILD, DISTRO, "amd64")
    task["fetch"] = [{"bucket": stack.scratch, "prefix": build, "dest": f"out/{VERSION.text}/{DISTRO}/"}]  # fmt: skip
    _run_worker(stack, "verify", task, tmp_path, caplog)
    assert (tmp_path / "out" / VERSION.text / DISTRO / "tally_1.0.0-1~bookworm_amd64.deb").is_file()
    # the build itself, the other builds' parts, the public bucket: refused
    for bucket, key in (
        (stack.scratch, build + "tally_1.0.0-1~bookworm_amd64.deb"),
        (stack.scratch, build + ".releng-complete.json"),
        (stack.scratch, f"{VERSION.text}/source/tally-1.0.0.tar.gz"),
        (stack.downloads, f"{VERSION.text}/{DISTRO}/amd64/rebuild/rebuild.json"),
    ):
        with pytest.raises(ClientError) as denied:
            s3.put_object(Bucket=bucket, Key=key, Body=b"forged")
        assert _denied(denied.value), key
    with pytest.raises(ClientError) as denied:
        s3.delete_object(Bucket=stack.scratch, Key=build + ".releng-complete.json")
    assert _denied(denied.value)
    # its own key, a real call; the archive's, by moto's evaluator on the real ARNs (moto
    # checks SSM calls against "*" only)
    ssm = stack.client("verify", "ssm")
    for name in (REBUILDER_KEY, REBUILDER_PASSPHRASE):
        assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    doc = stack.documents["verify"]
    for name in (SIGNING_KEY, SIGNING_PASSPHRASE, PUBLIC_GIT_TOKEN):
        assert not allowed(doc, "ssm:GetParameter", stack.arn("ssm", f"parameter{name}")), name
    readers = {
        role for role, d in stack.documents.items()
        if allowed(d, "ssm:GetParameter", stack.arn("ssm", f"parameter{REBUILDER_KEY}"))
    }  # fmt: skip
    assert readers == {"verify", "verify_arm64"}  # the rebuilders, amd64 and Graviton


def test_the_publisher_takes_a_reproduced_rebuild_and_holds_back_a_differing_one(
    stack, project_copy, tmp_path
) -> None:
    """[verify] rebuild = "require" on S3: the publish role downloads a build's rebuild result
    with it (the policy and the attestations read it), and leaves a build whose rebuild
    differs in scratch instead of refusing the whole version."""
    product = project_copy.root / "product.toml"
    product.write_text(product.read_text() + '\n[verify]\nrebuild = "require"\n')
    project = Project.load(project_copy.root)
    version = Version.parse("1.0.1")
    admin = stack.server.client("s3")
    for distro, result in ((DISTRO, "reproduced"), ("debian-13-trixie", "differs")):
        out = project.build_dir(version, distro)
        out.mkdir(parents=True, exist_ok=True)
        make_deb(out, "tally", f"1.0.1-1~{distro}")
        upload_build(admin, project, version, distro, scratch=stack.scratch)
        rebuild = out / "rebuild"
        rebuild.mkdir()
        _summary(rebuild, result)
        upload_rebuild(stack.client("verify", "s3"), project, version, distro,
                       scratch=stack.scratch, arch="amd64")  # fmt: skip
    dirs, parts = fetch_builds(project, stack.client("publish", "s3"), stack.scratch, version, tmp_path)  # fmt: skip
    assert parts == [(DISTRO, "amd64")]
    summary = json.loads((dirs[DISTRO] / "rebuild" / "rebuild.json").read_text())
    assert summary["result"] == "reproduced"
    assert sorted(scratch_builds(admin, stack.scratch, version)) == [DISTRO, "debian-13-trixie"]
    # a rebuild/ left from another build (verify-rebuild failed before writing its own) is
    # never uploaded as this build's
    deb = next(project.build_dir(version, DISTRO).glob("*.deb"))
    deb.write_bytes(deb.read_bytes() + b"another build")
    with pytest.raises(PublishError, match="is not the rebuild of the build beside it"):
        upload_rebuild(admin, project, version, DISTRO, scratch=stack.scratch, arch="amd64")


def test_a_held_back_architecture_keeps_the_primary_build_in_scratch_for_its_verify_rerun(
    stack, project_copy, tmp_path
) -> None:
    """require, two architectures: the arm64 rebuild differs, the amd64 build is published.
    The amd64 build stays in scratch all the same (not in the parts to delete): a rerun of
    the arm64 verify rebuilds from its source package. Once arm64 reproduces, both go."""
    product = project_copy.root / "product.toml"
    product.write_text(product.read_text() + '\n[verify]\nrebuild = "require"\n')
    version = Version.parse("1.0.2")  # the module's stack: a version no other test uploads
    project = _two_arch_build(project_copy, version)
    out = project.build_dir(version, DISTRO)
    admin = stack.server.client("s3")
    debs = {arch: next(out.glob(f"*_{arch}.deb")) for arch in ("amd64", "arm64")}
    for arch in debs:
        upload_build(admin, project, version, DISTRO, scratch=stack.scratch, arch=arch)

    def rebuilt(arch: str, result: str) -> None:
        rebuild = out / "rebuild"
        shutil.rmtree(rebuild, ignore_errors=True)
        rebuild.mkdir()
        packages = {debs[arch].name: {"first": file_sha256(debs[arch])}}
        summary = {"result": result, "architecture": arch, "packages": packages}
        (rebuild / "rebuild.json").write_text(json.dumps(summary))
        upload_rebuild(stack.client("verify", "s3"), project, version, DISTRO,
                       scratch=stack.scratch, arch=arch)  # fmt: skip

    rebuilt("amd64", "reproduced")
    rebuilt("arm64", "differs")
    publisher = stack.client("publish", "s3")
    dirs, parts = fetch_builds(project, publisher, stack.scratch, version, tmp_path / "first")
    assert sorted(p.name for p in dirs[DISTRO].glob("*.deb")) == [debs["amd64"].name]
    assert parts == []  # published, and left for the arm64 verify's rerun
    rebuilt("arm64", "reproduced")  # the rerun
    dirs, parts = fetch_builds(project, publisher, stack.scratch, version, tmp_path / "rerun")
    assert sorted(p.name for p in dirs[DISTRO].glob("*.deb")) == sorted(
        d.name for d in debs.values()
    )
    assert parts == [(DISTRO, "amd64"), (DISTRO, "arm64")]


def _source_package(project) -> list[str]:
    """A .dsc and the files it lists beside the amd64 build, listed in its stamp (make-package
    makes them with the primary architecture's build only)."""
    out = project.build_dir(VERSION, DISTRO)
    orig, debian = out / "tally_1.0.0.orig.tar.gz", out / "tally_1.0.0-1~bookworm.debian.tar.xz"
    orig.write_bytes(b"orig")
    debian.write_bytes(b"debian")
    sums = "".join(f" {file_sha256(p)} {p.stat().st_size} {p.name}\n" for p in (orig, debian))
    dsc = out / "tally_1.0.0-1~bookworm.dsc"
    dsc.write_text(f"Source: tally\nVersion: 1.0.0-1~bookworm\nChecksums-Sha256:\n{sums}")
    stamp = json.loads((out / "build.json").read_text())
    names = [dsc.name, orig.name, debian.name]
    (out / "build.json").write_text(json.dumps({**stamp, "files": [*stamp["files"], *names]}))
    return names


def _attested(project, arch: str) -> None:
    """out/<V>/<DISTRO>/rebuild/ as verify-rebuild leaves it for ``arch``'s build: a reproduced
    result and an attestation per package (its shape, not a real rebuild)."""
    out = project.build_dir(VERSION, DISTRO)
    rebuild = out / "rebuild"
    if rebuild.exists():
        shutil.rmtree(rebuild)  # each AWS rebuilder has its own architecture's only
    (rebuild / "attestations").mkdir(parents=True)
    debs = sorted(out.glob(f"*_{arch}.deb"))
    for deb in debs:
        (rebuild / "attestations" / f"{deb.name}.intoto.json").write_text("{}")
        (rebuild / "attestations" / f"{deb.name}.intoto.json.asc").write_text("signature")
    summary = {"result": "reproduced", "architecture": arch, "architectures": [arch],
               "packages": {d.name: {"first": file_sha256(d)} for d in debs}}  # fmt: skip
    (rebuild / "rebuild.json").write_text(json.dumps(summary))


def test_arm64_verify_worker_rebuilds_from_the_amd64_source_package_with_its_own_role(
    stack, project_copy, tmp_path, caplog
) -> None:
    """The Graviton rebuilders (verify_arm64): prepare_task (its role) waits for the amd64
    build's source package, then sends the task to their queue; their worker loop (their role)
    fetches the arm64 build and the amd64 part's .dsc and sources only; they put the arm64
    rebuild's result beside the arm64 build and nothing else, never read the archive key.
    The publisher then takes both architectures' rebuilds into one rebuild.json, so
    [verify] rebuild = "require" finds every package verified."""
    admin = stack.server.client("s3")  # the stack is the module's: other tests' builds go
    for obj in admin.list_objects_v2(Bucket=stack.scratch, Prefix=f"{VERSION.text}/{DISTRO}/").get("Contents", []):  # fmt: skip
        admin.delete_object(Bucket=stack.scratch, Key=obj["Key"])
    project = _two_arch_build(project_copy)
    source = _source_package(project)
    ctx = _context(stack, "prepare_task")
    ctx.catalog = dataclasses.replace(
        _catalog(), architectures=["amd64", "arm64"], verify_rebuild="require"
    )
    upload_build(stack.client("build_arm64", "s3"), project, VERSION, DISTRO,
                 scratch=stack.scratch, arch="arm64")  # fmt: skip
    plan = handlers.parse_input({"versions": [VERSION.text], "distros": [DISTRO]}, ctx)
    event = {"step": S.VERIFY_REBUILD, "version": plan["versions"][0], "config": plan["config"],
             "execution": "iam", "distro": DISTRO, "arch": "arm64"}  # fmt: skip
    with pytest.raises(handlers.SourcePending):  # the amd64 build is still to come
        handlers.prepare_task(event, ctx)
    upload_build(stack.client("build", "s3"), project, VERSION, DISTRO, scratch=stack.scratch)
    task = handlers.prepare_task(event, ctx)
    assert task["queue_url"] == stack.queue_urls["verify_arm64"]
    task = {**task, "commands": [["sleep", "2"]], "always": []}
    root = tmp_path / "graviton"
    _run_worker(stack, "verify_arm64", task, root, caplog)
    fetched = sorted(p.name for p in (root / "out" / VERSION.text / DISTRO).iterdir())
    assert fetched == sorted([*source, "build-arm64.json", "tally_1.0.0-1~bookworm_arm64.deb"])
    s3 = stack.client("verify_arm64", "s3")
    _attested(project, "arm64")
    upload_rebuild(s3, project, VERSION, DISTRO, scratch=stack.scratch, arch="arm64")
    arm64 = f"{VERSION.text}/{DISTRO}/arm64/"
    for bucket, key in (
        (stack.scratch, arm64 + "tally_1.0.0-1~bookworm_arm64.deb"),
        (stack.scratch, arm64 + ".releng-complete.json"),
        (stack.scratch, f"{VERSION.text}/{DISTRO}/amd64/{source[0]}"),
        (stack.scratch, f"{VERSION.text}/source/tally-1.0.0.tar.gz"),
        (stack.downloads, arm64 + "rebuild/rebuild.json"),
    ):
        with pytest.raises(ClientError) as denied:
            s3.put_object(Bucket=bucket, Key=key, Body=b"forged")
        assert _denied(denied.value), key
    ssm = stack.client("verify_arm64", "ssm")
    assert ssm.get_parameter(Name=REBUILDER_KEY, WithDecryption=True)["Parameter"]["Value"]
    doc = stack.documents["verify_arm64"]
    for name in (SIGNING_KEY, SIGNING_PASSPHRASE, PUBLIC_GIT_TOKEN):
        assert not allowed(doc, "ssm:GetParameter", stack.arn("ssm", f"parameter{name}")), name
    # the publisher: both rebuilds of the distro in one rebuild/, nothing unverified
    _attested(project, "amd64")
    upload_rebuild(stack.client("verify", "s3"), project, VERSION, DISTRO,
                   scratch=stack.scratch, arch="amd64")  # fmt: skip
    product = project.root / "product.toml"
    product.write_text(product.read_text() + '\n[verify]\nrebuild = "require"\n')
    project = Project.load(project.root)
    dirs, parts = fetch_builds(project, stack.client("publish", "s3"), stack.scratch, VERSION,
                               tmp_path / "publish")  # fmt: skip
    assert sorted(parts) == [(DISTRO, "amd64"), (DISTRO, "arm64")]
    summary = json.loads((dirs[DISTRO] / "rebuild" / "rebuild.json").read_text())
    assert summary["architectures"] == ["amd64", "arm64"]
    assert sorted(summary["packages"]) == [
        "tally_1.0.0-1~bookworm_amd64.deb",
        "tally_1.0.0-1~bookworm_arm64.deb",
    ]
    assert unverified(dirs[DISTRO]) == []
    check_rebuild_policy("require", [dirs[DISTRO]], version=VERSION.text)  # raises if not


def _context(stack: Stack, role: str) -> handlers.Context:
    return handlers.Context(
        client=stack.factory(role),
        catalog=_catalog(),
        settings={
            handlers.SCRATCH_BUCKET: stack.scratch,
            handlers.DOWNLOADS_BUCKET: stack.downloads,
            handlers.DOWNLOADS_PREFIX: "",
            handlers.DISTRIBUTION_ID: stack.distribution,
            handlers.QUEUE_URLS: json.dumps({q: stack.queue_urls[q] for q in S.WORKER_QUEUES}),
        },
        launcher=AutoScalingLauncher(
            autoscaling=stack.client(role, "autoscaling"), groups=stack.groups
        ),
        today=lambda: dt.date(2026, 11, 30),
    )


def _catalog() -> Catalog:
    return Catalog.from_project(Project.load(ROOT))


def _handler_events(stack: Stack) -> dict[str, list[dict]]:
    matrix = [{"distro": DISTRO, "arch": arch} for arch in ("amd64", "arm64")]
    plan = {"version": VERSION.text, "kind": "release", "distros": [DISTRO], "matrix": matrix,
            "steps": list(S.STEPS)}  # fmt: skip
    config = {"timeouts": dict(S.DEFAULT_TIMEOUTS), "heartbeat_seconds": 600}
    prepare = [
        {"step": step, "version": plan, "config": config, "execution": "iam", "distro": DISTRO}
        for step in (S.MAKE_SOURCE_TARBALL, S.PUBLISH_SOURCE_TARBALL)
    ] + [  # each architecture's build: its scratch part, its queue
        {"step": S.MAKE_BINARY_PACKAGE, "version": plan, "config": config, "execution": "iam",
         **build}
        for build in matrix
    ] + [{"step": S.PUBLISH_BINARY_PACKAGES, "version": plan, "config": config, "execution": "iam",
          "builds": [{"step": S.MAKE_BINARY_PACKAGE, **b} for b in matrix]}]  # fmt: skip
    failure = {"failed": True, "step": S.MAKE_BINARY_PACKAGE, "version": VERSION.text,
               "distro": DISTRO, "arch": "arm64", "error": {"Error": "Releng.StepFailed", "Cause": "exit 2"}}  # fmt: skip
    return {
        "parse_input": [{"versions": [VERSION.text]}],
        "prepare_task": prepare,
        "launch_workers": [{"queue": q} for q in S.WORKER_QUEUES],
        "check_if_repos_changed": [{"results": []}],
        "update_indices": [{"repos": {"changed": True}}],
        "invalidate_cloudfront": [
            {"indices": {"invalidate": ["/dists/bookworm/*"]}, "execution": "iam"}
        ],
        "check_for_failures": [{"execution": "iam", "results": [failure]}],
        "health_check": [{}],
    }


@pytest.mark.parametrize("handler", [*S.QUEUE_HANDLERS, "health_check"])
def test_handler(stack, handler) -> None:
    """Each handler's work as its function's role; then its answer to Step Functions and a
    failure's traceback going to S3, as every handler does in dispatch."""
    ctx = _context(stack, handler)
    if handler == "health_check":
        stack.server.client("sqs").send_message(
            QueueUrl=stack.queue_urls["tarball"], MessageBody="{}"
        )
    for event in _handler_events(stack)[handler]:
        handlers.run_handler(handler, event, ctx)
    sfn = stack.client(handler, "stepfunctions")
    for call in (
        lambda: sfn.send_task_success(taskToken="no-such-task", output="{}"),
        lambda: sfn.send_task_failure(taskToken="no-such-task", error="E", cause="c"),
    ):
        try:  # this server runs no executions: "no such task" or a no-op, never AccessDenied
            call()
        except ClientError as exc:
            assert not _denied(exc), exc
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        cause = handlers._failure_cause(exc, handler, "iam", ctx)
    assert f"traceback: s3://{stack.scratch}/logs/iam/handlers/{handler}-" in cause


def test_a_missing_action_fails_the_run(stack, project_copy) -> None:
    """The build role without s3:DeleteObject (the defect this test was written for): the
    second upload's first request is refused."""
    doc = json.loads(json.dumps(stack.documents["build"]))
    for st in doc["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        st["Action"] = [a for a in actions if a != "s3:DeleteObject"] or ["s3:GetObject"]
    creds = stack.server.user(f"{stack.name}-build-without-delete", doc)
    _build(project_copy)
    with pytest.raises(Exception) as denied:
        upload_build(stack.server.client("s3", creds), project_copy, VERSION, DISTRO, scratch=stack.scratch)  # fmt: skip
    assert _denied(denied.value)


def test_only_the_signing_roles_can_read_the_signing_key(stack) -> None:
    """Resource-level, with moto's evaluator and the parameters' real ARNs (moto checks SSM
    calls against "*" only): the tarball and publish workers, nobody else."""
    readers = {
        role
        for role, doc in stack.documents.items()
        for name in (SIGNING_KEY, SIGNING_PASSPHRASE)
        if allowed(doc, "ssm:GetParameter", stack.arn("ssm", f"parameter{name}"))
    }
    assert readers == {"tarball", "publish"}
    signing = {role for role, kind in S.WORKER_KINDS.items() if "signing-key" in kind.permissions}
    assert readers == signing
    # CloudFront invalidation names its resource too
    dist = f"arn:aws:cloudfront::{ACCOUNT}:distribution/{stack.distribution}"
    assert {r for r, d in stack.documents.items() if allowed(d, "cloudfront:CreateInvalidation", dist)} == {"publish", "invalidate_cloudfront"}  # fmt: skip


def test_no_role_starts_instances_or_passes_roles_and_pools_have_one_owner(stack) -> None:
    """Only the Auto Scaling service starts workers (from the stack's templates, with their
    roles): no runtime role may RunInstances or PassRole. The launch function raises each
    pool's desired capacity; a worker may leave its own group only (moto's evaluator on the
    groups' real ARNs, moto checks Auto Scaling calls against "*")."""
    build_role = f"arn:aws:iam::{ACCOUNT}:role/{stack.name}-{template.worker_role_id('build')}"
    for role, doc in stack.documents.items():
        assert not allowed(doc, "iam:PassRole", build_role), role
        assert not allowed(doc, "ec2:RunInstances", "*"), role
    for queue, arn in stack.group_arns.items():
        raisers = {r for r, d in stack.documents.items() if allowed(d, "autoscaling:SetDesiredCapacity", arn)}  # fmt: skip
        assert raisers == {"launch_workers", "health_check"}
        leavers = {r for r, d in stack.documents.items() if allowed(d, "autoscaling:TerminateInstanceInAutoScalingGroup", arn)}  # fmt: skip
        assert leavers == {queue}
    # the real call, as the build worker's role: it leaves its group, lowering its capacity
    admin = stack.server.client("autoscaling")
    admin.set_desired_capacity(AutoScalingGroupName=stack.groups["build"], DesiredCapacity=1)
    (group,) = admin.describe_auto_scaling_groups(AutoScalingGroupNames=[stack.groups["build"]])[
        "AutoScalingGroups"]  # fmt: skip
    (instance,) = group["Instances"]
    stack.client("build", "autoscaling").terminate_instance_in_auto_scaling_group(
        InstanceId=instance["InstanceId"], ShouldDecrementDesiredCapacity=True
    )
    (group,) = admin.describe_auto_scaling_groups(AutoScalingGroupNames=[stack.groups["build"]])[
        "AutoScalingGroups"]  # fmt: skip
    assert group["DesiredCapacity"] == 0


def test_only_the_publisher_can_read_the_public_repositorys_token(stack) -> None:
    """The HTTPS token publish-release-source pushes the release tag with: the publish worker
    reads it (a real call), and no other role may (moto's evaluator on the real ARN)."""
    arn = stack.arn("ssm", f"parameter{PUBLIC_GIT_TOKEN}")
    readers = {r for r, d in stack.documents.items() if allowed(d, "ssm:GetParameter", arn)}
    assert readers == {"publish"}
    ssm = stack.client("publish", "ssm")
    assert ssm.get_parameter(Name=PUBLIC_GIT_TOKEN, WithDecryption=True)["Parameter"]["Value"]
