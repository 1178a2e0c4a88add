"""The invoke tasks, flat: ``invoke make-package``, ``invoke repo-include``, ...

Each module here holds one area's tasks; every ``Task`` found in them
joins the one top-level Collection. Tasks parse arguments and call one
function of the library; they hold no logic of their own.
"""

from __future__ import annotations

from types import ModuleType

from invoke.collection import Collection
from invoke.tasks import Task

from releng.tasks import aws, build, publish, repo, source, verify

AREAS: tuple[ModuleType, ...] = (source, build, repo, publish, aws, verify)


def collection(root: str) -> Collection:
    ns = Collection()
    for module in AREAS:
        for obj in vars(module).values():
            if isinstance(obj, Task):
                ns.add_task(obj)
    ns.configure({"releng": {"root": root}, "run": {"echo": True}})
    return ns
