"""The local domain endpoint: an HTTPS front that plays Amazon OpenSearch Service's IAM -> fine-
grained access control bridge in front of the secured local node.

Why: on AWS an IAM identity reaches OpenSearch through SigV4, and the security plugin then sees
it as a user (an IAM user's ARN) with backend roles (an assumed role's role ARN); a role that is
not mapped gets 403. The front does the same locally:

- a request signed with SigV4 is verified against the emulator's credentials (botocore's signer
  recomputes the signature; date, scope, session token and payload hash are checked), its access
  key is resolved to the IAM principal, and it is forwarded with the security plugin's proxy
  authentication headers. The node trusts those headers only from the front's own source
  address (``PROXY_ADDRESS``, the plugin's ``internalProxies``);
- HTTP basic auth (internal users such as the master user) passes through unchanged;
- anything else, or a signature that does not verify, gets 403 with the reason and never reaches
  the node.

It runs inside the emulator process (:mod:`hrnb.local.emulator`), where moto keeps the secrets of
its IAM access keys and STS sessions in memory: no endpoint has to hand secrets out, and the
front always sees the credentials the emulator just issued.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from hrnb.config import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY
from hrnb.local.tls import FRONT_NAME, LocalTls

log = logging.getLogger(__name__)

#: The loopback address the front connects to the node from; the only one the node trusts with
#: proxy authentication headers.
PROXY_ADDRESS = "127.0.0.2"
USER_HEADER = "x-proxy-user"
ROLES_HEADER = "x-proxy-roles"
MAX_CLOCK_SKEW = timedelta(minutes=5)
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;_.-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
# Never forwarded: hop-by-hop headers, and what only the front may set.
_NOT_FORWARDED = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "content-length", "host", "x-forwarded-for",
    USER_HEADER, ROLES_HEADER,
})


@dataclass(frozen=True)
class KnownCredentials:
    """Credentials the front accepts (an IAM user's keys, or a role session's with token), with
    the identity fine-grained access control sees for them."""

    access_key: str
    secret_key: str
    session_token: str | None = None
    principal: str = ""  # the user: an IAM user ARN, or an assumed-role session ARN
    backend_role: str | None = None  # an assumed role's role ARN


CredentialLookup = Callable[[str], KnownCredentials | None]


class SignedRequest(Protocol):
    """What the check reads of a request (header names lower-case)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def body(self) -> bytes: ...


class _Signer(SigV4Auth):
    """botocore's SigV4 with the signed headers taken from the request's Authorization."""

    def __init__(self, credentials: Credentials, service: str, region: str,
                 signed_headers: list[str]) -> None:
        super().__init__(credentials, service, region)
        self._signed_headers = signed_headers

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        selected = HTTPHeaders()
        for name in self._signed_headers:
            selected[name] = request.headers[name]
        return selected


def verify_sigv4(
    request: SignedRequest,
    lookup: CredentialLookup,
    *,
    region: str,
    service: str = "es",
    now: datetime | None = None,
) -> tuple[KnownCredentials | None, str | None]:
    """(the signer's credentials, None) for a correctly signed request, else (None, why Amazon
    OpenSearch Service would answer 403)."""
    now = now or datetime.now(UTC)
    headers = request.headers
    match = _AUTH_RE.match(headers.get("authorization", ""))
    if match is None:
        return None, "missing or malformed SigV4 Authorization header"
    credentials = lookup(match["key"])
    if credentials is None:
        return None, "the security token included in the request is invalid (unknown access key)"
    if (match["region"], match["service"]) != (region, service):
        return None, (f"credential scope is {match['region']}/{match['service']}, "
                      f"not {region}/{service}")
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None, "missing or malformed X-Amz-Date"
    if amz_date[:8] != match["date"]:
        return None, "credential scope date differs from X-Amz-Date"
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        return None, f"signature expired: signed at {amz_date}, now {now:%Y%m%dT%H%M%SZ}"
    signed = match["signed"].split(";")
    for required in ("host", "x-amz-date"):
        if required not in signed:
            return None, f"{required} is not among the signed headers"
    missing = [name for name in signed if name not in headers]
    if missing:
        return None, f"signed header(s) missing from the request: {', '.join(missing)}"
    if credentials.session_token is not None and (
        headers.get("x-amz-security-token") != credentials.session_token
        or "x-amz-security-token" not in signed
    ):
        return None, "the session token is missing, wrong or unsigned"
    claimed = headers.get("x-amz-content-sha256")
    if claimed is not None and claimed != hashlib.sha256(request.body).hexdigest():
        return None, "x-amz-content-sha256 does not match the body"
    aws_request = AWSRequest(
        method=request.method,
        url=f"http://{headers['host']}{request.path}",
        headers={name: headers[name] for name in signed},
        data=request.body,
    )
    aws_request.context["timestamp"] = amz_date
    signer = _Signer(
        Credentials(credentials.access_key, credentials.secret_key, credentials.session_token),
        service, region, signed,
    )
    canonical = signer.canonical_request(aws_request)
    expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    if not hmac.compare_digest(expected, match["signature"]):
        return None, ("the request signature we calculated does not match the signature you "
                      "provided")
    return credentials, None


