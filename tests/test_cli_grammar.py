"""One grammar across the tasks (issue 22, item 5): every task's flags, help and names.

The flags are read the way ``invoke TASK --help`` reads them (each task's parser
context), in a fresh interpreter: invoke consumes a task's ``help`` table the
first time it builds its arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from releng.cli import renamed_in
from releng.tasks import RENAMED, collection

REPO_ROOT = Path(__file__).resolve().parents[1]

_DUMP = """
import inspect, json, sys
from releng.tasks import collection
ns = collection(sys.argv[1])
help_keys = {name: sorted(ns[name].help) for name in ns.task_names}
params = {
    name: [p for p in inspect.signature(ns[name].body).parameters][1:] for name in ns.task_names
}
contexts = {ctx.name: ctx for ctx in ns.to_contexts()}
print(json.dumps({
    name: {
        "flags": [list(arg.names) for arg in contexts[name].args.values()],
        "help": help_keys[name],
        "params": params[name],
    }
    for name in ns.task_names
}))
"""


@pytest.fixture(scope="module")
def grammar() -> dict[str, dict[str, list[object]]]:
    result = subprocess.run(
        [sys.executable, "-c", _DUMP, str(REPO_ROOT)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
    )
    data: dict[str, dict[str, list[object]]] = json.loads(result.stdout)
    return data


def test_no_short_flag_means_two_things(grammar: dict[str, dict[str, list[object]]]) -> None:
    meaning: dict[str, set[str]] = {}
    for task, info in grammar.items():
        for names in info["flags"]:
            assert isinstance(names, list)
            long = next(n for n in names if len(n) > 1)
            for short in (n for n in names if len(n) == 1):
                meaning.setdefault(short, set()).add(f"--{long} ({task})")
    twice = {s: m for s, m in meaning.items() if len({x.split()[0] for x in m}) > 1}
    assert not twice, f"short flags with more than one meaning: {twice}"
    assert not meaning, f"short flags (tasks are declared with auto_shortflags=False): {meaning}"


def test_every_help_key_names_a_parameter(grammar: dict[str, dict[str, list[object]]]) -> None:
    for task, info in grammar.items():
        unknown = set(info["help"]) - set(info["params"])
        assert not unknown, f"{task}: help for parameters it does not have: {sorted(unknown)}"


def test_every_task_taking_a_version_takes_release(
    grammar: dict[str, dict[str, list[object]]],
) -> None:
    lacking = {
        t for t, i in grammar.items() if "version" in i["params"] and "release" not in i["params"]
    }
    assert lacking == set(), f"tasks taking --version without --release: {sorted(lacking)}"


def test_renamed_names_lead_to_tasks_that_exist() -> None:
    names = set(collection(str(REPO_ROOT)).task_names)
    for old, new in RENAMED.items():
        assert new in names, f"RENAMED[{old!r}] = {new!r}, which is no task"
        assert old not in names, f"{old!r} is renamed but still a task"


def test_an_old_task_name_says_the_new_one_whatever_follows() -> None:
    """The real table through the real tasks.py: an old name is one line and exit 2, whatever
    flags follow; the old name is not listed; the new name runs."""
    assert RENAMED["distros"] == "list-distros" and RENAMED["repo-include"] == "include-packages"
    command = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT)]
    for args in (["distros"], ["distros", "--json", "--no-such-flag"], ["repo-include", "x.deb"]):
        result = subprocess.run(
            [*command, *args], capture_output=True, text=True, check=False, cwd=REPO_ROOT
        )
        assert result.returncode == 2, result
        assert result.stderr == f"error: 'invoke {args[0]}' is now 'invoke {RENAMED[args[0]]}'\n"
        assert result.stdout == ""
    still = subprocess.run(
        [*command, "list-distros", "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    assert still.returncode == 0, still.stderr
    listing = subprocess.run(
        [*command, "--list"], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    ).stdout
    listed = [
        line.split()[0] for line in listing.splitlines() if line[:3].strip() and line[:2] == "  "
    ]
    assert "list-distros" in listed
    assert not set(RENAMED) & set(listed)


def test_only_the_task_word_decides() -> None:
    renamed = {"old": "new"}
    assert renamed_in(["invoke", "new", "old"], ["new"], renamed) is None
    assert renamed_in(["invoke", "--", "old"], ["new"], renamed) is None
    assert renamed_in(["invoke", "-e", "old", "--x"], ["new"], renamed) == (
        "error: 'invoke old' is now 'invoke new'"
    )
