"""The Lambda function's log: one JSON object per line on stdout, which Lambda sends to CloudWatch
Logs, where Logs Insights reads every key as a field.

The keys are Powertools Logger's (``level``, ``message``, ``timestamp``, ``service``,
``cold_start``, ``function_*``) with each line's own fields at the top level. Powertools' Logger
wrote these lines until #16: with its decorator, an invocation's start and batch line cost 154 µs
of CPU in a loop against 22 µs here, and 0.43-0.54 ms of an invocation in place against 0.22 ms
(docs/benchmarks/handler.md; the difference is 2-4 % of a batch of 100's Duration).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol, TextIO


class LambdaContext(Protocol):
    """What a line takes from the context Lambda hands the function."""

    function_name: str
    memory_limit_in_mb: int | str
    invoked_function_arn: str
    aws_request_id: str


#: Compact, and never failing on a value JSON has no type for (written as its str()).
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


class JsonLog:
    """Lines for one service; :meth:`start` at each invocation names it in every later line."""

    def __init__(self, service: str, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._service = service
        self._cold = True
        self._keys: dict[str, Any] = {"service": service}  # until the first invocation

    def start(self, context: LambdaContext) -> None:
        """An invocation began: its request and the function go into each of its lines."""
        self._keys = {
            "service": self._service,
            "cold_start": self._cold,
            "function_name": context.function_name,
            "function_memory_size": context.memory_limit_in_mb,
            "function_arn": context.invoked_function_arn,
            "function_request_id": context.aws_request_id,
        }
        self._cold = False

    def info(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        self._write("INFO", message, fields)

    def warning(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        self._write("WARNING", message, fields)

    def error(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        self._write("ERROR", message, fields)

    def _write(self, level: str, message: str, fields: Mapping[str, Any] | None) -> None:
        now = time.time()
        line = {"level": level, "message": message,
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now % 1 * 1000):03d}Z",
                **self._keys, **(fields or {})}
        stream = self._stream or sys.stdout  # looked up per line: the runtime may replace it
        stream.write(_encode(line) + "\n")
        stream.flush()
