"""product.toml: what is packaged, how it is signed, where it goes.

Every section is a frozen dataclass. :func:`load_product` reads the file,
refuses unknown keys and wrong types with an error naming the file, the key,
the bad value and what is allowed, and falls back to the embedded demo product
when there is no file at all, so everything works with no configuration.
"""

from __future__ import annotations

import dataclasses
import re
import string
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from releng.arch import dpkg_knows
from releng.errors import ConfigError
from releng.gitrefs import ref_name_problem
from releng.textcheck import control_character
from releng.version import DEFAULT_RELEASE_LINE, RELEASE_LINE_FIELDS, Version

PRODUCT_FILE = "product.toml"

# Every pattern below is used with fullmatch: `$` would also match before a final newline.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian policy 5.6.1 (source and binary names)
_SUITE_FIELDS = {"codename", "major", "minor", "version", "distro", "release_line"}
# A suite template's literal text: what a suite name (dists/<suite>/, the Suite field) may hold.
_SUITE_TEXT_RE = re.compile(r"[A-Za-z0-9.+~_-]*")
# A component is one path segment (dists/<suite>/<component>/, pool/<component>/): no '/'.
_COMPONENT_RE = re.compile(r"[a-z0-9][a-z0-9.+-]*")
_ARCH_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
# Control characters break a Release file's lines (a newline even injects a field).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Each integer setting's (minimum, maximum): beyond them a value is a typo, not a policy.
_RANGES: dict[tuple[str, str], tuple[int, int, str]] = {
    ("repositories", "keep_versions"): (1, 10_000, "versions kept per package"),
    ("repositories", "nightly_max_age_days"): (0, 36_500, "days; 0 keeps nightlies forever"),
    ("repositories", "valid_for_days"): (0, 3_650, "days; 0 writes no Valid-Until"),
    ("repositories", "byhash_keep"): (1, 100, "by-hash generations kept per index"),
    ("repositories", "keep_history"): (1, 10_000, "publishes kept per suite for rollback"),
    ("images", "keep_builders"): (1, 100, "builder images kept per distro"),
    ("signing", "overlap_days"): (0, 3_650, "days both keys sign before the old one retires"),
    ("signing", "warn_days"): (0, 3_650, "days before a key's expiry that publishes warn"),
}
_MAX_NESTING = 64  # product.toml is a few flat tables; deeper is not a product description
_PRISTINE_URL = re.compile(r"\.tar\.(gz|xz|bz2|zst)$")  # what dpkg-source takes as an orig tarball
_SUFFIX_RE = re.compile(r"[+~][A-Za-z0-9.+~]*")
_TAG_TILDES = ("-", "_", "+", "%")  # what `~` may become in a git tag (git refuses `~`)
_BRANCH_FIELDS = {"name", "major", "minor", "version", "release_line"}


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
    # git refuses `~` in tags: `{version}` of release_tag has it replaced by this (1.2-rc1).
    tag_tilde: str = "-"
    submodules: bool = True
    prune: list[str] = field(default_factory=list)
    # url: a template with {version}; optional pinned sha256 per version; optional upstream signature.
    url: str = ""
    sha256: dict[str, str] = field(default_factory=dict)
    signature_url: str = ""
    keyring: str = ""
    cache_dir: str = ".releng/cache/downloads"
    # url with prune: the repacked tarball's version carries this suffix (2.10+ds), so that
    # nobody takes it for upstream's file. Without prune upstream's file is kept as it is.
    repack_suffix: str = "+ds"

    @property
    def pristine(self) -> bool:
        """Whether the orig tarball is upstream's file, byte for byte (a url source, no prune)."""
        return self.kind == "url" and not self.prune

    def upstream_version(self, version: Version) -> str:
        """The Debian upstream version: ``2.10``, or ``2.10+ds`` for a repacked url source."""
        repacked = self.kind == "url" and bool(self.prune)
        return version.text + self.repack_suffix if repacked else version.text

    @property
    def compression(self) -> str:
        """``gz``, ``xz``, ``bz2`` or ``zst``: upstream's for a pristine url source, else gz."""
        if not self.pristine:
            return "gz"
        m = _PRISTINE_URL.search(self.url)
        assert m is not None  # checked when product.toml was read
        return m[1]

    def tag_for(self, version: Version) -> str:
        """A release's git tag: ``release_tag`` with ``~`` in the version mapped to ``tag_tilde``."""
        return self.release_tag.format(version=version.tag_text(self.tag_tilde))

    # Release day (invoke publish-release-source): once a release's packages are live, its
    # tag and release branch are pushed from `repository` (possibly private staging) here.
    public_repository: str = ""
    # A template with {name}, {version}, {major}, {minor}, {release_line}; empty: the tag only.
    release_branch: str = ""
    # A keyring file (armored or binary): when set, `git verify-tag` must accept the tag first.
    tag_keyring: str = ""
    # An environment variable holding an HTTPS token for public_repository (never logged).
    public_token_env: str = "RELENG_GIT_TOKEN"  # noqa: S105  (a variable name)


