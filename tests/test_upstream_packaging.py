"""Real upstreams packaged the Debian way, built for real in containers.

- a url source whose upstream version is ``X.Y``, served from 127.0.0.1 with upstream's
  detached signature: the orig tarball is the served file byte for byte, its ``.asc`` is
  in the ``.dsc``, and the package builds, installs and runs;
- a nightly of a two-package product: the renamed packages depend on each other's new
  names (apt in a container is the oracle), a supplied changelog survives, and lintian
  runs with its report kept.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.build import make_package
from releng.engine import Engine, Mount
from releng.lintian import REPORT, LintianReport
from releng.project import Project
from releng.version import Version
from tests.fixtures.gpg import TestKey
from tests.fixtures.http import StaticServer
from tests.fixtures.project import REPO_ROOT, copy_repo, git

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# The distros a url source is built, installed and run on. Ubuntu joins with one line,
# "ubuntu-22.04-jammy" (passes where ubuntu:jammy is in the engine) or "ubuntu-24.04-noble",
# once the Ubuntu base images can be made on a machine with no registry (issue 11).
URL_SOURCE_DISTROS = ["debian-12-bookworm"]
PKGVER = {
    "debian-12-bookworm": "1~deb12u1",
    "ubuntu-22.04-jammy": "1~ubuntu22.04.1",
    "ubuntu-24.04-noble": "1~ubuntu24.04.1",
}


def upstream_release(www: Path, version: str) -> bytes:
    """The demo's source as upstream would ship it: ``tally-<version>.tar.gz``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted((REPO_ROOT / "demo" / "tally").rglob("*")):
            rel = path.relative_to(REPO_ROOT / "demo" / "tally").as_posix()
            tar.add(path, arcname=f"tally-{version}/{rel}", recursive=False)
    (www / f"tally-{version}.tar.gz").write_bytes(buf.getvalue())
    return buf.getvalue()


def sign_detached(key: TestKey, path: Path) -> bytes:
    import gnupg

    gpg = gnupg.GPG(gnupghome=str(key.home))
    sig = gpg.sign_file(
        str(path),
        keyid=key.fingerprint,
        passphrase=key.passphrase,
        detach=True,
        extra_args=["--pinentry-mode", "loopback"],
    )
    assert sig.data, sig.stderr
    path.with_name(path.name + ".asc").write_bytes(sig.data)
    return bytes(sig.data)


@pytest.mark.parametrize("distro_id", URL_SOURCE_DISTROS)
def test_url_source_x_y_keeps_upstreams_tarball_and_signature_and_runs(  # noqa: PLR0917  (fixtures)
    engine: Engine,
    base_image: Callable[[str], str],
    http_server: StaticServer,
    gpg_key: TestKey,
    other_gpg_key: TestKey,
    tmp_path: Path,
    distro_id: str,
) -> None:
    served = upstream_release(http_server.root, "2.10")
    served_sig = sign_detached(other_gpg_key, http_server.root / "tally-2.10.tar.gz")
    keyring = other_gpg_key.public_keyring(tmp_path / "upstream.gpg")
    root = copy_repo(tmp_path / "repo")
    (root / "product.toml").write_text(
        "[source]\n"
        'kind = "url"\n'
        f'url = "{http_server.url}/tally-{{version}}.tar.gz"\n'
        f'signature_url = "{http_server.url}/tally-{{version}}.tar.gz.asc"\n'
        f'keyring = "{keyring}"\n'
        "[signing]\n"
        f'key = "{gpg_key.fingerprint}"\ngnupghome = "{gpg_key.home}"\n'
        'passphrase_env = "TEST_PASSPHRASE"\n'
    )
    git(root, "commit", "-q", "-am", "a url source")
    project = Project.load(root)
    base_image(distro_id)
    env = {"PATH": os.environ["PATH"], "TEST_PASSPHRASE": gpg_key.passphrase}

    result = make_package(engine, project, distro_id, Version.parse("2.10"), env=env)

    out = result.out_dir
    assert out == root / "out" / "2.10" / distro_id
    assert (out / "tally_2.10.orig.tar.gz").read_bytes() == served
    assert (out / "tally_2.10.orig.tar.gz.asc").read_bytes() == served_sig
    revision = f"2.10-{PKGVER[distro_id]}"
    dsc = (out / f"tally_{revision}.dsc").read_text()
    assert " tally_2.10.orig.tar.gz.asc\n" in dsc
    assert " tally_2.10.orig.tar.gz\n" in dsc
    assert "releng: smoke command passed" in (out / "build.log").read_text()
    run = engine.run(
        base_image(distro_id),
        [
            "sh",
            "-c",
            f"apt-get install -y -q /debs/tally_{revision}_amd64.deb >/dev/null 2>&1 && "
            "echo one two three | tally -w && tally --version",
        ],
        mounts=[Mount(out, "/debs")],
        network="none",
    )
    assert run.exit_code == 0, run.output
    assert run.output.split()[0] == "3"
    assert "2.10" in run.output


