"""The front page in a real browser, real validators, and its commands pasted into real apt.

A published repository (several suites, two architectures, an arch-all package) is served
on 127.0.0.1 and opened in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium). The page renders, shows the key file's fingerprint and every target's
install block; a screenshot goes to ``out/test-artifacts/``. The Nu HTML Checker finds no
error and axe-core, run in that browser, no serious or critical violation. Then the
bookworm and noble blocks, copied out of the rendered page (the text the Copy button
copies, with the address the page's script filled in), run in fresh containers: the
package installs and runs, ``apt-get update`` warns of nothing, and ``apt-file search``
finds the package by its file (the Contents indexes).

Needs what ./scripts/setup-front-page-tools installs (chromium, chromium-driver, java, npm;
vnu-jar and axe-core, pinned, into the checkout): the module's first fixture runs it.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from releng import keyring_package
from releng.apt import Repository, check_repository, settings_for
from releng.digest import file_sha256
from releng.distro import read_targets
from releng.gpg import Signer
from releng.project import Project
from releng.publish import front_page_demo
from releng.publish.front_page import write_front_page
from tests.apt_debs import make_deb, make_source
from tests.fixtures.gpg import make_key
from tests.fixtures.project import REPO_ROOT

TOOLS = REPO_ROOT / ".tools" / "node" / "node_modules"
VNU = TOOLS / "vnu-jar" / "build" / "dist" / "vnu.jar"
AXE = TOOLS / "axe-core" / "axe.min.js"
ARTIFACTS = REPO_ROOT / "out" / "test-artifacts"
CHROMIUM = Path(front_page_demo.CHROMIUM)  # the flags that work here: one list, the demo's
CHROMEDRIVER = Path(front_page_demo.CHROMEDRIVER)
CHROMIUM_FLAGS = front_page_demo.CHROMIUM_FLAGS
# The tally of these tests: a shell script that counts words, for two architectures.
TALLY = "#!/bin/sh\nexec wc -w\n"


@dataclass(frozen=True)
class Site:
    root: Path
    url: str  # the repository's address (its front page is url + "/")
    fingerprint: str


@pytest.fixture(scope="module", autouse=True)
def front_page_tools() -> None:
    """The browser, the JRE, npm and the pinned validators: the project's own script installs
    whatever is missing (idempotent: about 0.1 s when all is there)."""
    proc = subprocess.run(
        [str(REPO_ROOT / "scripts" / "setup-front-page-tools")],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/setup-front-page-tools failed: {proc.stderr.strip()[-2000:]}")


def _require(path: Path, how: str) -> None:
    if not path.exists():
        pytest.fail(f"{path} is missing; {how}")


def serve(www: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(www))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def publish_demo(root: Path, work: Path, signer: Signer, project: Project, url: str) -> None:
    """Several suites (every build, a release line, other distros), amd64 and arm64, an
    arch-all package and a source package; each suite's keyring package names ``url``, the
    address it is served at (the page's script fills in the same)."""
    settings = settings_for(project)._replace(architectures=("amd64", "arm64"))
    repo = Repository(root, settings, signer)
    work.mkdir(parents=True, exist_ok=True)
    debs = [
        make_deb(work, "tally", "1.0.0-1", script=TALLY, extra="Section: utils\n"),
        make_deb(work, "tally", "1.0.0-1", arch="arm64", script=TALLY, extra="Section: utils\n"),
        make_deb(work, "tally-doc", "1.0.0-1", arch="all", extra="Section: doc\n"),
    ]
    src = work / "src"
    src.mkdir(exist_ok=True)
    dsc = make_source(src, "tally", "1.0.0-1")
    for codename in ("bookworm", "trixie", "noble", "jammy", "xenial", "bullseye"):
        repo.include([codename, f"{codename}-1.0"], [*debs, dsc])
    changed = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    keyring_package.add_to_suites(repo, url=url, changed=changed, scratch=work / "keyring")
    write_front_page(root, project)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    www = tmp_path_factory.mktemp("front-www")
    # RSA: xenial is one of the suites, and its apt verifies with gpgv 1.4 (no ed25519).
    key = make_key(
        tmp_path_factory.mktemp("front-key"), name="front page key", passphrase=None, rsa=True
    )
    signer = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)
    project = Project.load(REPO_ROOT)
    root = www / "apt"
    server, url = serve(www)
    try:
        publish_demo(root, tmp_path_factory.mktemp("front-debs"), signer, project, f"{url}/apt")
        report = check_repository(root)
        assert report.problems == [] and report.warnings == []
        yield Site(root=root, url=f"{url}/apt", fingerprint=key.fingerprint.upper())
    finally:
        server.shutdown()
        server.server_close()


def chromium(user_data: Path) -> Any:
    _require(CHROMIUM, "run ./scripts/setup-front-page-tools (it installs Debian's chromium)")
    _require(
        CHROMEDRIVER, "run ./scripts/setup-front-page-tools (it installs Debian's chromium-driver)"
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data}", "--window-size=1000,1400"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def rendered(site: Site, browser: Any) -> dict[str, str]:
    """The page opened in Chromium: each install block's text, as the Copy button copies it."""
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/")
    assert browser.title == "tally packages"
    blocks = browser.find_elements(By.CSS_SELECTOR, "pre[id^=cmd-]")
    return {b.get_attribute("id"): b.get_attribute("textContent") for b in blocks}