@dataclass(frozen=True, kw_only=True)
class SigningSection:
    # Key id or fingerprint, or a list of them: every key signs a Release (InRelease and
    # Release.gpg), the first signs tarballs and attestations. Empty: a development key made
    # once under .releng/ (refused for releases).
    key: str | list[str] = ""
    passphrase_env: str = "RELENG_SIGNING_PASSPHRASE"  # noqa: S105  (a variable name)
    passphrase_file: str = ""
    # Empty: gpg's default home when `key` is set.
    gnupghome: str = ""
    overlap_days: int = 30  # rotate-keys --retire waits this long after --add (--force: earlier)
    # When the set of keys last changed (ISO 8601; rotate-keys writes it): the start of an
    # overlap, and the keyring package's version. Empty: the newest key's creation time.
    keys_changed: str = ""
    warn_days: int = 60  # publishes and check-repo warn when a key expires this soon

    @property
    def keys(self) -> tuple[str, ...]:
        """The configured keys, the first one first (empty: the development key)."""
        listed = [self.key] if isinstance(self.key, str) else self.key
        return tuple(k.strip() for k in listed if k.strip())


@dataclass(frozen=True, kw_only=True)
class RepositoriesSection:
    # Templates with {codename}, {major}, {minor}, {version}, {distro}, {release_line}.
    suites: list[str] = field(default_factory=lambda: ["{codename}"])
    release_suites: list[str] = field(default_factory=lambda: ["{codename}-{release_line}"])
    # A release's line from its version: {major}, {minor}, {patch}, {version} (1.2 of 1.2.3~rc1).
    release_line: str = DEFAULT_RELEASE_LINE
    nightly_suites: list[str] = field(default_factory=list)
    # Suites builds do not go into, that exist for promotion (copy-packages), e.g. "{codename}-stable".
    promotion_suites: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=lambda: ["main"])
    architectures: list[str] = field(default_factory=lambda: ["amd64"])
    origin: str = ""
    label: str = ""
    keep_versions: int = 5
    nightly_max_age_days: int = 40
    valid_for_days: int = 0  # 0: no Valid-Until field
    byhash_keep: int = 3
    keep_history: int = 20  # publishes per suite kept for show-history and rollback-repo
    # Where the repository lives: a directory (relative to the project) or s3://BUCKET/PREFIX.
    location: str = "out/repo"
    contents: bool = True  # Contents-<arch>.gz indexes for apt-file (releng.apt.contents)
    # Packages.xz/Sources.xz: "chunks" (fast publishes; 17-33% bigger) or "one-stream"
    # (the smallest download; a publish compresses a changed index whole): releng.apt.index.
    index_xz: Literal["chunks", "one-stream"] = "chunks"


