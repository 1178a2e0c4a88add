"""invoke entry point: every task lives in releng.tasks (``invoke --list``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))  # a fresh checkout works before `pip install -e .`

from releng.checkout_venv import hand_over  # noqa: E402  (stdlib-only)

hand_over(ROOT, "invoke")  # an invoke outside any venv (a pyenv shim) runs the checkout's .venv

from releng.cli import route_task_help  # noqa: E402
from releng.tasks import collection  # noqa: E402

ns = collection(str(ROOT))
route_task_help(ns)  # `invoke TASK --help` prints TASK's help, whatever its arguments
