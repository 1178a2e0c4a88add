"""The one factory for boto3 clients, and the one region setting.

Every boto3 client in releng comes from :func:`client`. The region is, in this
order: ``AWS_REGION``, ``AWS_DEFAULT_REGION``, then product.toml's ``[aws] region``
(:func:`region`); an empty region leaves boto3's own chain (``~/.aws/config``) to
decide. ``AWS_ENDPOINT_URL`` (moto, another S3) is read by boto3 itself. boto3 is
imported inside the functions: ``invoke --list`` must not pay for it.

Each client has a session of its own (a boto3 session is not thread-safe, and it would keep
the first credentials it found), but all of them share one botocore loader: the service
models, endpoints and rulesets are JSON files that every new session would otherwise find
and parse again, about 40 ms of CPU per client (most of a Lambda handler's or a worker's
own time).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

_LOADER: Any = None
_LOADER_LOCK = threading.Lock()


class _OncePaths(list[str]):
    """The shared loader's search paths: boto3 appends its data directory for every new
    session, and each path is kept once."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


def _shared_loader() -> Any:
    """The process's one botocore loader (its parsed files are cached on it)."""
    global _LOADER  # noqa: PLW0603  (made once, on first use)
    from botocore.loaders import Loader

    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = Loader(extra_search_paths=_OncePaths())  # kept as its list of paths
        return _LOADER


def region(env: Mapping[str, str], configured: str = "") -> str:
    """The region releng uses: the environment's, else product.toml's ``[aws] region``."""
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or configured


def client(
    service: str,
    *,
    region_name: str = "",
    endpoint_url: str = "",
    connect_timeout: float = 10,
    read_timeout: float = 120,
    max_attempts: int = 5,
    pool: int = 10,
) -> Any:
    """A thread-safe boto3 client with standard retries; one session per client."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=pool,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", _shared_loader())
    return boto3.session.Session(botocore_session=core).client(
        service,  # type: ignore[call-overload]  # one factory for every service
        region_name=region_name or None,
        endpoint_url=endpoint_url or None,
        config=config,
    )
