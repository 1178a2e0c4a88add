"""The lifecycle as apt sees it: real apt in a Debian 12 container, over HTTP, against a local
repository and against S3 (moto) changed from an empty disk each time.

One client container lives through three phases while the host changes the repository:
promote (apt installs from the target suite), roll back to the first publish (apt updates
without a warning and downgrades to v1), remove (apt no longer offers the package).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from releng.apt import PublishResult, RepoSettings, Repository, check_repository, lifecycle
from releng.apt.lifecycle import Spec
from releng.engine import Mount
from releng.gpg import Signer
from releng.publish.flows import Destination, LockOptions, open_destination, public_read_policy
from releng.publish.sync import S3Url, SyncOptions, s3_client
from tests.apt_debs import make_deb
from tests.fixtures.gpg import make_key
from tests.test_apt_in_container import BOOKWORM, Served, apt_script, keyring_dir, served

pytestmark = [pytest.mark.docker, pytest.mark.slow]
__all__ = ["served"]  # the session fixture, shared with test_apt_in_container

SETTINGS = RepoSettings(
    name="tally", origin="tests", label="tests", suite_patterns=("bookworm", "bookworm-staging")
)
Op = Callable[[Repository], PublishResult]


@dataclass
class Backend:
    """Where the repository lives: ``change(op)`` applies a lifecycle operation there."""

    url: str  # what apt's sources name
    change: Callable[[Op], None]
    keyring: Callable[[], Path]
    pool: Callable[[], list[str]]


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, served: Served, tmp_path: Path) -> Iterator[Backend]:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    key = make_key(home, name="releng lifecycle key", passphrase=None)
    signer = Signer(gnupghome=home, key=key.fingerprint, passphrase=None)
    if request.param == "local":
        root = served.www / f"life-{uuid.uuid4().hex[:8]}"

        def change_here(op: Op) -> None:
            op(Repository(root, SETTINGS, signer))

        yield Backend(
            url=f"{served.url}/{root.name}",
            change=change_here,
            keyring=lambda: root / "tally-archive-keyring.gpg",
            pool=lambda: sorted(p.name for p in (root / "pool").rglob("*.deb")),
        )
        assert check_repository(root).problems == []
        return
    moto = request.getfixturevalue("moto_server")
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
    client = s3_client()
    url = S3Url(f"life-{uuid.uuid4().hex[:10]}", "apt")
    client.create_bucket(Bucket=url.bucket)
    client.put_bucket_policy(
        Bucket=url.bucket, Policy=json.dumps(public_read_policy(url.bucket, "apt", name="tally"))
    )
    dest = Destination(
        s3=client,
        url=url,
        lock=LockOptions(timeout=60, poll=0.2),
        sync=SyncOptions(grace=dt.timedelta(0)),
    )
    runs = iter(range(100))

    def change(op: Op) -> None:  # every change from an empty disk
        work = tmp_path / f"empty-{next(runs)}"
        with open_destination(dest, work):
            op(Repository(work, SETTINGS, signer))

    def keyring() -> Path:
        path = tmp_path / "tally-archive-keyring.gpg"
        path.write_bytes(
            client.get_object(Bucket=url.bucket, Key="apt/tally-archive-keyring.gpg")["Body"].read()
        )
        return path

    def pool() -> list[str]:
        listing = client.list_objects_v2(Bucket=url.bucket, Prefix="apt/pool/")["Contents"]
        return sorted(k for o in listing if (k := o["Key"].rsplit("/", 1)[1]).endswith(".deb"))

    yield Backend(
        url=f"{moto.endpoint_url}/{url.bucket}/apt", change=change, keyring=keyring, pool=pool
    )


CLIENT = """
phase() {
  touch /control/done-$1; n=0
  while [ ! -e /control/go-$1 ]; do n=$((n+1)); [ $n -lt 3000 ] || exit 9; sleep 0.1; done
}
apt-get install -y --no-install-recommends tally 2>&1
tally
phase 1
echo "=== rolled back"
apt-get update 2>&1
apt-cache policy tally
apt-get install -y --allow-downgrades tally=1.0-1 2>&1
tally
phase 2
echo "=== removed"
apt-get update 2>&1
echo "madison: [$(apt-cache madison tally)]"
"""


def test_promote_roll_back_and_remove_as_apt_sees_them(
    backend: Backend, engine: Any, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    def include(version: str) -> Op:
        deb = make_deb(tmp_path, "tally", version)
        return lambda r: r.include(["bookworm-staging"], [deb])

    def promote(spec: str) -> Op:
        return lambda r: lifecycle.copy(
            r, source="bookworm-staging", target="bookworm", specs=[Spec.parse(spec)]
        )

    for version in ("1.0-1", "2.0-1"):  # publish 1 and 2 of bookworm: promotions
        backend.change(include(version))
        backend.change(promote("tally"))
    assert backend.pool() == ["tally_1.0-1_amd64.deb", "tally_2.0-1_amd64.deb"]  # one copy each
    control = tmp_path / "control"
    control.mkdir()
    keyring = keyring_dir(tmp_path, backend.keyring())
    script = apt_script(backend.url, "bookworm", then=CLIENT)
    outcome: dict[str, Any] = {}

    def client() -> None:
        outcome["run"] = engine.run(
            base_image(BOOKWORM),
            ["sh", "-ec", script],
            mounts=[
                Mount(source=keyring.parent, target="/keys"),
                Mount(source=control, target="/control", read_only=False),
            ],
            network="host",
        )

    def wait_for(phase: str) -> None:
        deadline = time.monotonic() + 300
        while not (control / f"done-{phase}").exists():
            assert thread.is_alive(), outcome.get("run")
            assert time.monotonic() < deadline, f"the apt client did not reach phase {phase}"
            time.sleep(0.1)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_for("1")
        backend.change(lambda r: lifecycle.rollback(r, suite="bookworm", to=1))
        (control / "go-1").touch()
        wait_for("2")
        backend.change(lambda r: lifecycle.remove(r, suite="bookworm", specs=[Spec.parse("tally")]))
        (control / "go-2").touch()
    finally:
        for name in ("go-1", "go-2"):
            (control / name).touch()
        thread.join(timeout=600)
    run = outcome["run"]
    assert run.exit_code == 0, run.output
    promoted, rolled_back, removed = run.output.split("=== ")
    assert "tally 2.0-1\n" in promoted, promoted  # installed from the target suite
    assert [ln for ln in promoted.splitlines() if ln.startswith(("W:", "E:", "Err:"))] == []
    assert [ln for ln in rolled_back.splitlines() if ln.startswith(("W:", "E:", "Err:"))] == []
    assert "1.0-1 500" in rolled_back and "2.0-1 500" not in rolled_back, rolled_back
    assert "DOWNGRADED" in rolled_back and rolled_back.rstrip().endswith("tally 1.0-1"), rolled_back
    assert [ln for ln in removed.splitlines() if ln.startswith(("W:", "E:", "Err:"))] == []
    assert "madison: []" in removed, removed
    # History keeps what a rollback to publish 2 needs: both pool files stay.
    assert backend.pool() == ["tally_1.0-1_amd64.deb", "tally_2.0-1_amd64.deb"]
