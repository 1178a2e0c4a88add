"""Key rotation without containers: the keyring package's bytes and versions, product.toml's
[signing] rewritten in place, and rotate-keys --add / --retire / --status through invoke."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from releng import keyring_package
from releng.apt import Repository, settings_for
from releng.digest import file_sha256
from releng.errors import SigningError
from releng.gpg import Signer, dearmored, keyring_keys, verify
from releng.key_rotation import plan, write_signing
from releng.keyring_package import KeyringPackage, install_instructions, recovery_instructions
from releng.project import Project
from tests.apt_debs import make_deb
from tests.fixtures.gpg import TestKey, make_key
from tests.fixtures.project import REPO_ROOT
from tests.test_cli import assert_one_error_line, invoke

T0 = dt.datetime(2026, 12, 6, 11, 0, tzinfo=dt.UTC)


def _package(keys: bytes, changed: dt.datetime = T0, suite: str = "bookworm") -> KeyringPackage:
    return KeyringPackage(
        name="tally", keys=keys, changed=changed, url="http://127.0.0.1/repo", suite=suite
    )


def _dpkg(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


def test_the_keyring_package_is_reproducible_and_what_dpkg_expects(tmp_path: Path) -> None:
    pkg = _package(b"\x99keys")
    assert pkg.deb() == _package(b"\x99keys").deb()  # the same keys: the same bytes
    assert pkg.deb() != _package(b"\x99other").deb()
    deb = tmp_path / pkg.filename
    deb.write_bytes(pkg.deb())
    fields = _dpkg("--field", str(deb))
    assert "Package: tally-archive-keyring\n" in fields
    assert "Architecture: all\n" in fields
    assert "Version: 20261206.110000+bookworm\n" in fields
    contents = _dpkg("--contents", str(deb))
    assert "./usr/share/keyrings/tally-archive-keyring.gpg" in contents
    assert "./etc/apt/sources.list.d/tally.sources" in contents
    unpacked = tmp_path / "x"
    _dpkg("--extract", str(deb), str(unpacked))
    sources = (unpacked / "etc/apt/sources.list.d/tally.sources").read_text()
    assert "Signed-By: /usr/share/keyrings/tally-archive-keyring.gpg\n" in sources
    assert "Suites: bookworm\n" in sources
    assert (unpacked / "usr/share/keyrings/tally-archive-keyring.gpg").read_bytes() == b"\x99keys"
    assert _dpkg("--ctrl-tarfile", str(deb))  # a readable control archive
    conffiles = subprocess.run(
        ["dpkg-deb", "--info", str(deb), "conffiles"], capture_output=True, text=True, check=True
    )
    assert conffiles.stdout == "/etc/apt/sources.list.d/tally.sources\n"


def _written(instructions: str) -> tuple[str, str]:
    """The file an install text writes with ``cat > PATH <<'EOF'`` and its bytes."""
    head, rest = instructions.split(" <<'EOF'\n", 1)
    return head.rsplit("cat > ", 1)[1], rest.split("EOF\n", 1)[0]


@pytest.mark.parametrize(
    ("suite", "conffile"),
    [
        ("bookworm", "/etc/apt/sources.list.d/tally.sources"),
        ("xenial", "/etc/apt/sources.list.d/tally.list"),  # one line: xenial's tools
        ("xenial-1.0", "/etc/apt/sources.list.d/tally.list"),
    ],
)
def test_the_install_text_writes_the_packages_conffile_byte_for_byte(
    tmp_path: Path, suite: str, conffile: str
) -> None:
    """dpkg asks no conffile question when the file on disk is the package's, byte for byte."""
    pkg = _package(b"\x99keys", suite=suite)
    deb = tmp_path / pkg.filename
    deb.write_bytes(pkg.deb())
    info = subprocess.run(
        ["dpkg-deb", "--info", str(deb), "conffiles"], capture_output=True, text=True, check=True
    )
    assert info.stdout == f"{conffile}\n"
    _dpkg("--extract", str(deb), str(tmp_path / "x"))
    shipped = (tmp_path / "x" / conffile.lstrip("/")).read_text()
    text = install_instructions(
        name="tally", url=pkg.url, suite=suite, components=["main"], sha256="ab" * 32
    )
    assert _written(text) == (conffile, shipped)
    assert f"/tmp/tally-archive-keyring.gpg \\\n  SHA256:{'ab' * 32}\n" in text  # checked
    assert text.endswith("apt-get install -y tally-archive-keyring tally\n")
    if conffile.endswith(".list"):
        assert shipped == (
            "deb [signed-by=/usr/share/keyrings/tally-archive-keyring.gpg] "
            f"http://127.0.0.1/repo {suite} main\n"
        )


