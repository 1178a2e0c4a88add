"""The one boto3 client factory: a session per client, the service models parsed once."""

from __future__ import annotations

from typing import Any

import pytest

from releng import aws_clients


def test_a_second_client_reads_no_service_file_and_keeps_its_own_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every new boto3 session found and parsed botocore's JSON files again (about 40 ms of
    CPU per client: most of a handler's time on moto). Clients now share one loader, while
    each keeps a session of its own (boto3's sessions are not thread-safe)."""
    from botocore.loaders import JSONFileLoader

    first = aws_clients.client("sqs", region_name="eu-west-1")
    read: list[str] = []
    load = JSONFileLoader.load_file

    def counted(self: JSONFileLoader, file_path: str) -> Any:
        read.append(file_path)
        return load(self, file_path)

    monkeypatch.setattr(JSONFileLoader, "load_file", counted)
    second = aws_clients.client("sqs", region_name="eu-west-1")
    assert read == []
    assert second is not first
    assert second.meta.region_name == "eu-west-1"
    # boto3 adds its data directory for each session: the shared loader lists it once
    paths = aws_clients._shared_loader().search_paths
    assert len(paths) == len(set(paths))
    # an S3 client still has boto3's managed transfers (registered per session)
    assert hasattr(aws_clients.client("s3", region_name="eu-west-1"), "upload_file")
