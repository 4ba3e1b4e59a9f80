"""The opensearch-py client every reader and writer of the index uses, pointed at where the data
plane answers: the local node, or on AWS the domain's endpoint as DescribeDomain reports it now
(the endpoint changes when a domain is re-created, so it is never taken from a setting alone).

It sits above :mod:`hrnb.provision`, which knows where the domain is, and below the packages that
read and write the index (query, live, stream).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3

from hrnb.clients import boto_session, sigv4_auth
from hrnb.config import Settings
from hrnb.provision.domain import data_plane_url

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from hrnb.provision.base import AwsClients


def opensearch_client(settings: Settings, *, timeout: float = 10.0,
                      session: boto3.Session | None = None,
                      clients: AwsClients | None = None, **kwargs: Any) -> OpenSearch:
    """An opensearch-py client: plain HTTP to the local node, SigV4-signed to an AWS domain
    whose endpoint is found from DescribeDomain (``clients``: the provisioning clients to ask).
    """
    from opensearchpy import OpenSearch, RequestsHttpConnection

    if settings.is_local:
        return OpenSearch(hosts=[settings.resolved_opensearch_url], timeout=timeout, **kwargs)
    url = data_plane_url(settings, clients)
    auth = sigv4_auth(session or boto_session(settings), settings.region)
    return OpenSearch(hosts=[url], http_auth=auth, use_ssl=True, verify_certs=True,
                      connection_class=RequestsHttpConnection, timeout=timeout, **kwargs)
