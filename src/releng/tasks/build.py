"""Build tasks: base images, one distro's packages, all targets, an interactive shell."""

from __future__ import annotations

import os

from invoke.exceptions import Exit

from releng.cli import Context, fail, note, out, project, task


@task(
    help={
        "distro": "a distro directory name, e.g. debian-12-bookworm",
        "bootstrap": "bootstrap afresh with mmdebstrap (Debian suites), even if the engine has the image",
        "arch": "a Debian architecture (default: the host's); another one is named like "
        "arm64v8/debian:bookworm and bootstrapped through qemu-user-static",
    }
)
def make_base_image(c: Context, distro: str, bootstrap: bool = False, arch: str = "") -> None:
    """Make sure DISTRO's DOCKER_BASE image is in the engine: use it, else pull, else bootstrap."""
    from releng.arch import check_architecture, host_architecture, image_for
    from releng.engine import Engine
    from releng.images import ensure_base_image
    from releng.images.foreign import ensure_foreign_base_image

    proj = project(c)
    d = proj.distro(distro)
    arch = arch or host_architecture()
    check_architecture(arch, [arch], where="product.toml")  # known to dpkg, has images
    engine = Engine.from_env(os.environ)
    if arch == host_architecture():
        image_id = ensure_base_image(engine, proj, d, bootstrap=bootstrap)
    else:
        image_id = ensure_foreign_base_image(
            engine, proj, d, arch, env=os.environ, bootstrap=bootstrap
        )
    reference = image_for(d.docker_base, arch)
    labels = engine.image_labels(reference)
    out(f"{reference}  {image_id}")
    for key in sorted(k for k in labels if k.startswith("org.releng.")):
        out(f"  {key}={labels[key]}")


@task(
    help={
        "distro": "a distro directory name, e.g. debian-12-bookworm",
        "version": "YYYY.MM.DD (nightly) or a release such as 2.10 or 1.2.3~rc1; default: today's nightly (UTC)",
        "release": "VERSION is a release even though it looks like a date (YYYY.MM.DD)",
        "force": "rebuild even when the inputs match the last successful build (and allow a "
        "nightly dated more than a day ahead)",
        "keep": "on failure, commit the container so `invoke interactive DISTRO --from-failed` opens it",
        "lintian": "run lintian after the build (as [lintian] run = true does): summary printed, "
        "report kept as lintian.log beside the build, fails only on [lintian] fail_on tags",
        "arch": "the Debian architecture to build for (default: the host's); one of "
        "[repositories] architectures",
        "mode": "for another architecture: cross (a cross toolchain) or emulated (qemu); "
        "default: the distro's BUILD_MODE, else [images] build_mode",
        "no_cache": "build without the compiler cache ([build] compiler_cache) this once",
        "no_smoke": "do not install the packages and run the smoke command (the build stamp "
        "says so): for an architecture whose base image cannot be had here",
    }
)
def make_package(  # noqa: PLR0917  (invoke maps each parameter to a --flag)
    c: Context,
    distro: str,
    version: str = "",
    force: bool = False,
    keep: bool = False,
    release: bool = False,
    lintian: bool = False,
    arch: str = "",
    mode: str = "",
    no_cache: bool = False,
    no_smoke: bool = False,
) -> None:
    """Build DISTRO's .debs in a throwaway container into out/<version>/<DISTRO>/."""
    from releng.build import make_package as make
    from releng.build import terminate_as_interrupt
    from releng.engine import Engine
    from releng.version import Version

    proj = project(c)
    v = Version.requested(version, release=release, force=force)
    proj.distro(distro)  # an unknown distro fails before the engine is asked
    with terminate_as_interrupt():
        engine = Engine.from_env(os.environ)
        result = make(
            engine,
            proj,
            distro,
            v,
            env=os.environ,
            force=force,
            keep=keep,
            on_line=note,
            lintian=lintian,
            arch=arch or None,
            mode=mode or None,
            no_cache=no_cache,
            smoke_test=not no_smoke,
        )
    what = f"{distro} {result.arch} {v}"
    if result.up_to_date:
        out(f"{what}: up to date in {result.out_dir} (--force rebuilds)")
        return
    out(f"{what}: built in {result.seconds:.0f}s into {result.out_dir}")
    for name in result.files:
        out(f"  {name}")


