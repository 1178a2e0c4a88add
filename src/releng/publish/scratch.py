"""The scratch bucket's contract, shared by the publish flows and the AWS handlers.

Layout of the scratch bucket (private)::

    s3://<scratch>/<version>/<distro>/<arch>/...   one architecture's build (upload-build),
                                                   with COMPLETE written last: its file list
    s3://<scratch>/<version>/source/...            the source tarball, .asc, SHA256SUMS(.asc)

A build is taken only when its :data:`COMPLETE` marker is there, and every file downloaded
is checked against the sha256 the marker lists.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from releng.digest import file_sha256
from releng.errors import PublishError
from releng.publish.layout import content_type
from releng.publish.s3 import S3Url, delete_keys, get_bytes, list_keys, s3_errors
from releng.version import Version

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from releng.distro import Distro
    from releng.project import Project

log = logging.getLogger(__name__)


SCRATCH_SOURCE = "source"  # s3://<scratch>/<version>/source/: not a distro id
COMPLETE = ".releng-complete.json"  # written last by upload-build: the build's file list
# s3://<scratch>/<version>/<distro>/<arch>/rebuild/: verify-rebuild's result for that build
# (upload-build --rebuild, the AWS verify step), with its own COMPLETE and the result in it.
REBUILD_PART = "rebuild"


def scratch_url(bucket: str, version: Version, part: str, arch: str = "") -> S3Url:
    """``s3://<scratch>/<version>/source`` or one architecture's build of a distro,
    ``s3://<scratch>/<version>/<distro>/<arch>``: each architecture's part has its own files
    and completion marker, so builds of one distro on two machines never overwrite each
    other, and the publish collects every complete part."""
    return S3Url(bucket, f"{version.text}/{part}" + (f"/{arch}" if arch else ""))


def build_files(project: Project, version: Version, distro: str, arch: str) -> dict[str, Path]:
    """The files of ``arch``'s build in ``out/<version>/<distro>/`` (which may hold other
    architectures' builds too): its stamp (``build.json`` for the primary architecture,
    ``build-<arch>.json`` for the others: releng.build.Target.stamp), its log and the files
    the stamp lists. A directory with no stamp at all (packages put there by hand) is the
    primary architecture's as a whole."""
    architectures = project.config.repositories.architectures
    if arch not in architectures:
        raise PublishError(
            f"architecture {arch} is not in [repositories] architectures of product.toml "
            f"({', '.join(architectures)})"
        )
    primary = arch == architectures[0]
    build = project.build_dir(version, distro)
    stamp, log_name = (
        ("build.json", "build.log") if primary else (f"build-{arch}.json", f"build-{arch}.log")
    )
    made = f"run `invoke make-package {distro} --version {version} --arch {arch}` first"
    if not build.is_dir():
        raise PublishError(f"no build output in {build}; {made}")
    if not any(build.glob("build*.json")) and primary:
        return {
            p.relative_to(build).as_posix(): p
            for p in sorted(build.rglob("*"))
            if p.is_file() and not any(s.startswith(".") for s in p.relative_to(build).parts)
        }
    try:
        listed = json.loads((build / stamp).read_text(encoding="utf-8")).get("files") or []
    except (OSError, ValueError, AttributeError):
        raise PublishError(f"no complete {arch} build in {build} (no {stamp}); {made}") from None
    names = [stamp, *([log_name] if (build / log_name).is_file() else []), *map(str, listed)]
    missing = [n for n in names if not (build / n).is_file()]
    if missing:
        raise PublishError(f"the {arch} build in {build} lacks {', '.join(missing)}; {made}")
    return {n: build / n for n in names}


def source_files(project: Project, version: Version) -> list[Path]:
    tarball = project.tarball_path(version)
    sums = tarball.with_name(f"{project.source_stem(version)}.SHA256SUMS")
    return [
        tarball,
        tarball.with_name(tarball.name + ".asc"),
        sums,
        sums.with_name(sums.name + ".asc"),
    ]


