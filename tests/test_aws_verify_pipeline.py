"""The arm64 verify step through moto's executor, with real builds and rebuilds (issue 26.5 for
arm64): amd64 and arm64 builds of one distro, each verified on its own rebuilders' queue, the
arm64 rebuild from the amd64 build's source package, then a publish under
``[verify] rebuild = "require"``.

On AWS the arm64 build and its rebuild are native (Graviton workers, the verify_arm64 queue);
this host is amd64, so the same worker commands make a cross build and verify-rebuild
cross-rebuilds it (docs/rebuild.md, "Cross builds"). The test also proves the arm64 build's
own path: the build_arm64 queue and its part of scratch. IAM for the verify_arm64 role is
enforced in tests/test_aws_iam.py; the prepare_task pieces are in tests/test_aws_verify.py.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from releng.aws import run
from releng.aws import steps as S
from releng.aws.runner import LocalLauncher
from tests.test_aws_pipeline import (
    aws_env,  # noqa: F401  (the fixture, reused)
    deployed,
    forget_executions,
)

pytestmark = [pytest.mark.aws, pytest.mark.slow]

BOOKWORM = "debian-12-bookworm"
JOBS = (S.BUILD_QUEUE, S.BUILD_ARM64_QUEUE, S.VERIFY_QUEUE, S.VERIFY_ARM64_QUEUE)


class Arm64VerifyFirst(LocalLauncher):
    """One container job alive at a time (the shared machine's rule), and the amd64 build held
    back until the arm64 verify was prepared and found no source package yet: the order the
    parallel branches may take on AWS, made certain here."""

    def __init__(self, s3: Any, scratch: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.s3, self.scratch = s3, scratch
        self.prepared = self.saw_waiting = False
        self.arm64_part: list[str] | None = None  # scratch's arm64 part when publishing began

    def _part(self, arch: str) -> list[str]:
        prefix = f"{BOOKWORM}/{arch}/"
        listed = self.s3.list_objects_v2(Bucket=self.scratch, Prefix=f"1.0.0/{prefix}")
        return [o["Key"].split(prefix, 1)[1] for o in listed.get("Contents", [])]

    def _arm64_verify_prepared(self) -> bool:
        """Whether prepare_task has seen the arm64 verify (it waits, or it was skipped)."""
        if not self.prepared:
            listed = self.s3.list_objects_v2(Bucket=self.scratch, Prefix="status/")
            for obj in listed.get("Contents", []):
                if obj["Key"].endswith(f"/1.0.0/{BOOKWORM}/arm64/verify-rebuild.json"):
                    body = self.s3.get_object(Bucket=self.scratch, Key=obj["Key"])["Body"].read()
                    self.saw_waiting = json.loads(body)["state"] == "waiting"
                    self.prepared = True
        return self.prepared

    def launch(self, queue: str, count: int) -> list[str]:
        if queue == S.PUBLISH_QUEUE and self.arm64_part is None:
            self.arm64_part = self._part("arm64")  # the publish takes scratch's parts away
        if queue == S.BUILD_QUEUE and not self._arm64_verify_prepared():
            return []  # the health check asks again every few seconds
        if queue in JOBS and any(self.live(q) for q in JOBS):
            return []
        return super().launch(queue, min(count, 1) if queue in JOBS else count)


@pytest.mark.docker  # two builds and two rebuilds in containers, one at a time
def test_require_publishes_amd64_and_arm64_once_each_is_verified_on_its_own_rebuilders(
    moto_server,
    project_copy,
    gpg_key,
    aws_env,  # noqa: F811
    base_image,
):
    """amd64 and arm64 of bookworm, [verify] rebuild = "require". The arm64 branch builds
    first and its verify is prepared before the amd64 build exists: prepare_task answers
    Releng.SourcePending, the state retries it, and once the amd64 build put its .dsc in
    scratch the task goes to the verify_arm64 queue, whose worker rebuilds arm64 from that
    source package. Both rebuilds reproduce, and the publish takes both architectures with
    their attestations."""
    base_image(BOOKWORM)
    root = project_copy.root
    product = root / "product.toml"
    text = product.read_text()
    two = text.replace('architectures = ["amd64"]', 'architectures = ["amd64", "arm64"]', 1)
    assert two != text
    product.write_text(two + '\n[verify]\nrebuild = "require"\n')
    proj, aws, stack = deployed(root, gpg_key, aws_env)
    s3 = moto_server.client("s3")
    scratch, downloads = stack.scratch_bucket, stack.downloads_bucket
    launcher = Arm64VerifyFirst(
        s3, scratch, root=proj.root, queue_urls=stack.worker_queue_urls(),
        env={**aws_env, "RELENG_ROOT": str(proj.root)}, idle_seconds=5,
    )  # fmt: skip
    config = {"timeouts": {"tarball": 300, "build": 1500, "verify": 2400, "publish": 600},
              "heartbeat_seconds": 30}  # fmt: skip
    try:
        started = run.start(
            proj, aws, versions=["1.0.0"], distros=[BOOKWORM], config=config,
            steps=["make-source-tarball", "make-binary-package", "verify-rebuild",
                   "publish-binary-packages"],
        )  # fmt: skip
        desc = run.run_fake_ec2(proj, aws, started, env=aws_env, timeout=3600, launcher=launcher)
    finally:
        forget_executions(moto_server.client("stepfunctions"), proj.config.aws.stack_name)

    def status(arch: str, step: str) -> dict:
        key = f"status/{started.name}/1.0.0/{BOOKWORM}/{arch}/{step}.json"
        return json.loads(s3.get_object(Bucket=scratch, Key=key)["Body"].read())

    logs = {
        arch: s3.get_object(
            Bucket=scratch, Key=f"logs/{started.name}/1.0.0/{BOOKWORM}/{arch}/verify-rebuild.log"
        )["Body"]
        .read()
        .decode()
        for arch in ("amd64", "arm64")
    }
    assert desc["status"] == "SUCCEEDED", (desc, {a: t[-3000:] for a, t in logs.items()})
    assert launcher.saw_waiting  # the arm64 verify was prepared before the amd64 build ran
    ran = {arch: status(arch, "verify-rebuild") for arch in ("amd64", "arm64")}
    assert ran["arm64"]["state"] == ran["amd64"]["state"] == "succeeded"
    assert ran["arm64"]["instance"].startswith("local-verify_arm64-")  # its own rebuilders
    assert ran["amd64"]["instance"].startswith("local-verify-")
    # the arm64 build: the arm64 builders' queue, the same commands with --arch arm64, and its
    # own part of scratch; not the primary architecture, so no source package and no
    # Architecture: all packages in it
    built = status("arm64", "make-binary-package")
    assert built["instance"].startswith("local-build_arm64-"), built
    build_log = s3.get_object(
        Bucket=scratch, Key=f"logs/{started.name}/1.0.0/{BOOKWORM}/arm64/make-binary-package.log"
    )["Body"].read()
    assert b"--arch arm64" in build_log
    part = [k for k in launcher.arm64_part or [] if "/" not in k]  # not rebuild/
    assert {".releng-complete.json", "build-arm64.json"} <= set(part), part
    assert any(k.endswith("_arm64.deb") for k in part), part
    assert not [k for k in part if k.endswith((".dsc", "_all.deb"))], part
    # the arm64 rebuild started from the amd64 build's source package, fetched from its part
    dsc = f"s3://{scratch}/1.0.0/{BOOKWORM}/amd64/tally_1.0.0-1~deb12u1.dsc"
    assert f"fetch {dsc} -> " in logs["arm64"], logs["arm64"][:3000]
    assert "_amd64.deb" not in logs["arm64"].split("$ ", 1)[0]  # not the amd64 packages
    assert "--arch arm64" in logs["arm64"]
    # both architectures published, each package with its attestation
    for arch in ("amd64", "arm64"):
        packages = s3.get_object(
            Bucket=downloads, Key=f"dists/bookworm/main/binary-{arch}/Packages.gz"
        )["Body"].read()
        assert b"Package: tally\n" in gzip.decompress(packages), arch
    index = json.loads(
        s3.get_object(Bucket=downloads, Key="attestations/index.json")["Body"].read()
    )
    attested = {(e["package"], e["architecture"]) for e in index["packages"]}
    assert {("tally", "amd64"), ("tally", "arm64")} <= attested, attested
