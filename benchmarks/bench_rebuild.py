"""verify-rebuild against the first build it verifies, and the cost of comparing and signing.

For the acceptance corpus of issue 26, each on debian-12-bookworm and ubuntu-24.04-noble
(amd64; the arm64 cross build is tests/test_rebuild.py's), builder images cached:

- the demo product (tally);
- GNU hello 2.10 with Debian's 2.10-3 packaging (bench_build.hello_project: its copyright
  year taken from SOURCE_DATE_EPOCH by a quilt patch, the same packaging on both distros);
- (``--leveldb``) LevelDB 1.23 with Debian's 1.23-4 packaging (bench_cache.leveldb_project,
  benchmarks/archive.py's pinned download), its test suite on; on noble its rules configure
  C++14, which noble's googletest 1.14 wants (bench_cache.with_cxx14, docs/rebuild.md).

For each, and each distro:

- the first build: make-package --force (its builder image cached; the compiler cache as the
  project has it: whether its volume was there before, "cache warm", is printed);
- verify-rebuild cold: the rebuilder image made (the recorded build dependencies installed
  from the archive) and the rebuild; warm: that image reused (as every later verification
  of a build with the same build dependencies);
- the ratio of verify-rebuild (warm) over the first build (target <= 1.1), cold printed too,
  and whether the rebuild reproduced the packages (on a difference, diffoscope's report is
  in the first build's rebuild/, kept with ``--keep``). The machine and its load are
  printed before and after each one; docs/rebuild.md "Corpus" and "Measured" quote runs.

Then the comparison and signing alone for a 1 GB set of .debs (8 files of 128 MiB, first
and rebuilt copies on disk): sha256 of both sides and one signed statement each
(target <= 5 s).

Run: ``python benchmarks/bench_rebuild.py [--distros bookworm,noble] [--members demo,hello]
[--rebuilds 2] [--keep DIR]`` (the defaults; about 4-8 minutes a distro). ``--members``
takes demo, hello and leveldb; ``--leveldb`` adds LevelDB to the default members,
``--leveldb-only`` and ``--demo-only`` are ``--members leveldb`` and ``--members demo``.
LevelDB's builder and rebuilder images and its C++ builds take another 15-25 minutes a
distro on 2 cores (more under load). ``--distros`` takes releng's distro ids or their
codenames; ``--rebuilds 1`` verifies once (printed as both cold and warm), for a rebuilder
image already made. A rebuild that does not reproduce keeps its rebuild/ in ``--keep``
(benchmarks/.work/bench-rebuild/<product>/<distro>/).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks.bench_build import demo_project, hello_project  # noqa: E402
from benchmarks.bench_cache import VERSION as LEVELDB_VERSION  # noqa: E402
from benchmarks.bench_cache import leveldb_project  # noqa: E402
from tests.fixtures.gpg import make_key  # noqa: E402

from releng.build import make_package, plan_build  # noqa: E402
from releng.compiler_cache import project_volumes  # noqa: E402
from releng.engine import Engine  # noqa: E402
from releng.gpg import Signer  # noqa: E402
from releng.project import Project  # noqa: E402
from releng.rebuild import (  # noqa: E402
    RebuildError,
    RebuildMismatch,
    plan_rebuild,
    verify_rebuild,
)
from releng.rebuild.attest import Artifact, statement, write_signed  # noqa: E402
from releng.rebuild.compare import compare_packages  # noqa: E402
from releng.version import Version  # noqa: E402

DISTROS = ("debian-12-bookworm", "ubuntu-24.04-noble")
MEMBERS = ("demo", "hello", "leveldb")
KEEP = ROOT / "benchmarks" / ".work" / "bench-rebuild"  # <member>/<distro>/rebuild/


def one(
    engine: Engine,
    project: Project,
    distro: str,
    version: Version,
    *,
    env: dict[str, str],
    signer: Signer,
    keep: Path,
    rebuilds: int = 2,
) -> bool:
    """The first build, verify-rebuild cold and warm, one line of figures; True if reproduced."""
    print(f"machine: {machine()}", flush=True)
    # Warm the source tarball and the builder image only: a whole build here would also warm
    # the compiler cache, and the timed first build below would be faster than a first build.
    plan_build(engine, project, project.distro(distro), version, env=env)
    cache = "cache warm" if project_volumes(engine, project, distro) else "cache cold"
    start = time.monotonic()
    first = make_package(engine, project, distro, version, env=env, force=True)
    build = time.monotonic() - start
    plan = plan_rebuild(
        first.out_dir, distro_id=distro, codename=project.distro(distro).codename, arch="amd64"
    )
    outcome = ""
    times = []
    for _ in range(rebuilds):  # cold (the rebuilder image made if missing), then warm
        start = time.monotonic()
        try:
            result = verify_rebuild(engine, project, plan, signer=signer)
            kinds = Counter(Path(c.name).suffix for c in result.comparisons)
            each = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
            outcome = outcome or f"reproduced (identical: {each})"  # a difference stays said
        except RebuildMismatch as exc:  # a finding, not a failure of the benchmark
            outcome = f"DIFFERS ({exc})"
        except RebuildError as exc:  # so is a rebuild that fails: its log says why
            log = (first.out_dir / "rebuild" / "rebuild.log").read_text(errors="replace")
            print("\n".join(log.splitlines()[-60:]), flush=True)
            outcome = f"FAILED ({exc})"
            times.append(time.monotonic() - start)
            break
        times.append(time.monotonic() - start)
    cold, warm = (times * 2)[:2]  # a failed rebuild is not tried twice; --rebuilds 1: once
    print(
        f"{project.name:7} {distro:18} first build {build:6.1f}s ({cache})  verify-rebuild "
        f"cold {cold:6.1f}s warm {warm:6.1f}s  verify/first: warm {warm / build:.2f} "
        f"(target <= 1.1), cold {cold / build:.2f}; {outcome}",
        flush=True,
    )
    if not outcome.startswith("reproduced"):  # the reports outlive the temporary dir
        dest = keep / project.name / distro
        shutil.copytree(first.out_dir / "rebuild", dest / "rebuild", dirs_exist_ok=True)
        print(f"  its rebuild/ (diffoscope's reports, the log) kept in {dest}", flush=True)
    print(f"machine after: {machine()}", flush=True)
    return outcome.startswith("reproduced")


def compare_and_sign(base: Path, signer: Signer) -> None:
    first, rebuilt = base / "first", base / "rebuilt"
    first.mkdir()
    rebuilt.mkdir()
    chunk = os.urandom(1 << 20)
    names = {}
    for i in range(8):
        name = f"big{i}_1.0-1_amd64.deb"
        for d in (first, rebuilt):
            with (d / name).open("wb") as fh:
                for _ in range(128):
                    fh.write(chunk)
        names[name] = first / name
    os.sync()
    start = time.monotonic()
    comparisons = compare_packages(names, rebuilt)
    for c in comparisons:
        data = statement(
            package=Artifact(name=c.name, sha256=c.first_sha256),
            sources=[],
            buildinfo=Artifact(name="x.buildinfo", sha256="0" * 64),
            images=[],
            external={},
            internal={"result": "reproduced"},
            rebuilder_fingerprint=signer.fingerprint,
            rebuilder_version="bench",
            invocation="bench",
            started="2026-01-01T00:00:00Z",
            finished="2026-01-01T00:00:00Z",
        )
        write_signed(data, base / "attestations" / f"{c.name}.intoto.json", signer)
    seconds = time.monotonic() - start
    assert all(c.identical for c in comparisons)
    print(f"compare and sign 1 GiB of .debs (8 x 128 MiB): {seconds:.1f}s (target <= 5 s)")


def machine() -> str:
    cpus = os.cpu_count() or 1
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return f"{cpus} cores, load average {' '.join(load) or 'unknown'}"


def distro_ids(text: str) -> list[str]:
    """``bookworm,noble`` or releng's distro ids -> the ids of releng's distros/."""
    known = sorted(p.name for p in (ROOT / "distros").iterdir() if p.is_dir())
    ids = []
    for word in filter(None, (w.strip() for w in text.split(","))):
        match = [d for d in known if word in (d, d.rsplit("-", 1)[-1])]
        if len(match) != 1:
            raise argparse.ArgumentTypeError(f"{word!r} is not one of {', '.join(known)}")
        ids.append(match[0])
    return ids


def member_names(text: str) -> list[str]:
    names = [w.strip() for w in text.split(",") if w.strip()]
    if unknown := [n for n in names if n not in MEMBERS]:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)}: members are {', '.join(MEMBERS)}")
    return names


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distros", type=distro_ids, default=list(DISTROS), help="a,b")
    parser.add_argument("--members", type=member_names, default=None, help="demo,hello,leveldb")
    parser.add_argument("--leveldb", action="store_true", help="add LevelDB to the members")
    parser.add_argument("--leveldb-only", action="store_true", help="--members leveldb")
    parser.add_argument("--demo-only", action="store_true", help="--members demo")
    parser.add_argument(
        "--rebuilds",
        type=int,
        choices=(1, 2),
        default=2,
        help="verify-rebuild twice (cold, warm; the default) or once (printed as both)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=KEEP,
        help=f"where a rebuild that did not reproduce keeps its rebuild/ (default {KEEP})",
    )
    args = parser.parse_args(argv)
    if args.members is None:
        args.members = (
            ["leveldb"]
            if args.leveldb_only
            else ["demo"]
            if args.demo_only
            else ["demo", "hello", *(["leveldb"] if args.leveldb else [])]
        )
    return args


def main() -> None:
    args = arguments(sys.argv[1:])
    engine = Engine.from_env(os.environ)
    print(f"machine: {machine()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as tmp:
        base = Path(tmp)
        key = make_key(base / "rebuilder", name="bench rebuilder", passphrase=None)
        signer = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)
        for member in args.members:
            if member == "demo":
                project = demo_project(base)
                env = {"PATH": os.environ["PATH"]}
                version = Version.parse("2026.11.20")
            elif member == "hello":
                project, env = hello_project(base, args.distros)
                version = Version.parse("2.10", release=True)
            else:
                project, env = leveldb_project(base, args.distros)
                version = LEVELDB_VERSION
            for distro in args.distros:
                ok = one(
                    engine,
                    project,
                    distro,
                    version,
                    env=env,
                    signer=signer,
                    keep=args.keep,
                    rebuilds=args.rebuilds,
                )
                results.append(f"{member} {distro}: {'reproduced' if ok else 'NOT reproduced'}")
        compare_and_sign(base, signer)
    print("\n".join(results))
    print(f"machine after: {machine()}", flush=True)


if __name__ == "__main__":
    main()
