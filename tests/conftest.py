"""Shared fixtures live in tests/fixtures/, one module per engine or area."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.project",
    "tests.fixtures.gpg",
    "tests.fixtures.http",
    "tests.fixtures.docker",
    "tests.fixtures.moto",
    "tests.fixtures.iam",
    "tests.fixtures.rebuild",
]