def test_the_keyring_package_version_rises_when_the_keys_change() -> None:
    before = _package(b"A", T0, "bookworm-1.0").version
    after = _package(b"AB", T0 + dt.timedelta(minutes=1), "bookworm-1.0").version
    assert before.endswith("+bookworm.1.0")
    rises = subprocess.run(["dpkg", "--compare-versions", after, "gt", before], check=False)
    assert rises.returncode == 0, (before, after)


def test_plan_refuses_what_would_break_clients() -> None:
    a, b = "A" * 40, "B" * 40
    assert plan((a,), add=b, changed=None, overlap_days=30).after == (a, b)
    with pytest.raises(SigningError, match="signs already"):
        plan((a, b), add=b, changed=T0, overlap_days=30)
    with pytest.raises(SigningError, match="only signing key"):
        plan((a,), retire=a, changed=None, overlap_days=30)
    with pytest.raises(SigningError, match=r"overlap runs until 2027-01-05 11:00 UTC.*--force"):
        plan((a, b), retire=a, changed=T0, overlap_days=30, now=T0 + dt.timedelta(days=29))
    late = plan((a, b), retire=a, changed=T0, overlap_days=30, now=T0 + dt.timedelta(days=30))
    assert late.after == (b,)
    forced = plan((a, b), retire=a, changed=T0, overlap_days=30, force=True, now=T0)
    assert forced.after == (b,)


def test_write_signing_keeps_the_rest_of_product_toml(tmp_path: Path) -> None:
    toml = tmp_path / "product.toml"
    toml.write_text(
        '[product]\nname = "tally"\n\n[signing]\n# the archive keys\nkey = [\n  "OLD",\n]\n'
        'gnupghome = "/keys"  # kept\n\n[repositories]\norigin = "x"\n'
    )
    write_signing(toml, ["A" * 40, "B" * 40], T0)
    text = toml.read_text()
    data = tomllib.loads(text)
    assert data["signing"] == {
        "key": ["A" * 40, "B" * 40],
        "keys_changed": "2026-12-06T11:00:00+00:00",
        "gnupghome": "/keys",
    }
    assert "# the archive keys\n" in text and '"/keys"  # kept\n' in text
    assert data["repositories"] == {"origin": "x"}
    write_signing(toml, ["B" * 40], T0)
    assert tomllib.loads(toml.read_text())["signing"]["key"] == "B" * 40


@pytest.fixture
def rotation_project(
    make_project: Callable[[str], Project], tmp_path: Path
) -> tuple[Project, TestKey, TestKey]:
    home = tmp_path / "gnupg"
    a = make_key(home, name="tally archive key A", passphrase=None)
    b = make_key(home, name="tally archive key B", passphrase=None)
    project = make_project(
        f'[signing]\nkey = "{a.fingerprint}"\ngnupghome = "{home}"\n'
        '[publish]\npublic_url = "http://127.0.0.1:9/repo"\n'
    )
    return project, a, b


def _signers(repo: Path, suite: str, keys: list[TestKey], tmp_path: Path) -> set[str]:
    rings = [k.public_keyring(tmp_path / f"{k.fingerprint}.gpg") for k in keys]
    check = verify(rings, (repo / "dists" / suite / "InRelease").read_bytes())
    assert check.valid, check.reason
    detached = verify(
        rings,
        (repo / "dists" / suite / "Release").read_bytes(),
        (repo / "dists" / suite / "Release.gpg").read_bytes(),
    )
    assert set(detached.signers) == set(check.signers)
    return set(check.signers)


def _keyring_packages(repo: Path, suite: str) -> list[str]:
    text = (repo / "dists" / suite / "main/binary-amd64/Packages").read_text()
    return [
        ln.split()[1]
        for st in text.split("\n\n")
        if "Package: tally-archive-keyring" in st
        for ln in st.splitlines()
        if ln.startswith("Version: ")
    ]


