"""Small factories that build boto3 and opensearch-py clients from `Settings`.

On the local target every client gets the emulator's endpoint and dummy credentials, so a
mistake can never reach real AWS. On AWS they use the normal credential chain, and OpenSearch
requests are SigV4-signed (service ``es``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
from botocore.config import Config

from hrnb.config import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, Settings
from hrnb.errors import ConfigError

if TYPE_CHECKING:  # the boto3 type stubs: a dev dependency, never needed at run time
    from botocore.client import BaseClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_opensearch import OpenSearchServiceClient
    from mypy_boto3_sts import STSClient
    from opensearchpy import OpenSearch

#: The AWS services hrnb talks to (each has its typed client below).
AwsService = Literal["kinesis", "iam", "logs", "lambda", "opensearch", "sts"]


def boto_session(settings: Settings) -> boto3.Session:
    """A boto3 session: dummy credentials on the local target, the default chain on AWS."""
    if settings.is_local:
        return boto3.Session(
            aws_access_key_id=LOCAL_ACCESS_KEY_ID,
            aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY,
            region_name=settings.region,
        )
    return boto3.Session(region_name=settings.region)


@overload
def aws_client(settings: Settings, service: Literal["kinesis"], *,
               session: boto3.Session | None = None, **config: Any) -> KinesisClient: ...
@overload
def aws_client(settings: Settings, service: Literal["iam"], *,
               session: boto3.Session | None = None, **config: Any) -> IAMClient: ...
@overload
def aws_client(settings: Settings, service: Literal["logs"], *,
               session: boto3.Session | None = None, **config: Any) -> CloudWatchLogsClient: ...
@overload
def aws_client(settings: Settings, service: Literal["lambda"], *,
               session: boto3.Session | None = None, **config: Any) -> LambdaClient: ...
@overload
def aws_client(settings: Settings, service: Literal["opensearch"], *,
               session: boto3.Session | None = None, **config: Any) -> OpenSearchServiceClient: ...
@overload
def aws_client(settings: Settings, service: Literal["sts"], *,
               session: boto3.Session | None = None, **config: Any) -> STSClient: ...
def aws_client(settings: Settings, service: AwsService, *, session: boto3.Session | None = None,
               **config: Any) -> BaseClient:
    """A boto3 client for ``service``; ``config`` goes to botocore's Config (timeouts, retries)."""
    session = session or boto_session(settings)
    return session.client(
        service,
        endpoint_url=settings.resolved_aws_endpoint_url,
        config=Config(**{"retries": {"max_attempts": 3, "mode": "standard"}, **config}),
    )


def opensearch_client(settings: Settings, *, timeout: float = 10.0,
                      **kwargs: Any) -> OpenSearch:
    """An opensearch-py client: plain HTTP to the local node, SigV4-signed to an AWS domain."""
    from opensearchpy import OpenSearch, RequestsHttpConnection

    url = settings.resolved_opensearch_url
    if url is None:
        raise ConfigError(
            "no OpenSearch endpoint: run the set-up first or set HRNB_OPENSEARCH_URL",
            setting="opensearch_url",
        )
    if settings.is_local:
        return OpenSearch(hosts=[url], timeout=timeout, **kwargs)
    from requests_aws4auth import AWS4Auth

    credentials = boto_session(settings).get_credentials()
    if credentials is None:
        raise ConfigError("no AWS credentials found (configure them with 'aws configure')")
    frozen = credentials.get_frozen_credentials()
    auth = AWS4Auth(frozen.access_key, frozen.secret_key, settings.region, "es",
                    session_token=frozen.token)
    return OpenSearch(hosts=[url], http_auth=auth, use_ssl=True, verify_certs=True,
                      connection_class=RequestsHttpConnection, timeout=timeout, **kwargs)
