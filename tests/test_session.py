"""hrnb.live.session: the summary file and its presenter, misuse of a live session, and the set-up's
end-to-end check failing with a message that names what to look at. (The whole live session
runs for real in tests/notebooks.)"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from support import remove_role_mappings

from hrnb.config import Settings
from hrnb.errors import HrnbError, ProvisionError
from hrnb.live import LiveDashboard
from hrnb.live.session import (
    AthleteReport,
    LiveSession,
    SessionReport,
    format_report,
    verify_pipeline,
    write_report,
)
from hrnb.provision.security import ensure_role_mapping
from hrnb.sources import from_spec


def report(alerts: tuple[dict[str, object], ...] = ()) -> SessionReport:
    return SessionReport(
        source="SimulatedSource", stream="x-hr-stream", index="x-hr", duration_s=59.8,
        samples_streamed=60, records_sent=60, unsent=0, indexed=57, missing=3, caught_up=False,
        athletes=(AthleteReport("ana", "s1", 60, 60, 57, 3, "40–42"),),
        latency_ms={"measured→indexed": {"p50": 210.0, "p95": 340.4, "p99": None, "max": 512.0,
                                         "samples": 57}},
        alerts=alerts,
    )


def test_summary_file_round_trip_and_presenter(tmp_path: Path) -> None:
    html = tmp_path / "live.html"
    html.write_text("<html></html>")
    alert = {"athlete_id": "ana", "start": "2026-01-01T10:00:00+00:00",
             "end": "2026-01-01T10:00:12+00:00", "duration_s": 12.0, "peak_bpm": 171}
    path = write_report(report((alert,)), tmp_path / "out" / "summary.json", [html])
    data = json.loads(path.read_text())
    assert data["athletes"][0]["missing_runs"] == "40–42"
    assert data["files"] == [str(html.resolve())]
    text = format_report(data)
    assert "streamed 60 samples in 60 s from 1 athlete(s)" in text
    assert "57 of 60 indexed, 3 missing (ana/s1: 40–42) (the index had not caught up" in text
    assert "p50 210 ms, p95 340 ms, p99 -" in text
    assert "1 run(s)" in text and "ana: 12 s, peak 171 bpm" in text
    assert f"file: {html.resolve()}" in text


def test_a_live_session_must_start_before_it_can_stop_or_wait(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    live = LiveSession(settings, from_spec("simulated"), LiveDashboard(settings))
    with pytest.raises(HrnbError, match="await live.start"):
        asyncio.run(live.stop())
    with pytest.raises(HrnbError, match="await live.start"):
        asyncio.run(live.wait(1))


@pytest.mark.stack
def test_verify_pipeline_names_the_function_when_no_record_comes_back(
    settings: Settings, unique_name, make_aws_client, tmp_path: Path
) -> None:
    prefix = unique_name("vp")
    own = settings.with_overrides(prefix=prefix, index_name=f"{prefix}-hr", state_dir=tmp_path)
    kinesis = make_aws_client("kinesis")  # a stream with no trigger and no function behind it
    kinesis.create_stream(StreamName=own.stream_name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=own.stream_name)
    if own.local_security:  # set-up maps its caller as a reader before it verifies
        ensure_role_mapping(own)
    try:
        with pytest.raises(ProvisionError) as caught:
            asyncio.run(verify_pipeline(own, timeout_s=6, resend_every_s=1))
    finally:
        make_aws_client("kinesis").delete_stream(StreamName=own.stream_name,
                                                 EnforceConsumerDeletion=True)
        if own.local_security:
            remove_role_mappings(own)
    message = str(caught.value)
    assert caught.value.resource == own.function_name
    sent = re.search(rf"none of (\d+) check records reached index '{own.index_name}'", message)
    assert sent and int(sent.group(1)) >= 2  # resent while waiting
    assert own.stream_name in message and "poller" in message
