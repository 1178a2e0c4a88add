"""The CLI boundary shared by every invoke task.

:func:`task` wraps ``invoke.task``: it sets up logging once, turns a
RelengError into one ``error: ...`` line on stderr and a non-zero exit (no
traceback), and a KeyboardInterrupt into exit 130. Anything else is a bug and
keeps its traceback. Only this module and ``releng.tasks`` print.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

from releng.errors import RelengError
from releng.project import Project

_F = TypeVar("_F", bound=Callable[..., Any])
__all__ = [
    "Context",
    "note",
    "out",
    "out_json",
    "project",
    "route_task_help",
    "setup_logging",
    "task",
]
HELP_FLAGS = ("-h", "--help")
_logging_ready = False


def setup_logging(*, verbose: bool = False) -> None:
    global _logging_ready  # noqa: PLW0603  (configure the root logger once per process)
    if _logging_ready:
        return
    _logging_ready = True
    level = logging.DEBUG if verbose or os.environ.get("RELENG_DEBUG") else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "docker", "gnupg", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, code: int = 1) -> Exit:
    return Exit(f"error: {message}", code=code)


def task(*args: Any, **kwargs: Any) -> Callable[[_F], Task[Any]]:
    """``invoke.task`` plus the error boundary. Use exactly like ``@task(help={...})``."""

    def decorate(func: _F) -> Task[Any]:
        @functools.wraps(func)
        def wrapper(*a: Any, **kw: Any) -> Any:
            setup_logging()
            try:
                return func(*a, **kw)
            except RelengError as exc:
                raise fail(str(exc)) from None
            except KeyboardInterrupt:
                raise Exit("interrupted", code=130) from None

        made: Task[Any] = invoke_task(*args, **kwargs)(wrapper)
        return made

    if len(args) == 1 and callable(args[0]) and not kwargs:  # bare @task
        func, args = args[0], ()
        return decorate(func)  # bare use: the Task itself
    return decorate


def project(c: Context) -> Project:
    """The Project for this invocation: ``RELENG_ROOT``, else the directory of tasks.py."""
    root = os.environ.get("RELENG_ROOT") or c.config.get("releng", {}).get("root") or Path.cwd()
    return Project.load(Path(root))


def out(line: str = "") -> None:
    """Print a result for the user (stdout). Library code logs instead."""
    print(line, flush=True)


def note(line: str = "") -> None:
    """Print progress, live build logs and hints (stderr), so stdout carries only results."""
    print(line, file=sys.stderr, flush=True)


def out_json(data: object) -> None:
    """A ``--json`` result: one JSON document on one line of stdout (JSON lines when repeated)."""
    print(json.dumps(data, default=str), flush=True)


def help_argv(argv: list[str], task_names: Iterable[str]) -> list[str] | None:
    """``invoke [core] TASK ... --help`` as ``invoke [core] --help TASK``; None when no help is asked.

    invoke hands a task's missing positional argument whatever comes next, ``--help``
    included (``invoke make-package --help`` would build a distro named ``--help``), so
    a ``-h``/``--help`` after a task name is turned into invoke's own per-task help,
    for the last task named before it. Tokens after ``--`` are the task's, not ours.
    """
    names = set(task_names)
    words = argv[1:]
    if "--" in words:
        words = words[: words.index("--")]
    task = None
    for i, word in enumerate(words):
        if word in names and task is None:
            first = i
        if word in names:
            task = word
        elif word in HELP_FLAGS and task is not None:
            return [*argv[1 : 1 + first], "--help", task]
    return None


def route_task_help(ns: Collection) -> None:
    """When invoke runs with ``TASK --help``, re-run it as ``invoke --help TASK`` (see help_argv)."""
    main = Path(sys.argv[0])
    if not (main.name in ("invoke", "inv") or main.parts[-2:] == ("invoke", "__main__.py")):
        return  # imported by something else (tests, nox): not our command line
    if (args := help_argv(sys.argv, ns.task_names)) is not None:
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "invoke", *args])  # noqa: S606
