"""HTTP/1.1 requests on one keep-alive connection: the Lambda function's calls to the domain and
to SNS. A request goes out in one write; its answer's status and body are read back.

Why not ``http.client``: per request it writes the head and the body separately (with
TCP_NODELAY, two segments and two wake-ups of the server) and parses the answer's headers with
the ``email`` package. Posting a batch of 100 and reading the answer took about 350 µs of CPU
with it and 150 with this client, the same request to the same node
(``bench/bench_handler.py``, docs/benchmarks/handler.md).

The function only sends POSTs with a body, so the client is small: answers are framed as RFC
9112 says (Content-Length, chunked, or the connection's end), interim 1xx answers are skipped,
and an answer that does not parse raises :class:`ProtocolError` naming what was wrong. Stdlib
only.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
from collections.abc import Mapping

#: The most a status line with its headers, or one chunk-size line, may take.
MAX_HEAD_BYTES = 64 * 1024
_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: .*)?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")
_READ_BYTES = 65536


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it (the message says where)."""


class Connection:
    """One connection to ``hostname:port`` (TLS when ``tls`` is given), opened at the first
    request and kept open between requests until either side closes it.

    :meth:`send` and :meth:`read_response` raise ``OSError`` (``TimeoutError`` among them)
    when the network fails and :class:`ProtocolError` when the answer does not parse; either
    way the connection is closed, so the next request opens a new one.
    """

    def __init__(self, hostname: str, port: int | None, tls: ssl.SSLContext | None) -> None:
        self.hostname = hostname
        self.port = port or (443 if tls is not None else 80)
        self._tls = tls
        self._sock: socket.socket | None = None
        self._buffer = b""  # read from the socket, not yet consumed

    def send(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
             timeout_s: float) -> None:
        """Write one request, its head and body in a single ``sendall``."""
        head = [f"{method} {target} HTTP/1.1\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} holds a line break; refusing to send it")
            head.append(f"{name}: {value}\r\n")
        head.append(f"Content-Length: {len(body)}\r\n\r\n")
        if self._buffer or (self._sock is not None
                            and select.select([self._sock], [], [], 0)[0]):
            # An idle connection that reads as ready was closed by the other end (or carries
            # bytes no request asked for): open a new one, never send a request into a dead
            # socket (urllib3 checks the same). With TLS too: a read of _READ_BYTES takes a
            # whole record (at most 16 KiB), so a later record waits in the socket.
            self.close()
        try:
            if self._sock is None:
                self._sock = self._open(timeout_s)
            self._sock.settimeout(timeout_s)
            self._sock.sendall("".join(head).encode("latin-1") + body)
        except BaseException:
            self.close()
            raise

    def read_response(self) -> tuple[int, bytes]:
        """The final answer's status and body (interim 1xx answers skipped). The connection is
        closed afterwards when the answer says so or is delimited by the connection's end."""
        try:
            status, fields, keep_alive = self._read_head()
            while 100 <= status < 200:
                status, fields, keep_alive = self._read_head()
            body, ended = self._read_body(status, fields)
        except BaseException:
            self.close()
            raise
        if ended or not keep_alive:
            self.close()
        return status, body

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def _open(self, timeout_s: float) -> socket.socket:
        sock = socket.create_connection((self.hostname, self.port), timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.hostname)
        except BaseException:
            sock.close()
            raise
        return sock

    def _read_head(self) -> tuple[int, dict[str, str], bool]:
        """(status, header fields by lower-case name, whether the connection stays open)."""
        head = self._read_until(b"\r\n\r\n", "the status line and headers").decode("latin-1")
        status_line, *lines = head.split("\r\n")
        match = _STATUS_LINE.fullmatch(status_line)
        if match is None:
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:100]!r}")
        fields: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise ProtocolError(f"malformed header line: {line[:100]!r}")
            name = name.lower()
            value = value.strip(" \t")
            if name == "content-length" and fields.get(name, value) != value:
                raise ProtocolError("two different Content-Length headers")
            fields[name] = value
        connection = fields.get("connection", "").lower()
        keep_alive = "close" not in connection if match[1] == "1" else "keep-alive" in connection
        return int(match[2]), fields, keep_alive

    def _read_body(self, status: int, fields: Mapping[str, str]) -> tuple[bytes, bool]:
        """The body, and whether it ran to the end of the connection."""
        if status in (204, 304):
            return b"", False
        coding = fields.get("transfer-encoding")
        if coding is not None:
            if coding.lower() != "chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding {coding!r}")
            return self._read_chunked(), False
        length = fields.get("content-length")
        if length is None:  # delimited by the end of the connection
            return self._read_to_end(), True
        if not length.isdigit() or not length.isascii():
            raise ProtocolError(f"Content-Length is not a number: {length[:40]!r}")
        return self._read_exactly(int(length)), False

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = self._read_until(b"\r\n", "a chunk size")
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise ProtocolError(f"malformed chunk size: {line[:40]!r}")
            size = int(match[1], 16)
            if size == 0:
                while self._read_until(b"\r\n", "a trailer line"):  # trailers: skipped
                    pass
                return b"".join(parts)
            parts.append(self._read_exactly(size))
            if self._read_exactly(2) != b"\r\n":
                raise ProtocolError("a chunk is not followed by CRLF")

    def _read_until(self, end: bytes, what: str) -> bytes:
        """The bytes before ``end`` (consumed with it)."""
        buffer = self._buffer
        start = 0
        while (found := buffer.find(end, start)) < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise ProtocolError(f"{what} took more than {MAX_HEAD_BYTES} bytes")
            start = max(0, len(buffer) - len(end) + 1)
            buffer += self._recv(f"before {what} ended")
        self._buffer = buffer[found + len(end):]
        return buffer[:found]

    def _read_exactly(self, size: int) -> bytes:
        buffer = self._buffer
        if len(buffer) < size:
            parts = [buffer]
            have = len(buffer)
            while have < size:
                part = self._recv(f"after {have} of {size} body bytes")
                parts.append(part)
                have += len(part)
            buffer = b"".join(parts)
        self._buffer = buffer[size:]
        return buffer[:size]

    def _read_to_end(self) -> bytes:
        assert self._sock is not None
        parts = [self._buffer]
        while part := self._sock.recv(_READ_BYTES):
            parts.append(part)
        self._buffer = b""
        return b"".join(parts)

    def _recv(self, when: str) -> bytes:
        if self._sock is None:
            raise ConnectionError("no request was sent on this connection")
        part = self._sock.recv(_READ_BYTES)
        if not part:
            raise ConnectionResetError(f"the server closed the connection {when}")
        return part
