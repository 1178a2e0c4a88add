"""Foundation tasks: list distros, make signed source tarballs."""

from __future__ import annotations

import os

from releng.cli import Context, out, out_json, project, task


@task(help={"json": "print a JSON list of objects instead of the table"})
def distros(c: Context, json: bool = False) -> None:
    """List every distro directory: image, codename, revision, what it has, whether it is a target."""
    proj = project(c)
    targets = set(proj.targets())
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
                for d in proj.distros()
            ]
        )
        return
    rows = [("DISTRO", "DOCKER_BASE", "CODENAME", "PKGVER", "TARGET", "HAS")]
    for d in proj.distros():
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
        "version": "YYYY.MM.DD (nightly, from the nightly ref) or X.Y.Z (release, from its tag); "
        "default: today's nightly (UTC)",
    }
)
def make_source_tarball(c: Context, version: str = "") -> None:
    """Make out/<name>[-nightly]-<version>.tar.gz, reproducibly, with .asc, SHA256SUMS(.asc)."""
    from releng.source import make_source_tarball as make
    from releng.version import Version

    result = make(project(c), Version.parse_or_nightly(version), env=os.environ)
    out(f"{result.tarball}  sha256 {result.sha256}")
    out(f"signed: {result.signature.name}, {result.sums.name}, {result.sums_signature.name}")
