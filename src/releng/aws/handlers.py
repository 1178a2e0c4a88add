"""The handlers behind the state machine's handler queues.

Each handler takes the task's JSON input and a :class:`Context` (clients,
catalog, settings, worker launcher) and returns JSON. :func:`dispatch` runs
one queue message: it calls the named handler and answers the task token
with SendTaskSuccess, or SendTaskFailure with an error name the state machine
retries on (``Releng.ServiceError``) or records (anything else).

On AWS, ``aws/lambda/handlers.py`` calls :func:`dispatch` for each SQS record;
locally :class:`releng.aws.runner.HandlerRunner` long-polls the same queues and
calls the same function. Import-light on purpose: boto3 is the only
third-party import, and only through the clients handed in.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import logging
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from releng.aws import commands, request, status
from releng.aws import steps as S
from releng.aws.catalog import Catalog
from releng.deb822 import listed_files, parse_paragraph, parse_paragraphs, strip_signature
from releng.errors import AwsError, RelengError
from releng.publish.sync import release_record_key
from releng.version import Version

log = logging.getLogger(__name__)

# Settings a handler reads (Lambda environment variables set by the stack).
SCRATCH_BUCKET = "RELENG_SCRATCH_BUCKET"
DOWNLOADS_BUCKET = "RELENG_DOWNLOADS_BUCKET"
DOWNLOADS_PREFIX = "RELENG_DOWNLOADS_PREFIX"
DISTRIBUTION_ID = "RELENG_CLOUDFRONT_DISTRIBUTION"
QUEUE_URLS = "RELENG_QUEUE_URLS"  # JSON: worker queue -> URL ({"tarball": url, ...})
MAX_WORKERS = "RELENG_MAX_WORKERS"  # JSON: {"build": 16, ...}; missing queues: WorkerKind's

# What goes into the execution's state from a failure: a line, and where the rest is
# (every failure record stays in the state until CheckForFailures: tests/test_aws_payload.py).
MAX_CAUSE = 300
# A traceback's last line, before the place of the whole: 20 versions x 8 distros x 2
# architectures of them must fit the state (tests/test_aws_payload.py).
MAX_TRACEBACK_LINE = 120
MAX_SUMMARY_FAILURES = 20

# Written last by `invoke upload-build` (releng.publish.COMPLETE): the upload is whole.
COMPLETE = ".releng-complete.json"


class Launcher(Protocol):
    """Starts workers for a queue: on AWS by raising the desired capacity of its Auto Scaling
    group (:class:`releng.aws.launch.AutoScalingLauncher`), local processes under --fake-ec2."""

    def live(self, queue: str) -> int: ...

    def launch(self, queue: str, count: int) -> list[str]: ...


@dataclass(kw_only=True)
class Context:
    client: Callable[[str], Any]  # service name -> boto3 client
    catalog: Catalog
    settings: Mapping[str, str]
    launcher: Launcher
    today: Callable[[], dt.date] = field(default=lambda: dt.datetime.now(dt.UTC).date())

    def setting(self, key: str) -> str:
        value = self.settings.get(key, "")
        if not value:
            raise AwsError(f"{key} is not set for the handlers; redeploy with `invoke deploy-aws`")
        return value


# ----------------------------------------------------------------- S3 layout
# scratch (private):  <version>/source/<tarball>[.asc|SHA256SUMS...]
#                     <version>/<distro>/<arch>/<.changes, .deb, .dsc, ...>
#                     logs/<execution>/<version>/<distro>/<arch>/<step>.log (builds)
#                     logs/<execution>/<version>/all/<step>.log (the version's steps)
# downloads (public): <prefix>/dists/<suite>/..., <prefix>/pool/..., <prefix>/source/<tarball>
#                     <prefix>/.releng/releases/<version>.json (private: the release went public)


def scratch_source_prefix(version: Version) -> str:
    return f"{version.text}/source/"


def scratch_build_prefix(version: Version, distro: str, arch: str) -> str:
    """One architecture's build of ``distro`` (releng.publish.flows.scratch_url)."""
    return f"{version.text}/{distro}/{arch}/"


def scratch_rebuild_prefix(version: Version, distro: str, arch: str) -> str:
    """verify-rebuild's result for that build (releng.publish.scratch.REBUILD_PART)."""
    return scratch_build_prefix(version, distro, arch) + "rebuild/"