def upload_build(
    client: S3Client,
    project: Project,
    version: Version,
    part: str,
    *,
    scratch: str,
    arch: str = "",
    dry_run: bool = False,
) -> list[str]:
    """``upload-build``: put one architecture's build (``arch``, default: the primary one)
    or, for ``source``, the source tarball and its signature and checksums, into the private
    scratch bucket.

    The file list with sha256s goes last (``.releng-complete.json``): update-repos takes
    only complete builds, and checks every file it downloads against that list.
    """
    if not scratch:
        raise PublishError("no scratch bucket: set [publish] scratch_bucket in product.toml")
    if part == SCRATCH_SOURCE:
        files = {p.name: p for p in source_files(project, version)}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise PublishError(
                f"no complete source tarball for {version}: missing {', '.join(missing)}; "
                f"run `invoke make-source-tarball --version {version}` first"
            )
    else:
        project.distro(part)  # a DistroError names the known distros
        arch = arch or project.config.repositories.architectures[0]
        files = build_files(project, version, part, arch)
        if not files:
            raise PublishError(
                f"no build output in {project.build_dir(version, part)}; run "
                f"`invoke make-package {part} --version {version} --arch {arch}` first"
            )
    dest = scratch_url(scratch, version, part, "" if part == SCRATCH_SOURCE else arch)
    listing = {rel: file_sha256(path) for rel, path in files.items()}
    if dry_run:
        return sorted(listing)
    _put_complete(client, dest, files, listing, {})
    return sorted(listing)


def _put_complete(
    client: S3Client,
    dest: S3Url,
    files: dict[str, Path],
    listing: dict[str, str],
    marker: dict[str, object],
) -> None:
    """``files`` under ``dest``, the completion marker (their sha256s and ``marker``) last."""
    with s3_errors("upload the build to scratch", dest):
        client.delete_object(Bucket=dest.bucket, Key=dest.key(COMPLETE))  # incomplete from here on
        for rel, path in files.items():
            client.put_object(
                Bucket=dest.bucket,
                Key=dest.key(rel),
                Body=path.read_bytes(),
                ContentType=content_type(rel, path.read_bytes()[:512]),
                Metadata={"sha256": listing[rel]},
            )
        client.put_object(
            Bucket=dest.bucket,
            Key=dest.key(COMPLETE),
            Body=json.dumps({"files": listing, **marker}, indent=1).encode(),
            ContentType="application/json",
        )
    log.info("uploaded %d file(s) to %s", len(files), dest)


def rebuild_url(bucket: str, version: Version, distro: str, arch: str) -> S3Url:
    """``s3://<scratch>/<version>/<distro>/<arch>/rebuild``: that build's rebuild result."""
    return S3Url(bucket, f"{version.text}/{distro}/{arch}/{REBUILD_PART}")


