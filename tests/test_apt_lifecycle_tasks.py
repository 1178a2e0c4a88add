"""The lifecycle tasks through invoke: list-packages, copy-packages, remove-packages, show-history,
rollback-repo, with a promotion-only suite declared in product.toml, and their refusals."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.project import Project
from tests.apt_debs import make_deb
from tests.fixtures.gpg import TestKey
from tests.test_apt_tasks import signing_toml
from tests.test_cli import assert_one_error_line, invoke

PROMOTION = '[repositories]\npromotion_suites = ["{codename}-staging"]\n'


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "lock"
    }


@pytest.mark.slow
def test_promote_list_history_rollback_and_remove_through_invoke(
    make_project: Callable[[str], Project], gpg_key: TestKey, tmp_path: Path
) -> None:
    project = make_project(PROMOTION + signing_toml(gpg_key))
    root, env = project.root, {"TEST_PASSPHRASE": gpg_key.passphrase}
    repo = root / "out" / "repo"

    def run(*args: str) -> str:
        result = invoke(*args, root=root, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    for version in ("1.0.0-1", "1.1.0-1"):
        deb = make_deb(tmp_path, "tally", version)
        run("include-packages", "--dist", "bookworm-staging", str(deb))
        run("copy-packages", "--from", "bookworm-staging", "--to", "bookworm", "tally")
    listed = json.loads(run("list-packages", "--dist", "bookworm", "--json"))
    assert [(x["package"], x["version"]) for x in listed] == [
        ("tally", "1.0.0-1"),
        ("tally", "1.1.0-1"),
    ]
    assert len(list((repo / "pool").rglob("*.deb"))) == 2  # shared by both suites
    history = run("show-history", "--dist", "bookworm")
    assert "   1  " in history and "   2  " in history
    assert "+ tally 1.1.0-1 amd64" in history
    assert "(copy from bookworm-staging)" in history
    dry = run("rollback-repo", "--dist", "bookworm", "--to", "1", "--dry-run")
    assert "would drop tally_1.1.0-1_amd64.deb" in dry
    assert "Version: 1.1.0-1" in (repo / "dists/bookworm/main/binary-amd64/Packages").read_text()
    run("rollback-repo", "--dist", "bookworm", "--to", "1")
    text = (repo / "dists/bookworm/main/binary-amd64/Packages").read_text()
    assert "Version: 1.0.0-1" in text and "Version: 1.1.0-1" not in text
    run("remove-packages", "--dist", "bookworm", "tally")
    assert "tally" not in (repo / "dists/bookworm/main/binary-amd64/Packages").read_text()
    assert "all good" in run("check-repo")

    before = tree(repo)
    for args, message in (
        (("copy-packages", "--from", "sid", "--to", "bookworm", "tally"), "unknown suite 'sid'"),
        (("copy-packages", "--from", "bookworm-staging", "--to", "nope", "tally"), "unknown suite"),
        (("remove-packages", "--dist", "bookworm-staging", "tally=9"), "matches nothing"),
        (("rollback-repo", "--dist", "bookworm", "--to", "9"), "no publish 9"),
        (("show-history", "--dist", "bookworm/../x"), "no '/' and no '..'"),
        (("remove-packages", "--dist", "a..b", "tally"), "no '/' and no '..'"),
        (("list-packages", "--dist", "sid"), "unknown suite 'sid'"),
    ):
        assert_one_error_line(invoke(*args, root=root, env=env), message)
    assert tree(repo) == before
