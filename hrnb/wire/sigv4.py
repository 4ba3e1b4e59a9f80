"""AWS Signature Version 4 for one request with a body, in the stdlib (hmac, hashlib).

Why not a library: the Lambda handler is its only user, and there every import is paid at each
cold start. Importing requests (for requests-aws4auth) took 126-222 ms on python3.12 here and
botocore is not in the zip (``docs/benchmarks/handler.md`` has the figures); this is the same
algorithm as botocore's ``SigV4Auth`` (tests check the signatures byte for byte against it) and
signs a 500-record ``_bulk`` body in about 0.2 ms, most of it hashing the body. Every header
given is signed, as botocore signs them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

_ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class Credentials:
    """An access key with its secret, and the session token of temporary credentials."""

    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # the secret and the token never reach a log or a traceback
        return f"Credentials(access_key={self.access_key!r})"


class SigV4Signer:
    """Signs requests for one region and service with the current ``credentials``.

    Assign new credentials to ``credentials`` when they are refreshed; the signing key is
    derived once per day and secret, so a refresh or a new day derives it again.
    """

    def __init__(self, credentials: Credentials, region: str, service: str) -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self._key: tuple[str, str, bytes] | None = None  # (secret, yyyymmdd, signing key)

    def sign(self, method: str, host: str, path: str, query: str, headers: dict[str, str],
             body: bytes, *, now: datetime | None = None) -> dict[str, str]:
        """The headers to send: ``headers`` with Host, X-Amz-Date, the session token and the
        Authorization added. ``path`` is sent as is (unreserved characters and ``/`` only);
        ``query`` must already be canonical (sorted, percent-encoded), see
        :func:`canonical_query`."""
        credentials = self.credentials
        amz_date = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        signed = {**headers, "Host": host, "X-Amz-Date": amz_date}
        if credentials.session_token:
            signed["X-Amz-Security-Token"] = credentials.session_token
        canonical = sorted((name.lower(), " ".join(value.split()))
                           for name, value in signed.items())
        names = ";".join(name for name, _ in canonical)
        request = "\n".join((
            method, quote(path, safe="/~"), query,
            "".join(f"{name}:{value}\n" for name, value in canonical),
            names, hashlib.sha256(body).hexdigest(),
        ))
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join((_ALGORITHM, amz_date, scope,
                             hashlib.sha256(request.encode()).hexdigest()))
        signature = hmac.new(self._signing_key(credentials.secret_key, day), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        signed["Authorization"] = (f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
                                   f"SignedHeaders={names}, Signature={signature}")
        return signed

    def _signing_key(self, secret: str, day: str) -> bytes:
        if self._key is None or self._key[:2] != (secret, day):
            key = f"AWS4{secret}".encode()
            for part in (day, self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key = (secret, day, key)
        return self._key[2]


def canonical_query(params: dict[str, str]) -> str:
    """A query string as SigV4 canonicalises it (sorted, RFC 3986 encoded): sent as is, every
    verifier computes the same canonical request."""
    return "&".join(f"{quote(key, safe='-_.~')}={quote(value, safe='-_.~')}"
                    for key, value in sorted(params.items()))
