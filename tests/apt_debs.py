"""Small real packages for the apt tests: .debs by dpkg-deb, sources by dpkg-source."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path


def make_deb(
    dest: Path,
    package: str,
    version: str,
    *,
    arch: str = "amd64",
    source: str = "",
    extra: str = "",
    script: str = "",
    compression: str = "xz",
) -> Path:
    """Build ``<package>_<version>_<arch>.deb`` in ``dest`` with dpkg-deb (a real .deb)."""
    root = dest / f".build-{package}-{version}-{arch}"
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    control = (
        f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
        f"Maintainer: releng tests <tests@releng.invalid>\n"
        + (f"Source: {source}\n" if source else "")
        + extra
        + f"Description: test package {package}\n a package built by the releng tests\n"
    )
    (root / "DEBIAN" / "control").write_text(control)
    bindir = root / "usr" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    exe = bindir / package
    exe.write_text(script or f"#!/bin/sh\necho {package} {version}\n")
    exe.chmod(0o755)
    out = dest / f"{package}_{version.rsplit(':', maxsplit=1)[-1]}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},  # same inputs, same bytes
    )
    return out


def make_source(dest: Path, name: str, version: str) -> Path:
    """A format 1.0 native source package (.dsc + .tar.gz), made by hand with real checksums."""
    tarball = dest / f"{name}_{version}.tar.gz"
    work = dest / f".src-{name}-{version}"
    (work / f"{name}-{version}").mkdir(parents=True, exist_ok=True)
    (work / f"{name}-{version}" / "README").write_text(f"{name} {version}\n")
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(work), f"{name}-{version}"], check=True)
    data = tarball.read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    sha = hashlib.sha256(data).hexdigest()
    dsc = dest / f"{name}_{version}.dsc"
    dsc.write_text(
        f"Format: 1.0\nSource: {name}\nBinary: {name}\nArchitecture: any\nVersion: {version}\n"
        "Maintainer: releng tests <tests@releng.invalid>\nStandards-Version: 4.6.2\n"
        f"Checksums-Sha256:\n {sha} {len(data)} {tarball.name}\n"
        f"Files:\n {md5} {len(data)} {tarball.name}\n"
    )
    return dsc


def make_changes(dest: Path, name: str, files: list[Path]) -> Path:
    """A .changes listing ``files`` (which must be in ``dest``) with their checksums."""
    sha_lines = md5_lines = ""
    for f in files:
        data = f.read_bytes()
        sha_lines += f" {hashlib.sha256(data).hexdigest()} {len(data)} {f.name}\n"
        md5_lines += f" {hashlib.md5(data).hexdigest()} {len(data)} misc optional {f.name}\n"
    changes = dest / f"{name}.changes"
    changes.write_text(
        f"Format: 1.8\nSource: {name}\nVersion: 1\nDistribution: unstable\n"
        f"Checksums-Sha256:\n{sha_lines}Files:\n{md5_lines}"
    )
    return changes


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def raw_deb(
    dest: Path, filename: str, control: str | None, *, control_member: str = "control.tar.gz"
) -> Path:
    """A .deb assembled by hand, so that tests can make ones dpkg-deb refuses to build."""
    import gzip
    import io
    import tarfile

    members = [_ar_member("debian-binary", b"2.0\n")]
    if control is not None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = control.encode()
            info = tarfile.TarInfo("./control")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        members.append(_ar_member(control_member, gzip.compress(buf.getvalue())))
    members.append(_ar_member("data.tar.gz", gzip.compress(b"\0" * 1024)))
    path = dest / filename
    path.write_bytes(b"!<arch>\n" + b"".join(members))
    return path
