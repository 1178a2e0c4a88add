"""The ``invoke`` and ``nox`` programs of the checkout's ``.venv/``, written by ``scripts/setup``.

pip's console scripts import their tool first, and a Ctrl-C in those first tenths of
a second ends in Python's traceback of whatever module was loading. These launchers
run as ``python -S``: their first line, before ``site`` or any other module is
imported, routes an interrupt to one line and exit 130 (what releng's tasks do
once they run), then unblocks SIGINT and only then imports ``site`` and the tool.

The ``invoke`` and ``nox`` wrappers in /usr/local/bin start them with SIGINT blocked
(``env --block-signal=INT``, and :func:`releng.checkout_venv.hand_over` does the
same), so a Ctrl-C during Python's own start-up waits, pending, for that unblock
instead of landing in code that cannot handle it. Run directly, without the block,
only Python's own initialisation (about a millisecond) is left uncovered.
Stdlib-only: ``scripts/setup`` runs it with ``PYTHONPATH=src``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from releng.checkout_venv import COMPLETE, LAUNCHER_TAG

# tool -> (module, callable): the console-script entry points of invoke and nox.
ENTRY_POINTS = {"invoke": ("releng.cli", "program.run"), "nox": ("nox.__main__", "main")}

# Nothing is imported before the hooks are set (sys is built in; os only on the way out).
# A KeyboardInterrupt raised where Python cannot propagate it (a weakref callback during
# an import) goes to sys.unraisablehook, which would print it and carry on: both end.
# One that Python wraps (Python 3.11 turns it into "RuntimeError: Error calling
# __set_name__" when it lands while a class of a loading module is made) ends as well, and
# so does any exception that reaches the top once a Ctrl-C has come: C code may replace the
# KeyboardInterrupt without a trace (a Ctrl-C while ssl loads _ssl gave "TypeError: expected
# a message argument", the ninth session's CI).
_HOOKS = """\
import sys
def _interrupted():
    sys.stderr.write("interrupted\\n"); sys.stderr.flush(); __import__("os")._exit(130)
def _by_interrupt(exc, seen=()):
    if globals().get("_sigints"):
        return True
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen += (id(exc),)
        exc = exc.__cause__ or exc.__context__
    return False
_excepthook, _unraisablehook = sys.excepthook, sys.unraisablehook
sys.excepthook = lambda kind, value, tb: (
    _interrupted() if _by_interrupt(value) else _excepthook(kind, value, tb))
sys.unraisablehook = lambda unraisable: (
    _interrupted() if issubclass(unraisable.exc_type, KeyboardInterrupt)
    else _unraisablehook(unraisable))
"""

# invoke imports its vendored PyYAML (with the C extension: about a fifth of invoke's import
# time) for invoke.yaml files, which releng has none of: loaded on first use instead.
_LAZY_IMPORTS = """\
import importlib.machinery as _machinery, importlib.util as _util
class _Lazy:
    names = ("invoke.vendor.yaml",)
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in cls.names:
            return None
        spec = _machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _util.LazyLoader(spec.loader)
        return spec
sys.meta_path.insert(0, _Lazy)
"""

# Ctrl-C raises KeyboardInterrupt as Python's own handler does, and is counted: invoke
# turns one that lands while it loads tasks into a silent exit 1, which then ends as
# every other interrupt does. Only then is SIGINT unblocked.
_SIGINT = """\
import signal
_sigints = []
def _on_sigint(signum, frame):
    _sigints.append(signum)
    raise KeyboardInterrupt
signal.signal(signal.SIGINT, _on_sigint)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
"""


# The tool is done: SIGINT is blocked, and the process ends the way Python's shutdown
# would (atexit handlers, flushed output, sys.exit's codes), but with os._exit, so that
# whether a Ctrl-C came is looked at last, a few instructions before the end.
_EXIT = """\
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
import atexit
atexit._run_exitfuncs()
if _code is None or isinstance(_code, int):
    _status = (_code or 0) & 0xFF
else:
    print(_code, file=sys.stderr)
    _status = 1
