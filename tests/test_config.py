"""product.toml parsing: defaults, suites, and every bad input named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from releng.config import PRODUCT_FILE, load_product, parse_product
from releng.errors import ConfigError
from releng.project import Project
from releng.version import Version

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_product(text, path=None, where="product.toml")


def test_no_file_means_the_embedded_demo_product(tmp_path: Path) -> None:
    cfg = load_product(tmp_path)
    assert cfg.path is None
    assert cfg.name == "tally"
    assert cfg.source.kind == "git"
    assert cfg.source.repository == "demo/tally"


def test_the_shipped_product_toml_equals_the_embedded_default() -> None:
    shipped = load_product(REPO_ROOT)
    default = load_product(REPO_ROOT / "nonexistent")
    assert shipped.path == REPO_ROOT / PRODUCT_FILE
    for section in (
        "product",
        "source",
        "signing",
        "repositories",
        "images",
        "lintian",
        "publish",
        "aws",
    ):
        assert getattr(shipped, section) == getattr(default, section), section


def test_suites_for_release_and_nightly() -> None:
    cfg = parse("")
    rel = cfg.suites_for(
        codename="bookworm", distro="debian-12-bookworm", version=Version.parse("1.2.3")
    )
    nightly = cfg.suites_for(
        codename="bookworm", distro="debian-12-bookworm", version=Version.parse("2026.11.22")
    )
    assert rel == ["bookworm", "bookworm-1.2"]
    assert nightly == ["bookworm"]
    assert cfg.package_name(Version.parse("2026.11.22")) == "tally-nightly"
    assert cfg.package_name(Version.parse("1.2.3")) == "tally"


def test_custom_suites_and_values_are_read() -> None:
    cfg = parse(
        '[product]\nname = "hhvm"\n[repositories]\nsuites = ["{codename}", "{distro}"]\n'
        'release_suites = []\nnightly_suites = ["{codename}-nightly"]\narchitectures = ["amd64", "arm64"]\n'
    )
    v = Version.parse("2026.01.31")
    assert cfg.suites_for(codename="noble", distro="ubuntu-24.04-noble", version=v) == [
        "noble",
        "ubuntu-24.04-noble",
        "noble-nightly",
    ]
    assert cfg.repositories.architectures == ["amd64", "arm64"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[product]\nnmae = "x"', "unknown key [product] 'nmae'; allowed keys: name,"),
        ("[sauce]\n", "unknown section [sauce]; allowed sections: product,"),
        (
            '[source]\nsubmodules = "yes"',
            "[source] submodules = 'yes' is not allowed; expected true or false",
        ),
        (
            '[source]\nkind = "svn"',
            "[source] kind = 'svn' is not allowed; expected one of 'git', 'url'",
        ),
        (
            '[repositories]\nindex_xz = "whole"',
            "[repositories] index_xz = 'whole' is not allowed; expected one of 'chunks', "
            "'one-stream'",
        ),
        ("[repositories]\nkeep_versions = 0", "keep_versions = 0 is out of range; allowed: 1"),
        ("[images]\nkeep_builders = 0", "keep_builders = 0 is out of range; allowed: 1"),
        ("[repositories]\nbyhash_keep = 0", "byhash_keep = 0 is out of range; allowed: 1 to"),
        ("[repositories]\nbyhash_keep = -3", "byhash_keep = -3 is out of range"),
        ("[repositories]\nvalid_for_days = -1", "valid_for_days = -1 is out of range"),
        ("[repositories]\nnightly_max_age_days = -1", "nightly_max_age_days = -1 is out of"),
        ("[repositories]\nkeep_versions = 99999999", "keep_versions = 99999999 is out of range"),
        ('[product]\nname = "tally\\n"', "is not a Debian package name"),
        ('[repositories]\norigin = "a\\nb"', "origin = 'a\\nb' is not allowed"),
        ('[repositories]\nlabel = "x\\nSuite: evil"', "label = 'x\\nSuite: evil' is not"),
        ('[repositories]\nlabel = "tab\\there"', "remove control characters"),
        ('[repositories]\ncomponents = ["../../escape"]', "entry '../../escape' is not allowed"),
        ('[repositories]\ncomponents = ["main contrib"]', "list several as separate strings"),
        ('[repositories]\ncomponents = ["main/debug"]', "one path segment"),
        ('[repositories]\ncomponents = ["main\\n"]', "is not allowed"),
        ('[repositories]\ncomponents = ["main", "main"]', "lists one twice"),
        ('[repositories]\narchitectures = ["amd64 arm64"]', "a Debian architecture"),
        ('[repositories]\nsuites = ["{codename}\\n"]', "is not a suite name template"),
        ('[repositories]\nsuites = ["../{codename}"]', "is not a suite name template"),
        ('[repositories]\nnightly_suites = ["{codename} nightly"]', "not a suite name"),
        ('[source]\nkind = "url"\nurl = "{version}"', "url = '{version}' is not a URL"),
        (
            '[source]\nkind = "url"\nurl = "https://x.org/{version}.tgz"\nsignature_url = "sig"',
            "signature_url = 'sig' is not a URL",
        ),
        ("[product]\nsummary = " + "[" * 5000 + "]" * 5000, "nest more than 64 deep"),
        ('[repositories]\nsuites = ["{codename}-{arch}"]', "uses arch; allowed fields: {codename}"),
        ('[product]\nname = "Tally_App"', "is not a Debian package name"),
        ('[source]\nrelease_tag = "latest"', "must contain '{version}'"),
        ('[source]\nkind = "url"', "must contain '{version}' when kind = 'url'"),
        ('[source.sha256]\n"1.0.0" = "abc"', "is not a sha256"),
        ("product = 3", "product must be a table"),
        ("[product\n", "not valid TOML"),
    ],
)
def test_bad_product_toml_names_file_key_and_allowed(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert str(err.value).startswith("product.toml: ")
    assert expected in str(err.value)


def test_error_names_the_real_file(tmp_path: Path) -> None:
    (tmp_path / "distros").mkdir()
    (tmp_path / PRODUCT_FILE).write_text("[signing]\nkeyid = 'ABC'\n")
    with pytest.raises(
        ConfigError, match=rf"^{tmp_path / PRODUCT_FILE}: unknown key \[signing\] 'keyid'"
    ):
        Project.load(tmp_path)


def test_a_binary_product_toml_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / PRODUCT_FILE).write_bytes(b'[product]\nname = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match=r"product.toml: not UTF-8 text \(byte 18"):
        load_product(tmp_path)


def test_a_product_toml_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / PRODUCT_FILE).mkdir()
    with pytest.raises(ConfigError, match=r"product\.toml is a directory"):
        load_product(tmp_path)


def test_valid_names_and_components_still_pass() -> None:
    cfg = parse(
        '[product]\nname = "hhvm-nightly"\n[repositories]\ncomponents = ["main", "contrib"]\n'
        'origin = "HHVM Project"\nlabel = "HHVM"\nsuites = ["{codename}", "{codename}-lts~1"]\n'
        'byhash_keep = 1\nvalid_for_days = 0\n[source]\nkind = "url"\n'
        'url = "https://dl.example.org/hhvm-{version}.tar.gz"\n'
    )
    assert cfg.repositories.components == ["main", "contrib"]


# --- issue 23: every value is refused at load, in one line naming the file and the key ---


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[source]\npublic_repository = "--upload-pack=id>/tmp/x;false"', "starts with '-'"),
        ('[source]\npublic_repository = "fd::17"', "transport::address"),
        ('[source]\npublic_repository = "ext::sh -c id"', "spaces"),
        ('[source]\npublic_repository = "relative/path.git"', "neither a URL nor an absolute"),
        ('[source]\npublic_repository = "https://h/x\\n.git"', "a newline"),
        ('[source]\nrepository = "-oops"', "starts with '-'"),
        ('[aws]\nrepository_url = "--upload-pack=x"', "starts with '-'"),
        ('[source]\nnightly_ref = "-main"', "starts with '-'"),
        ("[repositories]\nsuites = []", "with no suite"),
        ('[repositories]\nsuites = ["{codename}", "{codename}"]', "twice"),
        ('[repositories]\narchitectures = ["x86"]', "dpkg knows"),
        ("[product]\nsmoke_command = []", "runs nothing"),
        ('[product]\nsmoke_command = [""]', "runs nothing"),
        ('[product]\nmaintainer = "A B <a@b.org>\\nX-Evil: 1"', "maintainer"),
        ('[product]\nmaintainer = "nobody"', "maintainer"),
        ('[product]\nsummary = "two\\tparts"', "a tab"),
        ('[publish]\nprefix = "t\\tab"', "a tab"),
        ('[publish]\npublic_url = "https://h/\\nSuites: evil"', "a newline"),
        ('[source]\nrelease_branch = "{name}.lock"', "'.lock'"),
        ('[source]\nrelease_branch = "-{name}"', "starts with '-'"),
        ('[source]\nrelease_branch = "rel/.{major}"', "starts with '.'"),
        ('[source]\nrelease_tag = "v{version}.lock"', "'.lock'"),
        ('[source]\nkind = "url"\nurl = "https://h/x-{version}-{__class__}.tar.gz"', "{version}"),
        ('[source]\nkind = "url"\nurl = "https://h/x-{version}-{0}.tar.gz"', "{version}"),
        ('[source]\nkind = "url"\nurl = "https://h/x-{version}-{nope}.tar.gz"', "{version}"),
        (
            '[source]\nkind = "url"\nurl = "https://h/x-{version}.tar.gz"\n'
            'signature_url = "https://h/x-{version}.asc{version.real}"\nkeyring = "k"',
            "{version}",
        ),
    ],
)
def test_bad_values_are_refused_at_load_naming_file_and_key(toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(toml)
    message = str(err.value)
    assert message.startswith("product.toml: [")
    assert "\n" not in message
    assert expected in message, message


def test_good_git_locations_and_suite_lists_pass() -> None:
    for url in ("https://example.org/x.git", "git@example.org:x.git", "/srv/git/x.git"):
        assert parse(f'[source]\npublic_repository = "{url}"').source.public_repository == url
    cfg = parse(
        "[repositories]\nsuites = []\n"
        'release_suites = ["{codename}-stable"]\nnightly_suites = ["{codename}-nightly"]'
    )
    assert cfg.suites_for(
        codename="bookworm", distro="debian-12-bookworm", version=Version.parse("2026.11.22")
    ) == ["bookworm-nightly"]
    assert parse('[product]\nmaintainer = "J. Doe (QA) <j.doe@example.org>"').product.maintainer


NAMES = ["main", "-x", "t.lock", "a/b", "a//b", "a..b", ".a", "a/.b", "a.", "a b", "a\tb"]
NAMES += ["a~1", "x@{y", "a/b.lock/c", "release/1.2", "a\x7f", "a:b", "a?", "a*", "a[", "a\\b"]
NAMES += ["/a", "a/", "é", "a@b", "1.2.3-rc1", "tally-v1.2"]


@pytest.mark.parametrize("name", NAMES)
def test_ref_names_are_judged_as_git_check_ref_format_does(name: str) -> None:
    import subprocess

    from releng.gitrefs import ref_name_problem

    git = subprocess.run(
        ["git", "check-ref-format", "--branch", name], capture_output=True, check=False
    )
    assert (ref_name_problem(name) is None) == (git.returncode == 0), name