def log_key(execution: str, version: str, distro: str, step: str, arch: str = "") -> str:
    part = f"{distro}/{arch}" if distro and arch else distro or "all"
    return f"logs/{execution}/{version}/{part}/{step}.log"


def _join(prefix: str, key: str) -> str:
    return f"{prefix.strip('/')}/{key}" if prefix.strip("/") else key


def _exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def _read(s3: Any, bucket: str, key: str) -> bytes | None:
    from botocore.exceptions import ClientError

    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def published_versions(
    ctx: Context, suite: str, arches: list[str] | None = None, *, package: str = ""
) -> set[tuple[str, str]]:
    """(package, version) pairs in the downloads repository's Packages for ``suite``
    (``arches``: those architectures' indexes only; default: every one; ``package``: only
    the stanzas that name it, found before any stanza is parsed)."""
    s3 = ctx.client("s3")
    bucket = ctx.setting(DOWNLOADS_BUCKET)
    prefix = ctx.settings.get(DOWNLOADS_PREFIX, "")
    found: set[tuple[str, str]] = set()
    for component in ctx.catalog.components:
        for arch in ctx.catalog.architectures if arches is None else arches:
            base = _join(prefix, f"dists/{suite}/{component}/binary-{arch}/Packages")
            data = _read(s3, bucket, base + ".gz")
            text = (
                gzip.decompress(data).decode()
                if data
                else (_read(s3, bucket, base) or b"").decode()
            )
            for fields in parse_paragraphs(text, where=f"s3://{bucket}/{base}", containing=package):
                if "Package" in fields and "Version" in fields:
                    found.add((fields["Package"], fields["Version"]))
    return found


def _is_published(ctx: Context, version: Version, distro: str, arch: str) -> bool:
    """Whether the suite's ``binary-<arch>`` index lists this build's main package."""
    info = ctx.catalog.distro(distro)
    suite = ctx.catalog.suites[0].format(
        codename=info.codename,
        distro=distro,
        version=version.text,
        major=version.major if version.is_release else "",
        minor=version.minor if version.is_release else "",
    )
    wanted = (version.package_name(ctx.catalog.product), f"{version.text}-{info.pkgver}")
    return wanted in published_versions(ctx, suite, [arch], package=wanted[0])


# ------------------------------------------------------------------ handlers


