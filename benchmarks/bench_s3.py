"""S3 publishing, side by side: releng's ordered incremental sync vs `aws s3 sync` vs a full
re-upload, against moto's S3 over HTTP; prints requests, bytes and ratios.

    python benchmarks/bench_s3.py [--packages 10000] [--quick]

The repository is real: .debs written by the apt benchmark's generator
(benchmarks/bench_repo.py), included and signed by releng's apt library. Every
request is counted on the server side (a WSGI middleware around moto), so the
three uploaders are measured the same way:

- releng: ``sync_repo`` (lock, manifest, ordered phases, index pages);
- the earlier system: ``aws s3 sync`` of the packages, then of everything (with --delete);
- a full re-upload of every file (what a publisher without any comparison does).

Scenario: publish a repository of N packages, add 1 package, publish again. Then the
lifecycle on the bucket (``change_repository``: lock, pull the state, change, sync): promote
all N packages to a second suite, add 1 package to the first, promote it (the incremental
cost of a promotion, which must not grow with N), roll the second suite back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "s3"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_repo  # noqa: E402  (the apt benchmark's .deb generator and throwaway key)

SUITE = "bench"


class Counter:
    """WSGI middleware: counts requests by method and the bytes of their bodies."""

    def __init__(self, app) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.by_method: dict[str, int] = {}
        self.bytes_in = 0

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        with self.lock:
            self.by_method[method] = self.by_method.get(method, 0) + 1
            self.bytes_in += length
        return self.app(environ, start_response)

    def snapshot(self) -> tuple[int, int, int]:
        with self.lock:
            total = sum(self.by_method.values())
            return (
                total,
                self.by_method.get("PUT", 0) + self.by_method.get("POST", 0),
                self.bytes_in,
            )


def start_moto() -> tuple[str, Counter, object]:
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    counter = Counter(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, counter, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", counter, server


def measure(counter: Counter, label: str, fn) -> tuple[int, int, int, float]:
    counter.reset()
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    total, writes, nbytes = counter.snapshot()
    print(
        f"  {label:<44} {total:>7} requests {writes:>7} writes {nbytes / 1e6:>9.2f} MB  {wall:6.1f} s"
    )
    return total, writes, nbytes, wall


def aws_sync(repo: Path, dest: str) -> None:
    """The earlier system: packages first, then everything, with deletes."""
    base = ["aws", "s3", "sync", "--only-show-errors", str(repo), dest]
    subprocess.run([*base, "--exclude", "*", "--include", "*.deb"], check=True)
    subprocess.run([*base, "--delete", "--exclude", ".releng-repo/*"], check=True)


def full_upload(client, repo: Path, bucket: str, prefix: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    files = [p for p in repo.rglob("*") if p.is_file() and ".releng-repo" not in p.parts]

    def put(p: Path) -> None:
        client.put_object(
            Bucket=bucket, Key=f"{prefix}/{p.relative_to(repo).as_posix()}", Body=p.read_bytes()
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 packages")
    args = parser.parse_args()
    count = 1_000 if args.quick else args.packages
    if shutil.which("aws") is None:
        raise SystemExit("the peer `aws s3 sync` needs the AWS CLI: pip install awscli")

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    url, counter, server = start_moto()
    os.environ["AWS_ENDPOINT_URL"] = url

    from releng.apt import RepoSettings, Repository
    from releng.gpg import Signer
    from releng.publish.flows import Destination, sync_repo, update_indices
    from releng.publish.sync import S3Url, s3_client

    WORK.mkdir(parents=True, exist_ok=True)
    print(f"generating {count:,} .debs and a signed repository with releng's apt library ...")
    debs = bench_repo.make_many(WORK / f"debs-{count}", count, "pkg")
    home = WORK / "gnupg"
    fpr = bench_repo.make_key(home)
    signer = Signer(gnupghome=home, key=fpr, passphrase=None)
    settings = RepoSettings(
        name="bench", origin="bench", label="bench", keep_versions=5, nightly_max_age_days=0
    )
    repo = WORK / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    repository = Repository(repo, settings, signer)
    repository.include([SUITE], debs)
    extra_dir = WORK / "extra"
    shutil.rmtree(extra_dir, ignore_errors=True)
    extra_dir.mkdir()
    extra = bench_repo.make_deb(extra_dir, "newcomer", "1.0-1")

    client = s3_client()
    client.create_bucket(Bucket="bench-releng")
    client.create_bucket(Bucket="bench-awscli")
    client.create_bucket(Bucket="bench-full")
    dest = Destination(s3=client, url=S3Url("bench-releng", "apt"))

    print(f"publish {count:,} packages, then add 1 package and publish again (moto over HTTP):")
    first = measure(counter, "releng: first publish", lambda: sync_repo(dest, repo, indices=False))
    measure(counter, "releng: index pages of every directory", lambda: update_indices(dest))
    aws_first = measure(
        counter, "aws s3 sync x2: first publish", lambda: aws_sync(repo, "s3://bench-awscli/apt")
    )
    full_first = measure(
        counter,
        "full upload: first publish",
        lambda: full_upload(client, repo, "bench-full", "apt"),
    )

    repository.include([SUITE], [extra])
    ours = measure(counter, "releng: +1 package", lambda: sync_repo(dest, repo, indices=False))
    pages = measure(counter, "releng: index pages of changed dirs", lambda: update_indices(dest))
    theirs = measure(
        counter, "aws s3 sync x2: +1 package", lambda: aws_sync(repo, "s3://bench-awscli/apt")
    )
    full = measure(
        counter,
        "full re-upload: +1 package",
        lambda: full_upload(client, repo, "bench-full", "apt"),
    )
    again = measure(counter, "releng: nothing changed", lambda: sync_repo(dest, repo))

    from releng.apt import lifecycle
    from releng.apt.lifecycle import Spec
    from releng.publish.flows import change_repository

    work = WORK / "work"  # the publisher's work directory, kept between runs
    shutil.rmtree(work, ignore_errors=True)

    def on_s3(op):  # type: ignore[no-untyped-def]
        return lambda: change_repository(
            dest, work, lambda root: op(Repository(root, settings, signer))
        )

    def promote(spec: str):  # type: ignore[no-untyped-def]
        return on_s3(
            lambda r: lifecycle.copy(r, source=SUITE, target="stable", specs=[Spec.parse(spec)])
        )

    second = bench_repo.make_deb(extra_dir, "promoted", "1.0-1")
    measure(counter, f"releng: promote all {count:,} to a new suite", promote("*"))
    measure(
        counter, "releng: +1 package (on the bucket)", on_s3(lambda r: r.include([SUITE], [second]))
    )
    promoted = measure(counter, "releng: promote 1 package", promote("promoted"))
    measure(
        counter,
        "releng: roll the suite back 1 publish",
        on_s3(lambda r: lifecycle.rollback(r, suite="stable", to=1)),
    )

    print()
    print(f"releng +1 package: {ours[1]} writes of {ours[0]} requests, {ours[2] / 1e6:.2f} MB")
    print(f"  then index pages: {pages[0]} requests, {pages[1]} writes")
    print(f"  vs full re-upload: requests x{ours[0] / full[0]:.4f}, bytes x{ours[2] / full[2]:.4f}")
    print(
        f"  vs aws s3 sync x2: requests x{ours[0] / theirs[0]:.3f}, bytes x{ours[2] / theirs[2]:.3f}"
    )
    print(
        f"releng first publish vs full upload: requests x{first[0] / full_first[0]:.3f}, bytes x{first[2] / full_first[2]:.3f}"
    )
    print(f"releng first publish vs aws s3 sync x2: requests x{first[0] / aws_first[0]:.3f}")
    print(f"releng with nothing to publish: {again[0]} requests, {again[1]} writes")
    print(
        f"releng promotion of 1 package into a {count:,}-package suite: {promoted[0]} requests, "
        f"{promoted[1]} writes, {promoted[2] / 1e6:.2f} MB"
    )
    server.shutdown()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
