"""The rebuilder's containers: its image, the varied build, diffoscope.

The rebuilder image is the distro's base image plus exactly the build dependencies a
first build's ``.buildinfo`` records, installed from the distro's archive (never from
the first build's builder image), and the tools the variations need (faketime, one
generated locale, a user of its own). It is tagged by a hash of those inputs and
reused while they stay the same. The build then runs in a fresh container of it
with no network, varying what a second machine would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from releng.engine import Container, ContainerSpec, Engine, Mount
from releng.rebuild.buildinfo import BuildInfo, Dependency, RebuildError

log = logging.getLogger(__name__)

REBUILDER_FORMAT = "1"  # bump when the way rebuilder images are made changes
REBUILDER_REPOSITORY = "releng-rebuilder-{name}"
LABEL_REBUILD = "org.releng.rebuild"  # every container the rebuilder makes
TOOLS = ("faketime", "locales")  # the variations' tools, from the archive
# diffoscope, and what it needs to look inside .debs (xz, zstd: Ubuntu's) rather than at bytes.
DIFFOSCOPE = ("diffoscope-minimal", "xz-utils", "zstd")
CROSS_SETUP = "/opt/releng-cross/cross-setup"  # packaging/cross-setup, mounted read-only
CROSS_PARAMS = "/opt/releng-cross/params"  # its parameters
REBUILD_USER = "rebuilder"
REBUILD_UID = 2345  # not the first build's (the invoking user's, or 1000)
LOCALE = "fr_CH.UTF-8"  # not the first build's C.UTF-8
TIMEZONE = "XYZ-14"  # POSIX TZ, 14 hours east of UTC (the first build: UTC); needs no tzdata
UMASK = "0002"  # the first build: 0022
CLOCK_OFFSET = "+398d"  # faketime: the build's clock runs a year and a month later
SOURCE_MOUNT = "/srv/first-build"  # the first build's directory, read-only
OUT_MOUNT = "/srv/rebuilt"  # the rebuild's output
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_POLICY_HEAD = re.compile(r"^(\S+):$")
_POLICY_VERSION = re.compile(r"^\s+(?:\*\*\* )?(\S+) (-?\d+)$")


@dataclass(frozen=True, kw_only=True)
class Variations:
    """What the rebuild varies against the first build, as plain data (recorded in the
    attestation)."""

    build_path: str
    hostname: str
    user: str = f"{REBUILD_USER} ({REBUILD_UID}:{REBUILD_UID})"
    umask: str = UMASK
    timezone: str = TIMEZONE
    locale: str = LOCALE
    clock: str = f"faketime {CLOCK_OFFSET} (SOURCE_DATE_EPOCH and file times kept)"
    deb_build_options: str = ""
    not_varied: tuple[str, ...] = field(
        default=("file order (disorderfs needs FUSE in the container)", "kernel")
    )

    @classmethod
    def fresh(cls, info: BuildInfo, *, cpus: int) -> Variations:
        token = uuid.uuid4().hex[:8]
        first = info.parallel
        parallel = cpus + 1 if first is None or first != cpus + 1 else cpus + 2
        options = [o for o in info.deb_build_options if not o.startswith("parallel=")]
        return cls(
            build_path=f"/home/{REBUILD_USER}/rebuild-{token}/{info.source}-src",
            hostname=f"rebuilder-{token}",
            deb_build_options=" ".join([*options, f"parallel={parallel}"]),
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "buildPath": self.build_path,
            "hostname": self.hostname,
            "user": self.user,
            "umask": self.umask,
            "timezone": self.timezone,
            "locale": self.locale,
            "clock": self.clock,
            "DEB_BUILD_OPTIONS": self.deb_build_options,
            "notVaried": list(self.not_varied),
        }


@dataclass(frozen=True, kw_only=True)
class CrossSetup:
    """What a cross build's rebuilder image adds to the recorded build dependencies.

    dpkg-genbuildinfo records the build machine's packages only: a cross build's
    ``.buildinfo`` names neither the cross toolchain nor the other architecture's
    libraries. The rebuilder installs them the way the first build's cross builder did
    (``packaging/cross-setup``: crossbuild-essential-ARCH and the source package's
    Build-Depends for ARCH, with the cross and nocheck profiles), at the archive's
    versions, and then the recorded versions over them.
    """

    arch: str  # the architecture the packages are for (the build machine's is the host's)
    build_depends: str  # the .dsc's Build-Depends and Build-Depends-Arch, comma-joined
    script: Path  # packaging/cross-setup
    ports_mirror: str = ""  # Ubuntu: a mirror of ubuntu-ports, or empty (none reachable)

    def fingerprint(self) -> dict[str, str]:
        return {
            "arch": self.arch,
            "build_depends": self.build_depends,
            "script": hashlib.sha256(self.script.read_bytes()).hexdigest(),
            "ports_mirror": self.ports_mirror,
        }


def missing_dependencies(policy_output: str, wanted: Sequence[Dependency]) -> list[Dependency]:
    """Which of ``wanted`` ``apt-cache policy``'s output offers at no version table entry."""
    offered: dict[str, set[str]] = {}
    current: str | None = None
    for line in policy_output.splitlines():
        head = _POLICY_HEAD.match(line)
        if head:
            current = head[1]
            offered.setdefault(current, set())
            continue
        version = _POLICY_VERSION.match(line)
        if version and current is not None:
            offered[current].add(version[1])
    missing = []
    for dep in wanted:
        bare = dep.name.split(":")[0]
        versions = offered.get(dep.name, set()) | offered.get(bare, set())
        if dep.version not in versions:
            missing.append(dep)
    return missing