@dataclass(frozen=True, kw_only=True)
class ImagesSection:
    debian_mirror: str = "http://deb.debian.org/debian"
    # Optional snapshot timestamp such as 20250520T000000Z: base images then come from
    # snapshot.debian.org-style URLs under `snapshot_mirror`.
    snapshot: str = ""
    snapshot_mirror: str = "http://snapshot.debian.org/archive/debian"
    # Ubuntu releases bootstrap from this archive (release, -updates and -security pockets;
    # a distro's APT_SOURCES overrides it), verified with ubuntu_keyring (a path; empty: the
    # Ubuntu archive keyring releng carries).
    ubuntu_mirror: str = "http://archive.ubuntu.com/ubuntu"
    ubuntu_keyring: str = ""
    # Ubuntu's archive of the architectures other than amd64 and i386 (arm64), for cross
    # builders' Build-Depends when it is reachable; empty: never used (see README,
    # Architectures).
    ubuntu_ports_mirror: str = "http://ports.ubuntu.com/ubuntu-ports"
    # Builder images kept per distro (the newest); older ones are removed when one is made.
    keep_builders: int = 2
    # How another architecture than the host's builds: "cross" (a cross toolchain on the
    # host's architecture) or "emulated" (that architecture's images under qemu-user-static).
    # A distro's BUILD_MODE file and `make-package --mode` override it.
    build_mode: Literal["cross", "emulated"] = "cross"


@dataclass(frozen=True, kw_only=True)
class LintianSection:
    # Run lintian after every build (make-package --lintian does for one build).
    run: bool = False
    # Tags that fail the build; lintian's report is kept beside the build either way.
    fail_on: list[str] = field(default_factory=list)


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
class VerifySection:
    # Independent rebuilds (invoke verify-rebuild, docs/rebuild.md): "off"; "report", publish
    # and say what is unverified; "require", refuse to publish a build with no matching rebuild.
    rebuild: Literal["off", "report", "require"] = "off"
    # The rebuilder's signing key (never the archive's). Empty: a development key under .releng/.
    key: str = ""
    gnupghome: str = ""
    passphrase_env: str = "RELENG_REBUILDER_PASSPHRASE"  # noqa: S105  (a variable name)
    passphrase_file: str = ""


@dataclass(frozen=True, kw_only=True)
class PublishSection:
    bucket: str = ""
    prefix: str = ""
    scratch_bucket: str = ""
    cloudfront_distribution: str = ""
    public_url: str = ""


@dataclass(frozen=True, kw_only=True)
class AwsSection:
    region: str = ""
    stack_name: str = "releng"
    repository_url: str = ""
    branch: str = "main"
    builder_instance_type: str = "c6i.4xlarge"
    arm64_instance_type: str = "c7g.4xlarge"  # the arm64 builders (Graviton: native builds)
    small_instance_type: str = "t3.small"
    ami: str = ""  # an AMI id, or an SSM parameter name holding one; empty: Debian 12's latest
    arm64_ami: str = ""  # the same for the arm64 builders; empty: Debian 12's latest arm64
    subnets: list[str] = field(default_factory=list)  # empty: the default VPC
    security_groups: list[str] = field(default_factory=list)  # empty: the VPC's default group
    max_workers: dict[str, int] = field(default_factory=dict)  # queue -> pool size
    git_credentials_parameter: str = ""  # SSM SecureString: SSH deploy key of a private repo
    # SSM SecureString: the HTTPS token publish-release-source pushes to public_repository with
    # (only the publisher's role reads it; the worker hands it over as [source] public_token_env).
    public_git_token_parameter: str = ""
    # Gets one email per failed, timed-out or aborted execution (SNS; confirm the first mail).
    notify_email: str = ""