def test_rotate_keys_adds_then_retires_through_invoke(
    rotation_project: tuple[Project, TestKey, TestKey], tmp_path: Path
) -> None:
    project, a, b = rotation_project
    root = project.root
    repo = root / "out" / "repo"
    for suite in ("bookworm", "bullseye"):
        deb = make_deb(tmp_path, "tally", f"1.0.0-1~{suite}")
        assert invoke("include-packages", "--dist", suite, str(deb), root=root).returncode == 0
    assert _signers(repo, "bookworm", [a, b], tmp_path) == {a.fingerprint}

    added = invoke("rotate-keys", "--add", b.fingerprint, root=root)
    assert added.returncode == 0, added.stderr
    assert f"{b.fingerprint} signs too" in added.stdout
    # the front page follows at once: both keys, the new key file's SHA-256 in its blocks
    page = (repo / "index.html").read_text()
    assert f"SHA256:{file_sha256(repo / 'tally-archive-keyring.gpg')}\n" in page
    assert "Also signing (a key change is under way)" in page
    assert tomllib.loads((root / "product.toml").read_text())["signing"]["key"] == [
        a.fingerprint,
        b.fingerprint,
    ]
    for suite in ("bookworm", "bullseye"):
        assert _signers(repo, suite, [a, b], tmp_path) == {a.fingerprint, b.fingerprint}
        assert len(_keyring_packages(repo, suite)) == 1
    exported = {k.fingerprint for k in keyring_keys(repo / "tally-archive-keyring.gpg")}
    assert exported == {a.fingerprint, b.fingerprint}
    check = invoke("check-repo", root=root)
    assert check.returncode == 0 and "warning" not in check.stdout, check.stdout

    status = invoke("key-rotate", "--status", "--json", root=root)  # the name: an alias
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert [k["fingerprint"] for k in state["keys"]] == [a.fingerprint, b.fingerprint]
    assert state["overlap_days"] == 30 and state["overlap_ends"]
    text = invoke("rotate-keys", "--status", root=root).stdout
    assert "overlap: 2 keys sign since" in text and "never expires" in text

    early = invoke("rotate-keys", "--retire", a.fingerprint, root=root)
    assert_one_error_line(early, "the overlap runs until")
    assert _signers(repo, "bookworm", [a, b], tmp_path) == {a.fingerprint, b.fingerprint}

    retired = invoke("rotate-keys", "--retire", a.fingerprint, "--force", root=root)
    assert retired.returncode == 0, retired.stderr
    for suite in ("bookworm", "bullseye"):
        assert _signers(repo, suite, [a, b], tmp_path) == {b.fingerprint}
        first, second = _keyring_packages(repo, suite)
        rises = subprocess.run(["dpkg", "--compare-versions", second, "gt", first], check=False)
        assert rises.returncode == 0, (first, second)
    exported = {k.fingerprint for k in keyring_keys(repo / "tally-archive-keyring.gpg")}
    assert exported == {b.fingerprint}
    assert invoke("check-repo", root=root).returncode == 0
    only = invoke("rotate-keys", "--retire", b.fingerprint, root=root)
    assert_one_error_line(only, "is the only signing key")


def test_an_extended_expiry_reaches_the_published_keyring_and_the_keyring_package(
    make_project: Callable[[str], Project], tmp_path: Path
) -> None:
    """docs/key-rotation.md: extend a key (gpg --quick-set-expire), publish, and the keyring
    beside the repository and a newer keyring package carry the new expiry, so that a
    client's apt upgrade has it before the old expiry passes (gpg and dpkg are the oracles)."""
    key = make_key(tmp_path / "k", name="tally archive key", passphrase=None, expire="30d")
    project = make_project(
        f'[signing]\nkey = "{key.fingerprint}"\ngnupghome = "{key.home}"\nwarn_days = 7\n'
        '[publish]\npublic_url = "http://127.0.0.1:9/repo"\n'
    )
    repo = project.root / "out" / "repo"

    def publish(version: str) -> None:
        """As update-repos publishes: the include, then its hook, the keyring package."""
        deb = make_deb(tmp_path, "tally", f"{version}-1~bookworm")
        done = invoke("include-packages", "--dist", "bookworm", str(deb), root=project.root)
        assert done.returncode == 0, done.stderr
        signer = Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)
        keyring_package.add_for_project(project, Repository(repo, settings_for(project), signer))

    publish("1.0.0")
    before = keyring_keys(repo / "tally-archive-keyring.gpg")[0].expires
    assert before is not None
    time.sleep(1.1)  # the new self-signature a second later at least: the stamp has seconds
    extend = ["--quick-set-expire", key.fingerprint, "1y"]
    subprocess.run(["gpg", "--homedir", str(key.home), "--batch", *extend], check=True)
    publish("1.0.1")

    after = keyring_keys(repo / "tally-archive-keyring.gpg")[0].expires
    assert after is not None and after - before > dt.timedelta(days=300)
    armor = (repo / "tally-archive-keyring.asc").read_bytes()
    assert keyring_keys(dearmored(armor))[0].expires == after
    first, second = _keyring_packages(repo, "bookworm")
    rises = subprocess.run(["dpkg", "--compare-versions", second, "gt", first], check=False)
    assert rises.returncode == 0, (first, second)
    (deb,) = repo.glob(f"pool/main/t/tally-archive-keyring/*_{second}_all.deb")
    tree = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    shipped = keyring_keys(tree / "usr/share/keyrings/tally-archive-keyring.gpg")
    assert shipped[0].expires == after


