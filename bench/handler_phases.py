"""The handler with its phases timed, run by ``bench/bench_handler.py`` in a worker beside it.

Copied next to the unpacked ``handler.py`` and named as the function's handler
(``handler_phases.lambda_handler``), it wraps the packaged handler's own functions, unchanged,
and after each invocation writes one line to the log: ``PHASES`` and a JSON list of
``[phase, wall ms, CPU ms]`` from the invocation's start, each the moment a phase ended:

- ``log started``: the handler's entry until it asks for the indexer (``log.start``);
- ``part 1 decoded`` … (one per request): the records of that part decoded and validated, its
  ``_bulk`` lines ready; ``part 1 sent``: its body signed and written;
- ``part 1 answered`` …: its answer read (the waiting for the node);
- ``batch line in``, ``batch line out``: ``log.info`` of the batch summary;
- ``end``: the answer handed back.

Why: the Duration shows how long an invocation took, not where; these marks show it under the
benchmark's own conditions (a worker process woken per batch, the node busy beside it), where
code run once per invocation costs several times what it does in a loop. Stdlib only.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import handler

_marks: list[tuple[str, float, float]] = []
_counts = {"sent": 0, "answered": 0}  # this invocation's requests so far


def _mark(phase: str) -> None:
    _marks.append((phase, time.perf_counter(), time.process_time()))


def _timed_indexer(indexer: Callable[[], Any]) -> Callable[[], Any]:
    def timed() -> Any:
        _mark("log started")
        return indexer()
    return timed


def _timed_start(start: Callable[..., Any]) -> Callable[..., Any]:
    def timed(self: Any, lines: list[str], request_timeout_s: float) -> Any:
        _counts["sent"] += 1
        _mark(f"part {_counts['sent']} decoded")
        exchange = start(self, lines, request_timeout_s)
        _mark(f"part {_counts['sent']} sent")
        return exchange
    return timed


def _timed_answer(answer: Callable[..., Any]) -> Callable[..., Any]:
    def timed(exchange: Any, count: int) -> Any:
        result = answer(exchange, count)
        _counts["answered"] += 1
        _mark(f"part {_counts['answered']} answered")
        return result
    return timed


def _timed_info(info: Callable[..., Any]) -> Callable[..., Any]:
    def timed(message: str, *args: Any, **kwargs: Any) -> Any:
        if message != "batch processed":
            return info(message, *args, **kwargs)
        _mark("batch line in")
        result = info(message, *args, **kwargs)
        _mark("batch line out")
        return result
    return timed


handler.indexer = _timed_indexer(handler.indexer)
handler.Indexer._start = _timed_start(handler.Indexer._start)
handler.Indexer._answer = staticmethod(_timed_answer(handler.Indexer._answer))
handler.log.info = _timed_info(handler.log.info)  # type: ignore[method-assign]


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    _marks.clear()
    _counts.update(sent=0, answered=0)
    _mark("start")
    result = handler.lambda_handler(event, context)
    _mark("end")
    _, wall, cpu = _marks[0]
    sys.stderr.write("PHASES " + json.dumps([
        [phase, round((at - wall) * 1000, 4), round((used - cpu) * 1000, 4)]
        for phase, at, used in _marks[1:]]) + "\n")
    return result