@task(
    help={
        "version": "YYYY.MM.DD (nightly) or a release such as 2.10 or 1.2.3~rc1; default: today's nightly (UTC)",
        "release": "VERSION is a release even though it looks like a date (YYYY.MM.DD)",
        "jobs": "how many distros build at once (default 2)",
        "distros": "comma-separated distros (default: distros/TARGETS)",
        "arches": "comma-separated architectures (default: [repositories] architectures)",
        "force": "rebuild even when up to date",
        "quiet": "no live build logs, only progress and the summary",
        "no_cache": "build without the compiler cache ([build] compiler_cache) this once",
    }
)
def make_all_packages(  # noqa: PLR0917  (invoke maps each parameter to a --flag)
    c: Context,
    version: str = "",
    jobs: int = 2,
    distros: str = "",
    arches: str = "",
    force: bool = False,
    quiet: bool = False,
    release: bool = False,
    no_cache: bool = False,
) -> None:
    """Build several distros x architectures at once (default: the TARGETS x product.toml's)."""
    from releng.build import terminate_as_interrupt
    from releng.engine import Engine
    from releng.matrix import Reporter, Status, build_all, summary_table
    from releng.version import Version

    proj = project(c)
    v = Version.requested(version, release=release, force=force)
    ids = [d.strip() for d in distros.split(",") if d.strip()] or proj.targets()
    for d in ids:
        proj.distro(d)
    archs = [a.strip() for a in arches.split(",") if a.strip()]
    archs = archs or list(proj.config.repositories.architectures)
    builds = [(d, a) for d in ids for a in archs]
    names = ", ".join(ids) + ("" if len(archs) == 1 else f" x {', '.join(archs)}")
    note(f"building {v} for {len(builds)} distro(s), {jobs} at a time: {names}")
    with terminate_as_interrupt():
        engine = Engine.from_env(os.environ)
        reporter = Reporter(note, total=len(builds), quiet=quiet)
        outcomes = build_all(
            engine,
            proj,
            ids,
            v,
            env=os.environ,
            jobs=jobs,
            force=force,
            reporter=reporter,
            architectures=archs,
            no_cache=no_cache,
        )
    for line in summary_table(outcomes):
        out(line)
    failed = [o.distro_id for o in outcomes if o.status is Status.FAILED]
    if failed:
        raise fail(f"{len(failed)} of {len(builds)} distro(s) failed: {', '.join(failed)}")


@task(
    help={
        "distro": 'a distro directory name; "" for the first of distros/TARGETS',
        "version": "the version whose build environment to set up (default: today's nightly)",
        "release": "VERSION is a release even though it looks like a date (YYYY.MM.DD)",
        "from_failed": "open the image `make-package --keep` committed from the last failed build",
        "arch": "the architecture whose builder to open (default: the host's), as make-package",
        "mode": "for another architecture: cross (the cross builder) or emulated (its own "
        "image through qemu); default as make-package",
    },
    # invoke has no optional positionals (it fills one only while its value is None and
    # requires it at the end), so DISTRO is positional and "" means the first target.
    positional=["distro"],
)
def interactive(  # noqa: PLR0917  (invoke maps parameters to options)
    c: Context,
    distro: str | None = None,
    version: str = "",
    from_failed: bool = False,
    arch: str = "",
    mode: str = "",
    release: bool = False,
) -> None:
    """Open a shell in DISTRO's builder image with the build's mounts (seccomp=unconfined for gdb)."""
    from releng.build import resolve_target
    from releng.engine import Engine
    from releng.interactive import attach, interactive_spec, require_terminal
    from releng.version import Version

    proj = project(c)
    distro = distro or proj.targets()[0]
    # bad input first, in one line, before the terminal check and any image is made
    target = resolve_target(
        proj, proj.distro(distro), arch=arch or None, mode=mode or None, env=os.environ
    )
    require_terminal()
    engine = Engine.from_env(os.environ)
    spec = interactive_spec(
        engine,
        proj,
        distro,
        Version.parse_or_nightly(version, release=release),
        env=os.environ,
        from_failed=from_failed,
        arch=target.arch,
        mode=mode or None,
    )
    what = "failed build" if from_failed else "builder image"
    if target.foreign:
        what += f", {target.arch}, {target.mode}"
    note(f"shell in {distro} ({what}); exit to leave")
    code = attach(engine, spec)
    if code:
        raise Exit(code=code)


@task(
    help={"distro": 'a distro directory name; "" for every distro\'s cache'},
    # As for `interactive`: invoke has no optional positionals, so "" means every distro.
    positional=["distro"],
)
def show_cache(c: Context, distro: str | None = None) -> None:
    """Show the compiler cache of DISTRO (or of every distro): ccache's size and hit counters."""
    from releng.compiler_cache import cache_stats as stats
    from releng.engine import Engine

    proj = project(c)
    if distro:
        proj.distro(distro)
    found = stats(Engine.from_env(os.environ), proj, distro or "")
    if not found:
        out(f"no compiler cache {'of ' + distro if distro else 'yet'}: make-package makes one")
    for s in found:
        out(f"{s.volume} ({s.distro_id or '?'}, {s.arch or '?'}):")
        for line in s.report.splitlines():
            out(f"  {line}")


@task(
    help={"distro": 'a distro directory name; "" for every distro\'s cache'},
    # As for `interactive`: invoke has no optional positionals, so "" means every distro.
    positional=["distro"],
)
def clear_cache(c: Context, distro: str | None = None) -> None:
    """Empty the compiler cache of DISTRO (or of every distro) on this machine: remove its volume."""
    from releng.compiler_cache import cache_clear as clear
    from releng.engine import Engine

    proj = project(c)
    if distro:
        proj.distro(distro)
    removed = clear(Engine.from_env(os.environ), proj, distro or "")
    out(
        f"removed {len(removed)} compiler cache volume(s){': ' if removed else ''}{', '.join(removed)}"
    )
