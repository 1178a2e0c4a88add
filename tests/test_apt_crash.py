"""Randomized crash test: SIGKILL a publisher at a random moment, rerun, and require convergence.

Each round runs one repository operation (``tests.crash_worker.OPERATIONS``) in its own
process and kills it, either at a random named crash point or after a random delay; what
it leaves must pass check-repo (the old or the new state). The same operation then runs
again to completion, and the repository must be exactly right:
check-repo finds no problem and no warning, no temporary file or staging directory is left,
and the pool holds exactly the files the published suites reference. apt reads the
result in test_apt_in_container.py. ``RELENG_CRASH_ROUNDS`` (default 20) bounds the
rounds; ``RELENG_CRASH_SEED`` replays a failure (each message names its seed).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from releng.apt import CRASH_POINTS, check_repository
from releng.apt.history import needed_paths
from releng.apt.state import STATE_DIR, RepoState
from releng.deb822 import parse_paragraph
from tests.apt_debs import make_deb
from tests.crash_worker import OPERATIONS
from tests.fixtures.gpg import TestKey, make_key

REPO_ROOT = Path(__file__).resolve().parents[1]
ROUNDS = int(os.environ.get("RELENG_CRASH_ROUNDS", "20"))


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    return make_key(
        tmp_path_factory.mktemp("crash-gnupg"), name="releng crash key", passphrase=None
    )


def worker(root: Path, key: TestKey, operation: str, kill_at: str, args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.crash_worker",
        str(root),
        str(key.home),
        key.fingerprint,
        operation,
        kill_at,
        *args,
    ]


def worker_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{REPO_ROOT}"}


def referenced_files(root: Path) -> set[str]:
    """Every pool file a published Packages or Sources index names, and every one a kept
    history entry needs (rollback-repo to it must find its files)."""
    names: set[str] = set(needed_paths(RepoState(root)))
    for index in [
        *root.glob("dists/*/*/binary-*/Packages"),
        *root.glob("dists/*/*/source/Sources"),
    ]:
        for block in index.read_text().split("\n\n"):
            if not block.strip():
                continue
            st = parse_paragraph(block, where=str(index))
            if "Filename" in st:
                names.add(st["Filename"])
            for line in st.get("Checksums-Sha256", "").splitlines():
                if line.split():
                    names.add(f"{st['Directory']}/{line.split()[2]}")
    return names


def assert_converged(root: Path, context: str) -> None:
    report = check_repository(root)
    assert report.problems == [] and report.warnings == [], (context, report)
    pool = {str(p.relative_to(root)) for p in (root / "pool").rglob("*") if p.is_file()}
    assert pool == referenced_files(root), (context, pool ^ referenced_files(root))
    assert list(root.rglob("*.tmp")) == [], context
    assert list((root / "dists").glob(".*")) == [], context
    pending = root / STATE_DIR / "pending"
    assert not pending.is_dir() or not list(pending.iterdir()), context


def crash_rounds(root: Path, key: TestKey, tmp_path: Path, *, seed: int, rounds: int) -> None:
    """``rounds`` operations on ``root``, each killed once and then run to completion."""
    rng = random.Random(seed)
    env = worker_env()
    for i in range(rounds):
        has_suites = (root / "dists").is_dir() and any(
            not p.name.startswith(".") for p in (root / "dists").iterdir()
        )
        choices = [n for n, op in OPERATIONS.items() if has_suites or not op.needs_suites]
        operation = rng.choice(sorted(choices)) if i else "include"
        args: list[str] = []
        if operation == "include":
            # A new release-line suite now and then: first publishes get killed too.
            suites = f"bookworm,bookworm-1.{i % 4}"
            deb = make_deb(tmp_path, f"pkg{i % 2}", f"1.{i}")
            args = [suites, str(deb)]
        context = f"seed {seed} round {i} {operation}"
        if rng.random() < 0.5:
            kill_at = f"{rng.choice(CRASH_POINTS)}:{rng.randint(1, 2)}"
            context += f" killed at {kill_at}"
            subprocess.run(worker(root, key, operation, kill_at, args), env=env, check=False)
        else:
            delay = rng.uniform(0.0, 0.8)
            context += f" killed after {delay:.3f} s"
            proc = subprocess.Popen(worker(root, key, operation, "", args), env=env)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if any(p.name[0] != "." for p in (root / "dists").glob("*")):
            # Killed at any moment, the repository is still one apt accepts (old or new).
            report = check_repository(root)
            assert report.problems == [], (context, report.problems)
        rerun = subprocess.run(
            worker(root, key, operation, "", args),
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert rerun.returncode == 0, (context, rerun.stderr)
        assert_converged(root, context)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_a_rerun_converges(tmp_path: Path, key: TestKey) -> None:
    seed = int(os.environ.get("RELENG_CRASH_SEED") or random.randrange(1 << 30))
    print(f"RELENG_CRASH_SEED={seed}")
    crash_rounds(tmp_path / "repo", key, tmp_path, seed=seed, rounds=ROUNDS)
