"""build tasks (see the issue that owns this area)."""

from __future__ import annotations