def test_a_key_change_no_client_could_verify_is_refused_before_the_switch(
    make_project: Callable[[str], Project], tmp_path: Path
) -> None:
    """A new signing subkey (gpg signs with it at once) or another key named in [signing]
    key without a rotation: the keyring clients took from beside the repository would not
    verify the next Release (NO_PUBKEY on every client). The publish refuses in one line and
    switches nothing; deleting the keyring (no client yet) is the way out it names."""
    home = tmp_path / "gnupg"
    a = make_key(home, name="tally archive key A", passphrase=None)
    b = make_key(home, name="tally archive key B", passphrase=None)
    project = make_project(f'[signing]\nkey = "{a.fingerprint}"\ngnupghome = "{home}"\n')
    repo = project.root / "out" / "repo"
    keyring = repo / "tally-archive-keyring.gpg"

    def include(version: str) -> subprocess.CompletedProcess[str]:
        deb = make_deb(tmp_path, "tally", f"{version}-1~bookworm")
        return invoke("include-packages", "--dist", "bookworm", str(deb), root=project.root)

    assert include("1.0.0").returncode == 0

    def published() -> dict[str, bytes]:
        """Every file a client can fetch (the pool aside) and the suite's members."""
        trees = [repo / "dists", repo / ".releng-repo" / "suites"]
        found = {p: p.read_bytes() for t in trees for p in t.rglob("*") if p.is_file()}
        return {str(p): data for p, data in found.items()} | {"keyring": keyring.read_bytes()}

    before = published()

    add_subkey = ["--quick-add-key", a.fingerprint, "ed25519", "sign", "1y"]
    unprotected = ["--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(
        ["gpg", "--homedir", str(a.home), "--batch", *unprotected, *add_subkey], check=True
    )
    refused = include("1.0.1")
    assert_one_error_line(refused, "the keyring clients hold, does not verify the new Release")
    assert "rotate-keys --add" in refused.stderr
    assert published() == before  # nothing written: no index, no member, no key

    (project.root / "product.toml").write_text(
        f'[signing]\nkey = "{b.fingerprint}"\ngnupghome = "{home}"\n'
    )
    assert_one_error_line(include("1.0.2"), "does not verify the new Release")
    assert published() == before  # nothing written: no index, no member, no key
    check = invoke("check-repo", root=project.root)
    assert check.returncode == 0 and "warning" not in check.stdout, check.stdout

    keyring.unlink()  # the way out the message names, when no client uses the repository yet
    assert include("1.0.3").returncode == 0
    assert {k.fingerprint for k in keyring_keys(keyring)} == {b.fingerprint}
    assert _signers(repo, "bookworm", [a, b], tmp_path) == {b.fingerprint}


def test_a_publish_warns_of_a_key_expiring_soon_and_refuses_an_expired_one(
    make_project: Callable[[str], Project], tmp_path: Path
) -> None:
    soon = make_key(tmp_path / "soon", name="short-lived key", passphrase=None, expire="10d")
    project = make_project(
        f'[signing]\nkey = "{soon.fingerprint}"\ngnupghome = "{soon.home}"\nwarn_days = 30\n'
    )
    deb = make_deb(tmp_path, "tally", "1.0.0-1~bookworm")
    warned = invoke("include-packages", "--dist", "bookworm", str(deb), root=project.root)
    assert warned.returncode == 0, warned.stderr
    assert f"signing key {soon.fingerprint} expires" in warned.stderr
    assert "warn_days = 30" in warned.stderr
    status = invoke("rotate-keys", "--status", root=project.root)
    assert "warning: signing key" in status.stdout and "(in 10 days)" in status.stdout
    old = make_key(
        tmp_path / "old", name="old key", passphrase=None, expire="1d", made_at="20200101T000000"
    )
    expired = make_project(
        f'[signing]\nkey = "{old.fingerprint}"\ngnupghome = "{old.home}"\n', name="expired"
    )
    refused = invoke("include-packages", "--dist", "bookworm", str(deb), root=expired.root)
    assert_one_error_line(refused, "has expired 2020-01-02")
    assert "rotate-keys --add" in refused.stderr.strip().splitlines()[-1]
    assert not (expired.root / "out" / "repo").exists()


def test_the_docs_show_the_install_and_recovery_text_as_it_is() -> None:
    """docs/key-rotation.md (which the README quotes) shows the one install text."""
    doc = (REPO_ROOT / "docs" / "key-rotation.md").read_text()
    url = "https://apt.example.org"
    texts = [
        install_instructions(name="<name>", url=url, suite=suite, components=["main"])
        for suite in ("bookworm", "xenial")
    ]
    texts.append(recovery_instructions(name="<name>", url=url))
    for text in texts:
        indented = "".join(f"    {line}\n" for line in text.splitlines())
        assert indented in doc, text
    readme = (REPO_ROOT / "README.md").read_text()
    assert "".join(f"    {line}\n" for line in texts[0].splitlines()) in readme