for _stream in (sys.stdout, sys.stderr):
    try:
        _stream.flush()
    except (OSError, ValueError):
        pass
if (_sigints or signal.SIGINT in signal.sigpending()) and _status != 130:
    _interrupted()
__import__("os")._exit(_status)
"""


def launcher_text(python: Path, tool: str) -> str:
    """The launcher script for ``tool`` run by ``python``.

    When the tool is done, SIGINT is blocked before Python shuts down (whose finalisation
    restores the default action: a Ctrl-C then would kill it with no word), and one that
    came during or after the tool's work ends as every other interrupt does.
    """
    module, call = ENTRY_POINTS[tool]
    return (
        f"#!{python} -S\n"
        f"{LAUNCHER_TAG}, written by scripts/setup (src/releng/launchers.py: why).\n"
        f"{_HOOKS}"
        f"{_SIGINT}"
        "import site\n"
        "site.main()\n"
        f"{_LAZY_IMPORTS if tool == 'invoke' else ''}"
        f"from {module} import {call.split('.')[0]}\n"
        f"sys.argv[0] = {tool!r}\n"
        "try:\n"
        f"    _code = {call}()\n"
        "except SystemExit as exc:\n"
        "    _code = exc.code\n"
        f"{_EXIT}"
    )


# The /usr/local/bin wrapper: a shell script that finds the checkout's .venv for the
# directory it runs in. Its interpreter line starts it through coreutils' env with SIGINT
# blocked, so that a Ctrl-C during the shell's own start, its search or the exec waits,
# pending, for the launcher to handle; any other program it runs gets SIGINT back first.
# Only env's own start (before it blocks the signal) is left uncovered: a signal that
# lands before a program's first instruction kills it whatever the program is.
_WRAPPER = """\
{shebang}
# releng-wrapper
# Written by scripts/setup of a releng checkout (src/releng/launchers.py): runs the {tool}
# of the checkout's .venv for the directory you are in, else of {root}, with SIGINT
# blocked until a releng launcher can handle it.
trap 'echo interrupted >&2; exit 130' INT
run() {{
  {{ read -r _ && read -r tag; }} <"$1" 2>/dev/null || tag=
  case $tag in
    '# releng launcher'*) exec "$@" ;;
  esac
  exec {unblock}"$@"
}}
d=$PWD
while :; do
  if [ -f "$d/.venv/{marker}" ] && [ -x "$d/.venv/bin/{tool}" ]; then
    run "$d/.venv/bin/{tool}" "$@"
  fi
  [ "$d" = / ] && break
  d=${{d%/*}}
  d=${{d:-/}}
done
if ! [ -x "{root}/.venv/bin/{tool}" ]; then
  echo "error: no releng checkout with a .venv in $PWD or above it, and {root}, where" \
    "./scripts/setup last ran, has none any more; run ./scripts/setup in a checkout" >&2
  exit 1
fi
run "{root}/.venv/bin/{tool}" "$@"
"""


def wrapper_text(tool: str, root: Path, *, block: bool) -> str:
    """The /usr/local/bin wrapper for ``tool``; ``block``: env has ``--block-signal``."""
    return _WRAPPER.format(
        shebang="#!/usr/bin/env -S --block-signal=INT /bin/sh" if block else "#!/bin/sh",
        unblock="env --default-signal=INT " if block else "",
        tool=tool,
        root=root,
        marker=COMPLETE,
    )


def write_launchers(venv: Path) -> None:
    """Write ``venv/bin/<tool>`` for each tool, replacing pip's console scripts."""
    for tool in ENTRY_POINTS:
        path = venv / "bin" / tool
        text = launcher_text(venv / "bin" / "python", tool)
        if path.is_file() and path.read_text() == text:
            continue
        tmp = path.with_name(f".{tool}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(path)


if __name__ == "__main__":
    if sys.argv[1] == "--wrapper":  # --wrapper TOOL ROOT BLOCK(0|1): print the wrapper
        sys.stdout.write(wrapper_text(sys.argv[2], Path(sys.argv[3]), block=sys.argv[4] == "1"))
    else:
        write_launchers(Path(sys.argv[1]).absolute())
