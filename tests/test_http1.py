"""hrnb.wire.http1, the Lambda function's HTTP/1.1 client, against a real TCP server that
answers with scripted bytes: each framing RFC 9112 allows, answers cut anywhere, servers that
close, stall or answer garbage; keep-alive and stale connections over TLS as well, verified
against the local CA. (The handler's tests run it against the real node and SNS.)"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import free_port, wait_until

from hrnb.local.tls import FRONT_NAME, LocalTls, ensure_local_tls
from hrnb.wire.http1 import MAX_HEAD_BYTES, Connection, ProtocolError

Reply = Callable[[socket.socket, bytes], bool]  # writes an answer; False: close the connection


@dataclass
class ScriptedServer:
    """Accepts connections and answers each request with the next reply in ``replies``."""

    replies: list[Reply]
    tls: ssl.SSLContext | None = None  # TLS on each accepted connection
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    closed: int = 0  # connections this server closed

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            self._answer_requests(sock)
        except OSError:  # the client went away (or refused the certificate)
            return
        finally:
            sock.close()
            self.closed += 1

    def _answer_requests(self, sock: socket.socket) -> None:
        buffer = b""
        while self.replies:
            while b"\r\n\r\n" not in buffer:
                part = sock.recv(65536)
                if not part:
                    return
                buffer += part
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            while len(buffer) < length:
                buffer += sock.recv(65536)
            request, buffer = head + b"\r\n\r\n" + buffer[:length], buffer[length:]
            self.requests.append(request)
            if not self.replies.pop(0)(sock, request):
                return

    def close(self) -> None:
        self._listener.close()


def answer(*pieces: bytes, keep: bool = True, pause_s: float = 0.02) -> Reply:
    """A reply written in these pieces, pausing between them (the client reads partial data)."""
    def reply(sock: socket.socket, _request: bytes) -> bool:
        for number, piece in enumerate(pieces):
            if number:
                time.sleep(pause_s)
            sock.sendall(piece)
        return keep
    return reply


@pytest.fixture(scope="module")
def local_tls(tmp_path_factory: pytest.TempPathFactory) -> LocalTls:
    return ensure_local_tls(Path(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def serve(local_tls: LocalTls) -> Iterator[Callable[..., tuple[ScriptedServer, Connection]]]:
    servers: list[ScriptedServer] = []
    connections: list[Connection] = []

    def start(*replies: Reply, tls: bool = False) -> tuple[ScriptedServer, Connection]:
        """A server answering with ``replies`` and a client connection to it; with ``tls``,
        both speak TLS, the client verifying the server against the local CA (as the
        function verifies the domain)."""
        server_tls = client_tls = None
        if tls:
            server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_tls.load_cert_chain(local_tls.cert(FRONT_NAME), local_tls.key(FRONT_NAME))
            client_tls = ssl.create_default_context(cafile=str(local_tls.ca))
        server = ScriptedServer(list(replies), server_tls)
        servers.append(server)
        connections.append(Connection("127.0.0.1", server.port, client_tls))
        return server, connections[-1]

    yield start
    for connection in connections:
        connection.close()
    for server in servers:
        server.close()


def post(connection: Connection, body: bytes = b'{"a":1}\n', timeout_s: float = 5) -> tuple[
        int, bytes]:
    connection.send("POST", "/idx/_bulk?x=1", {"Host": "example:9200", "X-Test": "yes"}, body,
                    timeout_s)
    return connection.read_response()


def test_the_request_is_the_method_target_headers_length_and_body(serve) -> None:
    server, connection = serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
    assert post(connection, b"0123456789") == (200, b"{}")
    assert server.requests == [b"POST /idx/_bulk?x=1 HTTP/1.1\r\nHost: example:9200\r\n"
                               b"X-Test: yes\r\nContent-Length: 10\r\n\r\n0123456789"]


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_kept_alive_connection_carries_the_next_request(serve, tls: bool) -> None:
    server, connection = serve(
        answer(b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nfirst"),
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", b"sec", b"ond"), tls=tls)
    assert post(connection) == (201, b"first")
    assert post(connection) == (200, b"second")
    assert server.connections == 1


def test_a_chunked_answer_is_joined_across_reads_with_extensions_and_trailers(serve) -> None:
    _, connection = serve(answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"lo\r\n1;name=value\r\n \r\nA\r\n0123456789\r\n",
        b"0\r\nX-Trailer: t\r\n\r\n"))
    assert post(connection) == (200, b"hello 0123456789")


def test_an_answer_delimited_by_the_end_of_the_connection(serve) -> None:
    server, connection = serve(
        answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of", b" it", keep=False),
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"))
    assert post(connection) == (200, b"all of it")
    assert post(connection) == (200, b"next")  # on a new connection
    assert server.connections == 2


@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\nConnection: close\r\n",
                                  b"HTTP/1.0 200 OK\r\n"])
def test_an_answer_that_ends_the_connection_is_not_reused(serve, head: bytes) -> None:
    server, connection = serve(answer(head + b"Content-Length: 2\r\n\r\nok"),
                               answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    assert post(connection) == (200, b"ok")
    assert post(connection) == (200, b"ok")
    assert server.connections == 2


def test_interim_answers_are_skipped_and_a_204_has_no_body(serve) -> None:
    _, connection = serve(
        answer(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"),
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes"))
    assert post(connection) == (204, b"")
    assert post(connection) == (200, b"yes")


@pytest.mark.parametrize(("reply", "message"), [
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x status line: 'SSH-2.0-OpenSSH_9.2'"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line: 'no colon here'"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
     "two different Content-Length headers"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length is not a number: '-1'"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n",
     "a chunk is not followed by CRLF"),
])
def test_an_answer_that_does_not_parse_names_the_problem_and_the_next_request_reconnects(
        serve, reply: bytes, message: str) -> None:
    server, connection = serve(answer(reply),
                               answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    with pytest.raises(ProtocolError, match=re.escape(message)):
        post(connection)
    assert post(connection) == (200, b"ok")
    assert server.connections == 2


def test_a_head_without_end_is_refused_past_the_limit(serve) -> None:
    _, connection = serve(answer(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * MAX_HEAD_BYTES))
    with pytest.raises(ProtocolError, match="status line and headers took more than"):
        post(connection)


@pytest.mark.parametrize(("pieces", "message"), [
    ((), "closed the connection before the status line and headers ended"),
    ((b"HTTP/1.1 200 OK\r\nContent-Le",), "before the status line and headers ended"),
    ((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123",), "after 4 of 10 body bytes"),
])
def test_a_server_that_closes_mid_answer_is_a_connection_error(
        serve, pieces: tuple[bytes, ...], message: str) -> None:
    _, connection = serve(answer(*pieces, keep=False))
    with pytest.raises(ConnectionResetError, match=message):
        post(connection)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_server_that_closed_an_idle_connection_gets_the_next_request_on_a_new_one(
        serve, tls: bool) -> None:
    server, connection = serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
                                      keep=False),
                               answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"),
                               tls=tls)
    assert post(connection) == (200, b"a")  # the server closes without saying so
    wait_until(lambda: server.closed == 1, timeout_s=5, what="the server closed the connection")
    assert post(connection) == (200, b"b")
    assert server.connections == 2


STALE = b"HTTP/1.1 500 Stale\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("later", [False, True], ids=["same-write", "later-write"])
def test_bytes_after_an_answer_are_not_read_as_the_next_one(
        serve, tls: bool, later: bool) -> None:
    # In the answer's own write, the bytes arrive with it (read into the client's buffer); in a
    # later write (with TLS, a record of their own), they wait in the socket after it was read.
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    written = threading.Event()

    write = answer(ok, STALE) if later else answer(ok + STALE)

    def stale(sock: socket.socket, request: bytes) -> bool:
        write(sock, request)
        written.set()
        return True

    server, connection = serve(
        stale, answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"), tls=tls)
    assert post(connection) == (200, b"ok")
    wait_until(written.is_set, timeout_s=5, what="the stale bytes written")
    assert post(connection) == (200, b"next")  # on a new connection, not the stale "500"
    assert server.connections == 2


def test_a_silent_server_times_out(serve) -> None:
    def stall(sock: socket.socket, _request: bytes) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        time.sleep(2)
        return False

    _, connection = serve(stall)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        post(connection, timeout_s=0.3)
    assert time.monotonic() - started < 1.5


def test_nothing_listening_is_a_connection_refused() -> None:
    with pytest.raises(ConnectionRefusedError):
        post(Connection("127.0.0.1", free_port(), None))


def test_a_line_break_in_a_header_is_refused_before_anything_is_sent(serve) -> None:
    server, connection = serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    with pytest.raises(ValueError, match="'X-Amz-Security-Token' holds a line break"):
        connection.send("POST", "/", {"X-Amz-Security-Token": "a\r\nInjected: 1"}, b"", 1)
    assert post(connection) == (200, b"")
    assert len(server.requests) == 1 and b"Injected" not in server.requests[0]
