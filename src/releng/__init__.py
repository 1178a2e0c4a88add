"""releng: signed Debian packages and apt repositories for one product, locally or on AWS."""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