def parse_input(event: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Validate the execution input (again: the invoke task did it first) into the plan."""
    return request.normalise(event, ctx.catalog, today=ctx.today())


def get_distros_for_version(event: Mapping[str, Any], ctx: Context) -> list[str]:
    """The distros built for ``event["version"]`` (a version record, see
    request.version_record): ``event["distros"]`` or the default targets."""
    version = request.version_of(event.get("version") or {})
    requested = [str(d) for d in event.get("distros") or []]
    request.normalise({"versions": [version.text], "distros": requested}, ctx.catalog)
    return request.distros_for_version(version, requested, ctx.catalog)


class SourcePending(AwsError):
    """Another architecture's verify waits for the primary architecture's build to put its
    source package in scratch; the state machine retries it with backoff (steps.SOURCE_PENDING)."""


assert f"Releng.{SourcePending.__name__}" == S.SOURCE_PENDING


def _primary_source(
    ctx: Context, event: Mapping[str, Any], task: Mapping[str, Any], version: Version
) -> dict[str, Any]:
    """The fetch of the source package a non-primary architecture's rebuild starts from: the
    primary architecture's build's ``.dsc`` and the files it lists (an arm64 build is
    binary-only). SourcePending while that build is still to come; an AwsError in one line
    when it failed, is not in this execution, or the wait passed the verify step's timeout."""
    distro, arch = str(task["distro"]), str(task["arch"])
    primary = ctx.catalog.architectures[0]
    s3, scratch = ctx.client("s3"), ctx.setting(SCRATCH_BUCKET)
    prefix = scratch_build_prefix(version, distro, primary)
    where = f"s3://{scratch}/{prefix}"
    of = f"the {arch} build of {distro} {version.text}"
    marker = _read(s3, scratch, prefix + COMPLETE)
    if marker is not None:
        files = dict(json.loads(marker).get("files") or {})
        dscs = [name for name in files if name.endswith(".dsc")]
        if len(dscs) != 1:
            raise AwsError(
                f"cannot verify {of}: the {primary} build in {where} has {len(dscs)} .dsc "
                f"files, not one; build {primary} again (make-binary-package --arch {primary})"
            )
        text = (_read(s3, scratch, prefix + dscs[0]) or b"").decode("utf-8", "replace")
        try:
            fields = parse_paragraph(strip_signature(text), where=f"{where}{dscs[0]}")
            listed = listed_files(fields, "Checksums-Sha256", where=f"{where}{dscs[0]}")
        except RelengError as exc:
            raise AwsError(f"cannot verify {of}: {exc}; build {primary} again") from None
        names = [dscs[0], *(f.name for f in listed)]
        missing = [n for n in names[1:] if n not in files] or ([] if names[1:] else ["its files"])
        if missing:
            raise AwsError(
                f"cannot verify {of}: {where}{dscs[0]} lists {', '.join(missing)}, which the "
                f"{primary} build does not hold; build {primary} again"
            )
        dest = f"out/{version.text}/{distro}/"  # beside the build, as _commands fetches it
        return {"bucket": scratch, "prefix": prefix, "dest": dest, "names": names}
    execution = str(task["execution"])
    plan = event["version"]
    matrix = {(str(b["distro"]), str(b["arch"])) for b in plan.get("matrix", [])}
    build = status.record_key(execution, version.text, distro, S.MAKE_BINARY_PACKAGE, primary)
    built = json.loads(_read(s3, scratch, build) or b"{}")
    if built.get("state") == "failed":
        raise AwsError(
            f"cannot verify {of}: the {primary} build, whose source package it rebuilds "
            f"from, failed (log: {built.get('log') or 'its make-binary-package log'})"
        )
    if (
        (distro, primary) not in matrix
        or S.MAKE_BINARY_PACKAGE not in plan.get("steps", S.STEPS)
        or built.get("state") == "skipped"
    ):
        raise AwsError(
            f"cannot verify {of}: it rebuilds from the {primary} build's source package, and "
            f"{where} has no complete build; build {distro} for {primary} in the same "
            f"execution (--arches {primary},{arch})"
        )
    # Still to come: wait (the state retries), at most the verify step's timeout from the
    # first wait of this execution, which the step's status record keeps.
    key = status.record_key(execution, version.text, distro, S.VERIFY_REBUILD, arch)
    mine = json.loads(_read(s3, scratch, key) or b"{}")
    now = dt.datetime.now(dt.UTC).timestamp()
    since = float(mine["since"]) if mine.get("state") == "waiting" else now
    timeout = int((event.get("config") or {}).get("timeouts", {}).get(S.VERIFY_QUEUE)
                  or S.DEFAULT_TIMEOUTS[S.VERIFY_QUEUE])  # fmt: skip
    if now - since >= timeout:
        raise AwsError(
            f"cannot verify {of}: the {primary} build's source package is not in {where} "
            f"after {int(now - since)} s (the verify step's timeout); see that build's status"
        )
    reason = f"waiting for the {primary} build's source package in {where}"
    status.put_record(s3, scratch, task, "waiting", reason=reason, since=since)
    raise SourcePending(f"{of} is {reason}")


def _commands(
    step: str, version: Version, distro: str, ctx: Context, *, arch: str, distros: list[str]
) -> dict[str, Any]:
    """What a worker runs for ``step`` (releng.aws.commands, the one table of task names and
    flags), and what it fetches and uploads around it (``distros``: the version's distros in
    this execution: the embargo of publish-release-source covers them)."""
    fetch = []
    if step == S.MAKE_BINARY_PACKAGE:
        # The tarball comes from scratch (an EC2 builder starts with an empty out/).
        scratch = ctx.setting(SCRATCH_BUCKET)
        fetch = [{"bucket": scratch, "prefix": scratch_source_prefix(version), "dest": "out/"}]
    if step == S.VERIFY_REBUILD:
        # The build comes from scratch into out/<V>/<DISTRO>/, where verify-rebuild reads it
        # (its files only: not an earlier rebuild/ nor the completion marker).
        fetch = [
            {
                "bucket": ctx.setting(SCRATCH_BUCKET),
                "prefix": scratch_build_prefix(version, distro, arch),
                "dest": f"out/{version.text}/{distro}/",
            }
        ]
    dest = ""
    if step in (S.PUBLISH_BINARY_PACKAGES, S.PUBLISH_SOURCE_TARBALL):
        # releng.publish reads the builds and the tarball from scratch itself (an empty-disk
        # publisher): nothing to fetch.
        downloads = ctx.setting(DOWNLOADS_BUCKET)
        dest = f"s3://{_join(downloads, ctx.settings.get(DOWNLOADS_PREFIX, ''))}".rstrip("/")
    lines = commands.for_step(
        step, version, distro=distro, arch=arch, dest=dest, distros=tuple(distros)
    )
    always = commands.after_step(step, version, distro=distro, arch=arch)
    return {
        "commands": lines,
        "uploads": [],
        "fetch": fetch,
        **({"always": always} if always else {}),
    }


def _built(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(distro, arch) of the builds whose MakeBinaryPackage branch ended without a failure
    record (no records: every build of the plan)."""
    builds = event.get("builds")
    if not isinstance(builds, list):
        matrix = event.get("version", {}).get("matrix", [])
        return [(str(b["distro"]), str(b["arch"])) for b in matrix]
    return [
        (str(b["distro"]), str(b.get("arch") or ""))
        for b in builds
        if isinstance(b, dict) and not b.get("failed") and b.get("distro")
    ]


def prepare_task(event: Mapping[str, Any], ctx: Context) -> dict[str, Any]:  # noqa: PLR0911, PLR0912  (one return per skip reason, one branch per step)
    """Decide from S3 whether ``event["step"]`` must run; if so, the worker's task."""
    step = str(event["step"])
    plan = event["version"]
    version = request.version_of(plan)  # typed from here on
    distro = str(event.get("distro") or "")
    builds = step in (S.MAKE_BINARY_PACKAGE, S.VERIFY_REBUILD)  # one (distro, arch) each
    # the build's architecture (an input without one: product.toml's primary)
    arch = str(event.get("arch") or ctx.catalog.architectures[0]) if builds else ""
    execution = str(event.get("execution") or "local")
    built = _built(event)
    task: dict[str, Any] = {
        "step": step,
        "version": version.text,
        "distro": distro,
        **({"arch": arch} if builds else {}),
        "execution": execution,
        "log": {
            "bucket": ctx.setting(SCRATCH_BUCKET),
            "key": log_key(execution, version.text, distro, step, arch),
        },
    }

    def skip(reason: str) -> dict[str, Any]:
        log.info("skip %s %s %s %s: %s", step, version.text, distro or "-", arch or "-", reason)
        status.put_record(
            ctx.client("s3"), ctx.setting(SCRATCH_BUCKET), task, "skipped", reason=reason
        )
        return {**task, "run": False, "reason": reason}

    if step not in plan.get("steps", S.STEPS):
        return skip("step not selected")
    sources: list[dict[str, Any]] = []  # more to fetch (verify-rebuild of a non-primary arch)
    s3 = ctx.client("s3")
    scratch = ctx.setting(SCRATCH_BUCKET)
    if step == S.MAKE_SOURCE_TARBALL:
        done = scratch_source_prefix(version) + COMPLETE
        if _exists(s3, scratch, done):
            return skip(f"s3://{scratch}/{done} exists")
    elif step == S.MAKE_BINARY_PACKAGE:
        done = scratch_build_prefix(version, distro, arch) + COMPLETE
        if _exists(s3, scratch, done):
            return skip(f"built: s3://{scratch}/{done} exists")
        if _is_published(ctx, version, distro, arch):
            return skip("already in the downloads repository")
    elif step == S.VERIFY_REBUILD:
        if reason := _verified(ctx, version, distro, arch):
            return skip(reason)
        if arch != ctx.catalog.architectures[0]:  # a binary-only build: the primary's .dsc
            sources.append(_primary_source(ctx, event, task, version))
    elif step == S.PUBLISH_BINARY_PACKAGES:
        if not built:
            return skip("no distro was built")
        if all(_is_published(ctx, version, d, a) for d, a in built):
            return skip("every built distro is already in the downloads repository")
    elif step == S.PUBLISH_SOURCE_TARBALL:
        if version.is_nightly:
            return skip("nightlies publish no source tarball")
        # Written last by publish-release-source: the source is public and the tag pushed.
        key = _join(ctx.settings.get(DOWNLOADS_PREFIX, ""), release_record_key(version.text))
        if _exists(s3, ctx.setting(DOWNLOADS_BUCKET), key):
            return skip(f"released: s3://{ctx.setting(DOWNLOADS_BUCKET)}/{key} exists")
    distros = [str(d) for d in plan.get("distros", [])]
    prepared = _commands(step, version, distro, ctx, arch=arch, distros=distros)
    return {
        **task,
        **(_build_queue(ctx, arch, step) if builds else {}),
        **prepared,
        "fetch": [*prepared["fetch"], *sources],
        "run": True,
        "reason": "output missing",
    }


def _verified(ctx: Context, version: Version, distro: str, arch: str) -> str:
    """Why VerifyRebuild need not run for this build ("": it must): its policy is off, its
    architecture has no rebuilders, a rebuild reproduced it already (the rerun skips), or
    it is published. A build that is neither in scratch nor published is an AwsError."""
    policy = ctx.catalog.verify_rebuild
    if policy == "off":
        return '[verify] rebuild is "off"'
    if S.verify_queue(arch) is None:
        return f"no rebuilders for {arch} on AWS ({', '.join(S.VERIFY_QUEUE_OF_ARCH)} only)"
    s3 = ctx.client("s3")
    scratch = ctx.setting(SCRATCH_BUCKET)
    marker = scratch_rebuild_prefix(version, distro, arch) + COMPLETE
    done = json.loads(_read(s3, scratch, marker) or b"{}")
    if done.get("result") == "reproduced":  # releng.rebuild.summary.RESULT_REPRODUCED
        return f"verified: s3://{scratch}/{marker} exists"
    build = scratch_build_prefix(version, distro, arch) + COMPLETE
    if _exists(s3, scratch, build):
        return ""
    if _is_published(ctx, version, distro, arch):
        return "already in the downloads repository"
    raise AwsError(
        f"verify-rebuild: no complete build of {distro} {arch} {version.text} in "
        f"s3://{scratch}/{scratch_build_prefix(version, distro, arch)}; select the "
        "make-binary-package step too"
    )


def _build_queue(ctx: Context, arch: str, step: str = S.MAKE_BINARY_PACKAGE) -> dict[str, str]:
    """A build's (or its rebuild's) queue is its architecture's (the Task state sends the
    task there)."""
    queue = S.verify_queue(arch) if step == S.VERIFY_REBUILD else S.build_queue(arch)
    assert queue is not None  # _verified skipped an architecture with no rebuilders
    urls = json.loads(ctx.setting(QUEUE_URLS))
    if queue not in urls:
        raise AwsError(
            f"the stack has no {queue} queue (deployed before it existed); "
            "redeploy with `invoke deploy-aws`"
        )
    return {"queue": queue, "queue_url": str(urls[queue])}


def max_workers(ctx: Context) -> dict[str, int]:
    """Each queue's pool size: the stack's MaxWorkers, else the WorkerKind's default."""
    given = json.loads(ctx.settings.get(MAX_WORKERS) or "{}")
    return {q: int(given.get(q, k.max_workers)) for q, k in S.WORKER_KINDS.items()}


def _queued(ctx: Context, queue: str) -> int:
    """Tasks on ``queue`` waiting or being worked on."""
    urls = json.loads(ctx.setting(QUEUE_URLS))
    attrs = ctx.client("sqs").get_queue_attributes(
        QueueUrl=urls[queue],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs.get("ApproximateNumberOfMessages", "0")) + int(
        attrs.get("ApproximateNumberOfMessagesNotVisible", "0")
    )


def _top_up(ctx: Context, queue: str, coming: int) -> dict[str, Any]:
    """Start workers until the pool matches the work (queued + ``coming``), never above its
    maximum. Live workers take the next task when they finish theirs, so a full pool means
    the task waits in the queue; on AWS a zone without capacity or a quota refusal is the
    worker group's to retry, never a failure."""
    limit = max_workers(ctx)[queue]
    live = ctx.launcher.live(queue)
    work = _queued(ctx, queue) + coming
    want = max(0, min(limit, work) - live)
    launched = ctx.launcher.launch(queue, want) if want else []
    if want:
        log.info(
            "%s: %d task(s), %d live worker(s) of %d; launched %d",
            queue, work, live, limit, len(launched),
        )  # fmt: skip
    return {"queue": queue, "live": live, "wanted": want, "launched": launched}


def launch_workers(event: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Make sure a worker will take the task about to be queued on ``queue`` (its pool)."""
    queue = str(event["queue"])
    if queue not in S.WORKER_QUEUES:
        raise AwsError(
            f"launch_workers: unknown queue {queue!r}; valid: {', '.join(S.WORKER_QUEUES)}"
        )
    return _top_up(ctx, queue, int(event.get("count", 1)))


def _walk(node: object) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def check_if_repos_changed(event: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Whether any publish step ran to success in this execution."""
    del ctx
    publishes = [
        d
        for d in _walk(event.get("results"))
        if d.get("step") in (S.PUBLISH_BINARY_PACKAGES, S.PUBLISH_SOURCE_TARBALL)
        and d.get("run") is True
        and "result" in d
    ]
    return {
        "changed": bool(publishes),
        "published": [f"{d['step']} {d['version']}" for d in publishes],
    }


def _destination(ctx: Context) -> Any:
    from releng.publish.flows import Destination
    from releng.publish.sync import S3Url

    url = S3Url(ctx.setting(DOWNLOADS_BUCKET), ctx.settings.get(DOWNLOADS_PREFIX, "").strip("/"))
    return Destination(s3=ctx.client("s3"), url=url)


def update_indices(event: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """index.html pages for the directories the publishes changed (releng.publish, under its lock).

    The CloudFront paths those changes need are returned for InvalidateCloudFront, which runs next.
    """
    del event
    from releng.publish import flows as publish

    result = publish.update_indices(_destination(ctx))
    return {"pages": len(result.pages), "invalidate": list(result.invalidated)}


def invalidate_cloudfront(event: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Invalidate the metadata paths UpdateIndices listed (never the pool), if there is a distribution."""
    distribution = ctx.settings.get(DISTRIBUTION_ID, "")
    paths = [str(p) for p in (event.get("indices") or {}).get("invalidate", [])]
    if not distribution:
        return {"invalidation": None, "reason": "no CloudFront distribution configured"}
    from releng.publish.cloudfront import Invalidator

    # Unique per execution: CloudFront returns the old invalidation for a CallerReference it
    # has seen, so the next nightly with the same paths would invalidate nothing. A retry
    # within this execution reuses it (one invalidation, not two).
    execution = str(event.get("execution") or uuid.uuid4().hex)
    digest = hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()[:16]
    invalidator = Invalidator(ctx.client("cloudfront"), distribution)
    return {"invalidation": invalidator.invalidate(paths, reference=f"{execution}-{digest}")}


def failures_key(execution: str) -> str:
    return f"logs/{execution}/failures.json"


def check_for_failures(event: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Every failure record in the execution, the first few in one line; the whole list goes to
    ``s3://<scratch>/logs/<execution>/failures.json`` (the state keeps its count and place)."""
    scratch = ctx.settings.get(SCRATCH_BUCKET, "")
    execution = str(event.get("execution", ""))
    failures = []
    for d in _walk(event):
        if d.get("failed") is True:
            error = d.get("error") or {}
            failures.append(
                {
                    "step": d.get("step", ""),
                    "version": d.get("version", ""),
                    "distro": d.get("distro", ""),
                    "arch": d.get("arch", ""),
                    "error": error.get("Error", ""),
                    "cause": error.get("Cause") or "",
                    "log": f"s3://{scratch}/"
                    + log_key(
                        execution,
                        d.get("version", ""),
                        d.get("distro", ""),
                        d.get("step", ""),
                        d.get("arch", ""),
                    ),
                }
            )
    report = ""
    if failures and scratch:
        key = failures_key(execution)
        ctx.client("s3").put_object(
            Bucket=scratch,
            Key=key,
            Body=json.dumps(failures, indent=1).encode(),
            ContentType="application/json",
        )
        report = f"s3://{scratch}/{key}"
    shown = failures[:MAX_SUMMARY_FAILURES]
    summary = "; ".join(
        f"{f['step']} {f['version']} {f['distro']} {f['arch']}".strip()
        + f": {f['error']} {f['cause'][:300]}".rstrip()
        for f in shown
    )
    if len(failures) > len(shown):
        summary += f"; and {len(failures) - len(shown)} more; every failure: {report}"
    return {"count": len(failures), "summary": summary, "report": report}


def health_check(event: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Start workers for queued tasks nobody is working on (a worker left its group idle as a
    task came, or died)."""
    del event
    launched = {}
    for queue in S.WORKER_QUEUES:
        result = _top_up(ctx, queue, 0)
        if result["launched"]:
            launched[queue] = result["launched"]
    return {"launched": launched}


HANDLERS: dict[str, Callable[[Any, Context], Any]] = {
    "parse_input": parse_input,
    "get_distros_for_version": get_distros_for_version,
    "prepare_task": prepare_task,
    "launch_workers": launch_workers,
    "check_if_repos_changed": check_if_repos_changed,
    "update_indices": update_indices,
    "invalidate_cloudfront": invalidate_cloudfront,
    "check_for_failures": check_for_failures,
    "health_check": health_check,
}
assert tuple(HANDLERS) == S.HANDLERS  # the state machine's queues and this table agree


def error_name(exc: BaseException) -> str:
    """The error a failed handler reports: retried (ServiceError) or recorded (the rest)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, (ClientError, BotoCoreError)):
        return "Releng.ServiceError"
    if isinstance(exc, RelengError):
        return f"Releng.{type(exc).__name__}"
    return "Releng.Bug"


def run_handler(name: str, event: Any, ctx: Context) -> Any:
    if name not in HANDLERS:
        raise AwsError(f"unknown handler {name!r}; valid handlers: {', '.join(HANDLERS)}")
    return HANDLERS[name](event, ctx)


def _failure_cause(exc: BaseException, handler: str, execution: str, ctx: Context) -> str:
    """One line for the execution's state; a traceback goes to S3 and the line says where.

    Failure records are kept in the state until the end, and a state over 256 KiB ends the
    execution (States.DataLimitExceeded) with the summary lost, so tracebacks never go in."""
    if isinstance(exc, RelengError) and len(str(exc)) <= MAX_CAUSE:
        return str(exc)
    # A long message is kept whole in S3, as a traceback is.
    text = str(exc) if isinstance(exc, RelengError) else traceback.format_exc()
    line = (text.strip().splitlines() or [repr(exc)])[-1][:MAX_TRACEBACK_LINE]
    scratch = ctx.settings.get(SCRATCH_BUCKET, "")
    if not scratch:
        return line
    key = f"logs/{execution}/handlers/{handler}-{uuid.uuid4().hex[:12]}.txt"
    try:
        ctx.client("s3").put_object(Bucket=scratch, Key=key, Body=text.encode())
    except Exception as upload:  # the failure is reported either way
        log.warning("could not store the traceback of %s: %s\n%s", handler, upload, text)
        return line
    return (
        f"{line}; {'whole' if isinstance(exc, RelengError) else 'traceback'}: s3://{scratch}/{key}"
    )


HEALTH_CHECK_MESSAGE = {"handler": "health_check"}  # on launch_workers' queue, no token


def dispatch(message: Mapping[str, Any], ctx: Context) -> bool:
    """Run one handler-queue message and answer its task token. True when it succeeded.

    The scheduled health check comes as a message without a token on launch_workers' FIFO
    queue (one owner of the pools): it runs there, between launches, and answers nobody."""
    name = str(message.get("handler", ""))
    if "token" not in message and name == "health_check":
        try:
            health_check({}, ctx)
        except Exception as exc:  # the next one runs in five minutes
            log.warning("health check failed: %s: %s", error_name(exc), exc)
            return False
        return True
    token = str(message["token"])
    sfn = ctx.client("stepfunctions")
    event = message.get("input")
    try:
        output = run_handler(name, event, ctx)
    except Exception as exc:
        error = error_name(exc)
        cause = _failure_cause(exc, name, str(message.get("execution") or "local"), ctx)
        log.warning("handler %s failed: %s: %s", name, error, cause)
        sfn.send_task_failure(taskToken=token, error=error, cause=cause)
        return False
    if name == "parse_input":
        output["execution"] = str(
            message.get("execution", "")
        )  # names logs, read by check_for_failures
    sfn.send_task_success(taskToken=token, output=json.dumps(output))
    return True
