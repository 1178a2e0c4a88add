"""nox sessions: ``nox -l`` lists them. Logic lives in releng; this file only wires it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))
# stdlib-only modules, importable before any venv exists
from releng.checkout_venv import hand_over  # noqa: E402
from releng.config import load_product  # noqa: E402
from releng.distro import read_targets  # noqa: E402
from releng.lockfile import LOCK, LockError, compile_locks, stale  # noqa: E402

hand_over(ROOT, "nox")  # a nox outside any venv (a pyenv shim) runs the checkout's .venv

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"
# uv (from the lock, in .venv) makes a session venv in seconds; plain venv where it is absent.
nox.options.default_venv_backend = "uv|venv"

TARGETS = read_targets(ROOT)
ARCHITECTURES = load_product(ROOT).repositories.architectures


def _install(session: nox.Session) -> None:
    """requirements/lock.txt, then releng itself without dependencies; skipped when done already.

    With bytecode compiled: the tests start hundreds of Python processes (invoke, workers,
    moto), and where PYTHONDONTWRITEBYTECODE is set none of them would keep what it compiled
    (about 0.7 s of CPU each for boto3 or invoke). pip compiles by default, uv on request.
    """
    stamp = Path(session.virtualenv.location) / ".releng-lock"
    want = (ROOT / LOCK).read_text() + (ROOT / "pyproject.toml").read_text()
    if not (stamp.is_file() and stamp.read_text() == want):
        compiled = ["--compile-bytecode"] if session.venv_backend == "uv" else []
        session.install("--require-hashes", "--no-deps", *compiled, "-r", str(LOCK))
        session.install("--no-deps", "--no-build-isolation", "-e", ".")
        stamp.write_text(want)
    # releng itself is installed editable: its bytecode, brought up to date (only what changed)
    session.run("python", "-m", "compileall", "-q", str(ROOT / "src"), silent=True)


# The quick loop: every pure-logic module; no engine (Docker, moto), nothing slow. Its tests
# wait on subprocesses (gpg, git, invoke) more than they compute: two xdist workers.
QUICK = ("-m", "not slow and not docker and not aws", "-n", "2")
# The whole suite on two xdist workers: every Docker test (one engine, shared images and
# builds) carries xdist_group("docker") or, for three modules apart, "docker-apart"
# (tests/conftest.py), so --dist loadgroup runs each group on one worker, the engine-free and
# moto tests filling the rest. `nox -s tests -- -n 0 ...` runs in one process (for pdb, -s).
TESTS = ("-n", "2", "--dist", "loadgroup")


def _pytest(session: nox.Session, *args: str) -> None:
    _install(session)
    session.run("python", "-m", "pytest", *args, *(session.posargs or ["-q"]))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite, real engines included (Docker, gpg, apt, moto)."""
    _pytest(session, *TESTS)


@nox.session(default=False)
def quick(session: nox.Session) -> None:
    """Run the tests that need no engine (Docker, moto) and are not slow: the edit-test loop."""
    _pytest(session, *QUICK)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy --strict, the lock files, and the AWS oracles (cfn-lint, checkov, parliament,
    asl-validator) on the generated template and state machine."""
    _install(session)
    session.run("python", "-m", "ruff", "check", ".")
    session.run("python", "-m", "ruff", "format", "--check", ".")
    session.run("python", "-m", "mypy")
    session.run("python", "-m", "releng.aws.oracles", str(ROOT))
    if problems := stale(ROOT):
        session.error("; ".join(problems))


def _packages(session: nox.Session, distro: str, arch: str = "") -> None:
    """Build the product's packages for one target distro (and architecture) in a container."""
    _install(session)
    session.run(
        "python",
        "-m",
        "invoke",
        "make-package",
        distro,
        *(["--arch", arch] if arch else []),
        *session.posargs,
    )


# One session per target distro: packages(distro='debian-12-bookworm'); times the
# architectures when product.toml lists several: packages(arch='arm64', distro='...').
_matrix = nox.parametrize("distro", TARGETS)(_packages)
if len(ARCHITECTURES) > 1:
    _matrix = nox.parametrize("arch", ARCHITECTURES)(_matrix)
packages = nox.session(name="packages")(_matrix)


@nox.session(default=False)
def benchmarks(session: nox.Session) -> None:
    """Run the side-by-side benchmarks against peer tools and print ratios."""
    _install(session)
    for script in session.posargs or sorted(
        str(p) for p in (ROOT / "benchmarks").glob("bench_*.py")
    ):
        session.run("python", script)


@nox.session(default=False)
def front_page_screenshot(session: nox.Session) -> None:
    """Regenerate docs/front-page.png: a demo repository's front page in headless Chromium."""
    _install(session)
    session.run("./scripts/setup-front-page-tools", external=True)
    session.run("python", "-m", "releng.publish.front_page_demo", "docs/front-page.png")


@nox.session(default=False, venv_backend="none")
def lock(session: nox.Session) -> None:
    """Re-resolve requirements/lock.txt and runtime.txt from pyproject.toml (-- --upgrade[-package P])."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        session.error("uv is not installed; run ./scripts/setup (it installs uv from the lock)")
    try:
        written = compile_locks(ROOT, uv=uv, args=session.posargs)
    except LockError as exc:
        session.error(str(exc))
    for path in written:
        session.log(f"wrote {path.relative_to(ROOT)}")
