"""Architectures: Debian's names, the host's, how registries and Docker name them, emulation.

Debian names (``amd64``, ``arm64``) are used everywhere in releng; this module maps
them to the per-architecture image names the usual registries use
(``arm64v8/debian:bookworm``), to Docker platforms and OCI image configs, and to the
qemu-user-static binfmt_misc handler that lets this host run a foreign one.
"""

from __future__ import annotations

import enum
import functools
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from releng.errors import RelengError

BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENV = "RELENG_BINFMT_MISC"  # another binfmt_misc directory (tests point it elsewhere)


class ArchError(RelengError):
    """An architecture releng cannot build for, or cannot run here."""


class BuildMode(enum.Enum):
    """How packages for a foreign architecture are built."""

    CROSS = "cross"  # a host-architecture builder with the cross toolchain (fast)
    EMULATED = "emulated"  # a builder of the target architecture run through qemu (slow)

    @classmethod
    def parse(cls, text: str, *, where: str) -> BuildMode:
        try:
            return cls(text)
        except ValueError:
            raise ArchError(
                f"{where}: unknown build mode {text!r}; use one of "
                + ", ".join(m.value for m in cls)
            ) from None


@dataclass(frozen=True)
class ArchInfo:
    """How one Debian architecture is named outside Debian."""

    registry_prefix: str  # the Docker Hub namespace of its official images: arm64v8/debian
    oci_arch: str  # GOARCH, as image configs and platforms say it
    oci_variant: str
    qemu: str  # the binfmt_misc handler qemu-user-static registers for it: qemu-<name>

    @property
    def platform(self) -> str:
        return f"linux/{self.oci_arch}" + (f"/{self.oci_variant}" if self.oci_variant else "")


# The architectures official images exist for (https://github.com/docker-library/official-images
# #architectures-other-than-amd64).
ARCHITECTURES: Mapping[str, ArchInfo] = {
    "amd64": ArchInfo("amd64", "amd64", "", "x86_64"),
    "arm64": ArchInfo("arm64v8", "arm64", "v8", "aarch64"),
    "armhf": ArchInfo("arm32v7", "arm", "v7", "arm"),
    "armel": ArchInfo("arm32v5", "arm", "v5", "arm"),
    "i386": ArchInfo("i386", "386", "", "i386"),
    "ppc64el": ArchInfo("ppc64le", "ppc64le", "", "ppc64le"),
    "riscv64": ArchInfo("riscv64", "riscv64", "", "riscv64"),
    "s390x": ArchInfo("s390x", "s390x", "", "s390x"),
}
# What a kernel of the host architecture runs without emulation.
_NATIVE_TOO: Mapping[str, frozenset[str]] = {
    "amd64": frozenset({"i386"}),
    "arm64": frozenset({"armhf", "armel"}),
}
_MACHINES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386"}


@functools.cache
def host_architecture() -> str:
    """The Debian name of this machine's architecture (``dpkg --print-architecture``)."""
    try:
        out = subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = ""
    return out or _MACHINES.get(platform.machine(), platform.machine())


@functools.cache
def dpkg_architectures() -> frozenset[str]:
    """Every architecture name dpkg knows (``dpkg-architecture -L``); empty without dpkg-dev."""
    try:
        out = subprocess.run(
            ["dpkg-architecture", "-L"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return frozenset()
    return frozenset(out.split())


def dpkg_knows(arch: str) -> bool:
    """Whether ``arch`` is a name dpkg knows. releng's own architectures are, without asking:
    ``dpkg-architecture -L`` is a Perl script that took 34 ms of every command that loads
    product.toml (tests/test_arch.py checks them against it)."""
    return arch in ARCHITECTURES or arch in (dpkg_architectures() or ARCHITECTURES)


def check_architecture(arch: str, allowed: Sequence[str], *, where: str) -> ArchInfo:
    """``arch``'s names, once it is known to dpkg, listed in ``allowed`` (product.toml's
    ``[repositories] architectures``) and one releng has images for."""
    if not dpkg_knows(arch):
        raise ArchError(
            f"unknown architecture {arch!r}: dpkg does not know it (see `dpkg-architecture -L`); "
            "use a Debian architecture name such as amd64 or arm64"
        )
    if arch not in allowed:
        raise ArchError(
            f"architecture {arch} is not in [repositories] architectures of {where} "
            f"({', '.join(allowed)}); add it there to build and publish {arch} packages"
        )
    info = ARCHITECTURES.get(arch)
    if info is None:
        raise ArchError(
            f"releng has no base images for {arch}: no registry publishes official images "
            f"for it; supported: {', '.join(ARCHITECTURES)}"
        )
    return info


def runs_natively(arch: str) -> bool:
    host = host_architecture()
    return arch == host or arch in _NATIVE_TOO.get(host, frozenset())


def image_for(reference: str, arch: str) -> str:
    """The per-architecture name of ``reference`` (a host-architecture image name), as the
    registries name them: ``debian:bookworm`` -> ``arm64v8/debian:bookworm``. The host's own
    architecture keeps the name; a name with a registry or namespace gets the prefix on its
    last path part (``registry.example/ns/debian`` -> ``registry.example/ns/arm64v8-debian``).
    """
    if arch == host_architecture():
        return reference
    prefix = ARCHITECTURES[arch].registry_prefix
    head, sep, last = reference.rpartition("/")
    return f"{prefix}/{reference}" if not sep else f"{head}/{prefix}-{last}"


def binfmt_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get(BINFMT_ENV) or BINFMT_MISC)


def check_emulation(arch: str, env: Mapping[str, str]) -> None:
    """Raise ArchError unless this host can run ``arch`` programs in containers: natively,
    or through an enabled qemu-user-static binfmt_misc handler with the F (fix binary) flag,
    which makes it work inside containers too."""
    if runs_natively(arch):
        return
    info = ARCHITECTURES[arch]
    handler = binfmt_dir(env) / f"qemu-{info.qemu}"
    how = "run ./scripts/setup-binfmt as root (it installs qemu-user-static, mounts binfmt_misc and registers the handler)"
    try:
        text = handler.read_text()
    except OSError:
        raise ArchError(
            f"cannot run {arch} programs on this {host_architecture()} host: {handler} does not "
            f"exist (no qemu-user-static binfmt_misc handler); {how}"
        ) from None
    lines = text.splitlines()
    flags = next((ln.split(":", 1)[1] for ln in lines if ln.startswith("flags:")), "")
    if not lines or lines[0].strip() != "enabled" or "F" not in flags:
        raise ArchError(
            f"cannot run {arch} programs in containers: {handler} is "
            f"{'disabled' if lines and lines[0].strip() != 'enabled' else 'registered without the F flag'}; {how}"
        )
