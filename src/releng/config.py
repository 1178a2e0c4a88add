"""product.toml: what is packaged, how it is signed, where it goes.

Every section is a frozen dataclass. :func:`load_product` reads the file,
refuses unknown keys and wrong types with an error naming the file, the key,
the bad value and what is allowed, and falls back to the embedded demo product
when there is no file at all, so everything works with no configuration.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from releng.errors import ConfigError
from releng.version import Version

PRODUCT_FILE = "product.toml"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1 (source and binary names)
_SUITE_FIELDS = {"codename", "major", "minor", "version", "distro"}


@dataclass(frozen=True, kw_only=True)
class ProductSection:
    name: str = "tally"
    summary: str = "count lines, words and bytes, with per-site defaults"
    description: str = (
        "tally is the demo product of releng: a small C program with a man page,\n"
        "a configuration file under /etc and its own test suite."
    )
    maintainer: str = "releng demo <releng-demo@example.org>"
    homepage: str = "https://example.org/tally"
    # Run in a fresh container after `apt-get install` of the built packages.
    smoke_command: list[str] = field(
        default_factory=lambda: ["sh", "-c", "echo one two | tally -w"]
    )


@dataclass(frozen=True, kw_only=True)
class SourceSection:
    kind: Literal["git", "url"] = "git"
    # git: a path (relative to product.toml; may be a subdirectory of this repo) or a URL.
    repository: str = "demo/tally"
    nightly_ref: str = "HEAD"
    release_tag: str = "tally-v{version}"
    submodules: bool = True
    prune: list[str] = field(default_factory=list)
    # url: a template with {version}; optional pinned sha256 per version; optional upstream signature.
    url: str = ""
    sha256: dict[str, str] = field(default_factory=dict)
    signature_url: str = ""
    keyring: str = ""
    cache_dir: str = ".releng/cache/downloads"


@dataclass(frozen=True, kw_only=True)
class SigningSection:
    # Key id or fingerprint. Empty: a development key made once under .releng/ (refused for releases).
    key: str = ""
    passphrase_env: str = "RELENG_SIGNING_PASSPHRASE"  # noqa: S105  (a variable name)
    passphrase_file: str = ""
    # Empty: gpg's default home when `key` is set.
    gnupghome: str = ""


@dataclass(frozen=True, kw_only=True)
class RepositoriesSection:
    # Templates with {codename}, {major}, {minor}, {version}, {distro}.
    suites: list[str] = field(default_factory=lambda: ["{codename}"])
    release_suites: list[str] = field(default_factory=lambda: ["{codename}-{major}.{minor}"])
    nightly_suites: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=lambda: ["main"])
    architectures: list[str] = field(default_factory=lambda: ["amd64"])
    origin: str = ""
    label: str = ""
    keep_versions: int = 5
    nightly_max_age_days: int = 40
    valid_for_days: int = 0  # 0: no Valid-Until field
    byhash_keep: int = 3


@dataclass(frozen=True, kw_only=True)
class ImagesSection:
    debian_mirror: str = "http://deb.debian.org/debian"
    # Optional snapshot timestamp such as 20250520T000000Z: base images then come from
    # snapshot.debian.org-style URLs under `snapshot_mirror`.
    snapshot: str = ""
    snapshot_mirror: str = "http://snapshot.debian.org/archive/debian"
    # Builder images kept per distro (the newest); older ones are removed when one is made.
    keep_builders: int = 2


@dataclass(frozen=True, kw_only=True)
class BuildSection:
    # Compiler output cache (ccache) for C and C++: "off"; "local", a Docker volume per
    # distro and architecture; "s3", that volume synced with a bucket prefix shared by
    # every worker (releng.compiler_cache).
    compiler_cache: Literal["off", "local", "s3"] = "local"
    cache_size: str = "5G"  # the cache's size limit (ccache's max_size): 500M, 5G, 1T
    # s3 mode: s3://BUCKET/PREFIX; empty: s3://<[publish] scratch_bucket>/compiler-cache
    cache_url: str = ""


@dataclass(frozen=True, kw_only=True)
class PublishSection:
    bucket: str = ""
    prefix: str = ""
    scratch_bucket: str = ""
    cloudfront_distribution: str = ""
    region: str = ""
    public_url: str = ""


@dataclass(frozen=True, kw_only=True)
class AwsSection:
    region: str = ""
    stack_name: str = "releng"
    repository_url: str = ""
    branch: str = "main"
    builder_instance_type: str = "c6i.4xlarge"
    small_instance_type: str = "t3.small"
    ami: str = ""


@dataclass(frozen=True, kw_only=True)
class ProductConfig:
    """The whole of product.toml, validated."""

    path: Path | None
    product: ProductSection = field(default_factory=ProductSection)
    source: SourceSection = field(default_factory=SourceSection)
    signing: SigningSection = field(default_factory=SigningSection)
    repositories: RepositoriesSection = field(default_factory=RepositoriesSection)
    images: ImagesSection = field(default_factory=ImagesSection)
    build: BuildSection = field(default_factory=BuildSection)
    publish: PublishSection = field(default_factory=PublishSection)
    aws: AwsSection = field(default_factory=AwsSection)

    @property
    def name(self) -> str:
        return self.product.name

    def package_name(self, version: Version) -> str:
        return version.package_name(self.product.name)

    def suites_for(self, *, codename: str, distro: str, version: Version) -> list[str]:
        """The suites that a build of ``version`` for ``codename`` goes into."""
        templates = list(self.repositories.suites)
        templates += self.repositories.release_suites if version.is_release else []
        templates += self.repositories.nightly_suites if version.is_nightly else []
        values = {
            "codename": codename,
            "distro": distro,
            "version": version.text,
            "major": version.major if version.is_release else "",
            "minor": version.minor if version.is_release else "",
        }
        return list(dict.fromkeys(t.format(**values) for t in templates))


_SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(ProductConfig)[f.name]
    for f in dataclasses.fields(ProductConfig)
    if f.name != "path"
}

_T = TypeVar("_T")


def _type_ok(value: object, hint: Any) -> bool:  # noqa: PLR0911  (one return per type)
    origin = typing.get_origin(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _type_ok(k, key) and _type_ok(v, item) for k, v in value.items()
        )
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    raise AssertionError(f"unsupported config type {hint!r}")  # a bug in this module


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}s"
    if origin is dict:
        return "a table of strings"
    return {bool: "true or false", int: "an integer", str: "a string"}.get(hint, str(hint))


def _section(cls: type[_T], table: Mapping[str, Any], *, where: str, section: str) -> _T:
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(
                f"{where}: unknown key [{section}] {key!r}; allowed keys: {', '.join(allowed)}"
            )
        if not _type_ok(value, hints[key]):
            raise ConfigError(
                f"{where}: [{section}] {key} = {value!r} is not allowed; "
                f"expected {_describe(hints[key])}"
            )
    return cls(**table)


def _check_semantics(cfg: ProductConfig, where: str) -> None:
    name = cfg.product.name
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"{where}: [product] name = {name!r} is not a Debian package name; "
            "use lower-case letters, digits, '+', '-' and '.' (at least 2 characters)"
        )
    src = cfg.source
    if src.kind == "git":
        if not src.repository:
            raise ConfigError(f"{where}: [source] repository is empty; name a git path or URL")
        if "{version}" not in src.release_tag:
            raise ConfigError(
                f"{where}: [source] release_tag = {src.release_tag!r} must contain "
                "'{version}', e.g. 'v{version}'"
            )
    elif "{version}" not in src.url:
        raise ConfigError(
            f"{where}: [source] url = {src.url!r} must contain '{{version}}' when kind = 'url'"
        )
    for version, digest in src.sha256.items():
        Version.parse(version)
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(
                f"{where}: [source.sha256] {version!r} = {digest!r} is not a sha256 "
                "(64 lower-case hex digits)"
            )
    _check_repositories(cfg, where)
    _check_counts(cfg, where)
    _check_build(cfg, where)


def _check_repositories(cfg: ProductConfig, where: str) -> None:
    repos = cfg.repositories
    for key in ("suites", "release_suites", "nightly_suites"):
        for template in getattr(repos, key):
            fields = set(re.findall(r"{(\w*)}", template))
            if not fields <= _SUITE_FIELDS:
                raise ConfigError(
                    f"{where}: [repositories] {key} entry {template!r} uses "
                    f"{', '.join(sorted(fields - _SUITE_FIELDS))}; allowed fields: "
                    + ", ".join("{" + f + "}" for f in sorted(_SUITE_FIELDS))
                )
    if not repos.components or not repos.architectures:
        raise ConfigError(f"{where}: [repositories] components and architectures must not be empty")


def _check_counts(cfg: ProductConfig, where: str) -> None:
    for section, key, value in (
        ("repositories", "keep_versions", cfg.repositories.keep_versions),
        ("images", "keep_builders", cfg.images.keep_builders),
    ):
        if value < 1:
            raise ConfigError(f"{where}: [{section}] {key} must be at least 1")


CACHE_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGT])$")


def _check_build(cfg: ProductConfig, where: str) -> None:
    build = cfg.build
    size = CACHE_SIZE_RE.match(build.cache_size)
    if size is None or float(size.group(1)) <= 0:
        raise ConfigError(
            f"{where}: [build] cache_size = {build.cache_size!r} is not a size; "
            "use a positive number with K, M, G or T, e.g. '5G'"
        )
    if build.cache_url and not re.fullmatch(
        r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", build.cache_url
    ):
        raise ConfigError(
            f"{where}: [build] cache_url = {build.cache_url!r} is not an S3 URL; "
            "use s3://BUCKET/PREFIX"
        )
    if build.compiler_cache == "s3" and not (build.cache_url or cfg.publish.scratch_bucket):
        raise ConfigError(
            f"{where}: [build] compiler_cache = 's3' needs a bucket; set [build] cache_url "
            "(s3://BUCKET/PREFIX) or [publish] scratch_bucket"
        )


def parse_product(text: str, *, path: Path | None, where: str) -> ProductConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    sections: dict[str, Any] = {}
    for name, table in data.items():
        if name not in _SECTIONS:
            raise ConfigError(
                f"{where}: unknown section [{name}]; allowed sections: {', '.join(_SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {name} must be a table ([{name}])")
        sections[name] = _section(_SECTIONS[name], table, where=where, section=name)
    cfg = ProductConfig(path=path, **sections)
    _check_semantics(cfg, where)
    return cfg


def load_product(root: Path) -> ProductConfig:
    """Read ``root/product.toml``; with no file, the embedded demo product."""
    path = root / PRODUCT_FILE
    if not path.exists():
        return ProductConfig(path=None)
    return parse_product(path.read_text(encoding="utf-8"), path=path, where=str(path))
