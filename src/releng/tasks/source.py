"""Foundation tasks: list distros, make signed source tarballs."""

from __future__ import annotations

import os

from releng.cli import Context, note, out, out_json, project, task


@task(help={"json": "print a JSON list of objects instead of the table"})
def list_distros(c: Context, json: bool = False) -> None:
    """List every distro directory: image, codename, revision, what it has, whether it is a target."""
    from releng.distro import revision_order_warnings

    proj = project(c)
    targets = set(proj.targets())
    distros = proj.distros()
    for warning in revision_order_warnings(distros):
        note(f"warning: {warning}")
    if json:
        out_json(
            [
                {
                    "id": d.id,
                    "docker_base": d.docker_base,
                    "codename": d.distribution,
                    "pkgver": d.pkgver,
                    "target": d.id in targets,
                    "has": list(d.features()),
                    "bootstrappable": d.bootstrappable,
                }
                for d in distros
            ]
        )
        return
    rows = [("DISTRO", "DOCKER_BASE", "CODENAME", "PKGVER", "TARGET", "HAS")]
    for d in distros:
        rows.append(
            (
                d.id,
                d.docker_base,
                d.distribution or "-",
                d.pkgver or "-",
                "yes" if d.id in targets else "no",
                ", ".join(d.features())
                + ("" if d.bootstrappable else " (image must exist or be pullable)"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        out("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])


@task(
    help={
        "version": "YYYY.MM.DD (nightly, from the nightly ref) or a release such as 2.10 or "
        "1.2.3~rc1 (from its tag); default: today's nightly (UTC)",
        "release": "VERSION is a release even though it looks like a date (YYYY.MM.DD)",
        "force": "allow a nightly dated more than a day ahead of today (UTC)",
    }
)
def make_source_tarball(
    c: Context, version: str = "", release: bool = False, force: bool = False
) -> None:
    """Make out/<name>[-nightly]-<version>.tar.gz, reproducibly, with .asc, SHA256SUMS(.asc)."""
    from releng.source import make_source_tarball as make
    from releng.version import Version

    v = Version.requested(version, release=release, force=force)
    result = make(project(c), v, env=os.environ)
    out(f"{result.tarball}  sha256 {result.sha256}")
    out(f"signed: {result.signature.name}, {result.sums.name}, {result.sums_signature.name}")