@dataclass(frozen=True, kw_only=True)
class ProductConfig:
    """The whole of product.toml, validated."""

    path: Path | None
    product: ProductSection = field(default_factory=ProductSection)
    source: SourceSection = field(default_factory=SourceSection)
    signing: SigningSection = field(default_factory=SigningSection)
    repositories: RepositoriesSection = field(default_factory=RepositoriesSection)
    images: ImagesSection = field(default_factory=ImagesSection)
    lintian: LintianSection = field(default_factory=LintianSection)
    build: BuildSection = field(default_factory=BuildSection)
    verify: VerifySection = field(default_factory=VerifySection)
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
            "release_line": (
                version.release_line(self.repositories.release_line) if version.is_release else ""
            ),
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


# Keys that moved: one line saying where to.
_MOVED = {
    ("publish", "region"): "releng has one region setting: write it as [aws] region "
    "(AWS_REGION or AWS_DEFAULT_REGION still come first)",
}


def _section(cls: type[_T], table: Mapping[str, Any], *, where: str, section: str) -> _T:
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key, value in table.items():
        if (section, key) in _MOVED:
            raise ConfigError(f"{where}: [{section}] {key} is gone; {_MOVED[section, key]}")
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
    if not _NAME_RE.fullmatch(name):
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
    else:
        for key in ("url", "signature_url"):
            _check_url(getattr(src, key), where=where, key=key)
    if src.kind == "url" and src.pristine and not _PRISTINE_URL.search(src.url):
        raise ConfigError(
            f"{where}: [source] url = {src.url!r} must end in .tar.gz, .tar.xz, .tar.bz2 or "
            ".tar.zst: upstream's file becomes the orig tarball as it is (or set prune to repack it)"
        )
    if not _SUFFIX_RE.fullmatch(src.repack_suffix):
        raise ConfigError(
            f"{where}: [source] repack_suffix = {src.repack_suffix!r} must start with '+' or '~' "
            "and hold only letters, digits, '.', '+' and '~', e.g. '+ds'"
        )
    if src.tag_tilde not in _TAG_TILDES:
        raise ConfigError(
            f"{where}: [source] tag_tilde = {src.tag_tilde!r} is not allowed in a git tag in "
            f"place of '~'; use one of {', '.join(repr(t) for t in _TAG_TILDES)}"
        )
    _check_release_branch(src, where)
    for version, digest in src.sha256.items():
        Version.parse(version, release=True)
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(
                f"{where}: [source.sha256] {version!r} = {digest!r} is not a sha256 "
                "(64 lower-case hex digits)"
            )
    _check_repositories(cfg, where)
    _check_suite_lists(cfg.repositories, where)
    _check_architectures(cfg.repositories, where)
    _check_counts(cfg, where)
    _check_build(cfg, where)
    _check_product(cfg.product, where)
    _check_git_urls(cfg, where)
    _check_one_line_values(cfg, where)


def _check_release_branch(src: SourceSection, where: str) -> None:
    fields = set(re.findall(r"{(\w*)}", src.release_branch))
    if not fields <= _BRANCH_FIELDS:
        raise ConfigError(
            f"{where}: [source] release_branch = {src.release_branch!r} uses "
            f"{', '.join(sorted(fields - _BRANCH_FIELDS))}; allowed fields: "
            + ", ".join("{" + f + "}" for f in sorted(_BRANCH_FIELDS))
        )
    # Rendered with sample values, each template must be a name `git check-ref-format` takes.
    samples = {"name": "tally", "major": "1", "minor": "2", "release_line": "1.2"}
    checks = [("release_tag", src.release_tag, "v{version}")]
    checks += [("release_branch", src.release_branch, "release/{major}.{minor}")]
    for key, template, example in checks:
        if not template:
            continue
        try:
            name = template.format(version=f"1.2.3{src.tag_tilde}rc1", **samples)
        except (KeyError, IndexError, ValueError, AttributeError):
            name = ""  # unknown fields are refused above (branch) or by the version check (tag)
        problem = ref_name_problem(name) if name else "it is not a template of known fields"
        if problem:
            raise ConfigError(
                f"{where}: [source] {key} = {template!r} does not make a git ref name "
                f"({problem}); use letters, digits, '.', '-', '_' and '/' around the fields, "
                f"e.g. {example!r}"
            )


