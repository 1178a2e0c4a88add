"""A first build's ``.buildinfo``: what it was built with, read as plain data.

The rebuild installs exactly the ``Installed-Build-Depends`` a first build records
and takes its ``Environment`` (``SOURCE_DATE_EPOCH``, ``DEB_BUILD_OPTIONS`` but the
parallelism) as it is; everything else a second machine would differ in, it varies.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from releng.apt.changes import read_control_file
from releng.deb822 import listed_files
from releng.errors import RelengError

# " autoconf (= 2.71-3)," and, in a cross build's, " libc6:arm64 (= 2.36-9)".
_DEP_RE = re.compile(r"^([a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?) \(= ([^)\s]+)\)$")
_ENV_RE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)="(.*)"$')


class RebuildError(RelengError):
    """A rebuild cannot run, or it did not reproduce the first build."""


@dataclass(frozen=True, kw_only=True)
class Dependency:
    name: str  # with ":arch" when the buildinfo qualifies it
    version: str

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def apt_spec(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True, kw_only=True)
class BuildInfo:
    path: Path
    source: str
    version: str
    architectures: tuple[str, ...]  # Architecture: what the build made (source, all, amd64)
    binaries: tuple[str, ...]  # the packages it made (.deb, .udeb, .ddeb), from its checksums
    build_architecture: str
    build_path: str
    dependencies: tuple[Dependency, ...]
    environment: dict[str, str]

    @property
    def deb_build_options(self) -> list[str]:
        return self.environment.get("DEB_BUILD_OPTIONS", "").split()

    @property
    def parallel(self) -> int | None:
        for option in self.deb_build_options:
            if option.startswith("parallel=") and option[9:].isdigit():
                return int(option[9:])
        return None


def parse_dependencies(text: str, *, where: str) -> tuple[Dependency, ...]:
    deps = []
    for raw in text.replace("\n", " ").split(","):
        item = " ".join(raw.split())
        if not item:
            continue
        m = _DEP_RE.fullmatch(item)
        if m is None:
            raise RebuildError(
                f"{where}: Installed-Build-Depends has {item!r}, not 'name (= version)'; "
                "the .buildinfo is damaged: make the build again"
            )
        deps.append(Dependency(name=m[1], version=m[2]))
    return tuple(deps)


def parse_environment(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        m = _ENV_RE.fullmatch(line.strip())
        if m:
            # dpkg escapes '"' and '\' inside the quotes; shlex undoes that.
            env[m[1]] = shlex.split(f'"{m[2]}"')[0] if m[2] else ""
    return env


def read_buildinfo(path: Path) -> BuildInfo:
    """Parse ``path``; RebuildError when it lacks what a rebuild needs."""
    fields = read_control_file(path)
    where = str(path)
    deps = fields.get("Installed-Build-Depends", "")
    if not deps.strip():
        raise RebuildError(
            f"{where} records no Installed-Build-Depends; a rebuild cannot know the build's "
            "tools: build with a dpkg that writes them (1.18.11 or later)"
        )
    return BuildInfo(
        path=path,
        source=fields.get("Source", "").split()[0] if fields.get("Source") else "",
        version=fields.get("Version", ""),
        architectures=tuple(fields.get("Architecture", "").split()),
        binaries=tuple(
            f.name
            for f in listed_files(fields, "Checksums-Sha256", where=where)
            if f.name.endswith((".deb", ".udeb", ".ddeb"))
        ),
        build_architecture=fields.get("Build-Architecture", ""),
        build_path=fields.get("Build-Path", ""),
        dependencies=parse_dependencies(deps, where=where),
        environment=parse_environment(fields.get("Environment", "")),
    )
