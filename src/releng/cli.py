"""The CLI boundary shared by every invoke task.

:func:`task` wraps ``invoke.task``: it sets up logging once, turns a
RelengError into one ``error: ...`` line on stderr and a non-zero exit (no
traceback), and a KeyboardInterrupt into exit 130. Anything else is a bug and
keeps its traceback. Only this module and ``releng.tasks`` print.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

from releng.errors import RelengError
from releng.project import Project

_F = TypeVar("_F", bound=Callable[..., Any])
__all__ = ["Context", "out", "project", "setup_logging", "task"]
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
    """Print for the user (stdout). Library code logs instead."""
    print(line, flush=True)
