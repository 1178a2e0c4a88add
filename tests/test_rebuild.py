"""verify-rebuild: the demo rebuilt from its .dsc by a second, varied builder; attestations
against the in-toto and SLSA schemas; a planted non-determinism caught and explained."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from releng.build import make_package
from releng.config import parse_product
from releng.engine import Engine
from releng.errors import ConfigError
from releng.gpg import Signer
from releng.project import Project
from releng.publish.location import RepoLocation, update_repos
from releng.rebuild import RebuildError, RebuildMismatch, plan_rebuild, verify_rebuild
from releng.rebuild.buildinfo import parse_dependencies, read_buildinfo
from releng.rebuild.check import verify_signature
from releng.rebuild.compare import first_difference
from releng.rebuild.container import missing_dependencies
from releng.rebuild.policy import RebuildRequired, check_rebuild_policy
from releng.version import Version
from tests.fixtures.gpg import make_key
from tests.fixtures.project import copy_repo, git
from tests.rebuild_helpers import BOOKWORM, Rebuilt, copy_build, rebuild, rebuilder_key

DATA = Path(__file__).parent / "data" / "rebuild"

# -- pure parts -----------------------------------------------------------------------------


def test_installed_build_depends_are_read_with_epochs_and_architectures() -> None:
    deps = parse_dependencies(
        " automake (= 1:1.16.5-1.3),\n libc6:arm64 (= 2.36-9+deb12u4),\n zlib1g (= 1:1.2.13)",
        where="x.buildinfo",
    )
    assert [d.apt_spec for d in deps] == [
        "automake=1:1.16.5-1.3",
        "libc6:arm64=2.36-9+deb12u4",
        "zlib1g=1:1.2.13",
    ]
    with pytest.raises(RebuildError, match="not 'name \\(= version\\)'"):
        parse_dependencies(" make (>= 4)", where="x.buildinfo")


def test_each_version_the_archive_no_longer_has_is_named() -> None:
    deps = parse_dependencies(
        " make (= 4.3-4.1), libfoo (= 1.2-3), gcc (= 4:12.2.0-3)", where="x.buildinfo"
    )
    policy = """make:
  Installed: (none)
  Candidate: 4.3-4.1
  Version table:
     4.3-4.1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
gcc:
  Installed: (none)
  Candidate: 4:12.2.0-3
  Version table:
     4:12.2.0-4 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
"""
    assert [str(d) for d in missing_dependencies(policy, deps)] == [
        "libfoo 1.2-3",
        "gcc 4:12.2.0-3",
    ]


def test_the_first_differing_file_is_read_from_diffoscope() -> None:
    text = """--- /srv/first/tally_1_amd64.deb
+++ /srv/rebuilt/tally_1_amd64.deb
├── file list
│ @@ -1,3 +1,3 @@
├── control.tar.xz
│ ├── control.tar
│ │ ├── ./md5sums
│ │ │ @@ -1 +1 @@
├── data.tar.xz
│ ├── data.tar
│ │ ├── file list
│ │ │ @@ -1,3 +1,3 @@
│ │ ├── ./usr/share/tally/build-host
│ │ │ @@ -1 +1 @@
"""
    assert first_difference(text) == "usr/share/tally/build-host"
    only_metadata = """├── data.tar.xz
