"""Shared fixtures live in tests/fixtures/, one module per engine or area.

``nox -s tests`` runs the suite on two pytest-xdist workers with ``--dist loadgroup``.
Every test marked ``docker`` carries an ``xdist_group``: the tests of one group run on one
worker, one after another in file order (module fixtures such as test_setup.py's stock
container see their tests in order; session builds such as ``demo_build`` are made once).
The ``docker`` group holds them all but the modules in ``APART``, which share no session
build with it and make only containers, images and volumes of their own: their group runs
on the other worker, beside the ``docker`` group, and that worker then takes the tests
without Docker one by one (the engine-free and moto tests need no group: each worker has
its own moto server on a free port, and each test its own tmp_path and bucket names).
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
    "tests.fixtures.rebuild",
]

DOCKER_GROUP = "docker"
APART_GROUP = "docker-apart"
# About a quarter of the Docker time (stock-Debian containers, the emulated arm64 builds);
# they use base images only (base_image, locked across workers) and the apt cache volumes
# of tests/fixtures/docker.py, which only they mount.
APART = frozenset({"test_setup.py", "test_aws_userdata.py", "test_arch_build.py"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the Docker tests. tryfirst: xdist's own hook (in each worker) turns the group
    into the ``@group`` suffix of the node id that --dist loadgroup schedules by, so the
    mark must be there before it runs; a mark added after it is silently ignored."""
    for item in items:
        if item.get_closest_marker("docker") is not None:
            group = APART_GROUP if item.path.name in APART else DOCKER_GROUP
            item.add_marker(pytest.mark.xdist_group(group))
