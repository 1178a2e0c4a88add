"""Side by side: releng's apt indexer vs apt-ftparchive, reprepro and aptly; prints ratios.

    python benchmarks/bench_repo.py [--quick]

Everything happens under benchmarks/.work/ (gitignored): generated .debs, a
passphrase-less throwaway signing key shared by every tool, and one repository
per tool. Each measured step runs as its own process (the peers are
processes too), on a warm page cache, best of a few runs where cheap.

Scenarios (the issue's targets in brackets):
1. 2,000 small .debs into a fresh signed suite
   [<= 2.0 x apt-ftparchive packages alone (issue 25); <= 0.5 x reprepro; <= 0.5 x aptly
   add+publish];
   copying them (include-packages's default) [<= 0.7 x reprepro]
2. 1 .deb added to a 10,000-package suite, republished signed [<= 0.12 s; <= 0.6 x reprepro
   (issue 25)];
   the same with Contents indexes on vs off, in the same run [<= 1.2 x, issue 27]
3. 1 GB of large .debs [<= 1.3 x SHA256 of the same bytes on all cores]; copying them
   [<= 1.5 x], with the floor `cp --reflink=auto` + the linked include
4. peak memory including 10,000 packages [< 200 MB]
5. lifecycle in a 10,000-package suite, re-signed: copy (promote) 1 package and remove 1
   [<= 0.3 s; <= 1.0 x reprepro copy/remove], vs aptly repo copy + snapshot + publish switch;
   rollback [<= 0.5 s], vs aptly publish switch to an older snapshot; and what the syncfs before
   each Release switch costs

    python benchmarks/bench_repo.py --lifecycle    # scenario 5 alone (about 2 minutes)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work"
# Every timed run writes into a directory no earlier run used (see fresh()); this run's.
RUNS = WORK / "runs" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
_RUN_NUMBERS = itertools.count()
sys.path.insert(0, str(ROOT / "src"))

SUITE = "bench"
# The standard modules adding a package cannot do without: SHA256, the compressed indexes,
# gpg's process and a second core (for the add-1 floor).
STDLIB_OF_INCLUDE = "hashlib, lzma, zlib, subprocess, threading"


# -- inputs ----------------------------------------------------------------------------------------


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def _tar(files: dict[str, bytes], *, compress: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=1, mtime=0) if compress else raw


def make_deb(dest: Path, name: str, version: str, *, payload: bytes = b"") -> Path:
    """A valid .deb written directly (dpkg-deb is ~20 ms per package; this is ~0.2 ms)."""
    control = (
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: Bench <bench@example.org>\nInstalled-Size: 12\n"
        "Depends: libc6 (>= 2.34)\nSection: misc\nPriority: optional\n"
        f"Description: benchmark package {name}\n A generated package for the benchmark.\n"
    ).encode()
    control_tar = _tar({"./control": control}, compress=True)
    data = {f"./usr/share/doc/{name}/README": f"{name} {version}\n".encode()}
    if payload:
        data[f"./usr/share/{name}/blob"] = payload
    data_tar = _tar(data, compress=not payload)
    path = dest / f"{name}_{version}_amd64.deb"
    path.write_bytes(
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar.gz", control_tar)
        + _ar_member("data.tar" if payload else "data.tar.gz", data_tar)
    )
    return path


def make_many(dest: Path, count: int, prefix: str) -> list[Path]:
    if dest.is_dir() and len(list(dest.glob(f"{prefix}*.deb"))) == count:
        return sorted(dest.glob("*.deb"))
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    return [make_deb(dest, f"{prefix}{i:05d}", f"1.{i}-1") for i in range(count)]


def make_large(dest: Path, total: int, count: int) -> list[Path]:
    have = sorted(dest.glob("*.deb")) if dest.is_dir() else []
    if len(have) == count and sum(p.stat().st_size for p in have) >= total:
        return have
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    out = []
    for i in range(count):
        payload = os.urandom(total // count)
        out.append(make_deb(dest, f"large{i:02d}", "1.0-1", payload=payload))
    return out


def make_key(home: Path) -> str:
    if (home / "fpr").is_file():
        return (home / "fpr").read_text().strip()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(mode=0o700, parents=True)
    subprocess.run(
        [
            "gpg",
            "--homedir",
            str(home),
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            "releng benchmark <bench@releng.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-secret-keys"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
    (home / "fpr").write_text(fpr + "\n")
    return fpr


# -- running and timing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    wall: float  # seconds
    cpu: float  # user + system seconds of the process (and its children)
    rss: int  # peak KiB
    inner: float = 0.0  # releng only: seconds inside Repository.include (no interpreter start)

    def __add__(self, other: Run) -> Run:
        return Run(self.wall + other.wall, self.cpu + other.cpu, max(self.rss, other.rss))


def timed(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: Path | None = None,
) -> Run:
    """Wall time, CPU time and peak RSS of one process (and what it waited for); ``stdin``:
    a file for its standard input."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        open(stdin or os.devnull, "rb") as given,
    ):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=given, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd[:6])} ...\n{stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    inner = float(stdout.split("include:", 1)[1].split()[0]) if "include:" in stdout else 0.0
    return Run(wall, cpu, usage.ru_maxrss, inner)


RELENG_INCLUDE = """
import os, sys, time
from pathlib import Path
from releng.apt import Repository, RepoSettings
from releng.gpg import Signer
repo, home, fpr, suite, link = sys.argv[1:6]
paths = [Path(p) for p in sys.argv[6:]]
signer = Signer(gnupghome=Path(home), key=fpr, passphrase=None)
settings = RepoSettings(
    name="bench", origin="bench", label="bench", nightly_max_age_days=0,
    contents=os.environ.get("BENCH_CONTENTS") == "1",
    index_xz=os.environ.get("BENCH_INDEX_XZ", "chunks"),
)
repository = Repository(Path(repo), settings, signer, link_inputs=link == "link")
start = time.perf_counter()
repository.include([suite], paths)
print(f"include: {time.perf_counter() - start:.4f}")
"""


# What every releng process of scenario 2 pays before Repository.include: Python, the imports
# and reading the signing key (as RELENG_INCLUDE does, without the include).
RELENG_STARTUP = """
import sys
from pathlib import Path
from releng.apt import Repository, RepoSettings
from releng.gpg import Signer
home, fpr = sys.argv[1:3]
Signer(gnupghome=Path(home), key=fpr, passphrase=None)
"""


RELENG_LIFECYCLE = """
import os, sys, time
from pathlib import Path
from releng.apt import Repository, RepoSettings, lifecycle
from releng.apt.lifecycle import Spec
from releng.gpg import Signer
repo, home, fpr, sync, op, *args = sys.argv[1:]
signer = Signer(gnupghome=Path(home), key=fpr, passphrase=None)
settings = RepoSettings(
    name="bench", origin="bench", label="bench", nightly_max_age_days=0,
    sync_before_switch=sync == "sync", contents=os.environ.get("BENCH_CONTENTS") == "1",
)
r = Repository(Path(repo), settings, signer, link_inputs=True)
start = time.perf_counter()
if op == "include":
    r.include([args[0]], [Path(p) for p in args[1:]])
elif op == "copy":
    lifecycle.copy(r, source=args[0], target=args[1], specs=[Spec.parse(a) for a in args[2:]])
elif op == "remove":
    lifecycle.remove(r, suite=args[0], specs=[Spec.parse(a) for a in args[1:]])
elif op == "rollback":
    lifecycle.rollback(r, suite=args[0], to=int(args[1]))
print(f"include: {time.perf_counter() - start:.4f}")
"""


def releng_op(repo: Path, home: Path, fpr: str, *args: str, sync: bool = True) -> Run:
    """One lifecycle operation (or an include) as its own process, as `invoke copy-packages` runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    cmd = [sys.executable, "-c", RELENG_LIFECYCLE, str(repo), str(home), fpr]
    return timed([*cmd, "sync" if sync else "nosync", *args], env=env)


def releng(
    repo: Path,
    home: Path,
    fpr: str,
    paths: list[Path],
    *,
    link: bool = True,
    contents: bool | None = None,
    index_xz: str = "chunks",
) -> Run:
    """One include as its own process, as `invoke update-repos` runs it (inputs hard-linked);
    ``contents``: Contents indexes on or off (default: as --contents says); ``index_xz``:
    ``[repositories] index_xz``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), BENCH_INDEX_XZ=index_xz)
    if contents is not None:
        env["BENCH_CONTENTS"] = "1" if contents else "0"
    # As an installed package runs: with its bytecode compiled once (kept out of the tree).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    mode = "link" if link else "copy"
    cmd = [sys.executable, "-c", RELENG_INCLUDE, str(repo), str(home), fpr, SUITE, mode]
    return timed([*cmd, *map(str, paths)], env=env)


