"""verify-rebuild against the first build it verifies, and the cost of comparing and signing.

For the demo product (tally), GNU hello 2.10 and (``--leveldb``) LevelDB 1.23 (benchmarks/archive.py's pinned download),
on debian-12-bookworm, builder images cached:

- the first build: make-package --force (its builder image cached);
- verify-rebuild cold: the rebuilder image made (the recorded build dependencies installed
  from the archive) and the rebuild; warm: that image reused (as every later verification
  of a build with the same build dependencies);
- the ratio of verify-rebuild (warm) over the first build (target <= 1.1), cold printed too,
  and whether the rebuild reproduced the packages (all three do: GNU hello's packaging
  takes its copyright year from SOURCE_DATE_EPOCH, see bench_build.hello_project; the
  machine and its load are printed before and after, docs/rebuild.md "Corpus" quotes a run).

Then the comparison and signing alone for a 1 GB set of .debs (8 files of 128 MiB, first
and rebuilt copies on disk): sha256 of both sides and one signed statement each
(target <= 5 s).

Run: ``python benchmarks/bench_rebuild.py`` (about 4-8 minutes; ``--demo-only``: about 2;
``--leveldb`` adds LevelDB 1.23 (``--leveldb-only``: only it), bench_cache.py's package: its builder image and C++ builds
take another 15-25 minutes).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks.bench_build import DISTRO, demo_project, hello_project  # noqa: E402
from benchmarks.bench_cache import VERSION as LEVELDB_VERSION  # noqa: E402
from benchmarks.bench_cache import leveldb_project  # noqa: E402
from tests.fixtures.gpg import make_key  # noqa: E402

from releng.build import make_package, plan_build  # noqa: E402
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


def one(
    engine: Engine, project: Project, version: Version, env: dict[str, str], signer: Signer
) -> None:
    # Warm the source tarball and the builder image only: a whole build here would also warm
    # the compiler cache, and the timed first build below would be faster than a first build.
    plan_build(engine, project, project.distro(DISTRO), version, env=env)
    start = time.monotonic()
    first = make_package(engine, project, DISTRO, version, env=env, force=True)
    build = time.monotonic() - start
    plan = plan_rebuild(
        first.out_dir, distro_id=DISTRO, codename=project.distro(DISTRO).codename, arch="amd64"
    )
    outcome = "reproduced"
    times = []
    for _ in ("cold", "warm"):
        start = time.monotonic()
        try:
            verify_rebuild(engine, project, plan, signer=signer)
        except RebuildMismatch as exc:  # a finding, not a failure of the benchmark
            outcome = f"DIFFERS ({exc})"
        except RebuildError as exc:  # so is a rebuild that fails: its log says why
            log = (first.out_dir / "rebuild" / "rebuild.log").read_text(errors="replace")
            print("\n".join(log.splitlines()[-60:]), flush=True)
            outcome = f"FAILED ({exc})"
            times.append(time.monotonic() - start)
            break
        times.append(time.monotonic() - start)
    cold, warm = (times * 2)[:2]  # a failed rebuild is not tried twice
    print(
        f"{project.name:6} first build {build:6.1f}s  verify-rebuild cold {cold:6.1f}s "
        f"warm {warm:6.1f}s  verify/first: warm {warm / build:.2f} (target <= 1.1), "
        f"cold {cold / build:.2f}; {outcome}",
        flush=True,
    )


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


def main() -> None:
    engine = Engine.from_env(os.environ)
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as tmp:
        base = Path(tmp)
        key = make_key(base / "rebuilder", name="bench rebuilder", passphrase=None)
        signer = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)
        leveldb_only = "--leveldb-only" in sys.argv
        if not leveldb_only:
            demo = demo_project(base)
            one(engine, demo, Version.parse("2026.11.20"), {"PATH": os.environ["PATH"]}, signer)
        if not leveldb_only and "--demo-only" not in sys.argv:
            project, env = hello_project(base)
            one(engine, project, Version.parse("2.10", release=True), env, signer)
        if leveldb_only or "--leveldb" in sys.argv:
            project, env = leveldb_project(base)
            one(engine, project, LEVELDB_VERSION, env, signer)
        compare_and_sign(base, signer)
    print(f"machine after: {machine()}", flush=True)


if __name__ == "__main__":
    main()