│ ├── data.tar
│ │ ├── file list
│ │ │ @@ -1,3 +1,3 @@
│ │ │ --rw-r--r--   0 root         (0) root         (0)        4 2026-01-01 00:00:00.000000 ./usr/bin/x
│ │ │ +-rw-rw-r--   0 root         (0) root         (0)        4 2026-01-01 00:00:00.000000 ./usr/bin/x
"""
    assert first_difference(only_metadata) == "usr/bin/x"


def test_verify_section_takes_three_modes_only() -> None:
    cfg = parse_product('[verify]\nrebuild = "require"\n', path=None, where="product.toml")
    assert cfg.verify.rebuild == "require"
    assert parse_product("", path=None, where="product.toml").verify.rebuild == "off"
    with pytest.raises(ConfigError, match=r"\[verify\] rebuild = 'always' is not allowed"):
        parse_product('[verify]\nrebuild = "always"\n', path=None, where="product.toml")


def test_a_missing_or_foreign_build_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(RebuildError, match=r"no finished build in .* run invoke make-package"):
        plan_rebuild(tmp_path, distro_id=BOOKWORM, codename="bookworm", arch="amd64")
    (tmp_path / "build.json").write_text('{"architecture": "amd64"}')
    with pytest.raises(
        RebuildError, match=r"no finished arm64 build .* make-package .* --arch arm64"
    ):
        plan_rebuild(tmp_path, distro_id=BOOKWORM, codename="bookworm", arch="arm64")
    (tmp_path / "build-arm64.json").write_text(
        '{"architecture": "arm64", "build_mode": "emulated"}'
    )
    with pytest.raises(RebuildError, match=r"arm64 packages built emulated .* not supported yet"):
        plan_rebuild(tmp_path, distro_id=BOOKWORM, codename="bookworm", arch="arm64")


# -- the demo, rebuilt -----------------------------------------------------------------------


# rebuilt_demo: tests/fixtures/rebuild.py (one per session, shared with other modules)


@pytest.mark.docker
@pytest.mark.slow
def test_demo_is_reproduced_byte_for_byte_under_the_variations(rebuilt_demo: Rebuilt) -> None:
    result = rebuilt_demo.result
    debs = sorted(p.name for p in rebuilt_demo.build_dir.glob("*.deb"))
    assert debs and sorted(c.name for c in result.comparisons) == debs
    assert result.reproduced
    out = rebuilt_demo.build_dir / "rebuild"
    summary = json.loads((out / "rebuild.json").read_text())
    assert summary["result"] == "reproduced"
    # The second build really ran elsewhere: its own path, host, user, umask, zone, clock.
    log = (out / "rebuild.log").read_text()
    assert "as rebuilder on rebuilder-" in log
    assert "umask 0002, TZ=XYZ-14" in log
    assert "under faketime +398d" in log
    first = read_buildinfo(next(rebuilt_demo.build_dir.glob("*_amd64.buildinfo")))
    second = read_buildinfo(next(out.glob("rebuilt-*.buildinfo")))
    assert first.build_path != second.build_path
    assert first.parallel != second.parallel
    assert first.environment["SOURCE_DATE_EPOCH"] == second.environment["SOURCE_DATE_EPOCH"]
    # Installed from the archive at the recorded versions: the same build environment.
    assert first.dependencies == second.dependencies


@pytest.mark.docker
@pytest.mark.slow
def test_demo_is_reproduced_on_noble(
    engine: Engine, demo_build: Callable[..., Path], tmp_path: Path
) -> None:
    noble = "ubuntu-24.04-noble"
    rebuilt = rebuild(engine, demo_build(noble, "1.0.0"), tmp_path, distro_id=noble)
    names = {c.name for c in rebuilt.result.comparisons}
    assert any(n.endswith(".ddeb") for n in names)  # Ubuntu's debug packages compared too
    assert rebuilt.result.reproduced
    assert len(rebuilt.result.attestations) == len(names)


@pytest.mark.docker
@pytest.mark.slow
def test_attestation_validates_against_in_toto_and_slsa_and_is_signed(
    rebuilt_demo: Rebuilt,
) -> None:
    statement_schema = json.loads((DATA / "intoto-statement-v1.schema.json").read_text())
    provenance_schema = json.loads((DATA / "slsa-provenance-v1.schema.json").read_text())
    build_dir = rebuilt_demo.build_dir
    for deb in build_dir.glob("*.deb"):
        path = build_dir / "rebuild" / "attestations" / f"{deb.name}.intoto.json"
        raw = path.read_bytes()
        data = json.loads(raw)
        jsonschema.validate(data, statement_schema)
        assert data["predicateType"] == "https://slsa.dev/provenance/v1"
        jsonschema.validate(data["predicate"], provenance_schema)
        from releng.digest import file_sha256

        assert data["subject"] == [{"name": deb.name, "digest": {"sha256": file_sha256(deb)}}]
        deps = {d["name"]: d for d in data["predicate"]["buildDefinition"]["resolvedDependencies"]}
        for name in [p.name for p in build_dir.glob("*.dsc")] + [
            p.name for p in build_dir.glob("*.buildinfo")
        ]:
            assert deps[name]["digest"]["sha256"] == file_sha256(build_dir / name)
        assert any(n.endswith(".orig.tar.gz") for n in deps)
        roles = {d.get("annotations", {}).get("role") for d in deps.values()}
        assert {"first builder image", "rebuilder image", "rebuilder base image"} <= roles
        internal = data["predicate"]["buildDefinition"]["internalParameters"]
        assert internal["result"] == "reproduced"
        builder = data["predicate"]["runDetails"]["builder"]["id"]
        assert rebuilt_demo.signer.fingerprint in builder
        assert internal["firstBuilder"]["id"] != builder
        keyring = rebuilt_demo.key.public_keyring(build_dir.parent / "rebuilder.gpg")
        fingerprint, uid, _ = verify_signature(
            raw, path.with_name(path.name + ".asc").read_bytes(), keyring
        )
        assert fingerprint == rebuilt_demo.signer.fingerprint
        assert "releng test rebuilder" in uid
    # The schemas can fail: a statement without a digest in its subject does not validate.
    broken = json.loads(next((build_dir / "rebuild" / "attestations").glob("*.json")).read_text())
    del broken["subject"][0]["digest"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, statement_schema)


@pytest.mark.docker
@pytest.mark.slow
def test_policy_follows_the_rebuild(rebuilt_demo: Rebuilt, tmp_path: Path) -> None:
    assert check_rebuild_policy("require", [rebuilt_demo.build_dir]) == []
    unverified = copy_build(rebuilt_demo.build_dir, tmp_path)
    shutil.rmtree(unverified / "rebuild")
    assert check_rebuild_policy("off", [unverified]) == []
    lines = check_rebuild_policy("report", [unverified])
    assert lines and all(ln.startswith("unverified: 1.0.0/debian-12-bookworm/") for ln in lines)
    with pytest.raises(RebuildRequired, match="has no matching rebuild"):
        check_rebuild_policy("require", [unverified])


@pytest.mark.docker
@pytest.mark.slow
def test_a_build_dependency_gone_from_the_archive_is_one_line_each(
    engine: Engine, rebuilt_demo: Rebuilt, tmp_path: Path
) -> None:
    build_dir = copy_build(rebuilt_demo.build_dir, tmp_path)
    info = next(build_dir.glob("*_amd64.buildinfo"))
    text = info.read_text()
    text = text.replace(
        "Installed-Build-Depends:\n",
        "Installed-Build-Depends:\n libfoo (= 1.2-3),\n make (= 0.1-1),\n",
    )
    info.write_text(text)
    plan = plan_rebuild(build_dir, distro_id=BOOKWORM, codename="bookworm", arch="amd64")
    with pytest.raises(RebuildError) as caught:
        verify_rebuild(engine, rebuilt_demo.project, plan, signer=rebuilt_demo.signer)
    assert str(caught.value).splitlines() == [
        "cannot rebuild: libfoo 1.2-3 is no longer in bookworm",
        "cannot rebuild: make 0.1-1 is no longer in bookworm",
    ]
    assert not list(build_dir.glob(".tmp-rebuild-*"))  # nothing half-written is left


PLANTED = """
execute_after_dh_auto_install:
\tpkg=$$(dh_listpackages | head -n 1); mkdir -p debian/$$pkg/usr/share/$$pkg; \\
\t  uname -n > debian/$$pkg/usr/share/$$pkg/build-host
"""


@pytest.mark.docker
@pytest.mark.slow
def test_a_build_that_embeds_the_hostname_is_caught_and_explained(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    base_image(BOOKWORM)
    root = copy_repo(tmp_path / "repo")
    rules = root / "distros" / BOOKWORM / "debian" / "rules"
    rules.write_text(rules.read_text() + PLANTED)
    git(root, "commit", "-q", "-am", "plant a non-determinism: the build host's name")
    project = Project.load(root)
    first = make_package(
        engine, project, BOOKWORM, Version.parse("2026.11.20"), env={"PATH": "/usr/bin:/bin"}
    )
    _, signer = rebuilder_key(tmp_path)
    plan = plan_rebuild(first.out_dir, distro_id=BOOKWORM, codename="bookworm", arch="amd64")
    with pytest.raises(RebuildMismatch) as caught:
        verify_rebuild(engine, project, plan, signer=signer)
    message = str(caught.value)
    assert "tally-nightly_2026.11.20-1~deb12u1_amd64.deb" in message
    assert "first difference in usr/share/tally-nightly/build-host" in message
    out = first.out_dir / "rebuild"
    deb = "tally-nightly_2026.11.20-1~deb12u1_amd64.deb"
    text = (out / f"{deb}.diffoscope.txt").read_text()
    assert "build-host" in text
    assert "build-host" in (out / f"{deb}.diffoscope.html").read_text()
    assert (out / "rebuilt" / deb).is_file()
    assert not (out / "attestations").exists()
    assert json.loads((out / "rebuild.json").read_text())["result"] == "differs"
    with pytest.raises(RebuildRequired):
        check_rebuild_policy("require", [first.out_dir])
    # ... and update-repos under "require" publishes nothing of it.
    product = root / "product.toml"
    product.write_text(product.read_text() + '\n[verify]\nrebuild = "require"\n')
    archive = make_key(tmp_path / "archive", name="releng test archive", passphrase=None)
    www = tmp_path / "www"
    with pytest.raises(RebuildRequired, match=rf"^2026\.11\.20/{BOOKWORM} has no matching"):
        update_repos(
            Project.load(root),
            Signer(gnupghome=archive.home, key=archive.fingerprint, passphrase=None),
            version=Version.parse("2026.11.20"),
            location=RepoLocation(path=www),
        )
    assert not www.exists()


# reprotest's own variations but those a container cannot make: another user (needs sudo
# and a second account), another host and domain name (needs unshare), file order
# (disorderfs needs FUSE). setarch (kernel, aslr) needs the personality syscall, which
# the engine's default seccomp profile refuses: this one container runs unconfined.
REPROTEST = (
    "apt-get update -q >/dev/null && "
    "apt-get install -y -q --no-install-recommends reprotest >/tmp/install.log 2>&1 "
    "|| { cat /tmp/install.log; exit 2; }; "
    'cd /tmp && reprotest --vary=-user_group,-domain_host,-fileordering --store-dir=/srv/store "$1" '
    "-- null"
)


@pytest.mark.docker
@pytest.mark.slow
def test_reprotest_agrees_with_verify_rebuild(
    engine: Engine, rebuilt_demo: Rebuilt, tmp_path: Path
) -> None:
    from releng.engine import ContainerSpec, Mount
    from releng.rebuild.container import rebuilder_reference

    build_dir = rebuilt_demo.build_dir
    info = read_buildinfo(next(build_dir.glob("*_amd64.buildinfo")))
    distro = rebuilt_demo.project.distro(BOOKWORM)
    base_id = engine.image_id(distro.docker_base)
    assert base_id is not None
    image = rebuilder_reference(rebuilt_demo.project.name, BOOKWORM, base_id, info)
    store = tmp_path / "store"
    store.mkdir()
    dsc = next(build_dir.glob("*.dsc")).name
    result = engine.run_spec(
        ContainerSpec(
            image=image,
            command=["sh", "-c", REPROTEST, "reprotest", f"/srv/first/{dsc}"],
            mounts=[Mount(build_dir, "/srv/first"), Mount(store, "/srv/store", read_only=False)],
            environment={
                "DEBIAN_FRONTEND": "noninteractive",
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            },
            security_opt=["seccomp=unconfined"],
        )
    )
    assert result.exit_code == 0, result.output[-3000:]
    assert "No differences in ./*.*deb" in result.output
    sums = dict(
        reversed(ln.split()) for ln in (store / "SHA256SUMS").read_text().splitlines() if ln
    )
    ours = {f"./{c.name}": c.first_sha256 for c in rebuilt_demo.result.comparisons}
    assert sums == ours  # reprotest's builds made the first build's packages, as verify-rebuild did


# -- the acceptance corpus: an arm64 cross build, files older than SOURCE_DATE_EPOCH ----------

# A documentation file dated before SOURCE_DATE_EPOCH, large enough for dh_compress: gzip
# copies its date onto the .gz, and dpkg-deb keeps a date older than SOURCE_DATE_EPOCH.
OLD_DOC = """
execute_after_dh_auto_install:
\tpkg=$$(dh_listpackages -a | head -n 1); mkdir -p debian/$$pkg/usr/share/doc/$$pkg; \\
\t  seq 1 2000 > debian/$$pkg/usr/share/doc/$$pkg/NUMBERS; \\
\t  touch -d 2001-02-03T04:05:06Z debian/$$pkg/usr/share/doc/$$pkg/NUMBERS
"""


@pytest.mark.docker
@pytest.mark.slow
def test_an_arm64_cross_build_is_verified_by_a_cross_rebuild(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    """The demo cross-built for arm64 on this amd64 host (no emulation: no smoke test) is
    rebuilt as a cross build and reproduced byte for byte. Its package carries a file dated
    2001: the rebuild's later clock must not move file dates (libfaketime adds its offset
    to what stat() reports unless told not to, and gzip copies that date)."""
    import subprocess

    base_image(BOOKWORM)
    root = copy_repo(tmp_path / "repo")
    product = root / "product.toml"
    product.write_text(
        product.read_text().replace(
            'architectures = ["amd64"]', 'architectures = ["amd64", "arm64"]', 1
        )
    )
    rules = root / "distros" / BOOKWORM / "debian" / "rules"
    rules.write_text(rules.read_text() + OLD_DOC)
    git(root, "commit", "-q", "-am", "amd64 and arm64; a documentation file from 2001")
    project = Project.load(root)
    version, env = Version.parse("2026.11.20"), {"PATH": "/usr/bin:/bin"}  # a nightly
    make_package(engine, project, BOOKWORM, version, env=env)  # the source package
    first = make_package(
        engine, project, BOOKWORM, version, env=env, arch="arm64", mode="cross", smoke_test=False
    )
    _, signer = rebuilder_key(tmp_path)
    plan = plan_rebuild(first.out_dir, distro_id=BOOKWORM, codename="bookworm", arch="arm64")
    assert plan.cross and plan.dpkg_buildpackage_args == "-B --host-arch=arm64"
    result = verify_rebuild(engine, project, plan, signer=signer)

    arm64 = sorted(p.name for p in first.out_dir.glob("*_arm64.deb"))
    assert arm64 and sorted(c.name for c in result.comparisons) == arm64
    assert result.reproduced, [c.name for c in result.comparisons if not c.identical]
    deb = next(n for n in arm64 if "-dbgsym_" not in n)
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(first.out_dir / deb)],
        check=True,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "TZ": "UTC"},
    ).stdout
    package = deb.split("_")[0]
    assert f"2001-02-03 04:05 ./usr/share/doc/{package}/NUMBERS.gz" in listing, listing
    out = first.out_dir / "rebuild"
    assert "dpkg-buildpackage -B --host-arch=arm64" in (out / "rebuild.log").read_text()
    rebuilt = read_buildinfo(next(out.glob("rebuilt-*_arm64.buildinfo")))
    assert (rebuilt.build_architecture, rebuilt.architectures) == ("amd64", ("arm64",))
    assert rebuilt.environment["DEB_BUILD_PROFILES"] == "cross nocheck"
    for name in arm64:
        data = json.loads((out / "attestations" / f"{name}.intoto.json").read_text())
        definition = data["predicate"]["buildDefinition"]
        assert definition["externalParameters"]["architecture"] == "arm64"
        assert "crossbuild-essential-arm64" in definition["internalParameters"]["crossToolchain"]
    # The amd64 build beside it was not rebuilt: the policy says so of its packages only.
    lines = check_rebuild_policy("report", [first.out_dir])
    assert lines and all(ln.endswith("_amd64.deb") for ln in lines), lines


# A build that refuses the rebuilder's host name (rebuilder-<random>).
FAILS_UNDER_VARIATIONS = """
execute_before_dh_auto_build:
\tcase "$$(uname -n)" in rebuilder-*) echo "planted: refusing host $$(uname -n)"; exit 1;; esac
"""


@pytest.mark.docker
@pytest.mark.slow
def test_a_rebuild_that_fails_keeps_its_log(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    base_image(BOOKWORM)
    root = copy_repo(tmp_path / "repo")
    rules = root / "distros" / BOOKWORM / "debian" / "rules"
    rules.write_text(rules.read_text() + FAILS_UNDER_VARIATIONS)
    git(root, "commit", "-q", "-am", "plant a build that fails on the rebuilder's host")
    project = Project.load(root)
    first = make_package(
        engine, project, BOOKWORM, Version.parse("2026.11.20"), env={"PATH": "/usr/bin:/bin"}
    )
    _, signer = rebuilder_key(tmp_path)
    plan = plan_rebuild(first.out_dir, distro_id=BOOKWORM, codename="bookworm", arch="amd64")
    with pytest.raises(RebuildError) as caught:
        verify_rebuild(engine, project, plan, signer=signer)
    out = first.out_dir / "rebuild"
    message = str(caught.value)
    assert "\n" not in message
    assert "either the build does not survive the variations or a step of it is flaky" in message
    assert message.endswith(f"its log is {out / 'rebuild.log'}")
    assert "planted: refusing host rebuilder-" in (out / "rebuild.log").read_text()
    assert json.loads((out / "rebuild.json").read_text())["result"] == "failed"
    assert not list(first.out_dir.glob(".tmp-rebuild-*"))
    with pytest.raises(RebuildRequired):
        check_rebuild_policy("require", [first.out_dir])


# A compile by absolute path, as CMake writes them, of a file that records __FILE__ (as
# LevelDB's do): the first build runs with the compiler cache (the default), the rebuild
# without. ccache's base_dir made such paths relative (__FILE__ "where.c", "../../util/
# arena.cc" in LevelDB) where an uncached build has -ffile-prefix-map's "./where.c".
ABSOLUTE_COMPILE = """
execute_after_dh_auto_install:
\tpkg=$$(dh_listpackages -a | head -n 1); mkdir -p debian/$$pkg/usr/share/$$pkg; \\
\t  printf 'const char *where = __FILE__;\\n' > where.c; \\
\t  cc $$(dpkg-buildflags --get CFLAGS) -c $(CURDIR)/where.c -o debian/$$pkg/usr/share/$$pkg/where.o
"""


@pytest.mark.docker
@pytest.mark.slow
def test_a_build_with_the_compiler_cache_is_reproduced_without_it(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    import subprocess

    base_image(BOOKWORM)
    root = copy_repo(tmp_path / "repo")
    rules = root / "distros" / BOOKWORM / "debian" / "rules"
    rules.write_text(rules.read_text() + ABSOLUTE_COMPILE)
    git(root, "commit", "-q", "-am", "compile a file by its absolute path; it records __FILE__")
    project = Project.load(root)
    first = make_package(
        engine, project, BOOKWORM, Version.parse("2026.11.20"), env={"PATH": "/usr/bin:/bin"}
    )
    log = (first.out_dir / "build.log").read_text()
    assert "compiler cache: off" not in log and "compiler cache:" in log  # the cache was on
    deb = next(p for p in first.out_dir.glob("*_amd64.deb") if "-dbgsym_" not in p.name)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "x")], check=True)
    (obj,) = (tmp_path / "x").glob("usr/share/*/where.o")
    assert b"./where.c\0" in obj.read_bytes()  # -ffile-prefix-map's, as without the cache
    _, signer = rebuilder_key(tmp_path)
    plan = plan_rebuild(first.out_dir, distro_id=BOOKWORM, codename="bookworm", arch="amd64")
    result = verify_rebuild(engine, project, plan, signer=signer)
    assert result.reproduced
