"""The invoke tasks, flat: ``invoke make-package``, ``invoke include-packages``, ...

Each module here holds one area's tasks; every ``Task`` found in them
joins the one top-level Collection. Tasks parse arguments and call one
function of the library; they hold no logic of their own.

A renamed task keeps its old name, hidden (not in the Collection, so not in
``invoke --list``): :data:`RENAMED` maps it to the new name, and
:func:`releng.cli.route_task_help` answers a command line that still calls the old
name with one line naming the new one and exit 2, whatever arguments follow.
"""

from __future__ import annotations

from types import ModuleType

from invoke.collection import Collection
from invoke.tasks import Task

from releng.tasks import aws, build, keys, publish, repo, source, verify

AREAS: tuple[ModuleType, ...] = (source, build, repo, publish, aws, keys, verify)

# Old task name -> new name (the new one must be a task: tests/test_cli_grammar.py).
RENAMED: dict[str, str] = {
    "distros": "list-distros",
    "base-image": "make-base-image",
    "cache-stats": "show-cache",
    "cache-clear": "clear-cache",
    "repo-include": "include-packages",
    "repo-check": "check-repo",
    "repo-publish": "republish-repo",
    "repo-list": "list-packages",
    "repo-copy": "copy-packages",
    "repo-remove": "remove-packages",
    "repo-history": "show-history",
    "repo-rollback": "rollback-repo",
    "sync-repos": "sync-repo",
    "aws-status": "show-aws-status",
}


def collection(root: str) -> Collection:
    ns = Collection()
    for module in AREAS:
        for obj in vars(module).values():
            if isinstance(obj, Task):
                ns.add_task(obj)
    ns.configure({"releng": {"root": root}, "run": {"echo": True}})
    return ns
