"""Small factories that build boto3 and opensearch-py clients from `Settings`.

On the local target every client gets the emulator's endpoint and dummy credentials, so a
mistake can never reach real AWS. On AWS they use the normal credential chain, and OpenSearch
requests are SigV4-signed (service ``es``).
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config

from hrnb.config import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, Settings
from hrnb.errors import ConfigError


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


def aws_client(settings: Settings, service: str, *, session: boto3.Session | None = None,
               **config: Any) -> Any:
    """A boto3 client for ``service``; ``config`` goes to botocore's Config (timeouts, retries)."""
    session = session or boto_session(settings)
    return session.client(
        service,
        endpoint_url=settings.resolved_aws_endpoint_url,
        config=Config(**{"retries": {"max_attempts": 3, "mode": "standard"}, **config}),
    )


def opensearch_client(settings: Settings, *, timeout: float = 10.0,
                      session: boto3.Session | None = None, clients: Any = None,
                      **kwargs: Any) -> Any:
    """An opensearch-py client: plain HTTP to the local node, SigV4-signed to an AWS domain
    whose endpoint is found from DescribeDomain (``clients``: the provisioning clients to ask).
    """
    from opensearchpy import OpenSearch, RequestsHttpConnection

    if settings.is_local:
        return OpenSearch(hosts=[settings.resolved_opensearch_url], timeout=timeout, **kwargs)
    from hrnb.provision.domain import data_plane_url

    url = data_plane_url(settings, clients)
    auth = sigv4_auth(session or boto_session(settings), settings.region)
    return OpenSearch(hosts=[url], http_auth=auth, use_ssl=True, verify_certs=True,
                      connection_class=RequestsHttpConnection, timeout=timeout, **kwargs)


def sigv4_auth(session: boto3.Session, region: str, service: str = "es") -> Any:
    """SigV4 for requests, signing with botocore's credentials object itself, so SSO and
    assumed-role credentials are refreshed before they expire (frozen keys get 403 after
    about an hour, mid-workout)."""
    from requests_aws4auth import AWS4Auth

    credentials = session.get_credentials()
    if credentials is None:
        raise ConfigError("no AWS credentials found (configure them with 'aws configure')")
    return AWS4Auth(region=region, service=service, refreshable_credentials=credentials)
