"""A fault-injecting HTTP reverse proxy on loopback, for tests that break the network for real.

Point a client's endpoint at :attr:`FaultProxy.url` instead of the server (the AWS emulator, the
OpenSearch node, ...); the proxy forwards every request and, when told, misbehaves the way
networks and services do::

    with FaultProxy("http://127.0.0.1:5000") as proxy:
        client = aws_client(settings.with_overrides(aws_endpoint_url=proxy.url), "kinesis")
        proxy.set_fault(Refuse())                      # outage: connections refused
        proxy.set_fault(Drop(after_forward=True))      # the server acts, the answer is lost
        proxy.set_fault(Delay(2.0))                    # slow answers
        proxy.set_fault(FailEntries(0.3))              # 30 % of PutRecords entries fail
        proxy.set_fault(Respond.kinesis_error("ProvisionedThroughputExceededException"))
        proxy.set_fault(Respond(429, b'{"status":429}', match=path_matches(r"/_bulk")))
        proxy.set_fault(None)                          # healthy again
        proxy.counters()                               # what it saw and did, how many at once

Faults act on requests (except :class:`Refuse`, which closes the listening socket so new
connections get ECONNREFUSED, and drops kept-alive ones at their next request). ``match``
restricts a fault to some requests (``kinesis_operation("PutRecords")``, ``path_matches(...)``);
``probability`` and ``times`` make it intermittent or short-lived. Everything is thread-safe:
switch faults from the test while clients run. Request bodies need a Content-Length (boto3 and
opensearch-py send one); answers are re-framed with their own Content-Length.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from hrnb.config import Settings
from hrnb.local.tls import FRONT_NAME, LocalTls

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)


@dataclass(frozen=True)
class RequestInfo:
    """What a fault's ``match`` sees of a request."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes


Matcher = Callable[[RequestInfo], bool]


def kinesis_operation(name: str) -> Matcher:
    """Match one Kinesis API call by its ``X-Amz-Target`` (e.g. ``"PutRecords"``)."""
    return lambda request: request.headers.get("x-amz-target", "").endswith(f".{name}")


def path_matches(pattern: str) -> Matcher:
    """Match requests whose path (with query) matches the regular expression ``pattern``."""
    compiled = re.compile(pattern)
    return lambda request: compiled.search(request.path) is not None


@dataclass(frozen=True)
class Refuse:
    """Outage: the listening socket is closed (ECONNREFUSED); kept-alive connections are cut."""


@dataclass(frozen=True)
class Drop:
    """Close the connection without an answer; ``after_forward`` lets the server act first."""

    after_forward: bool = False
    match: Matcher | None = None
    probability: float = 1.0
    times: int | None = None


@dataclass(frozen=True)
class Delay:
    """Forward after ``seconds``."""

    seconds: float
    match: Matcher | None = None
    probability: float = 1.0
    times: int | None = None


