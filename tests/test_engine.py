"""The Docker seam against the real engine: runs, mounts, removal, no-engine errors."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from releng.engine import ContainerSpec, Engine, Mount, image_ref_parts
from releng.errors import EngineError


def test_image_ref_parts() -> None:
    assert image_ref_parts("debian:bookworm") == ("debian", "bookworm")
    assert image_ref_parts("debian") == ("debian", "latest")
    assert image_ref_parts("127.0.0.1:5000/x/debian:12") == ("127.0.0.1:5000/x/debian", "12")
    assert image_ref_parts("127.0.0.1:5000/debian") == ("127.0.0.1:5000/debian", "latest")


def test_describe_is_an_equivalent_docker_run_line(tmp_path: Path) -> None:
    spec = ContainerSpec(
        image="debian:bookworm",
        command=["sh", "-c", "echo hi there"],
        mounts=[Mount(tmp_path, "/var/out", read_only=False), Mount(tmp_path, "/opt/x")],
        masks=["/opt/x/.releng"],
        environment={"B": "2", "A": "1 2"},
        network="none",
        user="1000:1000",
    )
    line = spec.describe()
    assert f"-v {tmp_path}:/var/out -v {tmp_path}:/opt/x:ro" in line
    assert "--tmpfs /opt/x/.releng:ro" in line
    assert "-e 'A=1 2' -e B=2" in line
    assert line.endswith("--network none --user 1000:1000 debian:bookworm sh -c 'echo hi there'")


def test_no_engine_says_how_to_start_one() -> None:
    with pytest.raises(EngineError) as info:
        Engine.from_env({"DOCKER_HOST": "tcp://127.0.0.1:1"})
    message = str(info.value)
    assert "no Docker engine answers at tcp://127.0.0.1:1" in message
    assert "./scripts/setup" in message
    assert "\n" not in message


def _throwaway(engine: Engine, label: str) -> list[object]:
    return engine.client.containers.list(all=True, filters={"label": f"org.releng.test={label}"})


@pytest.mark.docker
def test_run_returns_code_and_output_and_removes_the_container(
    engine: Engine, base_image: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docker.models.containers import ContainerCollection

    image = base_image("debian-12-bookworm")  # type: ignore[operator]
    tmp_path.chmod(0o755)  # readable by the container's user 1234
    (tmp_path / "in.txt").write_text("from the host\n")
    # The ids of the containers the run makes (the real create, recorded): the engine's
    # whole list would also show the other xdist worker's and other checkouts' containers.
    created: list[str] = []
    create = ContainerCollection.create

    def recorded(self: ContainerCollection, *args: Any, **kwargs: Any) -> Any:
        container = create(self, *args, **kwargs)
        created.append(container.id)
        return container

    monkeypatch.setattr(ContainerCollection, "create", recorded)
    result = engine.run(
        image,
        [
            "sh",
            "-c",
            'cat /in/in.txt; echo "$GREETING"; touch /in/nope 2>/dev/null || echo ro; id -u; exit 7',
        ],
        mounts=[Mount(tmp_path, "/in")],
        environment={"GREETING": "hello"},
        network="none",
        user="1234:1234",
        workdir="/tmp",
    )
    assert result.exit_code == 7
    assert result.output.splitlines() == ["from the host", "hello", "ro", "1234"]
    assert len(created) == 1
    assert created[0] not in {c["Id"] for c in engine.client.api.containers(all=True)}
    assert not (tmp_path / "nope").exists()


@pytest.mark.docker
def test_containers_lists_one_removed_meanwhile(
    engine: Engine, base_image: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a Ctrl-C, the build threads remove their own containers while the main thread
    lists them to remove them: a container gone between the listing and a look at it is no
    error (the docker SDK's containers.list looks at each and raised NotFound; a make-all-packages
    killed under load then waited out its builds and exited 1)."""
    from docker.api.client import APIClient

    image = base_image("debian-12-bookworm")  # type: ignore[operator]
    label = uuid.uuid4().hex
    ids = [
        engine.client.api.create_container(image, ["true"], labels={"org.releng.test": label})["Id"]
        for _ in range(2)
    ]
    inspect = APIClient.inspect_container

    def removed_meanwhile(self: APIClient, container: str) -> Any:
        engine.remove_container(container)  # the build's own clean-up, in between
        return inspect(self, container)

    monkeypatch.setattr(APIClient, "inspect_container", removed_meanwhile)
    try:
        listed = engine.containers("org.releng.test", label)
    finally:
        for one in ids:
            engine.remove_container(one)
    assert sorted(c.id for c in listed) == sorted(ids)


@pytest.mark.docker
def test_network_none_has_only_loopback(engine: Engine, base_image: object) -> None:
    image = base_image("debian-12-bookworm")  # type: ignore[operator]
    result = engine.run(image, ["ls", "/sys/class/net"], network="none")
    assert result.output.split() == ["lo"]


@pytest.mark.docker
def test_container_is_removed_when_the_block_is_interrupted(
    engine: Engine, base_image: object
) -> None:
    image = base_image("debian-12-bookworm")  # type: ignore[operator]
    label = uuid.uuid4().hex
    spec = ContainerSpec(image=image, command=["sleep", "300"], labels={"org.releng.test": label})
    with pytest.raises(KeyboardInterrupt), engine.container(spec) as container:
        container.start()
        assert len(_throwaway(engine, label)) == 1
        raise KeyboardInterrupt
    assert _throwaway(engine, label) == []


@pytest.mark.docker
def test_masks_hide_a_directory_inside_a_read_only_mount(
    engine: Engine, base_image: object, tmp_path: Path
) -> None:
    image = base_image("debian-12-bookworm")  # type: ignore[operator]
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("private")
    (tmp_path / "public").write_text("ok")
    spec = ContainerSpec(
        image=image,
        command=["sh", "-c", "ls -A /repo/secret; cat /repo/public"],
        mounts=[Mount(tmp_path, "/repo")],
        masks=["/repo/secret"],
    )
    result = engine.run_spec(spec)
    assert result.exit_code == 0
    assert result.output == "ok"


@pytest.mark.docker
def test_a_missing_image_is_an_engine_error(engine: Engine) -> None:
    with pytest.raises(EngineError, match="releng-no-such-image:x is not in the engine"):
        engine.run("releng-no-such-image:x", ["true"])


def test_only_the_engine_talks_to_the_docker_sdk() -> None:
    """One seam: no other module imports docker or reaches for an Engine's SDK client."""
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "releng"
    sdk = re.compile(
        r"^\s*(import|from) docker\b|\bdocker\.(errors|types|from_env)\b|engine\.client\b"
    )
    offenders = [
        f"{path.relative_to(src)}:{number}: {line.strip()}"
        for path in sorted(src.rglob("*.py"))
        if path != src / "engine.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if sdk.search(line)
    ]
    assert not offenders, offenders
