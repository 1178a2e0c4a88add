"""make-package: one distro's .debs, built in a throwaway container of its builder image.

Plan, act, verify:

1. :func:`plan_build` makes sure the source tarball, base image and builder image
   exist and gathers the build's inputs (tarball sha256, distro directory and
   ``packaging/`` content hashes, builder image id). When ``build.json`` of an
   earlier build in ``out/<version>/<distro>/`` records the same inputs, the
   build is up to date.
2. :func:`make_package` runs the distro's ``make-package`` (or
   ``packaging/make-debianish-package``) with no network, as an unprivileged
   user, writing into a temporary directory beside the output directory.
3. The built ``.deb``s are installed in a fresh container of the base image and
   the product's smoke command runs; only then is the temporary directory
   renamed into place. Anything else leaves nothing in ``out/``.

The signing key, GNUPGHOME and AWS credentials never reach the container: its
environment is built from scratch and ``.releng/`` (the development key) is
hidden behind an empty tmpfs.

Modules: :mod:`.plan` (targets, inputs, up to date), :mod:`.spec` (the containers as
data, the gate), :mod:`.make` (make-package), :mod:`.smoke` (the smoke test),
:mod:`.background` (containers started on a thread), :mod:`.lint` (lintian),
:mod:`.cache` (the compiler cache around a build), :mod:`.output` (logs and output
placing), :mod:`.reaper` (what dead runs left), :mod:`.signals` (SIGTERM and clean-ups).
"""

from __future__ import annotations

from releng.build.make import make_package
from releng.build.plan import (
    BUILD_JSON,
    BuildFailed,
    BuildPlan,
    BuildResult,
    Owner,
    Target,
    plan_build,
    resolve_target,
    tree_hash,
)
from releng.build.reaper import (
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_SMOKE,
    owner_label,
    remove_dead_runs,
    remove_run_containers,
)
from releng.build.signals import interrupts_deferred, terminate_as_interrupt
from releng.build.spec import (
    BUILD_DIR,
    build_environment,
    build_mounts,
    build_spec,
    failed_image,
    secret_masks,
    source_dates,
    stage_debian,
    stages_debian,
)

__all__ = [
    "BUILD_DIR",
    "BUILD_JSON",
    "LABEL_OWNER",
    "LABEL_PROJECT",
    "LABEL_SMOKE",
    "BuildFailed",
    "BuildPlan",
    "BuildResult",
    "Owner",
    "Target",
    "build_environment",
    "build_mounts",
    "build_spec",
    "failed_image",
    "interrupts_deferred",
    "make_package",
    "owner_label",
    "plan_build",
    "remove_dead_runs",
    "remove_run_containers",
    "resolve_target",
    "secret_masks",
    "source_dates",
    "stage_debian",
    "stages_debian",
    "terminate_as_interrupt",
    "tree_hash",
]
