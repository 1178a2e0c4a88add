"""What the handlers know about the repository without a checkout.

A Lambda function has no git checkout, so ``invoke deploy-aws`` bundles a
``catalog.json`` (distros with their codename and revision, the default
targets, the product name, the suite templates) into its code; locally the
catalog is read from the Project.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from releng.errors import AwsError

CATALOG_FILE = "catalog.json"


@dataclass(frozen=True, kw_only=True)
class DistroInfo:
    id: str
    codename: str
    pkgver: str


@dataclass(frozen=True, kw_only=True)
class Catalog:
    product: str
    distros: dict[str, DistroInfo]
    targets: list[str]
    suites: list[str] = field(default_factory=lambda: ["{codename}"])
    components: list[str] = field(default_factory=lambda: ["main"])
    architectures: list[str] = field(default_factory=lambda: ["amd64"])
    verify_rebuild: str = "off"  # [verify] rebuild: "off", "report" or "require"

    @classmethod
    def from_project(cls, project: Any) -> Catalog:
        """From a :class:`releng.project.Project` (typed Any: keeps Lambda imports light)."""
        distros = {
            d.id: DistroInfo(id=d.id, codename=d.codename, pkgver=d.pkgver or "1")
            for d in project.distros()
            if d.is_debianish
        }
        repos = project.config.repositories
        return cls(
            product=project.name,
            distros=distros,
            targets=[t for t in project.targets() if t in distros],
            suites=list(repos.suites),
            components=list(repos.components),
            architectures=list(repos.architectures),
            verify_rebuild=str(project.config.verify.rebuild),
        )

    @classmethod
    def from_json(cls, text: str) -> Catalog:
        try:
            data = json.loads(text)
            distros = {k: DistroInfo(**v) for k, v in data.pop("distros").items()}
            return cls(distros=distros, **data)
        except (ValueError, KeyError, TypeError) as exc:
            raise AwsError(
                f"{CATALOG_FILE} is not a releng catalog ({exc}); redeploy with `invoke deploy-aws`"
            ) from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def distro(self, distro_id: str) -> DistroInfo:
        return self.distros[distro_id]