def rebuilder_reference(
    name: str, distro_id: str, base_id: str, info: BuildInfo, cross: CrossSetup | None = None
) -> str:
    inputs: dict[str, object] = {
        "format": REBUILDER_FORMAT,
        "base": base_id,
        "dependencies": [d.apt_spec for d in info.dependencies],
        "tools": list(TOOLS),
        "uid": REBUILD_UID,
        "locale": LOCALE,
    }
    if cross is not None:  # only then: native rebuilder images keep their tags
        inputs["cross"] = cross.fingerprint()
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    flavour = f"-cross-{cross.arch}" if cross is not None else ""
    return f"{REBUILDER_REPOSITORY.format(name=name)}:{distro_id}{flavour}-{digest}"


def _setup_spec(base_id: str, distro_id: str, mounts: Sequence[Mount] = ()) -> ContainerSpec:
    """An idle container of the base image, with network: apt fetches from the archive."""
    return ContainerSpec(
        image=base_id,
        command=["sleep", "infinity"],
        mounts=list(mounts),
        environment={"DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8", "PATH": PATH},
        labels={LABEL_REBUILD: distro_id},
    )


def _exec(container: Container, script: str, *args: str, what: str) -> str:
    result = container.exec(["sh", "-c", script, "rebuilder", *args])
    if result.exit_code != 0:
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        raise RebuildError(
            f"{what} failed (exit {result.exit_code}): {lines[-1] if lines else 'no output'}"
        )
    return result.output


_UPDATE = "apt-get update -q >/tmp/update.log 2>&1 || { cat /tmp/update.log; exit 1; }"
_INSTALL = (
    "apt-get install -y -q --no-install-recommends --allow-downgrades "
    '-o Dpkg::Options::=--force-confdef "$@" >/tmp/install.log 2>&1 '
    "|| { cat /tmp/install.log; exit 1; }"
)
_USER_AND_LOCALE = (
    f"localedef -i {LOCALE.split('.', maxsplit=1)[0]} -c -f UTF-8 {LOCALE} && "
    f"echo '{REBUILD_USER}:x:{REBUILD_UID}:{REBUILD_UID}::/home/{REBUILD_USER}:/bin/sh' "
    ">> /etc/passwd && "
    f"echo '{REBUILD_USER}:x:{REBUILD_UID}:' >> /etc/group && "
    f"mkdir -p /home/{REBUILD_USER} && chown {REBUILD_UID}:{REBUILD_UID} /home/{REBUILD_USER} && "
    "apt-get clean && rm -rf /var/lib/apt/lists/*"
)


