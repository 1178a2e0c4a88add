"""The front page (releng.publish.front_page), rendered from a real repository.

A real browser, the HTML and accessibility checkers and apt in containers read it in
test_front_page_browser.py.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest

from releng import keyring_package
from releng.apt import Repository, settings_for
from releng.digest import file_sha256
from releng.gpg import Signer
from releng.project import Project
from releng.publish.front_page import (
    MAX_ROWS,
    URL_PLACEHOLDER,
    collect,
    install_commands,
    render,
    write_front_page,
)
from tests.apt_debs import make_deb, make_source
from tests.fixtures.gpg import TestKey, make_key
from tests.fixtures.project import REPO_ROOT

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    return make_key(tmp_path_factory.mktemp("front-gnupg"), name="front page key", passphrase=None)


@pytest.fixture(scope="module")
def signer(key: TestKey) -> Signer:
    return Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)


def gpg_fingerprint(keyring: Path, home: Path) -> str:
    out = subprocess.run(
        ["gpg", "--homedir", str(home), "--with-colons", "--show-keys", str(keyring)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))


def test_front_page_shows_key_install_blocks_and_what_is_published(
    tmp_path: Path, key: TestKey, signer: Signer
) -> None:
    project = Project.load(REPO_ROOT)
    root = tmp_path / "repo"
    repo = Repository(root, settings_for(project), signer)
    src = tmp_path / "src"
    src.mkdir()
    repo.include(
        ["bookworm", "bookworm-1.0"],
        [
            make_deb(tmp_path, "tally", "1.0.0-1", extra="Section: utils\n"),
            make_source(src, "tally", "1.0.0-1"),
        ],
    )
    repo.include(
        ["noble", "xenial"], [make_deb(tmp_path, "tally", "1.0.0-1", extra="Section: utils\n")]
    )
    page_path = write_front_page(root, project, clock=lambda: NOW)
    page = page_path.read_text()
    assert page_path == root / "index.html"
    assert (root / ".releng-repo/front-page.html").read_text() == page
    (tmp_path / "h").mkdir(mode=0o700)
    expected = gpg_fingerprint(root / "tally-archive-keyring.gpg", tmp_path / "h")
    assert expected == key.fingerprint.upper()
    shown = re.search(r'data-fingerprint="([0-9A-F]{40})"', page)
    assert shown is not None and shown[1] == expected
    assert 'href="tally-archive-keyring.asc"' in page and 'href="tally-archive-keyring.gpg"' in page
    for label in (
        "Debian 11 (bullseye)",
        "Debian 12 (bookworm)",
        "Debian 13 (trixie)",
        "Ubuntu 16.04 (xenial)",
        "Ubuntu 22.04 (jammy)",
        "Ubuntu 24.04 (noble)",
    ):
        assert f"<h3>{label}</h3>" in page, label
    assert 'id="cmd-bookworm"' in page and 'id="cmd-bookworm-1.0"' in page  # the release line
    assert "release line 1.0" in page
    assert "Nothing published for this release yet." in page  # bullseye
    assert "tally_1.0.0-1.dsc" in page and "tally_1.0.0-1.tar.gz" in page
    assert "Last publishes:" in page and "#1" in page
    assert "<script src" not in page and "@import" not in page and "fonts." not in page
    assert "prefers-color-scheme:dark" in page


def test_install_commands_are_the_keyring_packages_install_text(
    tmp_path: Path, signer: Signer
) -> None:
    """One install text (releng.keyring_package): the key file checked by its SHA-256, the
    package's own source file (deb822; a one-line .list for xenial), the keyring package."""
    project = Project.load(REPO_ROOT)
    root = tmp_path / "repo"
    repository = Repository(root, settings_for(project), signer)
    repository.include(["bookworm", "xenial"], [make_deb(tmp_path, "tally", "1.0.0-1")])
    keyring_package.add_to_suites(repository, url="https://apt.example.org", changed=NOW)
    page = collect(root, project, url="https://apt.example.org/")
    bookworm = next(t for t in page.targets if t.codename == "bookworm")
    xenial = next(t for t in page.targets if t.codename == "xenial")
    digest = file_sha256(root / "tally-archive-keyring.gpg")
    assert page.keyring_sha256 == digest
    assert install_commands(page, bookworm, "bookworm") == (
        "/usr/lib/apt/apt-helper download-file \\\n"
        "  https://apt.example.org/tally-archive-keyring.gpg /tmp/tally-archive-keyring.gpg \\\n"
        f"  SHA256:{digest}\n"
        "install -m 644 /tmp/tally-archive-keyring.gpg "
        "/usr/share/keyrings/tally-archive-keyring.gpg\n"
        "cat > /etc/apt/sources.list.d/tally.sources <<'EOF'\n"
        "Types: deb\nURIs: https://apt.example.org\nSuites: bookworm\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/tally-archive-keyring.gpg\nEOF\n"
        "apt-get update && apt-get install -y tally-archive-keyring tally"
    )
    assert install_commands(page, bookworm, "bookworm") + "\n" == (
        keyring_package.install_instructions(
            name="tally",
            url="https://apt.example.org",
            suite="bookworm",
            components=["main"],
            sha256=digest,
        )
    )
    assert (
        "cat > /etc/apt/sources.list.d/tally.list <<'EOF'\n"
        "deb [signed-by=/usr/share/keyrings/tally-archive-keyring.gpg] "
        "https://apt.example.org xenial main\nEOF\n"
    ) in install_commands(page, xenial, "xenial")
    assert collect(root, project).url == URL_PLACEHOLDER  # the page's script fills it in
    html = render(page)
    recover = html.split('id="cmd-recover"', 1)[1].split("</pre>", 1)[0]
    assert f"SHA256:{digest}" in recover
    assert "apt-get install -y tally-archive-keyring</code>" in recover


