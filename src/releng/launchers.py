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

from releng.checkout_venv import LAUNCHER_TAG

# tool -> (module, callable): the console-script entry points of invoke and nox.
ENTRY_POINTS = {"invoke": ("invoke.main", "program.run"), "nox": ("nox.__main__", "main")}

# Nothing is imported before the hooks are set (sys is built in; os only on the way out).
# A KeyboardInterrupt raised where Python cannot propagate it (a weakref callback during
# an import) goes to sys.unraisablehook, which would print it and carry on: both end.
_HOOKS = """\
import sys
def _interrupted():
    sys.stderr.write("interrupted\\n"); sys.stderr.flush(); __import__("os")._exit(130)
_excepthook, _unraisablehook = sys.excepthook, sys.unraisablehook
sys.excepthook = lambda kind, value, tb: (
    _interrupted() if issubclass(kind, KeyboardInterrupt) else _excepthook(kind, value, tb))
sys.unraisablehook = lambda unraisable: (
    _interrupted() if issubclass(unraisable.exc_type, KeyboardInterrupt)
    else _unraisablehook(unraisable))
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


def launcher_text(python: Path, tool: str) -> str:
    """The launcher script for ``tool`` run by ``python``."""
    module, call = ENTRY_POINTS[tool]
    return (
        f"#!{python} -S\n"
        f"{LAUNCHER_TAG}, written by scripts/setup (src/releng/launchers.py: why).\n"
        f"{_HOOKS}"
        f"{_SIGINT}"
        "import site\n"
        "site.main()\n"
        f"from {module} import {call.split('.')[0]}\n"
        f"sys.argv[0] = {tool!r}\n"
        "try:\n"
        f"    sys.exit({call}())\n"
        "except SystemExit as exc:\n"
        "    if _sigints and exc.code == 1:\n"
        "        _interrupted()\n"
        "    raise\n"
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
    write_launchers(Path(sys.argv[1]).absolute())
