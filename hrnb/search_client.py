"""The opensearch-py client every reader and writer of the index uses, pointed at where the data
plane answers: the local node, or on AWS the domain's endpoint as DescribeDomain reports it now
(the endpoint changes when a domain is re-created, so it is never taken from a setting alone).

It sits above :mod:`hrnb.provision`, which knows where the domain is, and below the packages that
read and write the index (query, live, stream).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3

from hrnb.clients import boto_session, sigv4_auth, trusted_ca
from hrnb.config import Settings
from hrnb.provision.domain import data_plane_url

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from hrnb.provision.base import AwsClients


def opensearch_client(settings: Settings, *, timeout: float = 10.0,
                      session: boto3.Session | None = None,
                      clients: AwsClients | None = None, **kwargs: Any) -> OpenSearch:
    """An opensearch-py client: SigV4-signed to an AWS domain whose endpoint is found from
    DescribeDomain (``clients``: the provisioning clients to ask) or to the secured local stack's
    front (trusting the local CA; urllib3, because requests lets REQUESTS_CA_BUNDLE override a
    CA given here), plain HTTP to a local node without security (HRNB_OPENSEARCH_SECURITY=off).
    """
    from opensearchpy import OpenSearch, RequestsHttpConnection, Urllib3AWSV4SignerAuth

    if settings.is_local and not settings.opensearch_security:
        return OpenSearch(hosts=[settings.resolved_opensearch_url], timeout=timeout, **kwargs)
    if settings.is_local:
        credentials = (session or boto_session(settings)).get_credentials()
        return OpenSearch(hosts=[settings.resolved_opensearch_url],
                          http_auth=Urllib3AWSV4SignerAuth(credentials, settings.region, "es"),
                          use_ssl=True, verify_certs=True, ca_certs=trusted_ca(settings),
                          timeout=timeout, **kwargs)
    url = data_plane_url(settings, clients)
    auth = sigv4_auth(session or boto_session(settings), settings.region)
    return OpenSearch(hosts=[url], http_auth=auth, use_ssl=True, verify_certs=True,
                      connection_class=RequestsHttpConnection, timeout=timeout, **kwargs)
