"""Real apt, in a container on the host network, against the bucket's path-style URL on moto.

The demo product is built by the real make-package (session fixture ``demo_build``),
uploaded to the private scratch bucket, published by ``update_repos`` from an empty
work directory, and installed with ``apt-get install`` using ``Signed-By``. Then an
``apt-get update --error-on=any`` loop runs in a container while 20 publishes replace
the repository.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from releng.engine import Mount
from releng.gpg import Signer
from releng.project import Project
from releng.publish.flows import (
    Destination,
    LockOptions,
    public_read_policy,
    sync_repo,
    update_repos,
    upload_build,
)
from releng.publish.sync import S3Url, SyncOptions, s3_client
from releng.version import Version
from tests.apt_debs import make_deb
from tests.fixtures.s3repo import fetch

pytestmark = [pytest.mark.docker, pytest.mark.aws, pytest.mark.slow]

DISTRO = "debian-12-bookworm"
SUITE = "bookworm"
ONLY_OUR_SOURCES = "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* && cp /cfg/releng.sources /etc/apt/sources.list.d/"


@pytest.fixture
def public(moto_server, monkeypatch) -> tuple[S3Url, str]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    client = s3_client()
    tag = uuid.uuid4().hex[:10]
    bucket, scratch = f"apt-{tag}", f"apt-scratch-{tag}"
    client.create_bucket(Bucket=bucket)
    client.create_bucket(Bucket=scratch)
    client.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps(public_read_policy(bucket, "repo", name="tally"))
    )
    return S3Url(bucket, "repo"), scratch


def client_config(cfg: Path, base_url: str, keyring: bytes) -> Path:
    """A deb822 .sources with Signed-By, and the keyring, in one directory to mount at /cfg."""
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "tally-archive-keyring.gpg").write_bytes(keyring)
    (cfg / "releng.sources").write_text(
        f"Types: deb\nURIs: {base_url}/\nSuites: {SUITE}\nComponents: main\n"
        "Signed-By: /cfg/tally-archive-keyring.gpg\n"
    )
    return cfg


def test_apt_installs_the_demo_package_from_the_bucket(  # noqa: PLR0917  (fixtures)
    moto_server, public, demo_build, base_image, engine, gpg_key, tmp_path
) -> None:
    url, scratch = public
    out = demo_build(DISTRO, "1.0.0")
    project = Project.load(out.parents[2])  # <root>/out/<version>/<distro>
    version = Version.parse("1.0.0")
    client = s3_client()
    upload_build(client, project, version, DISTRO, scratch=scratch)
    signer = Signer(gnupghome=gpg_key.home, key=gpg_key.fingerprint, passphrase=gpg_key.passphrase)
    update_repos(
        project,
        signer,
        version=version,
        dest=Destination(s3=client, url=url, lock=LockOptions(timeout=60)),
        scratch=scratch,
        work=tmp_path / "empty-disk",
    )
    base_url = f"{moto_server.endpoint_url}/{url.bucket}/{url.prefix}"
    cfg = client_config(tmp_path / "cfg", base_url, fetch(f"{base_url}/tally-archive-keyring.gpg"))
    result = engine.run(
        base_image(DISTRO),
        [
            "sh",
            "-ec",
            f"{ONLY_OUR_SOURCES}; apt-get update --error-on=any; "
            "apt-get install -y --no-install-recommends tally; echo one two | tally -w",
        ],
        mounts=[Mount(cfg, "/cfg")],
        network="host",
    )
    assert result.exit_code == 0, result.output[-3000:]
    assert result.output.rstrip().endswith("2"), result.output[-500:]


def test_apt_update_loop_during_20_publishes_sees_no_mismatch(  # noqa: PLR0917  (fixtures)
    moto_server, public, base_image, engine, gpg_key, project_copy, tmp_path
) -> None:
    from releng import apt

    url, _scratch = public
    signer = Signer(gnupghome=gpg_key.home, key=gpg_key.fingerprint, passphrase=gpg_key.passphrase)
    settings = apt.settings_for(project_copy)
    repo, debs = tmp_path / "repo", tmp_path / "debs"
    debs.mkdir()
    apt.include(repo, settings, signer, suites=[SUITE], paths=[make_deb(debs, "tally", "0.1-1")])
    dest = Destination(
        s3=s3_client(),
        url=url,
        lock=LockOptions(timeout=60),
        sync=SyncOptions(grace=dt.timedelta(minutes=10)),
    )
    sync_repo(dest, repo)

    def slow_publisher(request, **_) -> None:
        """Every upload but the Release files takes 0.3 s longer: wide windows for a race."""
        if request.method == "PUT" and "/dists/" in request.url and "Release" not in request.url:
            time.sleep(0.3)

    dest.s3.meta.events.register("before-send.s3", slow_publisher)
    base_url = f"{moto_server.endpoint_url}/{url.bucket}/{url.prefix}"
    cfg = client_config(tmp_path / "cfg", base_url, fetch(f"{base_url}/tally-archive-keyring.gpg"))
    control = tmp_path / "control"
    control.mkdir()
    loop = (
        f"{ONLY_OUR_SOURCES}; n=0; fails=0; "
        "while [ ! -e /control/stop ] || [ $n -lt 3 ]; do "
        "  n=$((n+1)); "
        "  if ! apt-get update --error-on=any -o Acquire::Retries=0 -qq >/tmp/log 2>&1; then "
        "    fails=$((fails+1)); cat /tmp/log; fi; "
        "  grep -i 'mismatch' /tmp/log && fails=$((fails+1)); "
        "  : > /control/started; "
        "done; echo updates=$n failures=$fails"
    )
    results: list[object] = []

    def run_loop() -> None:
        results.append(
            engine.run(
                base_image(DISTRO),
                ["sh", "-c", loop],
                mounts=[Mount(cfg, "/cfg"), Mount(control, "/control", read_only=False)],
                network="host",
            )
        )

    thread = threading.Thread(target=run_loop)
    thread.start()
    try:
        for _ in range(600):
            if (control / "started").exists() or not thread.is_alive():
                break
            thread.join(0.1)
        for i in range(20):
            apt.include(
                repo, settings, signer, suites=[SUITE], paths=[make_deb(debs, "tally", f"1.{i}-1")]
            )
            sync_repo(dest, repo)
    finally:
        (control / "stop").touch()
        thread.join()
    (result,) = results
    assert result.exit_code == 0, result.output[-3000:]  # type: ignore[attr-defined]
    last = result.output.strip().splitlines()[-1]  # type: ignore[attr-defined]
    assert last.endswith("failures=0"), result.output[-3000:]  # type: ignore[attr-defined]
    updates = int(last.split()[0].split("=")[1])
    print(f"{updates} apt-get update runs during 20 publishes, none failed")
    assert updates >= 3
