"""The one factory for boto3 clients, and the one region setting.

Every boto3 client in releng comes from :func:`client`. The region is, in this
order: ``AWS_REGION``, ``AWS_DEFAULT_REGION``, then product.toml's ``[aws] region``
(:func:`region`); an empty region leaves boto3's own chain (``~/.aws/config``) to
decide. ``AWS_ENDPOINT_URL`` (moto, another S3) is read by boto3 itself. boto3 is
imported inside the functions: ``invoke --list`` must not pay for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]  # one factory for every service
        region_name=region_name or None,
        endpoint_url=endpoint_url or None,
        config=config,
    )
