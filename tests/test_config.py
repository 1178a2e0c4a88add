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
        ("[repositories]\nkeep_versions = 0", "keep_versions must be at least 1"),
        ("[images]\nkeep_builders = 0", "keep_builders must be at least 1"),
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
