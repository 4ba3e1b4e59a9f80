"""hrnb.wire.jsonlog: the function's JSON log lines, as CloudWatch Logs Insights reads them."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hrnb.wire.jsonlog import JsonLog


class Context:
    function_name = "hrnb-indexer"
    memory_limit_in_mb = "256"
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:hrnb-indexer"

    def __init__(self, request_id: str) -> None:
        self.aws_request_id = request_id


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_each_line_is_one_json_object_with_powertools_keys_and_its_fields_on_top() -> None:
    stream = io.StringIO()
    log = JsonLog("hrnb-indexer", stream)
    before = datetime.now(UTC)
    log.start(Context("req-1"))
    log.info("batch processed", {"indexed": 5, "failure_statuses": {"429": 2}})
    log.warning("record dead-lettered", {"reason": "heart_rate 300 bpm is outside 20..250 bpm"})
    log.error("alert episodes not processed; batch handed back", {"reason": "SNS said 500"})

    info, warning, error = lines(stream)
    assert info == {
        "level": "INFO", "message": "batch processed", "timestamp": info["timestamp"],
        "service": "hrnb-indexer", "cold_start": True, "function_name": "hrnb-indexer",
        "function_memory_size": "256", "function_arn": Context.invoked_function_arn,
        "function_request_id": "req-1", "indexed": 5, "failure_statuses": {"429": 2}}
    written = datetime.strptime(info["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before - timedelta(milliseconds=1) <= written <= datetime.now(UTC)
    assert (warning["level"], warning["reason"]) == (
        "WARNING", "heart_rate 300 bpm is outside 20..250 bpm")
    assert (error["level"], error["function_request_id"]) == ("ERROR", "req-1")


def test_only_the_first_invocation_is_a_cold_start_and_each_line_names_its_own() -> None:
    stream = io.StringIO()
    log = JsonLog("hrnb-indexer", stream)
    for request in ("req-1", "req-2", "req-3"):
        log.start(Context(request))
        log.info("batch processed")

    assert [(line["function_request_id"], line["cold_start"]) for line in lines(stream)] == [
        ("req-1", True), ("req-2", False), ("req-3", False)]


def test_a_value_json_has_no_type_for_is_written_as_text_and_never_breaks_the_line() -> None:
    stream = io.StringIO()
    log = JsonLog("hrnb-indexer", stream)
    log.info("odd values", {"amount": Decimal("1.5"), "when": datetime(2026, 1, 2, tzinfo=UTC),
                            "text": "line\nbreak \u2764"})

    (line,) = lines(stream)
    assert (line["amount"], line["when"], line["text"]) == (
        "1.5", "2026-01-02 00:00:00+00:00", "line\nbreak \u2764")
    assert "function_request_id" not in line  # logged before any invocation: no request yet
