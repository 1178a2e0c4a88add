"""The lock files every install uses, and ``nox -s lock``, which writes them.

``requirements/lock.txt`` pins every runtime, test, lint, bench and dev dependency
(with the build backend, so releng itself installs without fetching anything
unpinned); ``requirements/runtime.txt`` pins the runtime set only, at the same
versions, for the Lambda bundle and the EC2 workers. Both carry sha256 hashes of
every distribution (pip's ``--require-hashes``) and are resolved for every
platform and Python the project supports (``uv pip compile --universal``), so a
laptop, CI and an arm64 worker install the same versions.

Each file's header records a digest of the pyproject.toml tables it was made
from; :func:`stale` compares it, and a test fails when they disagree. This
module is stdlib-only: ``noxfile.py`` imports it before any venv exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import subprocess
import tomllib
from collections.abc import Sequence
from pathlib import Path

from releng.errors import RelengError

log = logging.getLogger(__name__)

LOCK = Path("requirements/lock.txt")
RUNTIME = Path("requirements/runtime.txt")
STAMP = "# inputs: "
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


class LockError(RelengError):
    """The lock files cannot be made, or do not match pyproject.toml."""


def inputs_digest(pyproject: Path) -> str:
    """sha256 of what the lock files are resolved from: requirements, extras, Python, build backend."""
    data = tomllib.loads(pyproject.read_text())
    project = data.get("project", {})
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system": data.get("build-system", {}).get("requires", []),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def extras(pyproject: Path) -> list[str]:
    return sorted(tomllib.loads(pyproject.read_text())["project"].get("optional-dependencies", {}))


def _header(root: Path, what: str) -> str:
    return (
        f"# {what}\n"
        "# Written by `nox -s lock` (uv pip compile --universal --generate-hashes) from\n"
        "# pyproject.toml; do not edit. Install: pip install --require-hashes -r <this file>,\n"
        "# then releng itself: pip install --no-deps -e . (or . without -e)\n"
        f"{STAMP}sha256:{inputs_digest(root / 'pyproject.toml')}\n"
    )


def stale(root: Path) -> list[str]:
    """What is wrong with the lock files against pyproject.toml (empty: they match)."""
    want = f"{STAMP}sha256:{inputs_digest(root / 'pyproject.toml')}"
    problems = []
    for rel in (LOCK, RUNTIME):
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel} is missing; run `nox -s lock`")
        elif want not in path.read_text().splitlines():
            problems.append(
                f"{rel} was made from another pyproject.toml (its dependency tables changed); "
                "run `nox -s lock` and commit the result"
            )
    return problems


def pins(path: Path) -> dict[str, set[str]]:
    """``name -> versions`` pinned in a requirements file (a name may have one per marker)."""
    found: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        if m := _PIN.match(line):
            found.setdefault(m[1].lower().replace("_", "-"), set()).add(m[2])
    return found


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match, requirement
    return match[0].lower().replace("_", "-").replace(".", "-")


def venv_requirements(root: Path) -> str:
    """The part of the lock that ``scripts/setup`` puts into ``.venv``, hashes and all.

    The runtime set, the ``dev`` extra (nox, uv, PyYAML) and the build backend, with
    everything they pull in (followed through the lock's ``# via`` notes); the test,
    lint and bench tools go only into the nox sessions' venvs, which install the whole lock.
    """
    data = tomllib.loads((root / "pyproject.toml").read_text())
    project = data["project"]
    roots = [
        *project["dependencies"],
        *project.get("optional-dependencies", {}).get("dev", []),
        *data["build-system"]["requires"],
    ]
    blocks: list[tuple[str, list[str]]] = []
    needed_by: dict[str, set[str]] = {}  # parent -> the packages it pulls in
    parents_next = False
    for line in (root / LOCK).read_text().splitlines():
        if m := _PIN.match(line):
            name = m[1].lower().replace("_", "-").replace(".", "-")
            blocks.append((name, [line]))
            parents_next = False
            continue
        if not blocks:
            continue
        blocks[-1][1].append(line)
        note = line.strip()
        if note == "# via":
            parents_next = True
        elif note.startswith("# via "):
            needed_by.setdefault(_name(note[len("# via ") :]), set()).add(blocks[-1][0])
        elif parents_next and note.startswith("#   "):
            needed_by.setdefault(_name(note[len("#   ") :]), set()).add(blocks[-1][0])
    wanted: set[str] = set()
    todo = [_name(r) for r in roots]
    while todo:
        if (name := todo.pop()) not in wanted:
            wanted.add(name)
            todo.extend(needed_by.get(name, ()))
    lines = [f"# {LOCK}'s runtime, dev and build-backend part, for .venv (scripts/setup)"]
    lines += [line for name, block in blocks if name in wanted for line in block]
    return "\n".join(lines) + "\n"


def compile_locks(root: Path, *, uv: str, args: Sequence[str] = ()) -> list[Path]:
    """Write both lock files with ``uv pip compile``; existing pins are kept unless ``args`` upgrade.

    ``args`` go to both runs: ``--upgrade``, ``--upgrade-package cfn-lint``, ...
    The runtime file is constrained by the full lock, so both pin the same versions.
    """
    pyproject = root / "pyproject.toml"
    build_requires = tomllib.loads(pyproject.read_text())["build-system"]["requires"]
    common = [
        uv, "pip", "compile", "--quiet", "--no-config", "--universal", "--python-version", "3.11",
        "--generate-hashes", "--no-header", *args,
    ]  # fmt: skip
    full = [
        *common,
        *(f"--extra={e}" for e in extras(pyproject)),
        "pyproject.toml",
        "-",  # the build backend, on stdin: releng installs with --no-build-isolation
    ]
    # Both are written beside the old ones and renamed at the end: all or nothing.
    news = {rel: (root / rel).with_name(rel.name + ".new") for rel in (LOCK, RUNTIME)}
    runtime = [*common, f"--constraint={news[LOCK].relative_to(root)}", "pyproject.toml"]
    what = {
        LOCK: "Every dependency: runtime, every extra, and the build backend.",
        RUNTIME: "The runtime set only: what the Lambda bundle and the workers install.",
    }
    try:
        for rel, cmd, stdin in ((LOCK, full, build_requires), (RUNTIME, runtime, [])):
            path, new = root / rel, news[rel]
            path.parent.mkdir(parents=True, exist_ok=True)
            # uv keeps the pins it finds in its output file, so seed it with the current ones.
            new.write_text(path.read_text() if path.is_file() else "")
            log.info("%s -o %s", shlex.join(cmd), rel)
            subprocess.run(
                [*cmd, "-o", str(new.relative_to(root))],
                cwd=root,
                input="\n".join(stdin),
                text=True,
                check=True,
            )
    except (OSError, subprocess.CalledProcessError) as exc:
        for new in news.values():
            new.unlink(missing_ok=True)
        why = f"exit {exc.returncode}" if isinstance(exc, subprocess.CalledProcessError) else exc
        raise LockError(
            f"uv pip compile failed ({why}; its output is above); the lock files are unchanged"
        ) from None
    written = []
    for rel, new in news.items():
        body = new.read_text().replace(f"-c {news[LOCK].relative_to(root)}", f"-c {LOCK}")
        new.write_text(_header(root, what[rel]) + body)
        new.replace(root / rel)
        written.append(root / rel)
    return written


if __name__ == "__main__":  # scripts/setup: python3 -m releng.lockfile venv-requirements
    import sys

    if sys.argv[1:] != ["venv-requirements"]:
        sys.exit("usage: python -m releng.lockfile venv-requirements")
    sys.stdout.write(venv_requirements(Path.cwd()))
