"""A Project is one checkout of the packaging repository: its root, product.toml and paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from releng import distro as _distro
from releng.config import PRODUCT_FILE, ProductConfig, load_product
from releng.errors import ConfigError
from releng.version import Version

STATE_DIR = ".releng"  # development key, download cache, build stamps; never committed
OUT_DIR = "out"


@dataclass(frozen=True, kw_only=True)
class Project:
    root: Path
    config: ProductConfig

    @classmethod
    def load(cls, root: Path) -> Project:
        root = root.resolve()
        if not (root / _distro.DISTROS_DIR).is_dir():
            raise ConfigError(
                f"{root} is not a releng checkout (no {_distro.DISTROS_DIR}/ directory); "
                f"run from the repository that holds {PRODUCT_FILE} and {_distro.DISTROS_DIR}/"
            )
        return cls(root=root, config=load_product(root))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def out_dir(self) -> Path:
        return self.root / OUT_DIR

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def packaging_mount(self) -> str:
        """Where build containers see this repository, read-only."""
        return f"/opt/{self.name}-packaging"

    @property
    def distro_mount(self) -> str:
        """Where build containers see the distro directory, read-only."""
        return f"/opt/{self.name}-distro-packaging"

    def distro(self, distro_id: str) -> _distro.Distro:
        return _distro.load_distro(self.root, distro_id)

    def distros(self) -> list[_distro.Distro]:
        return _distro.load_all(self.root)

    def targets(self) -> list[str]:
        return _distro.read_targets(self.root)

    def build_dir(self, version: Version, distro_id: str) -> Path:
        """``out/<version>/<distro>/``: one build's outputs."""
        return self.out_dir / version.text / distro_id

    def source_stem(self, version: Version) -> str:
        """``<name>[-nightly]-<upstream version>``: the source files' names in ``out/``."""
        return f"{self.config.package_name(version)}-{self.config.source.upstream_version(version)}"

    def tarball_name(self, version: Version) -> str:
        return f"{self.source_stem(version)}.tar.{self.config.source.compression}"

    def upstream_signature_path(self, version: Version) -> Path | None:
        """Upstream's detached signature of a pristine url source, kept beside the tarball."""
        src = self.config.source
        if not (src.pristine and src.signature_url):
            return None
        return self.out_dir / f"{self.tarball_name(version)}.upstream.asc"

    def tarball_path(self, version: Version) -> Path:
        return self.out_dir / self.tarball_name(version)
