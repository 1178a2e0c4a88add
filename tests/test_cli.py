"""The CLI boundary: instant task listing, one `error:` line and a non-zero exit on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from releng.cli import help_argv
from releng.project import Project

REPO_ROOT = Path(__file__).resolve().parents[1]


def invoke(
    *args: str, root: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "RELENG_ROOT": str(root), **(env or {})},
        check=False,
        timeout=300,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    assert expected in last, last


def test_listing_tasks_imports_no_heavy_library() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); import tasks; "
        "heavy = [m for m in ('docker', 'boto3', 'botocore', 'gnupg', 'debian') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert result.stdout.strip() == ""


def test_every_task_has_a_docstring_and_help_for_each_argument() -> None:
    # In a process of its own: invoke's Task.get_arguments hands its help texts over once
    # (it pops them), so a task another test already parsed here would look undocumented.
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "import tasks\n"
        "found = {}\n"
        "for name in tasks.ns.task_names:\n"
        "    task = tasks.ns[name]\n"
        "    args = [p for p in task.get_arguments() if p.name != 'c']\n"
        "    found[name] = [bool(task.__doc__), [p.name for p in args if not p.help]]\n"
        "print(json.dumps(found))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    found = json.loads(proc.stdout)
    assert len(found) > 20, found
    for name, (documented, missing) in found.items():
        assert documented, f"task {name} has no docstring"
        assert not missing, f"task {name}: arguments without help: {missing}"


def test_distros_lists_every_distro_and_targets(project_copy: Project) -> None:
    result = invoke("list-distros", root=project_copy.root)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert len(lines) == 7
    assert " yes " in lines["debian-12-bookworm"]
    assert " yes " in lines["ubuntu-24.04-noble"]
    assert " no " in lines["debian-9-stretch"]
    assert "APT_SOURCES" in lines["debian-9-stretch"]
    assert "image must exist or be pullable" in lines["debian-9-stretch"]


def test_distros_json_is_the_table_as_data(project_copy: Project) -> None:
    result = invoke("list-distros", "--json", root=project_copy.root)
    assert result.returncode == 0, result.stderr
    distros = {d["id"]: d for d in json.loads(result.stdout)}
    assert len(distros) == 7
    bookworm = distros["debian-12-bookworm"]
    assert (bookworm["docker_base"], bookworm["codename"], bookworm["target"]) == (
        "debian:bookworm",
        "bookworm",
        True,
    )
    assert not distros["debian-9-stretch"]["target"]
    assert "APT_SOURCES" in distros["debian-9-stretch"]["has"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["make-source-tarball", "--version", "v1.2"], "does not start with a digit"),
        (["make-source-tarball", "--version", "9999.12.31"], "ahead of today"),
        (
            ["make-source-tarball", "--version", "7.7.7"],
            "cannot be signed with the development key",
        ),
    ],
)
def test_bad_input_gives_one_error_line_and_writes_nothing(
    project_copy: Project, args: list[str], expected: str
) -> None:
    result = invoke(*args, root=project_copy.root)
    assert_one_error_line(result, expected)
    assert not project_copy.out_dir.exists() or not list(project_copy.out_dir.iterdir())


def test_unknown_product_key_via_the_cli(project_copy: Project) -> None:
    (project_copy.root / "product.toml").write_text('[product]\nname = "tally"\ncolour = "blue"\n')
    result = invoke("make-source-tarball", root=project_copy.root)
    assert_one_error_line(
        result, "product.toml: unknown key [product] 'colour'; allowed keys: name,"
    )


def test_malformed_distro_directory_via_the_cli(project_copy: Project) -> None:
    (project_copy.root / "distros" / "debian_12").mkdir()
    result = invoke("list-distros", root=project_copy.root)
    assert_one_error_line(result, "'debian_12' is not a distro directory name")


def test_make_source_tarball_via_the_cli(project_copy: Project) -> None:
    result = invoke("make-source-tarball", "--version", "2026.01.02", root=project_copy.root)
    assert result.returncode == 0, result.stderr
    made = sorted(p.name for p in project_copy.out_dir.iterdir())
    assert made == [
        "tally-nightly-2026.01.02.SHA256SUMS",
        "tally-nightly-2026.01.02.SHA256SUMS.asc",
        "tally-nightly-2026.01.02.tar.gz",
        "tally-nightly-2026.01.02.tar.gz.asc",
    ]


def test_missing_release_tag_via_the_cli(make_project, gpg_key) -> None:  # type: ignore[no-untyped-def]
    project = make_project(
        f'[signing]\nkey = "{gpg_key.fingerprint}"\ngnupghome = "{gpg_key.home}"\npassphrase_env = "P"\n'
    )
    result = invoke(
        "make-source-tarball",
        "--version",
        "7.7.7",
        root=project.root,
        env={"P": gpg_key.passphrase},
    )
    assert_one_error_line(result, "release tag 'tally-v7.7.7' for version 7.7.7 does not exist")
    assert not list(project.out_dir.glob("*.tar.gz"))


def test_every_task_answers_help_after_its_name(tmp_path: Path) -> None:
    """`invoke TASK --help` prints TASK's help and exits 0, whatever TASK's arguments are."""
    listing = invoke("--list", "--list-format", "json", root=tmp_path)
    assert listing.returncode == 0, listing.stderr
    tasks = {t["name"]: t["help"] for t in json.loads(listing.stdout)["tasks"]}
    assert {"make-package", "include-packages", "interactive"} <= tasks.keys()

    with ThreadPoolExecutor(4) as pool:
        results = dict(
            zip(tasks, pool.map(lambda n: invoke(n, "--help", root=tmp_path), tasks), strict=True)
        )

    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.startswith(f"Usage: inv[oke] [--core-opts] {name} "), result.stdout
        assert tasks[name] in " ".join(result.stdout.split()), result.stdout


def _releng_program(*args: str, root: Path, stdout: int) -> subprocess.CompletedProcess[str]:
    """The launcher's program (``releng.cli.program``), not invoke's stock one."""
    return subprocess.run(
        [sys.executable, "-c", "from releng.cli import program; program.run()", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RELENG_ROOT": str(root)},
        cwd=REPO_ROOT,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("args", [["--list"], ["make-package", "--help"], ["--help"]])
def test_a_reader_that_has_gone_ends_the_listing_quietly(args: list[str], tmp_path: Path) -> None:
    """`invoke --list | head -1`: the reader is gone before invoke writes (exit 141, no traceback)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = _releng_program(*args, root=tmp_path, stdout=write_end)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


