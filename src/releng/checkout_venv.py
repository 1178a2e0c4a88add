"""The checkout's own virtual environment, ``.venv/``, that ``scripts/setup`` makes.

``scripts/setup`` creates it with Debian's ``python3 -m venv``, installs the lock
into it and writes :data:`COMPLETE` last, so a venv without that file was cut
short and is rebuilt. ``invoke`` and ``nox`` resolve to small wrappers in
/usr/local/bin that run the venv's. Where something else comes first on PATH
(a pyenv shim, a ``pip install --user`` invoke), that tool's Python is outside
any virtual environment; ``tasks.py`` and ``noxfile.py`` then call
:func:`hand_over`, which re-runs the same command with the venv's Python, so the
README's commands run the locked versions whichever ``invoke`` the shell found.
Stdlib-only: it runs before anything else is imported.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

VENV = ".venv"
COMPLETE = ".releng-setup-complete"
_GUARD = "RELENG_HANDED_OVER"
LAUNCHER_TAG = "# releng launcher"  # the second line of .venv/bin/invoke and nox


def venv_python(root: Path) -> Path | None:
    """The checkout venv's Python when ``scripts/setup`` finished making it, else None."""
    venv = root / VENV
    python = venv / "bin" / "python"
    return python if (venv / COMPLETE).is_file() and python.exists() else None


def hand_over(root: Path, module: str) -> None:
    """Re-run this process as ``<root>/.venv/bin/python -m MODULE ARGS`` if it runs outside a venv.

    A no-op inside any virtual environment (the checkout's, a nox session's, a
    developer's own), when the checkout has no finished venv, or after one hand-over.
    """
    if sys.prefix != sys.base_prefix or os.environ.get(_GUARD):
        return
    python = venv_python(root)
    if python is None:
        return
    os.environ[_GUARD] = "1"
    if os.environ.get("RELENG_DEBUG"):
        print(
            f"releng: {sys.executable} is outside a venv; running {python} -m {module}",
            file=sys.stderr,
        )
    sys.stdout.flush()
    launcher = python.parent / module
    if is_launcher(launcher):  # it unblocks SIGINT once it can handle it (releng.launchers)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
        os.execv(launcher, [str(launcher), *sys.argv[1:]])  # noqa: S606  (the same command, in the venv)
    os.execv(python, [str(python), "-m", module, *sys.argv[1:]])  # noqa: S606  (the same command, in the venv)


def is_launcher(path: Path) -> bool:
    """Whether ``path`` is a launcher :mod:`releng.launchers` wrote (its second line says so)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as script:
            return script.readline().startswith("#!") and script.readline().startswith(LAUNCHER_TAG)
    except OSError:
        return False