def _check_repositories(cfg: ProductConfig, where: str) -> None:
    repos = cfg.repositories
    for key in ("suites", "release_suites", "nightly_suites", "promotion_suites"):
        for template in getattr(repos, key):
            fields = set(re.findall(r"{(\w*)}", template))
            if not fields <= _SUITE_FIELDS:
                raise ConfigError(
                    f"{where}: [repositories] {key} entry {template!r} uses "
                    f"{', '.join(sorted(fields - _SUITE_FIELDS))}; allowed fields: "
                    + ", ".join("{" + f + "}" for f in sorted(_SUITE_FIELDS))
                )
            literal = re.sub(r"{\w*}", "", template)
            if not template or not _SUITE_TEXT_RE.fullmatch(literal) or template[0] in ".-~_+":
                raise ConfigError(
                    f"{where}: [repositories] {key} entry {template!r} is not a suite name "
                    "template; use letters, digits and '.', '+', '~', '_', '-' (not first) "
                    "around the fields"
                )
    line_fields = set(re.findall(r"{(\w*)}", repos.release_line))
    line_literal = re.sub(r"{\w*}", "", repos.release_line)
    if (
        not line_fields
        or not line_fields <= RELEASE_LINE_FIELDS
        or not _SUITE_TEXT_RE.fullmatch(line_literal)
    ):
        raise ConfigError(
            f"{where}: [repositories] release_line = {repos.release_line!r} must use "
            + ", ".join("{" + f + "}" for f in sorted(RELEASE_LINE_FIELDS))
            + " and nothing else, e.g. '{major}.{minor}'"
        )
    if not repos.components or not repos.architectures:
        raise ConfigError(f"{where}: [repositories] components and architectures must not be empty")
    for key, pattern, allowed in (
        ("components", _COMPONENT_RE, "one path segment such as 'main' or 'contrib'"),
        ("architectures", _ARCH_RE, "a Debian architecture such as 'amd64' or 'arm64'"),
    ):
        values: list[str] = getattr(repos, key)
        for value in values:
            if not pattern.fullmatch(value) or value in ("all", "source", "by-hash"):
                raise ConfigError(
                    f"{where}: [repositories] {key} entry {value!r} is not allowed; expected "
                    f"{allowed}: lower-case letters, digits, '-'"
                    + (", '+', '.'" if key == "components" else "")
                    + " (list several as separate strings)"
                )
        if len(set(values)) != len(values):
            raise ConfigError(f"{where}: [repositories] {key} = {values!r} lists one twice")
    for key in ("origin", "label"):
        value = getattr(repos, key)
        if _CONTROL_RE.search(value) or value != value.strip():
            raise ConfigError(
                f"{where}: [repositories] {key} = {value!r} is not allowed: it goes into each "
                "Release file as one line; remove control characters (newlines, tabs) and "
                "leading or trailing spaces"
            )
    _check_location(repos.location, where)


def _check_location(location: str, where: str) -> None:
    """[repositories] location: a directory or s3://BUCKET/PREFIX."""
    if (
        not location
        or _CONTROL_RE.search(location)
        or (
            location.startswith("s3:")
            and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?", location)
        )
    ):
        raise ConfigError(
            f"{where}: [repositories] location = {location!r} is not a repository; "
            "use a directory (e.g. 'out/repo') or s3://BUCKET/PREFIX, without control characters"
        )