def test_a_suite_without_the_keyring_package_installs_the_product_alone(
    tmp_path: Path, signer: Signer
) -> None:
    """include-packages alone makes no keyring package: the commands do not ask for one."""
    project = Project.load(REPO_ROOT)
    root = tmp_path / "repo"
    Repository(root, settings_for(project), signer).include(
        ["bookworm"], [make_deb(tmp_path, "tally", "1.0.0-1")]
    )
    page = collect(root, project, url="https://apt.example.org")
    bookworm = next(t for t in page.targets if t.codename == "bookworm")
    assert install_commands(page, bookworm, "bookworm").endswith(
        "apt-get update && apt-get install -y tally"
    )
    assert 'id="cmd-recover"' not in render(page)  # no keyring package to recover with


def test_the_commands_write_the_keyring_packages_conffile_whatever_the_pages_address(
    tmp_path: Path, signer: Signer
) -> None:
    """A page that does not know its address (the script fills it in) still writes the URL the
    suite's keyring package names, recorded when it was built: dpkg asks no question."""
    project = Project.load(REPO_ROOT)
    root = tmp_path / "repo"
    repository = Repository(root, settings_for(project), signer)
    repository.include(["bookworm"], [make_deb(tmp_path, "tally", "1.0.0-1")])
    keyring_package.add_to_suites(repository, url="https://pkgs.example.net/tally", changed=NOW)
    page = collect(root, project)
    assert page.url == URL_PLACEHOLDER
    bookworm = next(t for t in page.targets if t.codename == "bookworm")
    block = install_commands(page, bookworm, "bookworm")
    written = block.split("<<'EOF'\n", 1)[1].split("EOF\n", 1)[0]
    (deb,) = root.glob("pool/**/tally-archive-keyring_*_all.deb")
    subprocess.run(["dpkg-deb", "--extract", str(deb), str(tmp_path / "x")], check=True)
    assert (tmp_path / "x/etc/apt/sources.list.d/tally.sources").read_text() == written
    assert "URIs: https://pkgs.example.net/tally\n" in written


def test_during_a_key_change_the_page_shows_both_keys(tmp_path: Path, key: TestKey) -> None:
    project = Project.load(REPO_ROOT)
    other = make_key(key.home, name="the next key", passphrase=None)
    both = Signer(gnupghome=key.home, key=[key.fingerprint, other.fingerprint], passphrase=None)
    root = tmp_path / "repo"
    Repository(root, settings_for(project), both).include(
        ["bookworm"], [make_deb(tmp_path, "tally", "1.0.0-1")]
    )
    page = collect(root, project)
    assert page.key is not None
    fingerprints = {page.key.fingerprint, *(k.fingerprint for k in page.other_keys)}
    assert fingerprints == {key.fingerprint.upper(), other.fingerprint.upper()}
    html = render(page)
    assert "Also signing (a key change is under way)" in html