def releng_startup(home: Path, fpr: str) -> Run:
    """A releng process as ``releng()`` starts it, that stops before Repository.include."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    return timed([sys.executable, "-c", RELENG_STARTUP, str(home), fpr], env=env)


def cli_line(big: list[Path], extra_dir: Path, rep_add: Run) -> None:
    """What a user waits for: ``invoke include-packages`` of this checkout (its product.toml:
    Contents on; the front page rewritten; the development key), one more into 10,000."""
    invoke = ROOT / ".venv" / "bin" / "invoke"
    if not invoke.exists():
        print("   (no CLI line: run ./scripts/setup first, which makes .venv/bin/invoke)")
        return
    repo = fresh("releng-cli")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as the launcher runs: .venv has its bytecode
    cmd = [str(invoke), "-r", str(ROOT), "include-packages", "--repo", str(repo)]
    cmd += ["--dist", "bookworm", "--link", "--path"]
    timed([*cmd, str(big[0].parent)], env=env)  # filling: 10,000 packages
    debs = [make_deb(extra_dir, f"cli{i}", "1.0-1") for i in range(5)]
    add = best(5, lambda: timed([*cmd, str(debs.pop())], env=env))
    floor = best(5, lambda: timed([str(invoke), "-r", str(ROOT), "--version"], env=env))
    line("   adding 1 .deb via `invoke include-packages`", add, rep_add, "(info)")
    print(
        f"   (this checkout's product.toml: Contents on, the front page rewritten; "
        f"`invoke --version` alone takes {floor.wall:.3f} s)"
    )


def index_xz_line(home: Path, fpr: str, big_repo: Path, extra_dir: Path, add: Run) -> None:
    """What clients download against what a publish costs: ``[repositories] index_xz``."""
    xz = big_repo / "dists" / SUITE / "main" / "binary-amd64" / "Packages.xz"
    text = xz.with_name("Packages").read_bytes()
    xz_cmd = ["xz", "-6", "--threads=1", "--check=crc32", "--stdout"]
    stream = subprocess.run(xz_cmd, input=text, capture_output=True, check=True).stdout
    repo = fresh("releng-big-one-stream")
    fill = releng(repo, home, fpr, [WORK / "big"], index_xz="one-stream")
    debs = [make_deb(extra_dir, f"onestream{i}", "1.0-1") for i in range(3)]
    one_add = best(3, lambda: releng(repo, home, fpr, [debs.pop()], index_xz="one-stream"))
    size = xz.stat().st_size
    published = (repo / "dists" / SUITE / "main" / "binary-amd64" / "Packages.xz").stat().st_size
    print(
        f"   Packages.xz ({len(text) / 1e6:.1f} MB of Packages): chunked {size:,} bytes, one "
        f"stream (`xz -6` of the same text) {len(stream):,}: clients download "
        f'{size / len(stream):.2f} x; with index_xz = "one-stream" ({published:,} bytes) '
        f"adding 1 .deb takes {one_add.wall:.3f} s against {add.wall:.3f} s, filling "
        f"{fill.wall:.2f} s (info)"
    )


def fresh(name: str) -> Path:
    """A path no earlier run used, for one tool's run, with the filesystem flushed first (no
    tool pays for the last one's writes).

    On ext4, a tree of directories made and removed at the same path hundreds of times (as
    every run of this benchmark did until the tenth session) grows slow to make there again:
    2,000 pool directories took 0.2 to 0.3 s at the old path and 0.05 s at a new one, in the
    same minute. No user's repository is made that way. Earlier runs' directories are removed
    when a run starts (start_runs)."""
    os.sync()
    return RUNS / f"{name}-{next(_RUN_NUMBERS)}"


def start_runs() -> None:
    """Remove the directories of earlier runs, flushed before anything is timed."""
    shutil.rmtree(WORK / "runs", ignore_errors=True)
    RUNS.mkdir(parents=True)
    os.sync()


def reprepro_setup(name: str, fpr: str) -> Path:
    base = fresh(name)
    (base / "conf").mkdir(parents=True)
    (base / "conf" / "distributions").write_text(
        f"Codename: {SUITE}\nSuite: {SUITE}\nArchitectures: amd64 source\nComponents: main\n"
        f"SignWith: {fpr}\n"
    )
    (base / "conf" / "options").write_text("export changed\n")
    return base


def sha256_all_cores(paths: list[Path]) -> Run:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count() or 1) as ex:
        list(ex.map(_sha256_file, paths))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, 0)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def layout_floor(debs: list[Path]) -> Run:
    """What the pool layout costs by itself: mkdir of each package's pool/main/<p>/<name>/ and
    a hard link into it, in a tight loop (no reading, no index, no Python start)."""
    dest = fresh("floor-small")
    (dest / "pool" / "main").mkdir(parents=True)
    top = str(dest / "pool" / "main")
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for p in debs:
        name = p.name.split("_", 1)[0]
        prefix = os.path.join(top, name[:4] if name.startswith("lib") else name[:1])
        if not os.path.isdir(prefix):
            os.mkdir(prefix)
        d = os.path.join(prefix, name)
        os.mkdir(d)
        os.link(p, os.path.join(d, p.name))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, 0)


def best(n: int, fn: Callable[[], Run]) -> Run:
    return min((fn() for _ in range(n)), key=lambda r: r.wall)


def line(label: str, ours: Run, theirs: Run, target: str) -> None:
    print(
        f"{label:<52} releng {ours.wall:6.3f} s vs {theirs.wall:6.3f} s: wall ratio "
        f"{ours.wall / theirs.wall:5.2f}, cpu ratio {ours.cpu / max(theirs.cpu, 1e-6):5.2f}"
        f"  (target {target})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--lifecycle", action="store_true", help="scenario 5 alone")
    parser.add_argument(
        "--contents",
        action="store_true",
        help="write Contents indexes too (the peers write none: off compares like with like; "
        "benchmarks/bench_frontpage.py gives the cost of Contents on one include)",
    )
    args = parser.parse_args()
    os.environ["BENCH_CONTENTS"] = "1" if args.contents else "0"
    n_small, n_big, large_total = (200, 1000, 100 << 20) if args.quick else (2000, 10000, 1 << 30)
    WORK.mkdir(parents=True, exist_ok=True)
    start_runs()
    home = WORK / "gnupg"
    fpr = make_key(home)
    env = dict(os.environ, GNUPGHOME=str(home))
    print(
        f"inputs under {WORK}; {os.cpu_count()} cores; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"signing key {fpr[-16:]} (no passphrase); best of a few runs"
    )

    if args.lifecycle:
        lifecycle(home, fpr, env, n_big)
        return

    # 1. small debs into a fresh signed suite.
    small = make_many(WORK / "small", n_small, "small")
    ftp_dir = WORK / "ftparchive"
    if len(list((ftp_dir / "pool").glob("*.deb"))) != n_small:
        shutil.rmtree(ftp_dir, ignore_errors=True)
        (ftp_dir / "pool").mkdir(parents=True)
        for p in small:
            os.link(p, ftp_dir / "pool" / p.name)

    def ftparchive() -> Run:
        return timed(["sh", "-c", "apt-ftparchive packages pool > Packages"], cwd=ftp_dir)

    def ours_small(*, link: bool = True) -> Run:
        return releng(fresh("releng-small"), home, fpr, [WORK / "small"], link=link)

    def reprepro_small() -> Run:
        base = reprepro_setup("reprepro-small", fpr)
        return timed(["reprepro", "-b", str(base), "includedeb", SUITE, *map(str, small)], env=env)

    def aptly_small() -> Run:
        base = fresh("aptly-small")
        base.mkdir()
        conf = base / "aptly.conf"
        conf.write_text(json.dumps({"rootDir": str(base / "root"), "gpgProvider": "gpg"}))
        aptly = ["aptly", f"-config={conf}"]
        timed([*aptly, "repo", "create", f"-distribution={SUITE}", "bench"], env=env)
        add = timed([*aptly, "repo", "add", "bench", str(WORK / "small")], env=env)
        publish = timed(
            [*aptly, "publish", "repo", f"-gpg-key={fpr}", "-architectures=amd64", "bench"], env=env
        )
        return add + publish

    # Round by round, so that the filesystem's state (which moves the cost of a mkdir by 2 to
    # 5 times within minutes here) weighs on releng, its floor and apt-ftparchive alike.
    rounds: dict[str, list[Run]] = {"ftp": [], "ours": [], "copy": [], "floor": []}
    for _ in range(3):
        rounds["ftp"].append(ftparchive())
        rounds["ours"].append(ours_small())
        rounds["floor"].append(layout_floor(small))
        rounds["copy"].append(ours_small(link=False))
    ftp, ours, ours_copy, floor = (
        min(rounds[k], key=_wall) for k in ("ftp", "ours", "copy", "floor")
    )
    rep = best(2, reprepro_small)
    apl = best(2, aptly_small)
    print(f"\n1. {n_small} small .debs into a fresh signed suite (pool files hard-linked)")
    line("   vs apt-ftparchive packages (index only, unsigned)", ours, ftp, "<= 2.0")
    line("   vs reprepro includedeb (copies, exports, signs)", ours, rep, "<= 0.5")
    line("   vs aptly repo add + publish repo (copies, signs)", ours, apl, "<= 0.5")
    line("   copying (include-packages's default), vs reprepro", ours_copy, rep, "<= 0.7")
    print(
        f"   floor: the pool layout alone ({n_small} mkdir pool/main/<p>/<name>/ + hard link, "
        f"tight loop) takes {floor.wall:.3f} s = {floor.wall / ftp.wall:.2f} x apt-ftparchive"
    )
    print(
        f"   (of releng's {ours.wall:.3f} s, {ours.inner:.3f} s are Repository.include; its "
        f"process used {ours.cpu:.3f} s of CPU on the {os.cpu_count()} cores)"
    )
    startup = best(5, lambda: releng_startup(home, fpr))
    before, left = startup.wall + floor.wall, 2 * ftp.wall - startup.wall - floor.wall
    print(
        f"   (before any .deb is read: releng's start-up {startup.wall:.3f} s (Python, imports, "
        f"the key) + the layout {floor.wall:.3f} s = {before / ftp.wall:.2f} x apt-ftparchive; "
        + (
            f"2.0 leaves {left:.3f} s to read, index, compress and sign {n_small} .debs, "
            f"where apt-ftparchive's reading and indexing alone took {ftp.wall:.3f} s)"
            if left > 0
            else "the 2.0 target is below that)"
        )
    )
    print(
        "   (the three rounds, in order: releng "
        + ", ".join(f"{r.wall:.3f}" for r in rounds["ours"])
        + " s; the pool layout alone "
        + ", ".join(f"{r.wall:.3f}" for r in rounds["floor"])
        + " s)"
    )

    # 2. one more .deb into a 10,000-package suite.
    big = make_many(WORK / "big", n_big, "big")
    extra_dir = WORK / "extra"
    shutil.rmtree(extra_dir, ignore_errors=True)
    extra_dir.mkdir()
    extras = [make_deb(extra_dir, f"extra{i}", "1.0-1") for i in range(3)]
    big_repo = fresh("releng-big")
    ours_fill = releng(big_repo, home, fpr, [WORK / "big"])
    ours_add = best(3, lambda: releng(big_repo, home, fpr, [extras.pop()]))
    # Issue 27: the same include with Contents on and off, each its own process started the
    # same way, into two suites filled the same way, interleaved (load moves both alike).
    fills: dict[bool, Run] = {}
    adds: dict[bool, list[Run]] = {False: [], True: []}
    contents_repos = {on: fresh(f"releng-big-contents-{on}") for on in (False, True)}
    for on, repo in contents_repos.items():
        fills[on] = releng(repo, home, fpr, [WORK / "big"], contents=on)
    for i in range(5):
        for on, repo in contents_repos.items():
            deb = make_deb(extra_dir, f"contents{i}{'on' if on else 'off'}", "1.0-1")
            adds[on].append(releng(repo, home, fpr, [deb], contents=on))
    add_off, add_on = min(adds[False], key=_wall), min(adds[True], key=_wall)
    base = reprepro_setup("reprepro-big", fpr)
    rep_fill = timed(["reprepro", "-b", str(base), "includedeb", SUITE, *map(str, big)], env=env)
    rep_extra = [make_deb(extra_dir, f"rextra{i}", "1.0-1") for i in range(3)]
    rep_add = best(
        3,
        lambda: timed(
            ["reprepro", "-b", str(base), "includedeb", SUITE, str(rep_extra.pop())], env=env
        ),
    )
    print(f"\n2. {n_big} packages, then 1 more (the whole suite re-exported and signed)")
    line(
        f"   filling: {n_big} .debs into a fresh suite, vs reprepro", ours_fill, rep_fill, "(info)"
    )
    line("   adding 1 .deb, vs reprepro includedeb", ours_add, rep_add, "<= 0.6, and <= 0.12 s")
    print(
        f"   (of releng's {ours_add.wall:.3f} s, {ours_add.inner:.3f} s are Repository.include; the "
        "rest is starting Python, imports and reading the signing key)"
    )
    start = best(5, lambda: timed([sys.executable, "-c", "pass"]))
    bare = best(5, lambda: timed([sys.executable, "-S", "-c", "pass"]))
    startup = best(5, lambda: releng_startup(home, fpr))
    print(
        f"   (on this machine `python -c pass` alone takes {start.wall:.3f} s, {bare.wall:.3f} s "
        "without site-packages' .pth hooks; reprepro is a C program)"
    )
    print(
        f"   (floor: the same process without the include, i.e. Python, the imports and reading "
        f"the signing key, takes {startup.wall:.3f} s; the include adds "
        f"{ours_add.wall - startup.wall:.3f} s)"
    )
    stdlib = best(5, lambda: timed([sys.executable, "-c", f"import {STDLIB_OF_INCLUDE}"]))
    release = big_repo / "dists" / SUITE / "Release"
    gpg_cmd = ["gpg", "--homedir", str(home), "--batch", "--local-user", fpr, "--clearsign"]
    sign = best(5, lambda: timed(gpg_cmd, stdin=release))
    print(
        "   (any Python tool signing with gpg pays here: Python and the standard modules an "
        f"include cannot do without ({STDLIB_OF_INCLUDE}) {stdlib.wall:.3f} s + one "
        f"`gpg --clearsign` of the Release {sign.wall:.3f} s = "
        f"{(stdlib.wall + sign.wall) / rep_add.wall:.2f} x reprepro; 0.6 x reprepro is "
        f"{0.6 * rep_add.wall:.3f} s)"
    )
    cli_line(big, extra_dir, rep_add)
    line("   adding 1 .deb, Contents on vs off (issue 27)", add_on, add_off, "<= 1.2")
    print(
        f"   (best of 5 each, interleaved; Repository.include {add_on.inner:.3f} s vs "
        f"{add_off.inner:.3f} s; filling {n_big}: {fills[True].wall:.2f} s vs "
        f"{fills[False].wall:.2f} s)"
    )
    index_xz_line(home, fpr, big_repo, extra_dir, ours_add)

    # 3. large packages vs the physical limit.
    large = make_large(WORK / "large", large_total, 8)
    size = sum(p.stat().st_size for p in large)
    for p in large:  # a warm page cache for both sides
        _sha256_file(p)
    hashing = best(3, lambda: sha256_all_cores(large))

    def ours_large(*, link: bool = True) -> Run:
        repo = fresh("releng-large")
        try:
            return releng(repo, home, fpr, [WORK / "large"], link=link)
        finally:
            shutil.rmtree(repo, ignore_errors=True)  # 1 GB of copies

    ol = best(3, ours_large)
    ol_copy = best(2, lambda: ours_large(link=False))

    def cp_reflink() -> Run:
        """The copies, flushed to the disk as releng's syncfs before the Release does."""
        dest = fresh("cp-large")
        dest.mkdir()
        script = 'cp --reflink=auto "$@" "$0" && sync --file-system "$0"'
        try:
            return timed(["sh", "-c", script, str(dest), *map(str, large)])
        finally:
            shutil.rmtree(dest, ignore_errors=True)

    cp = best(3, cp_reflink)
    print(f"\n3. {size / 1e9:.2f} GB of large .debs ({len(large)} files)")
    line("   include + publish, vs SHA256 of the bytes on all cores", ol, hashing, "<= 1.3")
    print(
        f"   (Repository.include alone, as the hashing is timed inside a running Python: "
        f"{ol.inner:.3f} s, ratio {ol.inner / hashing.wall:.2f})"
    )
    line("   copying into the pool (include-packages's default)", ol_copy, hashing, "<= 1.5")
    print(
        f"   (floor for copying: `cp --reflink=auto` of the same files and `sync --file-system` "
        f"{cp.wall:.3f} s + the "
        f"linked include {ol.wall:.3f} s = {cp.wall + ol.wall:.3f} s; copying is "
        f"{ol_copy.wall / (cp.wall + ol.wall):.2f} x that; Repository.include copying "
        f"{ol_copy.inner:.3f} s)"
    )

    # 4. memory.
    print("\n4. peak memory (max RSS of the process)")
    print(
        f"   releng: filling {n_big} packages {ours_fill.rss / 1024:.1f} MB, adding 1 to them "
        f"{ours_add.rss / 1024:.1f} MB (target < 200 MB); {n_small} small {ours.rss / 1024:.1f} MB; "
        f"1 GB large {ol.rss / 1024:.1f} MB. reprepro filling: {rep_fill.rss / 1024:.1f} MB"
    )
    lifecycle(home, fpr, env, n_big)
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def lifecycle(home: Path, fpr: str, env: dict[str, str], n_big: int) -> None:
    """5. copy / remove / rollback in a suite of ``n_big`` packages, against reprepro and aptly."""
    big = make_many(WORK / "big", n_big, "big")
    extra_dir = WORK / "life-extra"
    shutil.rmtree(extra_dir, ignore_errors=True)
    extra_dir.mkdir()
    rounds = 3
    extras = [make_deb(extra_dir, f"promo{i}", "1.0-1") for i in range(rounds)]

    # releng: bench (10,000) promoted whole into stable, then 1 package at a time.
    ours = fresh("releng-life")
    releng_op(ours, home, fpr, "include", SUITE, str(WORK / "big"))
    bulk = releng_op(ours, home, fpr, "copy", SUITE, "stable", "*")
    copies, removes, rollbacks, nosync = [], [], [], []
    for i, deb in enumerate(extras):
        releng_op(ours, home, fpr, "include", SUITE, str(deb))
        copies.append(releng_op(ours, home, fpr, "copy", SUITE, "stable", f"promo{i}"))
        removes.append(releng_op(ours, home, fpr, "remove", "stable", f"promo{i}"))
        # stable's history: 1 the bulk copy, then a copy and a remove per round.
        rollbacks.append(releng_op(ours, home, fpr, "rollback", "stable", str(2 * i + 2)))
        nosync.append(releng_op(ours, home, fpr, "rollback", "stable", str(2 * i + 1), sync=False))
    ours_copy, ours_remove = min(copies, key=_wall), min(removes, key=_wall)
    ours_rollback, ours_nosync = min(rollbacks, key=_wall), min(nosync, key=_wall)

    # reprepro: the same two suites, copy and remove.
    base = fresh("reprepro-life")
    (base / "conf").mkdir(parents=True)
    (base / "conf" / "distributions").write_text(
        "".join(
            f"Codename: {name}\nSuite: {name}\nArchitectures: amd64 source\nComponents: main\n"
            f"SignWith: {fpr}\n\n"
            for name in (SUITE, "stable")
        )
    )
    (base / "conf" / "options").write_text("export changed\n")
    rr = ["reprepro", "-b", str(base)]
    timed([*rr, "includedeb", SUITE, *map(str, big), *map(str, extras)], env=env)
    timed([*rr, "copymatched", "stable", SUITE, "big*"], env=env)
    rep_copy = best(
        rounds, _rounds([[*rr, "copy", "stable", SUITE, f"promo{i}"] for i in range(rounds)], env)
    )
    rep_remove = best(
        rounds, _rounds([[*rr, "remove", "stable", f"promo{i}"] for i in range(rounds)], env)
    )

    # aptly: repos, a snapshot of stable published; promote = repo copy + snapshot + switch.
    abase = fresh("aptly-life")
    abase.mkdir()
    conf = abase / "aptly.conf"
    conf.write_text(json.dumps({"rootDir": str(abase / "root"), "gpgProvider": "gpg"}))
    aptly = ["aptly", f"-config={conf}"]
    timed([*aptly, "repo", "create", SUITE], env=env)
    timed([*aptly, "repo", "create", "stable"], env=env)
    timed([*aptly, "repo", "add", SUITE, str(WORK / "big"), str(extra_dir)], env=env)
    timed([*aptly, "repo", "copy", SUITE, "stable", "Name (% big*)"], env=env)
    timed([*aptly, "snapshot", "create", "s0", "from", "repo", "stable"], env=env)
    sign = [f"-gpg-key={fpr}"]
    timed(
        [
            *aptly,
            "publish",
            "snapshot",
            *sign,
            "-architectures=amd64",
            "-distribution=stable",
            "s0",
        ],
        env=env,
    )
    apt_copies, apt_switches = [], []
    for i in range(rounds):
        copy = timed([*aptly, "repo", "copy", SUITE, "stable", f"promo{i}"], env=env)
        copy += timed(
            [*aptly, "snapshot", "create", f"s{i + 1}", "from", "repo", "stable"], env=env
        )
        copy += timed([*aptly, "publish", "switch", *sign, "stable", f"s{i + 1}"], env=env)
        apt_copies.append(copy)
        apt_switches.append(timed([*aptly, "publish", "switch", *sign, "stable", "s0"], env=env))
    apt_copy, apt_switch = min(apt_copies, key=_wall), min(apt_switches, key=_wall)

    print(f"\n5. lifecycle in a {n_big}-package suite (each change re-signed)")
    print(f"   promoting all {n_big} packages to a new suite: releng {bulk.wall:.3f} s (info)")
    line("   copy 1 package, vs reprepro copy", ours_copy, rep_copy, "<= 1.0, and <= 0.3 s")
    line("   remove 1 package, vs reprepro remove", ours_remove, rep_remove, "<= 1.0, and <= 0.3 s")
    line("   copy 1, vs aptly repo copy + snapshot + publish switch", ours_copy, apt_copy, "(info)")
    line(
        "   rollback, vs aptly publish switch to a snapshot", ours_rollback, apt_switch, "<= 0.5 s"
    )
    print(
        f"   (Repository work alone: copy {ours_copy.inner:.3f} s, remove {ours_remove.inner:.3f} s, "
        f"rollback {ours_rollback.inner:.3f} s)"
    )
    print(
        f"   durability: the syncfs before the switch; rollback with it {ours_rollback.inner:.3f} s, "
        f"without {ours_nosync.inner:.3f} s in-process (the cost depends on what else the "
        "filesystem has dirty)"
    )


def _wall(run: Run) -> float:
    return run.wall


def _rounds(cmds: list[list[str]], env: dict[str, str]) -> Callable[[], Run]:
    todo = list(cmds)
    return lambda: timed(todo.pop(0), env=env)


if __name__ == "__main__":
    main()