def _check_suite_lists(repos: RepositoriesSection, where: str) -> None:
    """Every build has a suite to go into, and no list names a suite twice."""
    for key in ("suites", "release_suites", "nightly_suites", "promotion_suites"):
        listed: list[str] = getattr(repos, key)
        if len(set(listed)) != len(listed):
            twice = sorted({t for t in listed if listed.count(t) > 1})
            raise ConfigError(
                f"{where}: [repositories] {key} lists {', '.join(map(repr, twice))} twice; "
                "name each suite once"
            )
    if not repos.suites and not (repos.release_suites and repos.nightly_suites):
        raise ConfigError(
            f"{where}: [repositories] suites = [] leaves "
            + ("releases" if not repos.release_suites else "nightlies")
            + " with no suite to go into; name at least one suite, e.g. suites = ['{codename}'] "
            "(or both release_suites and nightly_suites)"
        )


def _check_architectures(repos: RepositoriesSection, where: str) -> None:
    """The rule of ``--arch``: a name dpkg knows."""
    for arch in repos.architectures:
        if not dpkg_knows(arch):
            raise ConfigError(
                f"{where}: [repositories] architectures entry {arch!r} is not an architecture "
                "dpkg knows (see `dpkg-architecture -L`); use a Debian architecture name such "
                "as 'amd64' or 'arm64'"
            )


def _check_url(url: str, *, where: str, key: str) -> None:
    if not url:
        return
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(url) if f is not None}
    except ValueError:
        fields = {"{"}
    if fields - {"version"}:
        raise ConfigError(
            f"{where}: [source] {key} = {url!r} uses "
            f"{', '.join(repr(f) for f in sorted(fields - {'version'}))}; the only field "
            "allowed is {version} (write a literal brace as {{ or }})"
        )
    parsed = urllib.parse.urlsplit(url.replace("{version}", "1.0.0"))
    if parsed.scheme not in ("http", "https", "file") or (
        parsed.scheme != "file" and not parsed.netloc
    ):
        raise ConfigError(
            f"{where}: [source] {key} = {url!r} is not a URL; expected "
            "'https://host/path/name-{version}.tar.gz' (http, https or file)"
        )
    if _CONTROL_RE.search(url) or " " in url:
        raise ConfigError(f"{where}: [source] {key} = {url!r} holds spaces or control characters")


# Name <address>: what dpkg-parsechangelog takes from a changelog trailer and what the
# Maintainer and Changed-By fields hold (Debian policy 5.6.2).
_MAINTAINER_RE = re.compile(r"[^<>,\x00-\x1f\x7f]*[^<>,\s\x00-\x1f\x7f] <[^<>\s@]+@[^<>\s@]+>")


def _check_product(product: ProductSection, where: str) -> None:
    if not _MAINTAINER_RE.fullmatch(product.maintainer):
        raise ConfigError(
            f"{where}: [product] maintainer = {product.maintainer!r} is not 'Full Name "
            "<address@example.org>' on one line (no control characters, commas or extra "
            "'<' '>'); it goes into debian/changelog and the Maintainer field"
        )
    for key in ("summary", "homepage"):
        value: str = getattr(product, key)
        if control_character(value) or value != value.strip():
            raise ConfigError(
                f"{where}: [product] {key} = {value!r} holds "
                f"{control_character(value) or 'leading or trailing spaces'}; it goes into "
                "debian/control as one line: remove it"
            )
    if not product.smoke_command or not product.smoke_command[0].strip():
        raise ConfigError(
            f"{where}: [product] smoke_command = {product.smoke_command!r} runs nothing; give "
            "the program and its arguments, e.g. ['sh', '-c', 'tally --version']"
        )


_GIT_URL_RE = re.compile(r"(https?|ssh|git|file)://[^\s]+")
_SCP_LIKE_RE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]*")  # git@host:path