def test_a_big_suite_lists_its_newest_packages_and_links_the_index(
    tmp_path: Path, signer: Signer
) -> None:
    project = Project.load(REPO_ROOT)
    root = tmp_path / "repo"
    debs = tmp_path / "debs"
    debs.mkdir()
    settings = settings_for(project)._replace(contents=False)
    day = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    repo = Repository(root, settings, signer, clock=lambda: day)
    repo.include(["bookworm"], [make_deb(debs, f"pkg{i:03d}", "1") for i in range(MAX_ROWS + 5)])
    later = Repository(root, settings, signer, clock=lambda: day + dt.timedelta(hours=1))
    later.include(["bookworm"], [make_deb(debs, "pkg204", "2")])  # now the newest
    page = write_front_page(root, project).read_text()
    assert f"the {MAX_ROWS} most recently added of {MAX_ROWS + 5}" in page
    assert 'href="dists/bookworm/main/binary-amd64/Packages"' in page
    # pkg204 (newest) first, then the others added at the same time by name: 000 to 198.
    listed = re.findall(r"<tr><td>(pkg\d{3})</td>", page)
    assert listed[0] == "pkg204" and sorted(listed[1:]) == [f"pkg{i:03d}" for i in range(199)]


def test_repository_tasks_write_the_front_page(project_copy: Project, tmp_path: Path) -> None:
    """include-packages writes it with the --url given; copy-packages (a lifecycle task) rewrites it."""
    from tests.test_cli import invoke

    root = project_copy.root
    deb = make_deb(tmp_path, "tally", "1.0.0-1~bookworm")
    url = "https://apt.example.org/tally"
    result = invoke("include-packages", "--dist", "bookworm", "--url", url, str(deb), root=root)
    assert result.returncode == 0, result.stderr
    page = root / "out/repo/index.html"
    assert f"URIs: {url}\n" in page.read_text()
    assert "suite-bookworm-1.0" not in page.read_text()
    copied = invoke(
        "copy-packages", "tally", "--from", "bookworm", "--to", "bookworm-1.0", root=root
    )
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert 'id="suite-bookworm-1.0"' in page.read_text()


def test_rebuild_status_per_package_and_architecture(tmp_path: Path, signer: Signer) -> None:
    """With attestations beside the repository (even under [verify] rebuild = "off"), each
    package's newest version says who verified it per architecture, or "unverified"."""
    import json

    project = Project.load(REPO_ROOT)
    assert project.config.verify.rebuild == "off"
    root = tmp_path / "repo"
    settings = settings_for(project)._replace(architectures=("amd64", "arm64"))
    repo = Repository(root, settings, signer)
    debs = tmp_path / "debs"
    debs.mkdir()
    paths = [
        make_deb(debs, "alpha", "1.0-1", arch="amd64"),
        make_deb(debs, "alpha", "1.0-1", arch="arm64"),
        make_deb(debs, "beta", "2.0-1", arch="amd64"),
    ]
    repo.include(["bookworm"], paths)
    assert "Independent rebuild" not in write_front_page(root, project).read_text()

    pool = {p.name: next(root.rglob(p.name)).relative_to(root).as_posix() for p in paths}
    attested = [pool["alpha_1.0-1_amd64.deb"], pool["beta_2.0-1_amd64.deb"]]
    fpr = "0123456789ABCDEF0123456789ABCDEF01234567"
    index = root / "attestations" / "index.json"
    index.parent.mkdir()
    index.write_text(
        json.dumps(
            {
                "packages": [
                    {"path": p, "rebuilder": fpr, "finished": "2026-12-05T10:00:00Z"}
                    for p in attested
                ]
            }
        )
    )
    page = write_front_page(root, project, clock=lambda: NOW).read_text()
    assert '<th scope="col">Independent rebuild</th>' in page
    rows = dict(re.findall(r"<tr><td>(\w+)</td>.*?<td>([^<]*)</td></tr>", page))
    assert rows == {
        "alpha": f"amd64: verified by {fpr} on 2026-12-05; arm64: unverified",
        "beta": f"verified by {fpr} on 2026-12-05",
    }
