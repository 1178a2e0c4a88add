"""nox sessions: ``nox -l`` lists them. Logic lives in releng; this file only wires it."""

from __future__ import annotations

import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))
from releng.config import load_product  # noqa: E402  (stdlib-only modules)
from releng.distro import read_targets  # noqa: E402

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"

TARGETS = read_targets(ROOT)
ARCHITECTURES = load_product(ROOT).repositories.architectures


# The venvs see the packages scripts/setup installed, so a fresh CI checkout does not
# download the dependency tree again; pip still installs anything missing.
SITE = ["--system-site-packages"]


@nox.session(venv_params=SITE)
def tests(session: nox.Session) -> None:
    """Run the whole test suite, real engines included (Docker, gpg, apt, moto)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))


@nox.session(venv_params=SITE)
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy --strict."""
    session.install("-e", ".[lint]")
    session.run("python", "-m", "ruff", "check", ".")
    session.run("python", "-m", "ruff", "format", "--check", ".")
    session.run("python", "-m", "mypy")


def _packages(session: nox.Session, distro: str, arch: str = "") -> None:
    """Build the product's packages for one target distro (and architecture) in a container."""
    session.install("-e", ".")
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
packages = nox.session(name="packages", venv_params=SITE)(_matrix)


@nox.session(default=False, venv_params=SITE)
def benchmarks(session: nox.Session) -> None:
    """Run the side-by-side benchmarks against peer tools and print ratios."""
    session.install("-e", ".[bench]")
    for script in session.posargs or sorted(
        str(p) for p in (ROOT / "benchmarks").glob("bench_*.py")
    ):
        session.run("python", script)