def emulator_credentials(access_key: str) -> KnownCredentials | None:
    """The emulator's credentials for ``access_key``, read from moto's in-process backends: an
    STS session (resolved to its role), an IAM user's access key, or the local target's own
    static credentials (the identity moto's GetCallerIdentity reports for them)."""
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    for account_id in list(sts_backends):
        for backend in list(sts_backends[account_id].values()):
            session = backend.get_assumed_role_from_access_key(access_key)
            if session is not None:
                return KnownCredentials(access_key, session.secret_access_key,
                                        session.session_token, principal=session.arn,
                                        backend_role=session.role_arn)
    for account_id in list(iam_backends):
        for iam in list(iam_backends[account_id].values()):
            user = iam.get_user_from_access_key_id(access_key)
            if user is None:
                continue
            key = next(k for k in iam.list_access_keys(user.name)
                       if k.access_key_id == access_key)
            if key.status != "Active":
                return None
            return KnownCredentials(access_key, key.secret_access_key, principal=user.arn)
    if access_key == LOCAL_ACCESS_KEY_ID:
        from moto.core import DEFAULT_ACCOUNT_ID

        _, arn, _ = sts_backends[DEFAULT_ACCOUNT_ID]["aws"].get_caller_identity(
            access_key, "us-east-1")
        return KnownCredentials(access_key, LOCAL_SECRET_ACCESS_KEY, principal=arn)
    return None


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


class Front:
    """The HTTPS front on ``127.0.0.1:port``, forwarding to the node at ``node_url``."""

    def __init__(self, *, port: int, node_url: str, tls: LocalTls, region: str,
                 lookup: CredentialLookup = emulator_credentials) -> None:
        target = urlsplit(node_url)
        self.node = (target.hostname or "127.0.0.1", target.port or 443)
        self.region = region
        self.lookup = lookup
        self.client_context = ssl.create_default_context(cafile=str(tls.ca))
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.minimum_version = ssl.TLSVersion.TLSv1_2
        server_context.load_cert_chain(tls.cert(FRONT_NAME), tls.key(FRONT_NAME))
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.front = self
        # The handshake happens in the connection's own thread (see _Handler.setup), so a client
        # that never speaks TLS cannot hold up the others.
        self._server.socket = server_context.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self._server.serve_forever, name="hrnb-front",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def upstream(self) -> http.client.HTTPSConnection:
        """A connection to the node from the trusted proxy address."""
        return http.client.HTTPSConnection(
            self.node[0], self.node[1], context=self.client_context, timeout=120,
            source_address=(PROXY_ADDRESS, 0))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    front: Front

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up, and plain HTTP spoken to the TLS port, are no server errors."""
        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    _connection: http.client.HTTPSConnection | None = None

    def setup(self) -> None:
        self.request.settimeout(30)
        self.request.do_handshake()
        self.request.settimeout(None)
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def finish(self) -> None:
        super().finish()
        if self._connection is not None:
            self._connection.close()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: refusals are logged with their reason instead."""

    def do_GET(self) -> None:
        front = self.server.front
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        forwarded = {k: v for k, v in headers.items() if k not in _NOT_FORWARDED}
        if not headers.get("authorization", "").lower().startswith("basic "):
            credentials, reason = verify_sigv4(_Request(self.command, self.path, headers, body),
                                               front.lookup, region=front.region)
            if credentials is None:
                log.info("refused %s %s: %s", self.command, self.path.split("?")[0], reason)
                self._answer(403, [("Content-Type", "application/json")],
                             json.dumps({"message": reason}).encode())
                return
            forwarded = {k: v for k, v in forwarded.items()
                         if k != "authorization" and not k.startswith("x-amz-")}
            forwarded[USER_HEADER] = credentials.principal
            forwarded[ROLES_HEADER] = credentials.backend_role or ""
            forwarded["x-forwarded-for"] = self.client_address[0]
        try:
            status, answer_headers, payload = self._forward(forwarded, body)
        except OSError as exc:
            self._answer(502, [("Content-Type", "application/json")], json.dumps(
                {"message": f"the local OpenSearch node does not answer ({exc})"}).encode())
            return
        self._answer(status, answer_headers, payload)

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def _forward(self, headers: dict[str, str],
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
            if self._connection is None:
                self._connection = self.server.front.upstream()
            try:
                self._connection.request(self.command, self.path, body=body, headers=headers)
                response = self._connection.getresponse()
                payload = response.read()
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.CannotSendRequest):
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
                continue
            kept = [(k, v) for k, v in response.getheaders()
                    if k.lower() not in _NOT_FORWARDED]
            return response.status, kept, payload
        raise AssertionError("unreachable")

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