def git_url_problem(url: str, *, relative: bool) -> str | None:
    """Why ``url`` is not a git repository location releng passes to git; None: it is one.

    Allowed: ``https://``, ``http://``, ``ssh://``, ``git://``, ``file://`` URLs,
    ``user@host:path`` and absolute paths (and, with ``relative``, relative paths). Never
    a leading ``-`` (git would read an option: ``--upload-pack=...`` runs a command), a
    ``transport::address`` (git's remote helpers: ``ext::``, ``fd::``), control characters
    or spaces.
    """
    found = control_character(url)
    problems = [
        (found is not None, f"it holds {found}"),
        (url != url.strip() or " " in url, "it holds spaces"),
        (url.startswith("-"), "it starts with '-', which git would read as an option"),
        ("::" in url.split("/", 1)[0], "git's transport::address form runs a remote helper"),
    ]
    if problem := next((why for failed, why in problems if failed), None):
        return problem
    if _GIT_URL_RE.fullmatch(url) or _SCP_LIKE_RE.fullmatch(url) or url.startswith("/"):
        return None
    if "://" in url:
        return "its scheme is not https, http, ssh, git or file"
    return None if relative else "it is neither a URL nor an absolute path"


def _check_git_urls(cfg: ProductConfig, where: str) -> None:
    urls = [("source", "public_repository", cfg.source.public_repository, False)]
    urls += [("aws", "repository_url", cfg.aws.repository_url, False)]
    if cfg.source.kind == "git":
        urls.append(("source", "repository", cfg.source.repository, True))
    for section, key, url, relative in urls:
        if url and (problem := git_url_problem(url, relative=relative)):
            raise ConfigError(
                f"{where}: [{section}] {key} = {url!r} is not allowed: {problem}; expected "
                "https://host/path.git, ssh://host/path, git@host:path or an absolute path"
                + (" (or a path relative to product.toml)" if relative else "")
            )
    ref = cfg.source.nightly_ref
    if ref != "HEAD" and (problem := ref_name_problem(ref)):
        raise ConfigError(
            f"{where}: [source] nightly_ref = {ref!r} is not a git ref name ({problem}); "
            "e.g. 'HEAD', 'main' or 'refs/heads/main'"
        )


# Values that become S3 keys, URLs in printed sources snippets or AWS names: one word each.
_ONE_WORD = {
    "publish": (
        "bucket",
        "prefix",
        "scratch_bucket",
        "cloudfront_distribution",
        "public_url",
    ),
    "aws": ("region", "stack_name", "ami", "arm64_ami"),
    "images": ("debian_mirror", "snapshot_mirror", "ubuntu_mirror", "ubuntu_ports_mirror"),
}


def _check_one_line_values(cfg: ProductConfig, where: str) -> None:
    for section, keys in _ONE_WORD.items():
        for key in keys:
            value: str = getattr(getattr(cfg, section), key, "")  # "" once a key moves
            found = control_character(value) or ("a space" if " " in value else None)
            if found:
                raise ConfigError(
                    f"{where}: [{section}] {key} = {value!r} holds {found}; it becomes part of "
                    "an S3 key, a URL or a name: remove it"
                )


def _check_counts(cfg: ProductConfig, where: str) -> None:
    for (section, key), (low, high, unit) in _RANGES.items():
        value = getattr(getattr(cfg, section), key)
        if not low <= value <= high:
            raise ConfigError(
                f"{where}: [{section}] {key} = {value} is out of range; "
                f"allowed: {low} to {high} ({unit})"
            )


def _depth(value: object, limit: int) -> int:
    """How deeply ``value`` nests tables and arrays, counting at most to ``limit`` + 1."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


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
    except RecursionError:
        data = None
    if data is None or _depth(data, _MAX_NESTING) > _MAX_NESTING:
        raise ConfigError(
            f"{where}: arrays or tables nest more than {_MAX_NESTING} deep; "
            "product.toml holds a few flat tables (see the README's Configuration)"
        )
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
    if not path.exists() and not path.is_symlink():
        return ProductConfig(path=None)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start : exc.start + 1]!r}); "
            "product.toml must be a TOML text file"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory; product.toml must be a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; fix it or remove it") from None
    return parse_product(text, path=path, where=str(path))