TWO_PACKAGES = """\
Source: tally
Section: utils
Priority: optional
Maintainer: releng demo <releng-demo@example.org>
Build-Depends: debhelper-compat (= 13)
Standards-Version: 4.6.2
Homepage: https://example.org/tally
Rules-Requires-Root: no

Package: tally
Architecture: any
Depends: ${shlibs:Depends}, ${misc:Depends}, tally+data (= ${source:Version})
Conflicts: tally-nightly
Description: count lines, words and bytes, with per-site defaults
 tally is the demo product of releng: a small C program with a man page.

Package: tally+data
Architecture: all
Depends: ${misc:Depends}, tally (>= ${source:Version})
Description: data of tally
 The README of the demo product, in a package of its own.
"""
SUPPLIED_CHANGELOG = """\
tally (0.9-1) unstable; urgency=medium

  * Supplied entry: the packaging's own history.

 -- releng demo <releng-demo@example.org>  Fri, 02 Jan 2026 03:04:05 +0000
"""


def deb_file(deb: Path, member: str) -> bytes:
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as tf:
        f = tf.extractfile(member)
        assert f is not None
        return f.read()


def test_nightly_of_two_packages_with_a_supplied_changelog_and_lintian(
    engine: Engine, base_image: Callable[[str], str], tmp_path: Path
) -> None:
    import gzip

    root = copy_repo(tmp_path / "repo")
    debian = root / "packaging" / "debian"
    (debian / "control").write_text(TWO_PACKAGES)
    (debian / "tally.install").write_text(
        "usr/bin/tally\nusr/share/man/man1/tally.1\netc/tally.conf\n"
    )
    (debian / "tally+data.install").write_text("README usr/share/tally/\n")
    (debian / "changelog").write_text(SUPPLIED_CHANGELOG)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "two packages and a changelog")
    project = Project.load(root)
    distro_id = "debian-12-bookworm"
    base_image(distro_id)
    nightly = Version.parse("2026.11.20")

    result = make_package(
        engine, project, distro_id, nightly, env={"PATH": os.environ["PATH"]}, lintian=True
    )

    out = result.out_dir
    version = "2026.11.20-1~deb12u1"
    main = out / f"tally-nightly_{version}_amd64.deb"
    data = out / f"tally+data-nightly_{version}_all.deb"
    assert main.is_file() and data.is_file(), sorted(p.name for p in out.iterdir())
    # The supplied changelog survives under the new entry.
    changelog = gzip.decompress(
        deb_file(main, "./usr/share/doc/tally-nightly/changelog.Debian.gz")
    ).decode()
    assert changelog.startswith(f"tally-nightly ({version}) bookworm; urgency=medium")
    assert "Supplied entry: the packaging's own history." in changelog
    # lintian ran after the build, its report is kept and listed.
    report = (out / REPORT).read_text()
    assert REPORT in result.files
    assert "releng: lintian: " in (out / "build.log").read_text()
    parsed = LintianReport.parse(report)
    assert parsed.fatal([]) == []
    if parsed.tags:  # a listed tag the report has is what fails a build
        tag = sorted(parsed.tags)[0]
        assert parsed.fatal([tag, "no-such-tag"]) == [tag]

    # apt is the oracle: each renamed package needs the other's new name, and nothing else.
    script = (
        f"apt-get install -y -q /debs/{main.name} >/tmp/alone.log 2>&1; echo alone=$?; "
        "grep -o 'Depends: tally+data-nightly' /tmp/alone.log | head -n 1; "
        f"apt-get install -y -q /debs/{main.name} /debs/{data.name} >/tmp/both.log 2>&1 "
        "|| { cat /tmp/both.log; exit 1; }; "
        "dpkg-query -W -f '${Package} ${Status}\\n' tally-nightly tally+data-nightly; "
        "apt-get check && apt-get -s remove tally+data-nightly | grep '^Remv'; "
        "echo one two | tally -w"
    )
    run = engine.run(
        base_image(distro_id),
        ["sh", "-c", script],
        mounts=[Mount(out, "/debs")],
        network="none",
    )
    assert run.exit_code == 0, run.output
    lines = run.output.splitlines()
    assert "alone=100" in lines
    assert "Depends: tally+data-nightly" in lines
    assert "tally-nightly install ok installed" in lines
    assert "tally+data-nightly install ok installed" in lines
    assert any(ln.startswith("Remv tally-nightly ") for ln in lines), run.output
    assert lines[-1] == "2"
