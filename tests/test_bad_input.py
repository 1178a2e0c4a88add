"""The README's promise, for every task: bad input gives one ``error:`` line, a non-zero
exit, no traceback, and changes nothing (issue 23).

Every invoke task is run with a table of bad inputs against a committed copy of the
repository; the copy's files (names, sizes, contents) are the same afterwards.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from releng.tasks import collection
from tests.fixtures.project import copy_repo, git

# Every task name this test runs, in one place (renames are one edit here).
AWS_STATUS = "show-aws-status"
BASE_IMAGE = "make-base-image"
BUILD_ON_AWS = "build-on-aws"
CACHE_CLEAR = "clear-cache"
CACHE_STATS = "show-cache"
DEPLOY_AWS = "deploy-aws"
DISTROS = "list-distros"
GENERATE_AWS = "generate-aws"
INTERACTIVE = "interactive"
MAKE_ALL_PACKAGES = "make-all-packages"
MAKE_MULTIPLE_RELEASES_ON_AWS = "make-multiple-releases-on-aws"
MAKE_PACKAGE = "make-package"
MAKE_PACKAGE_ON_AWS = "make-package-on-aws"
MAKE_SOURCE_TARBALL = "make-source-tarball"
PUBLISH_RELEASE_SOURCE = "publish-release-source"
PUBLISH_SOURCE = "publish-source"
REPO_CHECK = "check-repo"
REPO_COPY = "copy-packages"
REPO_HISTORY = "show-history"
REPO_INCLUDE = "include-packages"
REPO_LIST = "list-packages"
REPO_PUBLISH = "republish-repo"
REPO_REMOVE = "remove-packages"
REPO_ROLLBACK = "rollback-repo"
SYNC_REPOS = "sync-repo"
UPDATE_INDICES = "update-indices"
DESTROY_AWS = "destroy-aws"
ROTATE_KEYS = "rotate-keys"
VERIFY_PACKAGE = "verify-package"
VERIFY_REBUILD = "verify-rebuild"
UPDATE_REPOS = "update-repos"
UPLOAD_BUILD = "upload-build"

REPO_ROOT = Path(__file__).resolve().parents[1]
MARK = "/tmp/releng-bad-input-ran"  # what an injected command would write
# product.toml texts that are refused at load (any task reading the configuration).
HOSTILE_GIT = f'[source]\npublic_repository = "--upload-pack=id>{MARK};false"\n'
EMPTY_SUITES = "[repositories]\nsuites = []\n"
NEWLINE_MAINTAINER = '[product]\nmaintainer = "A <a@b.org>\\nX-Evil: 1"\n'

# (task, arguments, product.toml or None for the shipped one, what the error line says)
CASES: list[tuple[str, list[str], str | None, str]] = [
    (REPO_ROLLBACK, ["--dist", "bookworm", "--to", "abc"], None, "--to takes a whole number"),
    (SYNC_REPOS, ["--grace-seconds", "abc"], None, "--grace-seconds takes a whole number"),
    (SYNC_REPOS, ["--lock-timeout", "1e3"], None, "--lock-timeout takes a whole number"),
    (MAKE_ALL_PACKAGES, ["--jobs", "abc"], None, "--jobs takes a whole number"),
    (
        PUBLISH_RELEASE_SOURCE,
        ["--version", "1.0", "--distros", "debian-12-bookworm", "--dry-run"],
        HOSTILE_GIT,
        "starts with '-'",
    ),
    (DISTROS, [], "[product]\nsmoke_command = []\n", "runs nothing"),
    (UPDATE_REPOS, ["--version", "1.0.0"], EMPTY_SUITES, "suites = []"),
    (MAKE_PACKAGE, ["debian-12-bookworm"], NEWLINE_MAINTAINER, "maintainer"),
    (REPO_LIST, [], '[repositories]\narchitectures = ["x86"]\n', "'x86'"),
    (
        MAKE_SOURCE_TARBALL,
        ["--version", "1.0", "--release"],
        '[source]\nrelease_branch = "-{name}"\n',
        "release_branch",
    ),
    (MAKE_SOURCE_TARBALL, ["--version", "not-a-version"], None, "not-a-version"),
    (MAKE_PACKAGE, ["no-such-distro"], None, "no-such-distro"),
    (BASE_IMAGE, ["no-such-distro"], None, "no-such-distro"),
    (INTERACTIVE, ["no-such-distro"], None, "no-such-distro"),
    (CACHE_STATS, ["no-such-distro"], None, "no-such-distro"),
    (CACHE_CLEAR, ["no-such-distro"], None, "no-such-distro"),
    (REPO_CHECK, ["--repo", "no-such-repo"], None, "no-such-repo"),
    (REPO_LIST, ["--repo", "product.toml"], None, "product.toml"),
    (REPO_HISTORY, ["--dist", "bookworm", "--repo", "no-such-repo"], None, "no-such-repo"),
    (REPO_PUBLISH, ["--repo", "product.toml"], None, "product.toml"),
    (REPO_INCLUDE, ["--dist", "bookworm", "--path", "no-such.deb"], None, "no-such.deb"),
    (
        REPO_COPY,
        [
            "--from",
            "bookworm",
            "--to",
            "bookworm-stable",
            "--spec",
            "tally",
            "--repo",
            "no-such-repo",
        ],
        None,
        "no-such-repo",
    ),
    (
        REPO_REMOVE,
        ["--dist", "bookworm", "--spec", "tally", "--repo", "no-such-repo"],
        None,
        "no-such-repo",
    ),
    (UPDATE_INDICES, ["--repo", "not-s3"], None, "pass --repo s3://BUCKET/PREFIX"),
    (UPDATE_INDICES, ["--dest", "s3://b-x/apt"], None, "--dest is gone"),
    (DESTROY_AWS, ["--stack", "x"], None, "AWS region"),
    (ROTATE_KEYS, ["--add", "nothex"], None, "development key"),
    (
        VERIFY_PACKAGE,
        ["no-such.deb", "--repo", "no-such-dir", "--keyring", "k.asc"],
        None,
        "no-such-dir",
    ),
    (VERIFY_REBUILD, ["no-such-distro"], None, "no-such-distro"),
    (UPDATE_REPOS, ["--version", "99.0.0"], None, "development key"),
    (UPLOAD_BUILD, ["--version", "not-a-version", "source"], None, "not-a-version"),
    (PUBLISH_SOURCE, ["--version", "not-a-version"], None, "no destination"),
    (PUBLISH_RELEASE_SOURCE, ["--version", "not-a-version"], None, "not-a-version"),
    (BUILD_ON_AWS, ["--versions", "not-a-version"], None, "not-a-version"),
    (MAKE_PACKAGE_ON_AWS, ["no-such-distro", "--version", "1.0.0"], None, "no-such-distro"),
    (MAKE_MULTIPLE_RELEASES_ON_AWS, ["--versions", "not-a-version"], None, "not-a-version"),
    (AWS_STATUS, ["--execution", "no-such"], None, "AWS region"),
    (DEPLOY_AWS, [], '[aws]\nrepository_url = "--upload-pack=x"\n', "repository_url"),
    (GENERATE_AWS, [], "[aws]\nstack_name = 5\n", "stack_name"),
]


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (not .git's internals) with a digest of its content."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".git/", ".releng/")) or not path.is_file():
            files[rel] = "dir" if path.is_dir() else ""
            continue
        files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    # .releng/ is releng's own cache (the development key is made there on first use).
    return {k: v for k, v in files.items() if not k.startswith((".git/", ".releng"))}


def test_the_table_covers_every_task() -> None:
    names = set(collection(str(REPO_ROOT)).task_names)
    covered = {task for task, *_ in CASES}
    assert covered <= names, f"no such tasks: {sorted(covered - names)}"
    assert names <= covered, f"tasks without a bad input here: {sorted(names - covered)}"


def _params() -> list[object]:
    return [
        pytest.param(task, args, product, expected, id=f"{task}-{i}")
        for i, (task, args, product, expected) in enumerate(CASES)
    ]


@pytest.mark.parametrize(("task", "args", "product", "expected"), _params())
def test_bad_input_is_one_line_a_non_zero_exit_and_changes_nothing(
    tmp_path: Path, task: str, args: list[str], product: str | None, expected: str
) -> None:
    root = copy_repo(tmp_path / "repo")
    if product is not None:
        (root / "product.toml").write_text(product)
        git(root, "commit", "-q", "-am", "a bad product.toml")
    before = _tree(root)
    Path(MARK).unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"RELENG_ROOT": str(root), "AWS_EC2_METADATA_DISABLED": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), task, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        check=False,
        timeout=300,
    )
    where = f"invoke {task} {' '.join(args)}: exit {result.returncode}\n{result.stderr}"
    assert result.returncode not in (0, None), where
    assert "Traceback" not in result.stderr, where
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, where
    assert result.stderr.rstrip("\n").endswith(errors[0]), where  # the last line
    assert expected in errors[0], where
    assert not Path(MARK).exists(), "a command named in the configuration ran"
    assert _tree(root) == before, f"{where}\nthe checkout changed"


@pytest.mark.parametrize("text", ["t\tab", "a\nSuites: evil", "cr\r", "del\x7f", "esc\x1b[0m"])
def test_control_characters_are_refused_in_one_line(text: str) -> None:
    from releng.errors import PublishError
    from releng.textcheck import check_one_line

    with pytest.raises(PublishError) as err:
        check_one_line(f"s3://bucket/{text}", what="the S3 URL", error=PublishError)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("the S3 URL 's3://bucket/")
    assert check_one_line("s3://bucket/apt/stable", what="the S3 URL") == "s3://bucket/apt/stable"