def ensure_rebuilder_image(
    engine: Engine,
    *,
    name: str,
    distro_id: str,
    codename: str,
    base_id: str,
    info: BuildInfo,
    record: Callable[[str], None],
    cross: CrossSetup | None = None,
) -> str:
    """The rebuilder image's id (made when missing); RebuildError naming, one line per
    package, what the archive no longer has at the recorded version. ``cross``: the
    rebuilder of a cross build (its toolchain first, see :class:`CrossSetup`)."""
    reference = rebuilder_reference(name, distro_id, base_id, info, cross)
    found = engine.image_id(reference)
    if found is not None:
        record(f"releng: rebuilder image {reference} (reused)")
        return found
    record(f"releng: making the rebuilder image {reference} from the archive")
    with tempfile.TemporaryDirectory(prefix="releng-rebuilder-") as tmp:
        mounts = _cross_mounts(cross, Path(tmp)) if cross is not None else []
        with engine.container(_setup_spec(base_id, distro_id, mounts)) as box:
            box.start()
            return _make_rebuilder(
                box,
                reference,
                distro_id=distro_id,
                codename=codename,
                info=info,
                cross=cross,
                record=record,
            )


def _cross_mounts(cross: CrossSetup, params: Path) -> list[Mount]:
    """cross-setup and its parameters (as the builder's set-up reads them)."""
    params.chmod(0o755)
    (params / "cross-arch").write_text(cross.arch + "\n")
    (params / "build-depends").write_text(cross.build_depends + "\n")
    (params / "ports-mirror").write_text(cross.ports_mirror)
    return [Mount(cross.script, CROSS_SETUP), Mount(params, CROSS_PARAMS)]


def _make_rebuilder(
    box: Container,
    reference: str,
    *,
    distro_id: str,
    codename: str,
    info: BuildInfo,
    cross: CrossSetup | None,
    record: Callable[[str], None],
) -> str:
    if cross is None:
        _exec(box, _UPDATE, what="apt-get update in the base image")
    else:
        record(f"releng: the cross toolchain for {cross.arch} (packaging/cross-setup)")
        _exec(
            box,
            f"sh {CROSS_SETUP} {CROSS_PARAMS} >/tmp/cross.log 2>&1 || {{ cat /tmp/cross.log; exit 1; }}",
            what=f"installing the cross toolchain for {cross.arch}",
        )
    names = sorted({d.name for d in info.dependencies})
    policy = box.exec(["apt-cache", "policy", *names]).output
    missing = missing_dependencies(policy, info.dependencies)
    if missing:
        lines = [f"cannot rebuild: {d} is no longer in {codename}" for d in missing]
        raise RebuildError("\n".join(lines))
    specs = [d.apt_spec for d in info.dependencies]
    _exec(box, _INSTALL, *specs, *TOOLS, what="installing the recorded build dependencies")
    _exec(box, _USER_AND_LOCALE, what="making the rebuild user and locale")
    repository, tag = reference.rsplit(":", 1)
    return box.commit(repository, tag, changes=[f"LABEL {LABEL_REBUILD}={distro_id}"])


def ensure_diffoscope_image(engine: Engine, *, name: str, distro_id: str, base_id: str) -> str:
    """The distro's base image with diffoscope from its archive (made when missing)."""
    digest = hashlib.sha256(f"{base_id} {' '.join(DIFFOSCOPE)}".encode()).hexdigest()[:16]
    reference = f"{REBUILDER_REPOSITORY.format(name=name)}:{distro_id}-diffoscope-{digest}"
    found = engine.image_id(reference)
    if found is not None:
        return found
    with engine.container(_setup_spec(base_id, distro_id)) as box:
        box.start()
        _exec(box, _UPDATE, what="apt-get update in the base image")
        _exec(box, _INSTALL, *DIFFOSCOPE, what="installing diffoscope from the archive")
        _exec(box, "apt-get clean && rm -rf /var/lib/apt/lists/*", what="apt-get clean")
        repository, tag = reference.rsplit(":", 1)
        return box.commit(repository, tag)