def upload_rebuild(
    client: S3Client,
    project: Project,
    version: Version,
    distro: str,
    *,
    scratch: str,
    arch: str,
    dry_run: bool = False,
) -> list[str]:
    """``upload-build --rebuild``: verify-rebuild's result for ``arch``'s build of ``distro``
    (``out/<V>/<DISTRO>/rebuild/``: rebuild.json with signed attestations, or diffoscope's
    reports) into scratch beside that build, its marker last with the result in it. The AWS
    verify step runs it whatever verify-rebuild's outcome: a differing build is held back."""
    if not scratch:
        raise PublishError("no scratch bucket: set [publish] scratch_bucket in product.toml")
    project.distro(distro)  # a DistroError names the known distros
    rebuild_dir = project.build_dir(version, distro) / REBUILD_PART
    made = f"run `invoke verify-rebuild {distro} --version {version} --arch {arch}` first"
    from releng.rebuild.summary import read_summary

    summary = read_summary(rebuild_dir)
    if summary is None:
        raise PublishError(f"no verify-rebuild result in {rebuild_dir}; {made}")
    if summary.get("architecture") != arch:
        raise PublishError(
            f"{rebuild_dir} holds the {summary.get('architecture')} rebuild, not {arch}'s; {made}"
        )
    # an earlier rebuild left behind (verify-rebuild failed before it wrote its own) is not
    # this build's: every package it compared must be the one in the build directory now
    packages = summary.get("packages") or {}
    stale = [
        name
        for name, entry in sorted(packages.items())
        if not (rebuild_dir.parent / name).is_file()
        or file_sha256(rebuild_dir.parent / name) != (entry or {}).get("first")
    ]
    if not packages or stale:
        raise PublishError(
            f"{rebuild_dir} is not the rebuild of the build beside it "
            f"({', '.join(stale) or 'no packages'} differ); {made}"
        )
    files = {
        p.relative_to(rebuild_dir).as_posix(): p
        for p in sorted(rebuild_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }
    listing = {rel: file_sha256(path) for rel, path in files.items()}
    if dry_run:
        return sorted(listing)
    dest = rebuild_url(scratch, version, distro, arch)
    _put_complete(client, dest, files, listing, {"result": str(summary.get("result", ""))})
    return sorted(listing)


def scratch_rebuilds(
    client: S3Client, scratch: str, version: Version
) -> dict[tuple[str, str], dict[str, object]]:
    """(distro, arch) -> the completion marker of that build's rebuild in scratch."""
    root = S3Url(scratch, version.text)
    found: dict[tuple[str, str], dict[str, object]] = {}
    with s3_errors("look for rebuilds in scratch", root):
        for obj in list_keys(client, scratch, root.key_prefix):
            parts = root.rel(obj["Key"]).split("/")
            if len(parts) == 4 and parts[2:] == [REBUILD_PART, COMPLETE]:
                data = get_bytes(client, scratch, obj["Key"]) or b"{}"
                found[(parts[0], parts[1])] = dict(json.loads(data))
    return found


def scratch_builds(
    client: S3Client, scratch: str, version: Version
) -> dict[str, dict[str, dict[str, str]]]:
    """The complete builds of ``version`` in scratch: distro id -> arch -> {file: sha256}."""
    root = S3Url(scratch, version.text)
    builds: dict[str, dict[str, dict[str, str]]] = {}
    with s3_errors("look for builds in scratch", root):
        for obj in list_keys(client, scratch, root.key_prefix):
            parts = root.rel(obj["Key"]).split("/")
            if len(parts) != 3 or parts[2] != COMPLETE or parts[0] == SCRATCH_SOURCE:
                continue
            data = get_bytes(client, scratch, obj["Key"]) or b"{}"
            files = dict(json.loads(data).get("files", {}))
            builds.setdefault(parts[0], {})[parts[1]] = files
    return {d: dict(sorted(arches.items())) for d, arches in sorted(builds.items())}


def download_verified(client: S3Client, src: S3Url, files: dict[str, str], dest_dir: Path) -> None:
    for rel, sha in files.items():
        target = dest_dir / rel
        if not target.resolve().is_relative_to(dest_dir.resolve()):
            raise PublishError(f"refusing to write {rel!r} outside {dest_dir}")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(src.bucket, src.key(rel), str(target))
        if file_sha256(target) != sha:
            raise PublishError(
                f"{src}/{rel} does not match the sha256 its build recorded; upload the build again"
            )


def builds_to_include(
    project: Project, client: S3Client, scratch: str, version: Version
) -> tuple[dict[str, dict[str, dict[str, str]]], dict[str, Distro]]:
    """The complete Debian builds of ``version`` in scratch; an error when there are none."""
    if not scratch:
        raise PublishError("no scratch bucket: set [publish] scratch_bucket in product.toml")
    builds = scratch_builds(client, scratch, version)
    if not builds:
        raise PublishError(
            f"no complete builds of {version} in s3://{scratch}/{version.text}/; "
            f"upload them first (invoke upload-build --version {version} DISTRO)"
        )
    distros = {d: project.distro(d) for d in sorted(builds)}  # unknown ids fail here
    for distro_id, distro in list(distros.items()):
        if not distro.is_debianish:
            log.warning("%s builds no Debian packages; its scratch build is left alone", distro_id)
            del distros[distro_id], builds[distro_id]
    if not builds:
        raise PublishError(f"no Debian builds of {version} in s3://{scratch}/{version.text}/")
    return builds, distros


def delete_scratch(
    client: S3Client, scratch: str, version: Version, parts: list[tuple[str, str]]
) -> int:
    """Remove the published (distro, arch) builds; a part uploaded meanwhile stays."""
    deleted = 0
    for distro_id, arch in parts:
        src = scratch_url(scratch, version, distro_id, arch)
        with s3_errors("remove published builds from scratch", src):
            keys = [o["Key"] for o in list_keys(client, scratch, src.key_prefix)]
            # the completion marker first: a half-deleted build is never taken again
            keys.sort(key=lambda k: not k.endswith(COMPLETE))
            delete_keys(client, scratch, keys)
            deleted += len(keys)
    return deleted


def fetch_builds(
    project: Project, client: S3Client, scratch: str, version: Version, into: Path
) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Download the complete Debian builds of ``version`` from scratch into ``into``, each
    file checked against its build's sha256: distro id -> its directory (every
    architecture's part in one, as ``out/<version>/<distro>/`` locally), and the (distro,
    arch) parts to delete once published: those taken, except a primary architecture's
    build while another architecture of its distro is held back, whose verify rerun
    rebuilds from that build's source package."""
    from releng.rebuild.summary import merge_reproduced, read_summary, write_summary

    builds, _distros = builds_to_include(project, client, scratch, version)
    rebuilds = scratch_rebuilds(client, scratch, version)
    keep: set[tuple[str, str]] = set()  # taken, but left in scratch
    if project.config.verify.rebuild == "require":
        taken = _hold_back_differing(builds, rebuilds, scratch, version)
        primary = project.config.repositories.architectures[0]
        for distro_id, arches in taken.items():
            if primary in arches and set(builds[distro_id]) - set(arches):
                log.info(
                    "%s %s %s: left in scratch once published, for the verify rerun of the "
                    "architectures held back (they rebuild from its source package)",
                    version, distro_id, primary,
                )  # fmt: skip
                keep.add((distro_id, primary))
        builds = taken
    dirs: dict[str, Path] = {}
    for distro_id, arches in builds.items():
        build_dir = into / distro_id
        for arch, files in arches.items():
            src = scratch_url(scratch, version, distro_id, arch)
            with s3_errors("download a build from scratch", src):
                download_verified(client, src, files, build_dir)
            rebuild = rebuilds.get((distro_id, arch))
            if rebuild is not None:  # [verify] rebuild reads it; its attestations go public
                src = rebuild_url(scratch, version, distro_id, arch)
                earlier = read_summary(build_dir / REBUILD_PART)
                with s3_errors("download a rebuild from scratch", src):
                    files_of = dict(rebuild.get("files") or {})  # type: ignore[call-overload]
                    download_verified(client, src, files_of, build_dir / REBUILD_PART)
                if earlier is not None:  # another architecture's, in the same rebuild/:
                    # one for both, as verify-rebuild keeps them locally
                    later = read_summary(build_dir / REBUILD_PART) or {}
                    merged = merge_reproduced(earlier, later)
                    if merged is not None:
                        write_summary(build_dir / REBUILD_PART, merged)
        log.info("downloaded %s (%s) of %s from scratch", distro_id, ", ".join(arches), version)
        dirs[distro_id] = build_dir
    return dirs, [(d, a) for d, arches in builds.items() for a in arches if (d, a) not in keep]


def _hold_back_differing(
    builds: dict[str, dict[str, dict[str, str]]],
    rebuilds: dict[tuple[str, str], dict[str, object]],
    scratch: str,
    version: Version,
) -> dict[str, dict[str, dict[str, str]]]:
    """[verify] rebuild = "require": the builds whose rebuild differs stay in scratch,
    unpublished (the verify step failed their branch), and the others go on; without this the
    policy would refuse the whole version for one of them."""
    from releng.rebuild.summary import RESULT_REPRODUCED

    kept: dict[str, dict[str, dict[str, str]]] = {}
    for distro_id, arches in builds.items():
        for arch, files in arches.items():
            result = (rebuilds.get((distro_id, arch)) or {}).get("result")
            if result not in (None, RESULT_REPRODUCED):
                log.warning(
                    "%s %s %s: its rebuild %s; held back in %s",
                    version, distro_id, arch, result, rebuild_url(scratch, version, distro_id, arch),
                )  # fmt: skip
                continue
            kept.setdefault(distro_id, {})[arch] = files
    if not kept:
        raise PublishError(
            f"every build of {version} in s3://{scratch}/{version.text}/ has a differing "
            'rebuild; [verify] rebuild = "require" publishes none of them'
        )
    return kept
