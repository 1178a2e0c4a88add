"""The front page and the Contents indexes at 10,000 packages; prints ratios and sizes.

    python benchmarks/bench_frontpage.py [--quick]

Targets (issue 27):
1. 1 .deb added to a 10,000-package suite, republished signed, Contents on vs off
   [<= 1.2 x], each include its own process, best of 5;
2. the front page of that repository: rendered server side [< 200 ms] (collect + render +
   write, gpg reading the key included), and its size [< 500 KB].

Inputs and repositories live under benchmarks/.work/ (gitignored), with bench_repo.py's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_repo import WORK, make_deb, make_key, make_many

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SUITE = "bookworm"
INCLUDE = """
import sys, time
from pathlib import Path
from releng.apt import Repository, RepoSettings
from releng.gpg import Signer
repo, home, fpr, contents = sys.argv[1:5]
paths = [Path(p) for p in sys.argv[5:]]
signer = Signer(gnupghome=Path(home), key=fpr, passphrase=None)
settings = RepoSettings(
    name="tally", origin="bench", label="bench", nightly_max_age_days=0,
    contents=contents == "on",
)
repository = Repository(Path(repo), settings, signer, link_inputs=True)
start = time.perf_counter()
repository.include(["bookworm"], paths)
print(f"include: {time.perf_counter() - start:.4f}")
"""


def include(repo: Path, home: Path, fpr: str, paths: list[Path], *, contents: bool) -> float:
    """One include as its own process; its wall time in seconds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    cmd = [sys.executable, "-c", INCLUDE, str(repo), str(home), fpr, "on" if contents else "off"]
    start = time.perf_counter()
    subprocess.run([*cmd, *map(str, paths)], check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 packages instead of 10,000")
    args = parser.parse_args()
    n = 1000 if args.quick else 10_000
    home = WORK / "gnupg"
    fpr = make_key(home)
    debs = make_many(WORK / f"debs-{n}", n, "pkg")
    extra = WORK / "frontpage-extra"
    shutil.rmtree(extra, ignore_errors=True)
    extra.mkdir(parents=True)
    one: dict[bool, float] = {}
    repos: dict[bool, Path] = {}
    for contents in (False, True):
        repo = WORK / f"frontpage-repo-{'on' if contents else 'off'}"
        shutil.rmtree(repo, ignore_errors=True)
        start = time.perf_counter()
        include(repo, home, fpr, debs, contents=contents)
        print(
            f"{n} packages into a fresh suite, Contents {'on ' if contents else 'off'}: "
            f"{time.perf_counter() - start:.2f} s"
        )
        times = []
        for k in range(5):
            deb = make_deb(extra, f"extra{k}{'c' if contents else ''}", "1.0-1")
            times.append(include(repo, home, fpr, [deb], contents=contents))
        one[contents] = min(times)
        repos[contents] = repo
    print(
        f"1 .deb into a {n}-package suite: Contents off {one[False]:.3f} s, "
        f"on {one[True]:.3f} s: {one[True] / one[False]:.2f} x  [target <= 1.2 x]"
    )

    from releng.project import Project
    from releng.publish.front_page import collect, render, write_front_page

    project = Project.load(ROOT)
    repo = repos[True]
    best = min(_timed(lambda: write_front_page(repo, project)) for _ in range(5))
    size = (repo / "index.html").stat().st_size
    page = collect(repo, project)
    render_only = min(_timed(lambda: render(page)) for _ in range(5))
    print(
        f"front page of a {n}-package repository: {best * 1000:.0f} ms "
        f"(render alone {render_only * 1000:.1f} ms)  [target < 200 ms]; "
        f"{size / 1024:.0f} KiB  [target < 500 KB]"
    )
    _with_rebuild_status(repo, project, n)


def _with_rebuild_status(repo: Path, project: object, n: int) -> None:
    """The same page with [verify] rebuild = "report" and every package attested (the index a
    publisher keeps in attestations/): the status column's cost (issue 26, item 4)."""
    import dataclasses
    import json

    from releng.apt.state import RepoState
    from releng.publish.front_page import write_front_page

    cfg = project.config  # type: ignore[attr-defined]
    verify = dataclasses.replace(cfg.verify, rebuild="report")
    reporting = dataclasses.replace(project, config=dataclasses.replace(cfg, verify=verify))
    state = RepoState(repo)
    entries = [
        {"path": path, "rebuilder": "F" * 40, "finished": "2026-12-06T12:00:00Z"}
        for path in state.known_paths()
        if path.endswith(".deb")
    ]
    index = repo / "attestations" / "index.json"
    index.parent.mkdir(exist_ok=True)
    index.write_text(json.dumps({"packages": entries}, indent=2))
    try:
        best = min(_timed(lambda: write_front_page(repo, reporting)) for _ in range(5))
        size = (repo / "index.html").stat().st_size
    finally:
        index.unlink()
        index.parent.rmdir()
    print(
        f"front page of a {n}-package repository with its rebuild status ({len(entries)} "
        f"attested): {best * 1000:.0f} ms  [target < 200 ms]; {size / 1024:.0f} KiB  "
        "[target < 500 KB]"
    )


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