def test_the_launchers_program_answers_help_after_a_task_and_old_names(tmp_path: Path) -> None:
    helped = _releng_program("make-package", "--help", root=tmp_path, stdout=subprocess.PIPE)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("Usage: inv[oke] [--core-opts] make-package "), helped.stdout
    renamed = _releng_program("base-image", "x", root=tmp_path, stdout=subprocess.PIPE)
    assert (renamed.returncode, renamed.stderr.strip()) == (
        2,
        "error: 'invoke base-image' is now 'invoke make-base-image'",
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["invoke", "make-package", "--help"], ["--help", "make-package"]),
        (["inv", "-r", "x", "include-packages", "-h"], ["-r", "x", "--help", "include-packages"]),
        (["invoke", "distros", "make-package", "d", "--help"], ["--help", "make-package"]),
        (["invoke", "make-package", "debian-12-bookworm"], None),
        (["invoke", "interactive", "d", "--", "--help"], None),
        (["invoke", "--help"], None),
    ],
)
def test_help_after_a_task_becomes_invokes_task_help(
    argv: list[str], expected: list[str] | None
) -> None:
    assert (
        help_argv(argv, ["distros", "make-package", "include-packages", "interactive"]) == expected
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(28, "No space left on device", "/r/pool/x.deb"), "/r/pool/x.deb: No space left"),
        (PermissionError(1, "Operation not permitted", "/r/lock"), "chattr -i if immutable"),
        (NotADirectoryError(20, "Not a directory", "/f/repo"), "a file stands where"),
    ],
)
def test_an_oserror_of_the_machine_is_one_line_naming_the_path(
    error: OSError, expected: str
) -> None:
    from releng.cli import machine_error

    message = machine_error(error)
    assert message is not None and expected in message
    assert "\n" not in message


def test_an_oserror_that_is_a_bug_keeps_its_traceback() -> None:
    from releng.cli import machine_error

    assert machine_error(OSError(9, "Bad file descriptor")) is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["make-package", "debian-12-bookworm", "--versio", "1"], "make-package has no option --versio; see `invoke make-package --help`"),
        (["make-package", "debian-12-bookworm", "--version"], "--version needs a value; see `invoke make-package --help`"),
        (["make-packag"], "no task 'make-packag'; did you mean `invoke make-package`?"),
        (["make-package"], "make-package needs distro; see `invoke make-package --help`"),
        (["list-distros", "extra"], "'extra' is neither a task nor an argument list-distros takes"),
    ],
)  # fmt: skip
def test_a_command_line_invoke_cannot_parse_is_one_error_line(
    args: list[str], expected: str, tmp_path: Path
) -> None:
    """What the launcher runs (releng.launchers.ENTRY_POINTS): invoke's parser complaints
    become one `error:` line saying what to run, not "No idea what '--versio' is!"."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.argv[0] = 'invoke'; from releng.cli import program; program.run()",
            "--search-root",
            str(REPO_ROOT),
            *args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "RELENG_ROOT": str(tmp_path)},
        check=False,
        timeout=60,
    )
    assert_one_error_line(result, expected)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