def test_the_page_renders_with_the_key_files_fingerprint_and_every_distros_block(
    site: Site, browser: Any, rendered: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By

    shown = browser.find_element(By.ID, "fingerprint")
    assert shown.text.replace(" ", "") == site.fingerprint
    # the fingerprint of the key file a user downloads, by gpg
    home = site.root.parent / "gpg-home"
    home.mkdir(mode=0o700, exist_ok=True)
    listing = subprocess.run(
        ["gpg", "--homedir", str(home), "--with-colons", "--show-keys"],
        input=(site.root / "tally-archive-keyring.asc").read_bytes(),
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert shown.get_attribute("data-fingerprint") in listing
    project = Project.load(REPO_ROOT)
    for distro_id in read_targets(REPO_ROOT):
        codename = project.distro(distro_id).codename
        section = browser.find_element(By.ID, f"install-{codename}")
        assert section.is_displayed()
        assert f"cmd-{codename}" in rendered, codename
        assert f"cmd-{codename}-1.0" in rendered, codename  # the release line, as a choice
        assert site.url in rendered[f"cmd-{codename}"]  # the page's own address, filled in
    assert "/etc/apt/sources.list.d/tally.list" in rendered["cmd-xenial"]
    assert "Suites: noble\n" in rendered["cmd-noble"]
    digest = browser.find_element(By.ID, "keyring-sha256").text
    assert digest == file_sha256(site.root / "tally-archive-keyring.gpg")
    for block in (rendered["cmd-noble"], rendered["cmd-recover"]):  # the key file, checked
        assert f"/tmp/tally-archive-keyring.gpg \\\n  SHA256:{digest}\n" in block
    assert "apt-get install -y tally-archive-keyring tally" in rendered["cmd-noble"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "front-page.png"))
    assert (ARTIFACTS / "front-page.png").stat().st_size > 10_000


def test_nu_html_checker_finds_no_error(site: Site) -> None:
    _require(VNU, "run ./scripts/setup-front-page-tools (vnu-jar from npm, pinned)")
    java = shutil.which("java")
    if java is None:
        pytest.fail("java is not installed; run ./scripts/setup (default-jre-headless)")
    proc = subprocess.run(
        [
            java,
            "-jar",
            str(VNU),
            "--errors-only",
            "--format",
            "json",
            str(site.root / "index.html"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    messages = json.loads(proc.stderr or proc.stdout)["messages"]
    assert messages == [], messages
    assert proc.returncode == 0


def test_axe_core_finds_no_serious_or_critical_violation(
    site: Site, browser: Any, rendered: dict[str, str]
) -> None:
    _require(AXE, "run ./scripts/setup-front-page-tools (axe-core from npm, pinned)")
    browser.execute_script(AXE.read_text())
    result = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "axe.run(document).then(function (r) { done(r.violations); },"
        " function (e) { done(String(e)); });"
    )
    assert isinstance(result, list), result
    bad = [
        (v["id"], v["impact"], v["help"]) for v in result if v["impact"] in ("serious", "critical")
    ]
    assert bad == []
    for scheme in ("dark", "light"):  # both colour schemes
        browser.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        result = browser.execute_async_script(
            "var done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: ['color-contrast']}).then(function (r) {"
            " done(r.violations); });"
        )
        assert result == [], (scheme, result)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("distro_id", ["debian-12-bookworm", "ubuntu-24.04-noble"])
def test_the_pasted_block_installs_and_runs_and_apt_file_finds_the_package(
    distro_id: str,
    site: Site,
    rendered: dict[str, str],
    engine: Any,
    base_image: Callable[[str], str],
) -> None:
    project = Project.load(REPO_ROOT)
    codename = project.distro(distro_id).codename
    block = rendered[f"cmd-{codename}"]
    script = "\n".join(
        [
            "set -e",
            "export DEBIAN_FRONTEND=noninteractive",
            # apt-file from the distro's own archive first (the block needs nothing but apt);
            # then only our repository.
            "apt-get update -qq >/dev/null",
            "apt-get install -y -qq --no-install-recommends apt-file >/dev/null",
            "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*",
            "echo '== pasted'",
            block,
            # the keyring package took the pasted source file over (no conffile question)
            "dpkg -S /etc/apt/sources.list.d/tally.sources",
            "ls /etc/apt/sources.list.d/",
            "echo '== run'",
            "echo one two | tally -w",
            "echo '== apt-file'",
            "apt-file update 2>&1",
            "apt-file search bin/tally",
        ]
    )
    result = engine.run(base_image(distro_id), ["sh", "-c", script], network="host")
    output = result.output
    assert result.exit_code == 0, output
    pasted = output.split("== pasted", 1)[1].split("== run", 1)[0]
    warnings = [ln for ln in pasted.splitlines() if ln.startswith(("W:", "E:", "Err:", "N:"))]
    assert warnings == [], output
    assert "tally-archive-keyring: /etc/apt/sources.list.d/tally.sources" in pasted, output
    assert ".dpkg-" not in pasted, output
    ran = output.split("== run", 1)[1].split("== apt-file", 1)[0]
    assert ran.split() == ["2"], output
    found = output.split("== apt-file", 1)[1]
    assert "tally: /usr/bin/tally" in found, output
    assert "tally-doc: /usr/bin/tally-doc" in found, output  # arch all, in Contents-amd64
