"""Every command line a worker runs names a task and flags the real invoke collection has:
parsed by invoke's own parser against ``releng.tasks.collection`` (a renamed task or flag
fails here, not on the first nightly), with the version spelled one way."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke.parser import Parser

from releng.aws import commands
from releng.aws import steps as S
from releng.tasks import collection
from releng.version import Version

ROOT = Path(__file__).resolve().parents[1]
WORKER_STEPS = (
    S.MAKE_SOURCE_TARBALL,
    S.MAKE_BINARY_PACKAGE,
    S.VERIFY_REBUILD,
    S.PUBLISH_BINARY_PACKAGES,
    S.PUBLISH_SOURCE_TARBALL,
)


def _parse(argv: list[str]) -> tuple[str, dict[str, object]]:
    """invoke's parse of ``argv`` (``invoke TASK ...``): the task and its given arguments."""
    assert argv[0] == "invoke"
    ns = collection(str(ROOT))
    parser = Parser(contexts=ns.to_contexts())
    (ctx,) = parser.parse_argv(argv[1:])  # an unknown task or flag raises ParseError
    return ctx.name, {a.name: a.value for a in ctx.args.values() if a.got_value}


@pytest.mark.parametrize("version", [Version.parse("1.2.3"), Version.parse("2026.11.22"),
                                     Version.parse("2026.11.22", release=True)],
                         ids=["release", "nightly", "release-shaped-like-a-date"])  # fmt: skip
@pytest.mark.parametrize("step", WORKER_STEPS)
def test_every_worker_command_parses_with_the_real_tasks(step, version) -> None:
    lines = commands.for_step(
        step, version, distro="debian-12-bookworm", arch="arm64",
        dest="s3://downloads/apt", distros=("debian-12-bookworm", "debian-13-trixie"),
    )  # fmt: skip
    assert lines
    # and what runs after them whatever their outcome (the verify step's upload)
    lines += commands.after_step(step, version, distro="debian-12-bookworm", arch="arm64")
    for argv in lines:
        task, args = _parse(argv)
        assert task in commands.TASKS
        assert args["version"] == version.text
        # a release is a release at every hop, a nightly never is
        assert bool(args.get("release")) is version.is_release, argv
        if step in (S.MAKE_BINARY_PACKAGE, S.VERIFY_REBUILD):
            assert args["arch"] == "arm64"
            assert args["distro"] == "debian-12-bookworm"
        if step in (S.PUBLISH_BINARY_PACKAGES, S.PUBLISH_SOURCE_TARBALL):
            assert args["repo"] == "s3://downloads/apt"


def test_the_table_names_only_tasks_that_exist() -> None:
    names = set(collection(str(ROOT)).task_names)
    assert set(commands.TASKS) <= names, set(commands.TASKS) - names
