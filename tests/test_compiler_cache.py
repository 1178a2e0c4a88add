"""The compiler cache (ccache) of C++ builds: identical .debs, hit rates, S3, broken volumes."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from releng import compiler_cache
from releng.build import BUILD_JSON, BuildResult, make_package
from releng.compiler_cache import (
    CACHE_MOUNT,
    CompilerCache,
    S3Location,
    cache_clear,
    cache_stats,
    ensure_volume,
    iam_statements,
    plan_cache,
)
from releng.config import parse_product
from releng.engine import ContainerSpec, Engine, Mount
from releng.errors import ConfigError
from releng.images import ensure_builder_image
from releng.project import Project
from releng.version import Version
from tests.fixtures.moto import MotoServer
from tests.fixtures.project import copy_repo, git

BOOKWORM = "debian-12-bookworm"
NIGHTLY = Version.parse("2026.11.20")
UNITS = 12  # translation units of the generated C++ program
HIT_RATE = re.compile(r"^releng: compiler cache: (\d+) of (\d+) compilations were hits")


# -- configuration (no engine) ------------------------------------------------------------------


def test_cache_settings_are_validated() -> None:
    cfg = parse_product("", path=None, where="product.toml")
    assert (cfg.build.compiler_cache, cfg.build.cache_size) == ("local", "5G")
    for text, expected in (
        ('[build]\ncache_size = "lots"', "cache_size = 'lots' is not a size"),
        ('[build]\ncompiler_cache = "on"', "expected one of 'off', 'local', 's3'"),
        ('[build]\ncompiler_cache = "s3"', "needs a bucket"),
        ('[build]\ncache_url = "http://x/y"', "is not an S3 URL"),
    ):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            parse_product(text, path=None, where="product.toml")
    s3 = parse_product(
        '[build]\ncompiler_cache = "s3"\n[publish]\nscratch_bucket = "scratch"',
        path=None,
        where="product.toml",
    )
    assert s3.build.compiler_cache == "s3"


def test_the_s3_credential_reaches_only_the_cache_prefix() -> None:
    location = S3Location.parse("s3://scratch/compiler-cache")
    statements = iam_statements(location)
    resources = {s["Resource"] for s in statements}
    assert resources == {"arn:aws:s3:::scratch", "arn:aws:s3:::scratch/compiler-cache/*"}
    listing = next(s for s in statements if s["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["compiler-cache/*"]}}
    assert not any("Delete" in str(s["Action"]) for s in statements)


def test_the_plan_mounts_one_volume_per_distro_and_arch_and_wraps_the_builder(
    make_project: Callable[..., Project],
) -> None:
    project = make_project('[build]\ncache_size = "500M"\n')
    distro = project.distro(BOOKWORM)
    cache = plan_cache(project, distro, arch="arm64")
    assert cache.volumes() == {
        f"{compiler_cache.VOLUME_PREFIX}-tally-{BOOKWORM}-arm64": CACHE_MOUNT
    }
    assert cache.environment() == {"CCACHE_DIR": CACHE_MOUNT, "CCACHE_MAXSIZE": "500M"}
    assert cache.command(["sh", "b"], "/opt/p") == [
        "sh",
        "/opt/p/packaging/with-compiler-cache",
        "sh",
        "b",
    ]
    off = plan_cache(project, distro, no_cache=True)
    assert (off.volumes(), off.environment(), off.command(["b"], "/opt/p")) == ({}, {}, ["b"])
    assert off.describe() == "off (--no-cache)"


# -- a C++ product ------------------------------------------------------------------------------


def _cxx_sources(root: Path) -> None:
    """A small C++ program of UNITS translation units that counts distinct words."""
    src = root / "src"
    src.mkdir(parents=True)
    names = [f"unit{i:02d}" for i in range(UNITS - 1)]
    for i, name in enumerate(names):
        (src / f"{name}.cpp").write_text(
            "#include <map>\n#include <string>\n#include <vector>\n"
            f"int {name}(const std::vector<std::string>& words) {{\n"
            "    std::map<std::string, int> seen;\n"
            "    for (const auto& w : words) seen[w] += 1;\n"
            f"    return static_cast<int>(seen.size()) * {i + 1} - {i} * static_cast<int>(seen.size());\n"
            "}\n"
        )
    decls = "".join(f"int {n}(const std::vector<std::string>&);\n" for n in names)
    (src / "main.cpp").write_text(
        "#include <iostream>\n#include <iterator>\n#include <string>\n#include <vector>\n"
        + decls
        + "int main() {\n"
        "    std::vector<std::string> words{std::istream_iterator<std::string>(std::cin), {}};\n"
        f"    std::cout << {names[-1]}(words) + static_cast<int>(words.size()) * 0 << '\\n';\n"
        "}\n"
    )
    objs = " ".join(f"src/{n}.o" for n in [*names, "main"])
    (root / "Makefile").write_text(
        "PREFIX ?= /usr\n"
        f"OBJS = {objs}\n"
        "all: tally\n"
        "tally: $(OBJS)\n\t$(CXX) $(CXXFLAGS) $(LDFLAGS) -o $@ $(OBJS)\n"
        "%.o: %.cpp\n\t$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c -o $@ $<\n"
        'check: tally\n\ttest "$$(echo one two one | ./tally)" = 2\n'
        "install: tally\n\tinstall -D -m 0755 tally $(DESTDIR)$(PREFIX)/bin/tally\n"
        "clean:\n\trm -f tally src/*.o\n"
        ".PHONY: all check install clean\n"
    )


def cxx_project(base: Path, build_section: str) -> Project:
    """A repository copy whose product is a C++ program (nightlies only). It keeps the
    demo's name and packaging, so the demo's builder image serves it."""
    root = copy_repo(base / "repo")
    source = root / "demo" / "tally"
    (source / "tally.c").unlink()
    _cxx_sources(source)
    (root / "product.toml").write_text(build_section)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a C++ product")
    return Project.load(root)


def debs(result: BuildResult) -> dict[str, str]:
    import json

    meta = json.loads((result.out_dir / BUILD_JSON).read_text())
    return {f: meta["sha256"][f] for f in meta["files"] if f.endswith(".deb")}


def log_lines(result: BuildResult) -> list[str]:
    return (result.out_dir / "build.log").read_text().splitlines()


def hit_rate(result: BuildResult) -> tuple[int, int]:
    match = HIT_RATE.match(log_lines(result)[-1])
    assert match, f"the build log does not end with the hit rate: {log_lines(result)[-1]!r}"
    return int(match.group(1)), int(match.group(2))


@pytest.fixture
def volumes_removed(engine: Engine) -> Iterator[list[Project]]:
    """Projects whose compiler cache volumes are removed before and after the test."""
    projects: list[Project] = []
    yield projects
    for project in projects:
        cache_clear(engine, project)


def _env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], **extra}


@pytest.mark.docker
@pytest.mark.slow
def test_a_warm_cache_builds_the_same_debs_as_no_cache(
    engine: Engine,
    base_image: Callable[[str], str],
    tmp_path: Path,
    volumes_removed: list[Project],
) -> None:
    base_image(BOOKWORM)
    project = cxx_project(tmp_path, "")
    volumes_removed.append(project)
    cache_clear(engine, project)

    off = make_package(engine, project, BOOKWORM, NIGHTLY, env=_env(), no_cache=True)
    assert log_lines(off)[-1] == "releng: compiler cache: off (--no-cache)"
    assert not any("/usr/lib/ccache" in ln for ln in log_lines(off))

    cold = make_package(engine, project, BOOKWORM, NIGHTLY, env=_env(), force=True)
    hits, total = hit_rate(cold)
    assert (hits, total) == (0, UNITS)
    warm = make_package(engine, project, BOOKWORM, NIGHTLY, env=_env(), force=True)
    assert hit_rate(warm) == (UNITS, UNITS)
    assert log_lines(warm)[-1].endswith("; limit 5.0G")  # [build] cache_size reached ccache

    assert debs(off) == debs(cold) == debs(warm)
    assert len(debs(off)) >= 1

    (stats,) = cache_stats(engine, project, BOOKWORM)
    assert stats.volume == f"{compiler_cache.VOLUME_PREFIX}-tally-{BOOKWORM}-amd64"
    assert re.search(r"Hits:\s+12 /", stats.report), stats.report
    assert cache_clear(engine, project, BOOKWORM) == [stats.volume]
    assert cache_stats(engine, project, BOOKWORM) == []


@pytest.mark.docker
@pytest.mark.aws
@pytest.mark.slow
def test_a_fresh_worker_is_warm_from_the_shared_s3_cache(
    engine: Engine,
    base_image: Callable[[str], str],
    tmp_path: Path,
    moto_server: MotoServer,
    volumes_removed: list[Project],
) -> None:
    base_image(BOOKWORM)
    bucket = f"cache-{uuid.uuid4().hex[:12]}"
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket=bucket)
    project = cxx_project(
        tmp_path, f'[build]\ncompiler_cache = "s3"\ncache_url = "s3://{bucket}/cc"\n'
    )
    volumes_removed.append(project)
    cache_clear(engine, project)
    env = _env(AWS_ENDPOINT_URL=moto_server.endpoint_url, AWS_DEFAULT_REGION="us-east-1")

    first = make_package(engine, project, BOOKWORM, NIGHTLY, env=env)
    assert hit_rate(first) == (0, UNITS)
    prefix = f"cc/{BOOKWORM}/amd64/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert sum(k.endswith("R") for k in keys) == UNITS
    assert any(f"uploaded to s3://{bucket}/{prefix}" in ln for ln in log_lines(first))

    cache_clear(engine, project)  # a fresh worker: no volume
    fresh = make_package(engine, project, BOOKWORM, NIGHTLY, env=env, force=True)
    assert any(f"copied from s3://{bucket}/{prefix}" in ln for ln in log_lines(fresh))
    assert hit_rate(fresh) == (UNITS, UNITS)
    assert debs(fresh) == debs(first)

    gone = _env(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_DEFAULT_REGION="us-east-1")
    offline = make_package(engine, project, BOOKWORM, NIGHTLY, env=gone, force=True)
    said = [ln for ln in log_lines(offline) if "unreachable" in ln]
    assert len(said) == 1, said
    assert "this build uses only the local cache" in said[0]
    assert hit_rate(offline) == (UNITS, UNITS)  # the volume kept what S3 gave
    assert debs(offline) == debs(first)


# -- broken caches: one line, and the build goes on ------------------------------------------


def _wrapper_run(
    engine: Engine,
    project: Project,
    image: str,
    cache: CompilerCache,
    *,
    volume: str,
    compile_: str = (
        "cd /tmp && printf 'int main() { return 0; }\\n' >t.cpp && "
        "if command -v g++ >/dev/null; then g++ -c t.cpp -o t.o; fi && echo built"
    ),
) -> str:
    """Compile one C++ file (or run ``compile_``) through packaging/with-compiler-cache, as
    the build does."""
    spec = ContainerSpec(
        image=image,
        command=cache.command(["sh", "-c", compile_], project.packaging_mount),
        mounts=[Mount(project.root, project.packaging_mount)],
        volumes={volume: CACHE_MOUNT},
        environment={"PATH": "/usr/local/bin:/usr/bin:/bin", **cache.environment()},
        network="none",
        user="1000:1000",
    )
    result = engine.run_spec(spec)
    assert result.exit_code == 0, result.output
    assert "built" in result.output.splitlines(), result.output
    return result.output


@pytest.fixture
def scratch_volume(docker_client: Any) -> Iterator[Callable[..., str]]:
    made: list[Any] = []

    def make(**driver_opts: str) -> str:
        volume = docker_client.volumes.create(
            f"releng-test-ccache-{uuid.uuid4().hex[:12]}", driver_opts=driver_opts or None
        )
        made.append(volume)
        return str(volume.name)

    yield make
    for volume in made:
        volume.remove(force=True)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize(
    ("breakage", "said"),
    [
        ("foreign", "the volume holds files of another user"),
        ("corrupt", "ccache refuses it"),
        ("full", "its filesystem is full"),
        ("no-ccache", "the builder image has no ccache"),
        (
            "root-owned",
            f"uid 1000 cannot write to {CACHE_MOUNT} (owned by uid 0); "
            "invoke clear-cache DISTRO empties it",
        ),
    ],
)
def test_a_broken_cache_says_so_in_one_line_and_the_build_goes_on(  # noqa: PLR0917  (fixtures)
    engine: Engine,
    base_image: Callable[[str], str],
    project_copy: Project,
    scratch_volume: Callable[..., str],
    breakage: str,
    said: str,
) -> None:
    base = base_image(BOOKWORM)
    distro = project_copy.distro(BOOKWORM)
    cache = plan_cache(project_copy, distro)
    image = ensure_builder_image(engine, project_copy, distro).id
    if breakage == "full":
        volume = scratch_volume(type="tmpfs", device="tmpfs", o="size=1m")
    else:
        volume = scratch_volume()
    setup = {
        "foreign": "chmod 1777 /v && mkdir -p /v/0/1 && touch /v/0/1/someoneR",
        "corrupt": "printf 'this is not ccache configuration\\n' >/v/ccache.conf && chown -R 1000 /v",
        "full": "chmod 1777 /v && (dd if=/dev/zero of=/v/filler bs=64k || true)",
        "no-ccache": "chmod 1777 /v",
        "root-owned": "chmod 755 /v && touch /v/.kept",  # not empty: not copied up
    }[breakage]
    made = engine.run_spec(
        ContainerSpec(image=base, command=["sh", "-c", setup], volumes={volume: "/v"}, user="0")
    )
    assert made.exit_code == 0, made.output
    output = _wrapper_run(
        engine, project_copy, base if breakage == "no-ccache" else image, cache, volume=volume
    )
    lines = [ln for ln in output.splitlines() if ln.startswith(">>> compiler cache:")]
    assert len(lines) == 1, output
    assert lines[0].startswith(">>> compiler cache: off for this build: " + said), lines[0]


@pytest.mark.docker
@pytest.mark.slow
def test_a_cache_volume_of_another_user_costs_one_line_not_the_build(
    engine: Engine,
    base_image: Callable[[str], str],
    project_copy: Project,
    volumes_removed: list[Project],
) -> None:
    base = base_image(BOOKWORM)
    volumes_removed.append(project_copy)
    cache = plan_cache(project_copy, project_copy.distro(BOOKWORM))
    cache_clear(engine, project_copy)
    engine.run_spec(
        ContainerSpec(
            image=base,
            command=["sh", "-c", "chmod 1777 /v && mkdir -p /v/a/b && touch /v/a/b/rootsR"],
            volumes={cache.volume: "/v"},
            user="0",
        )
    )
    result = make_package(engine, project_copy, BOOKWORM, NIGHTLY, env=_env())
    said = [ln for ln in log_lines(result) if "off for this build" in ln]
    assert said[0] == (
        ">>> compiler cache: off for this build: the volume holds files of another user "
        "(a); invoke clear-cache DISTRO empties it"
    )
    assert said[1:] == ["releng: compiler cache:" + said[0].removeprefix(">>> compiler cache:")]
    assert log_lines(result)[-1] == said[1]  # the log still ends with the cache's state


@pytest.mark.docker
@pytest.mark.slow
def test_configure_probes_hit_in_their_random_directories_and_nothing_else_moves(
    engine: Engine,
    base_image: Callable[[str], str],
    project_copy: Project,
    scratch_volume: Callable[..., str],
) -> None:
    """CMake compiles each configure probe with -g in a new random directory, which ccache
    hashes: the wrappers leave that directory out of the hash there, and only there."""
    base_image(BOOKWORM)
    distro = project_copy.distro(BOOKWORM)
    cache = plan_cache(project_copy, distro)
    image = ensure_builder_image(engine, project_copy, distro).id
    volume = scratch_volume()

    def rate(directory: str) -> str:
        compile_ = (
            f"mkdir -p {directory} && cd {directory} && "
            "printf 'int probe(void) { return 1; }\\n' >probe.c && "
            "cc -g -O2 -c probe.c -o probe.o && echo built"
        )
        output = _wrapper_run(engine, project_copy, image, cache, volume=volume, compile_=compile_)
        return next(ln for ln in output.splitlines() if ln.startswith(">>> compiler cache: "))

    scratch = "/tmp/obj/CMakeFiles/CMakeScratch/TryCompile-"
    assert " 0 of 1 compilations were hits" in rate(scratch + "Ab12Cd")
    assert " 1 of 1 compilations were hits" in rate(scratch + "Xy34Zw")  # another configure
    # elsewhere the directory still counts: its debug info names it
    assert " 0 of 1 compilations were hits" in rate("/tmp/obj/one")
    assert " 0 of 1 compilations were hits" in rate("/tmp/obj/two")
    assert " 1 of 1 compilations were hits" in rate("/tmp/obj/two")


@pytest.mark.docker
@pytest.mark.slow
def test_calls_that_compile_and_link_in_one_step_say_so(
    engine: Engine,
    base_image: Callable[[str], str],
    project_copy: Project,
    scratch_volume: Callable[..., str],
) -> None:
    """As the demo's Makefile does: ccache counts such calls as uncacheable."""
    base_image(BOOKWORM)
    distro = project_copy.distro(BOOKWORM)
    cache = plan_cache(project_copy, distro)
    image = ensure_builder_image(engine, project_copy, distro).id
    compile_and_link = (
        "cd /tmp && printf 'int main(void) { return 0; }\\n' >t.c && "
        "cc t.c -o t && cc -O2 t.c -o t && echo built"
    )
    output = _wrapper_run(
        engine, project_copy, image, cache, volume=scratch_volume(), compile_=compile_and_link
    )
    lines = [ln for ln in output.splitlines() if ln.startswith(">>> compiler cache:")]
    assert lines == [">>> compiler cache: 0 of 2 calls cacheable: compile and link in one step"]


@pytest.mark.docker
@pytest.mark.slow
def test_cache_stats_of_a_broken_volume_says_what_to_do(
    engine: Engine,
    base_image: Callable[[str], str],
    project_copy: Project,
    volumes_removed: list[Project],
) -> None:
    base = base_image(BOOKWORM)
    volumes_removed.append(project_copy)
    distro = project_copy.distro(BOOKWORM)
    cache = plan_cache(project_copy, distro)
    ensure_builder_image(engine, project_copy, distro)
    ensure_volume(engine, cache, BOOKWORM)
    broken = engine.run_spec(
        ContainerSpec(
            image=base,
            command=["sh", "-c", "printf 'this is not ccache configuration\\n' >/v/ccache.conf"],
            volumes={cache.volume: "/v"},
            user="0",
        )
    )
    assert broken.exit_code == 0, broken.output
    [stats] = cache_stats(engine, project_copy, BOOKWORM)
    assert stats.report.startswith("ccache cannot read it (ccache: error: "), stats.report
    assert stats.report.endswith(
        f"invoke clear-cache {BOOKWORM} empties it (the next build starts a new one)"
    )
