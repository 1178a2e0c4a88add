"""Images builds run in: base images (:mod:`.base`; another architecture's: :mod:`.foreign`)
and builder images (:mod:`.builder`)."""

from __future__ import annotations

from releng.images.base import bootstrap_command, ensure_base_image, pull_base_image
from releng.images.builder import (
    BuilderImage,
    build_depends,
    builder_inputs,
    builder_reference,
    ensure_builder_image,
    prune_builder_images,
)

__all__ = [
    "BuilderImage",
    "bootstrap_command",
    "build_depends",
    "builder_inputs",
    "builder_reference",
    "ensure_base_image",
    "ensure_builder_image",
    "prune_builder_images",
    "pull_base_image",
]
