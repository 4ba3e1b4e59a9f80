"""hrnb.wire.sigv4 signs exactly as botocore's SigV4Auth does (no network; end to end through the
local front in tests/test_local_security.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from hrnb.wire.sigv4 import Credentials, SigV4Signer, canonical_query

AT = datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)
BODY = b'{"index":{"_index":"heart_rate","_id":"a/s/1"}}\n{"heart_rate":151}\n'
QUERY = canonical_query({"require_alias": "true",
                         "filter_path": "took,errors,items.*.status,items.*.result,items.*.error"})


def botocore_headers(credentials: Credentials, host: str, path: str, query: str,
                     headers: dict[str, str], body: bytes, at: datetime) -> dict[str, str]:
    request = AWSRequest(method="POST", url=f"https://{host}{path}?{query}",
                         headers={**headers, "Host": host}, data=body)
    with pytest.MonkeyPatch.context() as patch:  # botocore signs at its own clock's time
        patch.setattr(botocore.auth, "get_current_datetime", lambda: at.replace(tzinfo=None))
        SigV4Auth(BotoCredentials(credentials.access_key, credentials.secret_key,
                                  credentials.session_token), "es", "ap-south-1").add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("credentials", [
    Credentials("hrnb-test-static-key", "static-secret/with+chars"),
    Credentials("hrnb-test-session-key-1", "session-secret", "token/with+=chars and  spaces"),
], ids=["long-term", "session"])
@pytest.mark.parametrize(("host", "path", "headers"), [
    ("search-hr.ap-south-1.es.amazonaws.com", "/heart_rate/_bulk",
     {"Content-Type": "application/json"}),
    ("127.0.0.1:9421", "/hr-test_1.x/_bulk", {"content-type": "application/json",
                                              "X-Extra": "  two   spaces "}),
], ids=["aws", "local"])
def test_signatures_are_byte_equal_to_botocores(credentials: Credentials, host: str, path: str,
                                                headers: dict[str, str]) -> None:
    ours = SigV4Signer(credentials, "ap-south-1", "es").sign(
        "POST", host, path, QUERY, headers, BODY, now=AT)

    assert ours == botocore_headers(credentials, host, path, QUERY, headers, BODY, AT)
    assert ("X-Amz-Security-Token" in ours) == (credentials.session_token is not None)


def test_refreshed_credentials_and_a_new_day_derive_a_new_key() -> None:
    first = Credentials("hrnb-test-session-key-1", "first-secret", "first-token")
    second = Credentials("hrnb-test-session-key-2", "second-secret", "second-token")
    signer = SigV4Signer(first, "ap-south-1", "es")
    signer.sign("POST", "h", "/i/_bulk", QUERY, {}, BODY, now=AT)

    signer.credentials = second
    refreshed = signer.sign("POST", "h", "/i/_bulk", QUERY, {}, BODY, now=AT)
    next_day = signer.sign("POST", "h", "/i/_bulk", QUERY, {}, BODY, now=AT + timedelta(seconds=2))

    assert refreshed == botocore_headers(second, "h", "/i/_bulk", QUERY, {}, BODY, AT)
    assert next_day == botocore_headers(second, "h", "/i/_bulk", QUERY, {}, BODY,
                                        AT + timedelta(seconds=2))
    assert "first" not in repr(first) and "second-secret" not in repr(second)


def test_the_query_is_sent_as_sigv4_canonicalises_it() -> None:
    assert QUERY == ("filter_path=took%2Cerrors%2Citems.%2A.status%2Citems.%2A.result%2C"
                     "items.%2A.error&require_alias=true")
