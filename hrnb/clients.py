"""Small factories that build boto3 and opensearch-py clients from `Settings`.

On the local target every client gets the emulator's endpoint and dummy credentials, so a
mistake can never reach real AWS. On AWS they use the normal credential chain, and OpenSearch
requests are SigV4-signed (service ``es``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
from botocore.config import Config

from hrnb.config import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, Settings
from hrnb.errors import ConfigError, StackError

if TYPE_CHECKING:  # the boto3 type stubs: a dev dependency, never needed at run time
    from botocore.client import BaseClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_opensearch import OpenSearchServiceClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sts import STSClient

#: The AWS services hrnb talks to (each has its typed client below).
AwsService = Literal["kinesis", "iam", "logs", "lambda", "opensearch", "sts", "sqs", "sns"]


def boto_session(settings: Settings) -> boto3.Session:
    """A boto3 session: the emulator's credentials on the local target (dummy ones, or an
    emulated IAM user's from ``HRNB_LOCAL_ACCESS_KEY_ID``/``HRNB_LOCAL_SECRET_ACCESS_KEY``, to
    run as a least-privilege operator against an emulator that enforces IAM), the default chain
    on AWS."""
    if settings.is_local:
        return boto3.Session(
            aws_access_key_id=os.environ.get("HRNB_LOCAL_ACCESS_KEY_ID") or LOCAL_ACCESS_KEY_ID,
            aws_secret_access_key=(os.environ.get("HRNB_LOCAL_SECRET_ACCESS_KEY")
                                   or LOCAL_SECRET_ACCESS_KEY),
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
@overload
def aws_client(settings: Settings, service: Literal["sqs"], *,
               session: boto3.Session | None = None, **config: Any) -> SQSClient: ...
@overload
def aws_client(settings: Settings, service: Literal["sns"], *,
               session: boto3.Session | None = None, **config: Any) -> SNSClient: ...
def aws_client(settings: Settings, service: AwsService, *, session: boto3.Session | None = None,
               **config: Any) -> BaseClient:
    """A boto3 client for ``service``; ``config`` goes to botocore's Config (timeouts, retries)."""
    session = session or boto_session(settings)
    return session.client(
        service,
        endpoint_url=settings.resolved_aws_endpoint_url,
        config=Config(**{"retries": {"max_attempts": 3, "mode": "standard"}, **config}),
    )


def sigv4_auth(session: boto3.Session, region: str, service: str = "es") -> Any:
    """SigV4 for requests, signing with botocore's credentials object itself, so SSO and
    assumed-role credentials are refreshed before they expire (frozen keys get 403 after
    about an hour, mid-workout)."""
    from requests_aws4auth import AWS4Auth

    credentials = session.get_credentials()
    if credentials is None:
        raise ConfigError("no AWS credentials found (configure them with 'aws configure')")
    return AWS4Auth(region=region, service=service, refreshable_credentials=credentials)


def trusted_ca(settings: Settings) -> str | None:
    """The CA bundle OpenSearch clients verify against: the local CA on the local target (its
    SigV4 front and secured node), the system's otherwise."""
    if not settings.is_local:
        return None
    if settings.local_security and not settings.local_ca_path.exists():
        raise StackError(
            f"OpenSearch does not answer: the local stack's CA {settings.local_ca_path} is "
            "missing; start the stack with "
            "'hrnb local up', or, with a state directory of your own, point "
            "HRNB_STACK_STATE_DIR at the running stack's", resource=str(settings.local_ca_path))
    return str(settings.local_ca_path)