@dataclass(frozen=True)
class Respond:
    """Answer with ``status`` and ``body`` instead of forwarding."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    match: Matcher | None = None
    probability: float = 1.0
    times: int | None = None

    @classmethod
    def kinesis_error(
        cls, code: str, *, status: int = 400, probability: float = 1.0, times: int | None = None
    ) -> Respond:
        """A whole-call AWS JSON error (e.g. a throttling one) answered to PutRecords."""
        body = json.dumps({"__type": code, "message": f"injected by FaultProxy: {code}"}).encode()
        return cls(
            status,
            body,
            content_type="application/x-amz-json-1.1",
            match=kinesis_operation("PutRecords"),
            probability=probability,
            times=times,
        )


@dataclass(frozen=True)
class FailEntries:
    """Fail a fraction of the entries of each PutRecords call, as Kinesis does.

    The chosen entries are taken out of the request before it is forwarded (so the server
    really does not store them) and put back into the server's answer as failed entries with
    one of ``codes``; ``FailedRecordCount`` is adjusted. Other requests pass untouched.
    """

    fraction: float
    codes: tuple[str, ...] = ("ProvisionedThroughputExceededException", "InternalFailure")
    seed: int | None = None
    times: int | None = None


Fault = Refuse | Drop | Delay | Respond | FailEntries


@dataclass(frozen=True)
class ProxyCounters:
    """What the proxy saw and did since it started (or since :meth:`FaultProxy.reset_counters`)."""

    requests: int = 0  # requests read from clients
    forwarded: int = 0  # requests passed to the target (possibly rewritten)
    dropped: int = 0  # connections closed without an answer (Drop, or Refuse on a kept-alive one)
    delayed: int = 0
    responded: int = 0  # answered by the proxy itself (Respond)
    failed_entries: int = 0  # PutRecords entries answered as failed (FailEntries)
    most_in_flight: int = 0  # the most requests handled at the same time (pipelining clients)
    by_status: Mapping[int, int] = field(default_factory=dict)  # statuses sent to clients


class FaultProxy:
    """A threaded HTTP/1.1 reverse proxy from ``127.0.0.1:<free port>`` to ``target_url``."""

    def __init__(self, target_url: str, *, port: int = 0, timeout_s: float = 60.0) -> None:
        target = urlsplit(target_url)
        if target.scheme not in ("http", "https") or not target.hostname:
            raise ValueError(f"FaultProxy forwards http:// or https:// URLs, got {target_url!r}")
        self.target_host = target.hostname
        self.target_port = target.port or (443 if target.scheme == "https" else 80)
        # An https target is the secured local stack's SigV4 front: the proxy speaks TLS too,
        # with the front's certificate, checks the front's against the local CA, and keeps the
        # client's Host header because the signature covers it.
        self.target_tls: ssl.SSLContext | None = None
        self.server_tls: ssl.SSLContext | None = None
        if target.scheme == "https":
            tls = LocalTls(Settings.from_env().local_ca_path.parent)
            self.target_tls = ssl.create_default_context(cafile=str(tls.ca))
            self.server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.server_tls.load_cert_chain(tls.cert(FRONT_NAME), tls.key(FRONT_NAME))
        self.timeout_s = timeout_s
        self._port = port
        self._lock = threading.Lock()
        self._fault: Fault | None = None
        self._uses = 0
        self._rng = random.Random()
        self._counts: dict[str, int] = {}
        self._statuses: dict[int, int] = {}
        self._in_flight = 0  # requests being handled now (not reset with the counters)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._clients: set[socket.socket] = set()  # open client connections

    # --- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._listen()

    def stop(self) -> None:
        self._close_listener()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self.server_tls else 'http'}://127.0.0.1:{self._port}"

    @property
    def verify(self) -> str | bool:
        """What a client verifies this proxy's certificate with (requests' ``verify``): the
        local CA when it speaks TLS."""
        return str(Settings.from_env().local_ca_path) if self.server_tls else True

    # --- faults -----------------------------------------------------------------------------
    def set_fault(self, fault: Fault | None) -> None:
        """Switch to ``fault`` (None: forward faithfully) for requests from now on."""
        with self._lock:
            previous, self._fault, self._uses = self._fault, fault, 0
            if isinstance(fault, FailEntries):
                self._rng = random.Random(fault.seed)
        if isinstance(fault, Refuse) and not isinstance(previous, Refuse):
            self._close_listener()
        elif not isinstance(fault, Refuse) and isinstance(previous, Refuse):
            self._listen()

    def clear(self) -> None:
        self.set_fault(None)

    def cut_idle_connections(self) -> None:
        """Close every open client connection, as a server closes idle keep-alive ones."""
        with self._lock:
            clients, self._clients = set(self._clients), set()
        for client in clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone

    @property
    def fault(self) -> Fault | None:
        return self._fault

    def counters(self) -> ProxyCounters:
        with self._lock:
            return ProxyCounters(by_status=dict(self._statuses), **self._counts)

    def reset_counters(self) -> None:
        with self._lock:
            self._counts.clear()
            self._statuses.clear()

    # --- internals --------------------------------------------------------------------------
    def _listen(self) -> None:
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.proxy = self
        self._port = server.server_address[1]
        if self.server_tls is not None:
            server.socket = self.server_tls.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"faultproxy-{self._port}",
        )
        thread.start()
        self._server, self._thread = server, thread

    def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def _choose(self, request: RequestInfo) -> Fault | None:
        """The fault that applies to this request (using up one of its ``times``)."""
        with self._lock:
            self._counts["requests"] = self._counts.get("requests", 0) + 1
            fault = self._fault
            if fault is None:
                return None
            if isinstance(fault, FailEntries):
                applies = kinesis_operation("PutRecords")(request)
            elif isinstance(fault, Refuse):
                applies = True
            else:
                applies = (fault.match is None or fault.match(request)) and (
                    self._rng.random() < fault.probability
                )
            times = getattr(fault, "times", None)
            if not applies or (times is not None and self._uses >= times):
                return None
            self._uses += 1
            return fault

    def _fail_some(self, count: int, fault: FailEntries) -> dict[int, str]:
        with self._lock:
            return {
                index: self._rng.choice(fault.codes)
                for index in range(count)
                if self._rng.random() < fault.fraction
            }

    def _record_status(self, status: int) -> None:
        with self._lock:
            self._statuses[status] = self._statuses.get(status, 0) + 1

    def forward(
        self, request: RequestInfo, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send ``request`` (with ``body``) to the target; its status, headers and body."""
        connection: http.client.HTTPConnection
        if self.target_tls is None:
            connection = http.client.HTTPConnection(
                self.target_host, self.target_port, timeout=self.timeout_s
            )
        else:
            connection = http.client.HTTPSConnection(
                self.target_host, self.target_port, timeout=self.timeout_s,
                context=self.target_tls)
        try:
            headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
            if self.target_tls is None or "host" not in request.headers:
                headers["host"] = f"{self.target_host}:{self.target_port}"
            else:
                headers["host"] = request.headers["host"]
            connection.request(request.method, request.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            self._count("forwarded")
            return response.status, kept, payload
        finally:
            connection.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout, reset) is part of the game: no traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(30)
            self.request.do_handshake()  # in this connection's thread, not the accept loop
            self.request.settimeout(None)
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.proxy._lock:
            self.server.proxy._clients.add(self.connection)

    def finish(self) -> None:
        with self.server.proxy._lock:
            self.server.proxy._clients.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: tests read counters, not access logs."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def _handle(self) -> None:
        proxy = self.server.proxy
        with proxy._lock:
            proxy._in_flight += 1
            most = proxy._counts.get("most_in_flight", 0)
            proxy._counts["most_in_flight"] = max(most, proxy._in_flight)
        try:
            self._handle_request(proxy)
        finally:
            with proxy._lock:
                proxy._in_flight -= 1

    def _handle_request(self, proxy: FaultProxy) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        request = RequestInfo(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        fault = proxy._choose(request)
        if isinstance(fault, Refuse) or (isinstance(fault, Drop) and not fault.after_forward):
            self._drop(proxy)
            return
        if isinstance(fault, Delay):
            proxy._count("delayed")
            time.sleep(fault.seconds)  # the injected delay itself
        if isinstance(fault, Respond):
            proxy._count("responded")
            self._answer(proxy, fault.status, [("Content-Type", fault.content_type)], fault.body)
            return
        if isinstance(fault, FailEntries):
            status, headers, payload = self._put_records_failing_some(proxy, request, fault)
        else:
            try:
                status, headers, payload = proxy.forward(request, body)
            except OSError:
                self._drop(proxy)  # the target is down: the client sees a cut connection
                return
        if isinstance(fault, Drop):
            self._drop(proxy)
            return
        self._answer(proxy, status, headers, payload)

    def _drop(self, proxy: FaultProxy) -> None:
        proxy._count("dropped")
        self.close_connection = True

    def _answer(
        self, proxy: FaultProxy, status: int, headers: list[tuple[str, str]], payload: bytes
    ) -> None:
        proxy._record_status(status)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _put_records_failing_some(
        self, proxy: FaultProxy, request: RequestInfo, fault: FailEntries
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        document = json.loads(request.body)
        entries = document["Records"]
        failing = proxy._fail_some(len(entries), fault)
        kept = [entry for index, entry in enumerate(entries) if index not in failing]
        if kept:
            status, headers, payload = proxy.forward(
                request, json.dumps({**document, "Records": kept}).encode()
            )
            if status != 200:
                return status, headers, payload
            answered = iter(json.loads(payload)["Records"])
            server_failed = json.loads(payload).get("FailedRecordCount", 0)
        else:
            headers = [("Content-Type", "application/x-amz-json-1.1")]
            answered, server_failed = iter(()), 0
        results = [
            {"ErrorCode": code, "ErrorMessage": f"injected by FaultProxy: {code}"}
            if (code := failing.get(index))
            else next(answered)
            for index in range(len(entries))
        ]
        proxy._count("failed_entries", len(failing))
        answer = {"FailedRecordCount": server_failed + len(failing), "Records": results}
        return 200, headers, json.dumps(answer).encode()
