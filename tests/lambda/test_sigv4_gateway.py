"""The SigV4 gateway refuses what Amazon OpenSearch Service with IAM access control refuses.

Unsigned, wrongly signed, expired, re-targeted and body-tampered requests get 403 and never reach
the node; requests signed by requests-aws4auth or as boto signs them pass. (That the packaged
handler's own requests pass is checked in test_lambda_handler.py.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from lambda_helpers import ACCESS_KEY, SECRET_KEY, SESSION_TOKEN
from requests_aws4auth import AWS4Auth
from support.sigv4_gateway import KnownCredentials, SigV4Gateway

from hrnb.config import Settings

pytestmark = pytest.mark.stack

BODY = b'{"timestamp": "2026-11-29T06:10:00.123Z", "heart_rate": 90}'


@pytest.fixture
def gateway(settings: Settings) -> Iterator[SigV4Gateway]:
    with SigV4Gateway(
        str(settings.resolved_opensearch_url),
        [KnownCredentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)],
        region=settings.region,
    ) as proxy:
        yield proxy


@pytest.fixture
def index(opensearch: Any, unique_name: Callable[[str], str]) -> Iterator[str]:
    name = unique_name("hr-gateway")
    yield name
    opensearch.indices.delete(index=name, ignore_unavailable=True)


def signed(url: str, *, key: str = ACCESS_KEY, secret: str = SECRET_KEY,
           token: str | None = SESSION_TOKEN, region: str = "ap-south-1",
           signed_at: datetime | None = None) -> requests.PreparedRequest:
    headers = {"Content-Type": "application/json"}
    if signed_at is not None:
        headers["x-amz-date"] = signed_at.strftime("%Y%m%dT%H%M%SZ")
    auth = AWS4Auth(key, secret, region, "es", session_token=token)
    return requests.Request("PUT", url, data=BODY, headers=headers, auth=auth).prepare()


def tamper_body(request: requests.PreparedRequest, *, fix_hash: bool) -> None:
    request.body = BODY.replace(b"90", b"250")
    request.headers["Content-Length"] = str(len(request.body))
    if fix_hash:
        request.headers["x-amz-content-sha256"] = hashlib.sha256(request.body).hexdigest()


def unsigned(url: str) -> requests.PreparedRequest:
    return requests.Request("PUT", url, data=BODY,
                            headers={"Content-Type": "application/json"}).prepare()


def retargeted(url: str) -> requests.PreparedRequest:
    request = signed(url)
    request.url = url.replace("/_doc/1", "/_doc/2")
    return request


def body_tampered(url: str) -> requests.PreparedRequest:
    request = signed(url)
    tamper_body(request, fix_hash=False)
    return request


def body_and_hash_tampered(url: str) -> requests.PreparedRequest:
    request = signed(url)
    tamper_body(request, fix_hash=True)
    return request


REFUSED: dict[str, tuple[Callable[[str], requests.PreparedRequest], str]] = {
    "unsigned": (unsigned, "missing or malformed SigV4"),
    "unknown-key": (lambda url: signed(url, key="HRNBUNKNOWNKEY000000"), "invalid"),
    "wrong-secret": (lambda url: signed(url, secret="not-the-secret"), "does not match"),
    "wrong-region": (lambda url: signed(url, region="us-east-1"), "credential scope"),
    "no-session-token": (lambda url: signed(url, token=None), "session token"),
    "expired": (lambda url: signed(url, signed_at=datetime.now(UTC) - timedelta(minutes=20)),
                "expired"),
    "from-the-future": (
        lambda url: signed(url, signed_at=datetime.now(UTC) + timedelta(minutes=20)), "expired"),
    "re-targeted": (retargeted, "does not match"),
    "body-tampered": (body_tampered, "x-amz-content-sha256 does not match"),
    "body-and-hash-tampered": (body_and_hash_tampered, "does not match the signature"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_bad_signature_gets_403_and_reaches_nothing(
    gateway: SigV4Gateway, opensearch: Any, index: str, case: str
) -> None:
    make_request, reason = REFUSED[case]

    answer = requests.Session().send(make_request(f"{gateway.url}/{index}/_doc/1"), timeout=10,
                                     verify=gateway.verify)

    assert answer.status_code == 403
    assert reason in answer.json()["message"]
    assert gateway.counters().forwarded == 0
    assert gateway.rejections() == [answer.json()["message"]]
    assert not opensearch.indices.exists(index=index)


def test_requests_signed_like_the_handler_or_boto_pass(
    gateway: SigV4Gateway, opensearch: Any, index: str
) -> None:
    by_aws4auth = requests.Session().send(signed(f"{gateway.url}/{index}/_doc/1"), timeout=10,
                                          verify=gateway.verify)
    boto_request = AWSRequest(method="PUT", url=f"{gateway.url}/{index}/_doc/2", data=BODY,
                              headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "es",
              "ap-south-1").add_auth(boto_request)
    by_boto = requests.put(boto_request.url, data=BODY, headers=dict(boto_request.headers),
                           timeout=10, verify=gateway.verify)

    assert (by_aws4auth.status_code, by_boto.status_code) == (201, 201)
    assert gateway.rejections() == []
    opensearch.indices.refresh(index=index)
    assert opensearch.count(index=index)["count"] == 2
