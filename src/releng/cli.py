"""The CLI boundary shared by every invoke task.

:func:`task` wraps ``invoke.task``: it sets up logging once, turns a
RelengError into one ``error: ...`` line on stderr and a non-zero exit (no
traceback), and a KeyboardInterrupt into exit 130. An OSError from the machine
(a full disk, a read-only or immutable directory, a file where a directory should
be) becomes one line naming the path; a closed stdout (``| head``) ends the task
quietly with 141, as SIGPIPE would. Anything else is a bug and keeps its traceback.
Only this module and ``releng.tasks`` print.
"""

from __future__ import annotations

import difflib
import errno
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit, ParseError
from invoke.parser.argument import Argument
from invoke.program import Program
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
    "program",
    "project",
    "route_task_help",
    "setup_logging",
    "task",
]
HELP_FLAGS = ("-h", "--help")
_logging_ready = False
_routed_by_program = False  # set when RelengProgram parses: route_task_help has nothing to do


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


class OutputClosed(Exception):
    """stdout is a pipe whose reader has gone (``invoke check-repo | head``)."""


# OSErrors that the machine's state causes, not releng: each with what to do.
_MACHINE_ERRORS = {
    errno.ENOSPC: "free some space on that filesystem and run again",
    errno.EDQUOT: "free some space (a disk quota is reached) and run again",
    errno.EACCES: "check its permissions (or run as its owner)",
    errno.EPERM: "check its permissions and attributes (lsattr -d; chattr -i if immutable)",
    errno.EROFS: "the filesystem is read-only; use a writable directory",
    errno.ENOTDIR: "a file stands where a directory is needed; move it or choose another path",
    errno.EISDIR: "a directory stands where a file is needed; move it or choose another path",
    errno.EEXIST: "something else already exists at that path; move it or choose another path",
    errno.ELOOP: "a symlink loop is in the way; fix the link",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EIO: "the disk reported an I/O error; check it",
}


def machine_error(exc: OSError) -> str | None:
    """One line for an OSError the machine causes (None: not one of those: a bug)."""
    advice = _MACHINE_ERRORS.get(exc.errno or 0)
    if advice is None:
        return None
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{where}{exc.strerror}; {advice}"


def _close_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


class IntArgument(Argument):
    """An integer option whose text is not a number fails in one line, not in a ValueError."""

    def set_value(self, value: Any, cast: bool = True) -> None:
        if cast and isinstance(value, str):
            try:
                value = int(value, 10)
            except ValueError:
                flag = "--" + (self.name or "").replace("_", "-")
                raise ParseError(
                    f"error: {flag} takes a whole number (such as 3), not {value!r}"
                ) from None
        super().set_value(value, cast=False)


class RelengTask(Task[Any]):
    """invoke's Task with integer options parsed by :class:`IntArgument`."""

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        made = super().get_arguments(ignore_unknown_help)
        for arg in made:
            if arg.kind is int:
                arg.__class__ = IntArgument  # same fields; only set_value differs
        return made


_UNKNOWN = re.compile(r"No idea what '(?P<word>.*)' is!")
_NEEDS_VALUE = re.compile(r"Flag <Argument: (?P<name>[^ >]+).*> needed value")
_MISSING = re.compile(
    r"'(?P<task>[^']+)' did not receive required positional arguments: (?P<names>.*)"
)


def explain_parse_error(  # noqa: PLR0911  (one return per complaint reads best)
    message: str, task_name: str | None, task_names: Iterable[str] = ()
) -> str:
    """invoke's command-line complaint as one ``error:`` line that says what to run next."""
    if message.startswith("error: "):
        return message  # ours already (IntArgument)
    see = f"`invoke {task_name} --help`" if task_name else "`invoke --list`"
    if m := _UNKNOWN.match(message):
        word = m["word"]
        if word.startswith("-"):
            where = f"{task_name} has" if task_name else "invoke has"
            return f"error: {where} no option {word}; see {see}"
        if not task_name and (close := difflib.get_close_matches(word, list(task_names), 1)):
            return f"error: no task {word!r}; did you mean `invoke {close[0]}`? see {see}"
        return (
            f"error: {word!r} is neither a task nor an argument "
            f"{task_name + ' takes' if task_name else 'invoke takes'}; see {see}"
        )
    if m := _NEEDS_VALUE.match(message):
        return f"error: --{m['name'].replace('_', '-')} needs a value; see {see}"
    if m := _MISSING.match(message):
        names = m["names"].replace("'", "").replace("_", "-")
        return f"error: {m['task']} needs {names}; see `invoke {m['task']} --help`"
    return f"error: {message}; see {see}"


