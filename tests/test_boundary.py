"""hrnb.boundary: foreign errors become hrnb's, with their context in fields. Each case makes the
foreign library fail for real (a closed port, a path below a regular file, no credentials);
tests/test_cli_errors.py checks the same through every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from support import free_port

from hrnb.boundary import aws_errors, file_errors, opensearch_errors
from hrnb.errors import ConfigError, ProvisionError, QueryError, StorageError


def test_importing_the_boundary_imports_no_foreign_library() -> None:
    code = ("import sys, hrnb.boundary; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('botocore', 'boto3', 'opensearchpy', 'bleak')))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert found == "[]"


def _kinesis(endpoint: str, **credentials: str) -> object:
    session = boto3.Session(region_name="ap-south-1", **credentials)
    return session.client("kinesis", endpoint_url=endpoint, config=Config(
        retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=2))


def test_an_unreachable_endpoint_names_the_service_the_resource_and_what_to_do() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    client = _kinesis(endpoint, aws_access_key_id="k", aws_secret_access_key="s")
    with pytest.raises(ProvisionError) as caught, \
            aws_errors(ProvisionError, "kinesis", "describe", "stream s"):
        client.describe_stream_summary(StreamName="s")  # type: ignore[attr-defined]
    error = caught.value
    assert (error.service, error.action, error.code, error.resource) == (
        "kinesis", "describe", "EndpointConnectionError", "stream s")
    assert str(error).startswith(f"cannot describe stream s: kinesis does not answer at {endpoint}")
    assert "hrnb local up" in str(error)


def test_missing_credentials_say_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = _kinesis(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProvisionError, match="no AWS credentials found") as caught, \
            aws_errors(ProvisionError, "kinesis", "describe", "stream s"):
        client.describe_stream_summary(StreamName="s")  # type: ignore[attr-defined]
    assert caught.value.code == "NoCredentialsError"


def test_an_unreachable_opensearch_is_a_query_error() -> None:
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[f"http://127.0.0.1:{free_port()}"], timeout=2, max_retries=0)
    with pytest.raises(QueryError, match="OpenSearch does not answer") as caught, \
            opensearch_errors(QueryError, "search", "index 'x'"):
        client.search(index="x", body={})
    assert (caught.value.service, caught.value.code) == ("opensearch", "ConnectionError")


def test_file_errors_name_the_path_and_the_errno(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    target = tmp_path / "a-file" / "out.csv"
    with pytest.raises(StorageError) as caught, file_errors("write", target):
        target.write_text("x")
    error = caught.value
    assert (error.service, error.action, error.code, error.resource) == (
        "file", "write", "ENOTDIR", str(target))
    assert str(error) == f"cannot write {target}: Not a directory"


def test_hrnb_errors_pass_through_untouched() -> None:
    original = ConfigError("bad flag", setting="--x")
    with pytest.raises(ConfigError) as caught, \
            aws_errors(ProvisionError, "kinesis", "describe"), file_errors("read", "/x"):
        raise original
    assert caught.value is original
