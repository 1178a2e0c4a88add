"""Verification tasks: an independent rebuild of a finished build, a user's check of a package."""

from __future__ import annotations

import os

from releng.cli import Context, note, out, project, task


@task(
    help={
        "distro": "a distro directory name, e.g. debian-12-bookworm",
        "version": "the build's version: YYYY.MM.DD (nightly) or a release such as 2.10; "
        "default: today's nightly (UTC)",
        "release": "VERSION is a release even though it looks like a date (YYYY.MM.DD)",
        "arch": "the architecture of the build to verify (default: the host's)",
    }
)
def verify_rebuild(
    c: Context, distro: str, version: str = "", release: bool = False, arch: str = ""
) -> None:
    """Rebuild DISTRO's finished build from its .dsc in a fresh, varied container; compare
    every .deb byte for byte; sign an attestation per identical package."""
    from releng.arch import host_architecture
    from releng.build import terminate_as_interrupt
    from releng.engine import Engine
    from releng.rebuild import RebuildMismatch, plan_rebuild, rebuilder_signer, verify_rebuild
    from releng.version import Version

    proj = project(c)
    v = Version.requested(version, release=release)
    d = proj.distro(distro)
    plan = plan_rebuild(
        proj.build_dir(v, distro),
        distro_id=distro,
        codename=d.codename,
        arch=arch or host_architecture(),
    )
    signer = rebuilder_signer(proj, os.environ)
    with terminate_as_interrupt():
        engine = Engine.from_env(os.environ)
        try:
            result = verify_rebuild(engine, proj, plan, signer=signer, on_line=note)
        except RebuildMismatch as exc:
            for cmp in exc.result.comparisons:
                out(f"  {cmp.name}: {'identical' if cmp.identical else 'DIFFERS'}")
            # diffoscope's text in the output: on AWS this is the failure log (docs/aws.md)
            for report in sorted(exc.result.out_dir.glob("*.diffoscope.txt")):
                out(f"--- {report}")
                out(report.read_text(encoding="utf-8", errors="replace").rstrip("\n"))
            raise
    out(
        f"{distro} {plan.arch} {v}: reproduced in {result.seconds:.0f}s, signed by {signer.fingerprint}"
    )
    for cmp in result.comparisons:
        out(f"  {cmp.name}: identical (sha256 {cmp.first_sha256})")
    out(f"  attestations: {result.out_dir / 'attestations'}")


@task(
    help={
        "package": "a .deb file, or NAME=VERSION to fetch from the repository",
        "repo": "the repository: a directory or an http(s):// URL (its attestations/ is read)",
        "keyring": "the rebuilder's public key (armored or binary): whom to trust",
        "arch": "with NAME=VERSION: the architecture (default: the host's)",
    }
)
def verify_package(c: Context, package: str, repo: str, keyring: str, arch: str = "") -> None:
    """Check a package against its rebuild attestation: one line, verified by whom and when,
    or why not (non-zero exit)."""
    from pathlib import Path

    from releng.arch import host_architecture
    from releng.rebuild.check import verify_package as verify

    verdict = verify(package, repo=repo, keyring=Path(keyring), arch=arch or host_architecture())
    out(verdict.line())
