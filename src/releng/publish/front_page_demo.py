"""A demo repository's front page, photographed by headless Chromium: ``docs/front-page.png``.

``nox -s front_page_screenshot`` runs :func:`main`. The repository is made here: a throwaway
signing key (RSA, as xenial's apt wants), small ``tally`` packages built with ``dpkg-deb``
for amd64 and arm64 and an arch-``all`` one, in each target's suite and its release line.
Needs gpg, dpkg-deb, Debian's chromium and chromium-driver, and selenium (the test extra).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import http.server
import logging
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_URL = "https://packages.example.org/tally"  # what the picture shows, not 127.0.0.1
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def _deb(dest: Path, name: str, version: str, arch: str, section: str) -> Path:
    root = dest / f".{name}-{arch}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\nSection: {section}\n"
        "Maintainer: releng demo <releng-demo@example.org>\n"
        f"Description: {name}, for the front page's picture\n"
    )
    exe = root / "usr" / "bin" / name
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexec wc -w\n")
    exe.chmod(0o755)
    out = dest / f"{name}_{version}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def demo_repository(root: Path, work: Path, project_root: Path) -> None:
    """A signed repository at ``root`` with the product's suites and the front page."""
    from releng import keyring_package
    from releng.apt import Repository, settings_for
    from releng.distro import read_targets
    from releng.gpg import Signer
    from releng.project import Project
    from releng.publish.front_page import write_front_page

    home = work / "gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
         "--passphrase", "", "--quick-gen-key", "tally demo archive key <demo@example.org>",
         "rsa3072", "sign", "2y"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    signer = Signer(gnupghome=home, key="demo@example.org", passphrase=None)
    project = Project.load(project_root)
    settings = settings_for(project)._replace(architectures=("amd64", "arm64"))
    repo = Repository(root, settings, signer)
    name = project.config.name
    debs = [
        _deb(work, name, "1.2.0-1", "amd64", "utils"),
        _deb(work, name, "1.2.0-1", "arm64", "utils"),
        _deb(work, f"{name}-doc", "1.2.0-1", "all", "doc"),
    ]
    for distro_id in read_targets(project_root):
        codename = project.distro(distro_id).codename
        repo.include([codename, f"{codename}-1.2"], debs)
    # every suite carries the keyring package, as after update-repos: the blocks install it
    changed = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    keyring_package.add_to_suites(repo, url=DEMO_URL, changed=changed, scratch=work / "keyring")
    write_front_page(root, project, url=DEMO_URL)


@contextlib.contextmanager
def _serve(www: Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(www))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def screenshot(url: str, out: Path, profile: Path, *, width: int = 820, height: int = 1100) -> None:
    """Open ``url`` in headless Chromium and save the visible page to ``out`` (PNG)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(out)):
            raise RuntimeError(f"chromium saved no screenshot of {url}")
    finally:
        driver.quit()
    log.info("wrote %s", out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write, e.g. docs/front-page.png")
    parser.add_argument("--project", type=Path, default=Path(), help="the project's root")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="releng-front-page-") as tmp:
        work = Path(tmp)
        www = work / "www"
        demo_repository(www / "apt", work, args.project.resolve())
        with _serve(www) as url:
            screenshot(f"{url}/apt/", args.out.resolve(), work / "profile")


if __name__ == "__main__":
    main()