class RelengProgram(Program):
    """invoke's program, with its command-line complaints as one ``error:`` line each.

    It also answers ``TASK --help`` and a renamed task itself (:func:`route_task_help` does
    that for invoke's stock program), and ends quietly with 141 when its reader goes
    (``invoke --list | head``).
    """

    def run(self, argv: list[str] | None = None, exit: bool = True) -> None:
        try:
            super().run(argv, exit)
        except BrokenPipeError:
            _close_stdout()
            raise SystemExit(141) from None

    def parse_collection(self) -> None:
        global _routed_by_program  # noqa: PLW0603  (tasks.py's route_task_help then stands aside)
        _routed_by_program = True
        super().parse_collection()
        if self.collection is None:
            return
        from releng.tasks import RENAMED

        if (message := renamed_in(self.argv, self.collection.task_names, RENAMED)) is not None:
            raise Exit(message, code=2)
        if (args := help_argv(self.argv, self.collection.task_names)) is not None:
            self.parse_core([self.argv[0], *args])  # as if `invoke --help TASK` was typed

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            context = getattr(exc, "context", None)
            name = getattr(context, "name", None) if context is not None else None
            names = self.collection.task_names if self.collection is not None else {}
            raise ParseError(explain_parse_error(str(exc), name, names), context) from None


def _program() -> Program:
    from invoke import __version__

    return RelengProgram(
        name="Invoke", binary="inv[oke]", binary_names=["invoke", "inv"], version=__version__
    )


program = _program()  # the launcher's entry point (releng.launchers.ENTRY_POINTS)


def task(*args: Any, **kwargs: Any) -> Callable[[_F], Task[Any]]:
    """``invoke.task`` plus the error boundary. Use exactly like ``@task(help={...})``.

    No short flags (``auto_shortflags=False``): one letter cannot keep one meaning across
    all the tasks (tests/test_cli_grammar.py). Integer options given text fail in one line.
    """
    kwargs.setdefault("auto_shortflags", False)
    kwargs.setdefault("klass", RelengTask)

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
            except OutputClosed:
                _close_stdout()
                raise Exit(code=141) from None
            except OSError as exc:
                message = machine_error(exc)
                if message is None:
                    raise
                logging.getLogger(__name__).debug("the error in full", exc_info=True)
                raise fail(message) from None

        made: Task[Any] = invoke_task(*args, **kwargs)(wrapper)
        return made

    if len(args) == 1 and callable(args[0]):  # bare @task
        func, args = args[0], ()
        return decorate(func)  # bare use: the Task itself
    return decorate


def project(c: Context) -> Project:
    """The Project for this invocation: ``RELENG_ROOT``, else the directory of tasks.py."""
    root = os.environ.get("RELENG_ROOT") or c.config.get("releng", {}).get("root") or Path.cwd()
    return Project.load(Path(root))


def out(line: str = "") -> None:
    """Print a result for the user (stdout). Library code logs instead."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        raise OutputClosed from None


def note(line: str = "") -> None:
    """Print progress, live build logs and hints (stderr), so stdout carries only results."""
    print(line, file=sys.stderr, flush=True)


def out_json(data: object) -> None:
    """A ``--json`` result: one JSON document on one line of stdout (JSON lines when repeated)."""
    try:
        print(json.dumps(data, default=str), flush=True)
    except BrokenPipeError:
        raise OutputClosed from None


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


def renamed_in(
    argv: list[str], task_names: Iterable[str], renamed: Mapping[str, str]
) -> str | None:
    """The one line for a command line whose task is an old, renamed one; None otherwise.

    The first word that is a task's name, old or new, decides (core options' values
    and the task's own arguments come before or after it). Tokens after ``--`` are not ours.
    """
    names = set(task_names)
    words = argv[1:]
    if "--" in words:
        words = words[: words.index("--")]
    for word in words:
        if word in renamed and word not in names:
            return f"error: 'invoke {word}' is now 'invoke {renamed[word]}'"
        if word in names:
            return None
    return None


def route_task_help(ns: Collection, renamed: Mapping[str, str] | None = None) -> None:
    """When invoke runs with ``TASK --help``, re-run it as ``invoke --help TASK`` (see help_argv).

    A renamed task's old name (``releng.tasks.RENAMED``, or ``renamed``) ends here: one
    ``error:`` line naming the new name, exit 2.
    """
    if _routed_by_program:
        return  # RelengProgram does it (the launcher's program)
    main = Path(sys.argv[0])
    if not (main.name in ("invoke", "inv") or main.parts[-2:] == ("invoke", "__main__.py")):
        return  # imported by something else (tests, nox): not our command line
    from releng.tasks import RENAMED

    table = RENAMED if renamed is None else renamed
    if (message := renamed_in(sys.argv, ns.task_names, table)) is not None:
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(2)
    if (args := help_argv(sys.argv, ns.task_names)) is not None:
        sys.stdout.flush()
        run_ours = "from releng.cli import program; program.run()"
        os.execv(sys.executable, [sys.executable, "-c", run_ours, *args])  # noqa: S606
