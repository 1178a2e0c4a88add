"""Shared fixtures live in tests/fixtures/, one module per engine or area.

Under pytest-xdist (``nox -s tests`` runs ``-n 2 --dist loadgroup``) every test marked
``docker`` goes to one worker, in file order: the engine's work is CPU-bound (image and
package builds on all cores), the session's images and demo builds are made once, in
that worker, and never twice at once. Every other test (moto, gpg, git, pure logic:
mostly waiting on subprocesses and sockets) runs on the workers beside it.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.project",
    "tests.fixtures.gpg",
    "tests.fixtures.http",
    "tests.fixtures.docker",
    "tests.fixtures.moto",
    "tests.fixtures.iam",
]

ENGINE_GROUP = "docker-engine"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return  # -p no:xdist, or a venv without it: xdist_group is no marker there
    for item in items:
        if item.get_closest_marker("docker") is not None:
            item.add_marker(pytest.mark.xdist_group(ENGINE_GROUP))