# The varied build: the first build's source package, unpacked afresh and built binary-only.
_BUILD = """set -eu
umask "$REBUILD_UMASK"
mkdir -p "$(dirname "$REBUILD_PATH")"
echo ">>> rebuild of $DSC in $REBUILD_PATH as $(id -un) on $(hostname), umask $(umask), TZ=$TZ"
dpkg-source -x "$SOURCE/$DSC" "$REBUILD_PATH"
cd "$REBUILD_PATH"
echo ">>> dpkg-buildpackage $DPKG_BUILDPACKAGE_ARGS under faketime $CLOCK_OFFSET"
# Only the clock runs later: NO_FAKE_STAT keeps libfaketime from adding the offset to the
# times stat() reports, which a later machine would not do (gzip, cp -p and tar would copy
# the shifted times into the package: NEWS.gz 398 days newer than the file it compresses).
# shellcheck disable=SC2086  (word splitting is the point)
NO_FAKE_STAT=1 FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f "$CLOCK_OFFSET" \
  dpkg-buildpackage -us -uc $DPKG_BUILDPACKAGE_ARGS
cd ..
for f in ./*.deb ./*.udeb ./*.ddeb ./*.buildinfo; do [ -e "$f" ] && cp "$f" "$OUT/"; done
echo ">>> rebuilt: $(cd "$OUT" && ls)"
"""


def rebuild_spec(
    image_id: str,
    *,
    first_dir: Path,
    out: Path,
    dsc: str,
    info: BuildInfo,
    variations: Variations,
    dpkg_buildpackage_args: str,
    distro_id: str,
) -> ContainerSpec:
    environment = {
        "PATH": PATH,
        "HOME": f"/home/{REBUILD_USER}",
        "USER": REBUILD_USER,
        "LOGNAME": REBUILD_USER,
        "LANG": LOCALE,
        "LC_ALL": LOCALE,
        "LANGUAGE": "fr_CH:fr",
        "TZ": TIMEZONE,
        "DEB_BUILD_OPTIONS": variations.deb_build_options,
        "REBUILD_UMASK": UMASK,
        "REBUILD_PATH": variations.build_path,
        "CLOCK_OFFSET": CLOCK_OFFSET,
        "SOURCE": SOURCE_MOUNT,
        "OUT": OUT_MOUNT,
        "DSC": dsc,
        "DPKG_BUILDPACKAGE_ARGS": dpkg_buildpackage_args,
    }
    for key in ("SOURCE_DATE_EPOCH", "DEB_BUILD_PROFILES"):
        if key in info.environment:
            environment[key] = info.environment[key]
    return ContainerSpec(
        image=image_id,
        command=["sh", "-c", _BUILD],
        mounts=[Mount(first_dir, SOURCE_MOUNT), Mount(out, OUT_MOUNT, read_only=False)],
        environment=environment,
        network="none",
        user=f"{REBUILD_UID}:{REBUILD_UID}",
        workdir=f"/home/{REBUILD_USER}",
        hostname=variations.hostname,
        labels={LABEL_REBUILD: distro_id},
    )


def run_diffoscope(
    engine: Engine,
    image_id: str,
    *,
    first: Path,
    rebuilt: Path,
    reports: Path,
    distro_id: str,
) -> str:
    """diffoscope on two files (no network); writes ``<name>.diffoscope.txt`` and ``.html``
    into ``reports``; returns the text report."""
    stem = first.name
    spec = ContainerSpec(
        image=image_id,
        command=[
            "diffoscope",
            "--text",
            f"/srv/reports/{stem}.diffoscope.txt",
            "--html",
            f"/srv/reports/{stem}.diffoscope.html",
            f"/srv/first/{first.name}",
            f"/srv/rebuilt/{rebuilt.name}",
        ],
        mounts=[
            Mount(first.parent, "/srv/first"),
            Mount(rebuilt.parent, "/srv/rebuilt"),
            Mount(reports, "/srv/reports", read_only=False),
        ],
        environment={"PATH": PATH, "LANG": "C.UTF-8"},
        network="none",
        labels={LABEL_REBUILD: distro_id},
    )
    log.info("%s", shlex.join(spec.command))
    result = engine.run_spec(spec)
    if result.exit_code not in (0, 1):
        raise RebuildError(
            f"diffoscope failed on {first.name} (exit {result.exit_code}): "
            f"{(result.output.strip().splitlines() or ['no output'])[-1]}"
        )
    text = reports / f"{stem}.diffoscope.txt"
    return text.read_text(encoding="utf-8", errors="replace") if text.exists() else ""
