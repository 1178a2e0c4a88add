"""The invoke command lines the workers run, from one table.

Workers run releng's own invoke tasks in their checkout. Every task name and flag they use is
here and nowhere else, so a renamed task or flag is one edit, and
``tests/test_aws_commands.py`` parses each line below with the real invoke collection
(``releng.tasks.collection``): a task or flag that no longer exists fails there, not on the
first nightly. The version comes in typed and goes out as ``--version V`` plus
``--release`` for a release (even one shaped like a date).

Stdlib only: the Lambda bundle imports it (releng.aws.deploy.LAMBDA_MODULES).
"""

from __future__ import annotations

from typing import Final

from releng.aws import steps as S
from releng.errors import AwsError
from releng.version import Version

# The tasks, by what the workers use them for. The names are the CLI's: a rename of a task
# changes the string here only.
MAKE_SOURCE_TARBALL: Final = "make-source-tarball"
MAKE_PACKAGE: Final = "make-package"
UPLOAD_BUILD: Final = "upload-build"
UPDATE_REPOS: Final = "update-repos"
PUBLISH_RELEASE_SOURCE: Final = "publish-release-source"
VERIFY_REBUILD: Final = "verify-rebuild"
TASKS: Final = (
    MAKE_SOURCE_TARBALL,
    MAKE_PACKAGE,
    UPLOAD_BUILD,
    UPDATE_REPOS,
    PUBLISH_RELEASE_SOURCE,
    VERIFY_REBUILD,
)


def version_flags(version: Version) -> list[str]:
    """``--version V`` and, for a release, ``--release``: the one way a version is spelled."""
    return ["--version", version.text, *([] if version.is_nightly else ["--release"])]


def _invoke(task: str, *args: str) -> list[str]:
    assert task in TASKS, task  # every task a worker runs is in the table
    return ["invoke", task, *args]


def for_step(
    step: str, version: Version, *, distro: str = "", arch: str = "", dest: str = "",
    distros: tuple[str, ...] = (),
) -> list[list[str]]:  # fmt: skip
    """What a worker runs for ``step`` (``dest``: s3://BUCKET/PREFIX of the downloads, given as --repo)."""
    if step == S.MAKE_SOURCE_TARBALL:
        return [
            _invoke(MAKE_SOURCE_TARBALL, *version_flags(version)),
            _invoke(UPLOAD_BUILD, *version_flags(version), "source"),
        ]
    if step == S.MAKE_BINARY_PACKAGE:
        # The worker's instance is of ``arch`` (its queue's launch template): a native build.
        return [
            _invoke(MAKE_PACKAGE, distro, *version_flags(version), "--arch", arch),
            _invoke(UPLOAD_BUILD, *version_flags(version), "--arch", arch, distro),
        ]
    if step == S.VERIFY_REBUILD:
        # The build was fetched from scratch into out/<V>/<DISTRO>/ (the task's "fetch");
        # its result goes back by after_step, whatever the outcome.
        return [_invoke(VERIFY_REBUILD, distro, *version_flags(version), "--arch", arch)]
    if step == S.PUBLISH_BINARY_PACKAGES:
        return [_invoke(UPDATE_REPOS, *version_flags(version), "--repo", dest)]
    if step == S.PUBLISH_SOURCE_TARBALL:
        # publish-release-source takes the version as its argument; --release all the same.
        release = [] if version.is_nightly else ["--release"]
        embargo = ["--distros", ",".join(distros)] if distros else []
        return [_invoke(PUBLISH_RELEASE_SOURCE, version.text, *release, "--repo", dest, *embargo)]
    raise AwsError(
        f"prepare_task: unknown step {step!r}; valid steps: {', '.join(S.QUEUE_OF_STEP)}"
    )


def after_step(step: str, version: Version, *, distro: str = "", arch: str = "") -> list[list[str]]:
    """What a worker runs after ``step``'s commands whatever their outcome (the worker's
    ``always``): verify-rebuild's result goes to scratch on a mismatch too, so the publisher
    holds that build back and diffoscope's reports stay beside it."""
    if step == S.VERIFY_REBUILD:
        return [_invoke(UPLOAD_BUILD, *version_flags(version), "--arch", arch, "--rebuild", distro)]
    return []
