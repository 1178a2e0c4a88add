"""Which way of copying a file and hashing it is fastest on this disk; prints ratios.

    python benchmarks/bench_fastcopy.py [--mb 1024] [--small 2000]

Compares, on the same files under benchmarks/.work/fastcopy (gitignored):

- ``stream``: releng.fastcopy's single pass (read a block, hash it, write it);
- ``kernel``: ``os.copy_file_range`` then a second read of the copy to hash it;
- ``clone``: ``FICLONE`` then one read to hash (only where the filesystem can);
- floors: ``cp --reflink=auto`` (copy, no hash) and sha-256 of the bytes alone.

Two shapes: one large file (``--mb``) and ``--small`` files of 20 KiB (a small .deb),
each on one thread and on as many threads as cores. Best of three, warm page cache;
each copy goes to a fresh name (the pool never overwrites a file in place), after a
sync (no run pays for the write-back of the one before it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "fastcopy"
sys.path.insert(0, str(ROOT / "src"))

from releng.fastcopy import Strategy, can_clone, copy_and_hash  # noqa: E402


def _inputs(mb: int, small: int) -> tuple[list[Path], list[Path]]:
    src = WORK / "src"
    src.mkdir(parents=True, exist_ok=True)
    big = src / f"big-{mb}.bin"
    if not big.exists() or big.stat().st_size != mb << 20:
        block = os.urandom(1 << 20)
        with big.open("wb") as f:
            for _ in range(mb):
                f.write(block)
    smalls = []
    for i in range(small):
        p = src / f"small-{i:05d}.deb"
        if not p.exists():
            p.write_bytes(os.urandom(20 << 10))
        smalls.append(p)
    return [big], smalls


def _best(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _fresh() -> Path:
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # no run pays for the write-back of the one before it
    out.mkdir(parents=True)
    return out


def _copy_all(files: list[Path], strategy: Strategy, threads: int) -> Callable[[], object]:
    def run() -> object:
        out = _fresh()
        if threads == 1:
            return [copy_and_hash(f, out / f.name, strategy=strategy) for f in files]
        with ThreadPoolExecutor(threads) as ex:
            return list(ex.map(lambda f: copy_and_hash(f, out / f.name, strategy=strategy), files))

    return run


def _hash_all(files: list[Path], threads: int) -> Callable[[], object]:
    def one(f: Path) -> str:
        with f.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()

    def run() -> object:
        with ThreadPoolExecutor(threads) as ex:
            return list(ex.map(one, files))

    return run


def _cp(files: list[Path]) -> Callable[[], object]:
    def run() -> object:
        out = _fresh()
        for i in range(0, len(files), 500):
            subprocess.run(
                ["cp", "--reflink=auto", *map(str, files[i : i + 500]), str(out)], check=True
            )
        return None

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="size of the large file in MiB")
    parser.add_argument("--small", type=int, default=2000, help="number of 20 KiB files")
    args = parser.parse_args()
    big, smalls = _inputs(args.mb, args.small)
    cores = os.cpu_count() or 1
    strategies: list[Strategy] = ["stream", "kernel"]
    if can_clone(WORK):
        strategies.append("clone")
    print(f"{'work':<46} {'seconds':>8} {'vs stream':>10}")
    for label, files in ((f"1 file of {args.mb} MiB", big), (f"{args.small} x 20 KiB", smalls)):
        for threads in sorted({1, cores}):
            if threads > 1 and len(files) == 1:
                continue
            _copy_all(files, "stream", threads)()  # warm the page cache
            base = _best(_copy_all(files, "stream", threads))
            rows = [
                (s, base if s == "stream" else _best(_copy_all(files, s, threads)))
                for s in strategies
            ]
            rows.append(("sha-256 only (floor)", _best(_hash_all(files, threads))))
            if threads == 1:
                rows.append(("cp --reflink=auto (no hash)", _best(_cp(files))))
            for name, seconds in rows:
                what = f"{label}, {threads} thr, {name}"
                print(f"{what:<46} {seconds:8.3f} {seconds / base:10.2f}")
    shutil.rmtree(WORK / "out", ignore_errors=True)


if __name__ == "__main__":
    main()
