"""The streaming session (source -> producer, items -> listeners) and the ``hrnb stream`` pieces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from support import (
    Key,
    check_delivery,
    read_stream,
    run_async,
    temporary_stream,
)
from support.faultproxy import FaultProxy, Refuse

from hrnb.config import Settings
from hrnb.errors import ConfigError
from hrnb.hrm import Measurement
from hrnb.sources import ConnectionEvent, EventKind, HeartRateSource, Sample, SimulatedSource
from hrnb.stream.producer import (
    KinesisProducer,
    LatencyPercentiles,
    ProducerMetrics,
    kinesis_client,
)
from hrnb.stream.session import (
    StreamProgress,
    StreamSession,
    StreamSummary,
    format_progress,
    format_summary,
    parse_stream_options,
)

_START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


class ScriptedSource(HeartRateSource):
    """A source (the real base class) that emits a fixed list of items, ``pause_s`` apart."""

    def __init__(self, items: Sequence[Sample | ConnectionEvent], pause_s: float = 0.0) -> None:
        super().__init__()
        self.items = list(items)
        self.pause_s = pause_s

    async def _produce(self) -> None:
        for item in self.items:
            await self._emit(item)
            await asyncio.sleep(self.pause_s)  # the source's pace is the scenario


def sample(athlete: str, seq: int, bpm: int = 120, session: str = "s1") -> Sample:
    return Sample(
        athlete_id=athlete,
        session_id=session,
        device_id=f"strap-{athlete}",
        seq=seq,
        received_at=_START + timedelta(milliseconds=500 * seq),
        measurement=Measurement(heart_rate=bpm, sensor_contact=True, rr_intervals_ms=(500.0,)),
    )


def event(athlete: str, kind: EventKind, seconds: int) -> ConnectionEvent:
    return ConnectionEvent(kind, _START + timedelta(seconds=seconds), athlete, f"strap-{athlete}")


def keys(items: Sequence[Sample | ConnectionEvent]) -> list[Key]:
    return [(i.athlete_id, i.session_id, i.seq) for i in items if isinstance(i, Sample)]


# --- options (pure) ------------------------------------------------------------------------------


def test_defaults_stream_one_simulated_athlete() -> None:
    options = parse_stream_options()
    assert (options.source, options.athletes, options.rate_hz, options.duration_s) == (
        "simulated", 1, 1.0, None
    )


def test_source_flags_come_through() -> None:
    options = parse_stream_options(
        "simulated", duration_s=60, athletes=3, athlete_id="team", rate_hz=2.0, spool_path="x.db"
    )
    assert (options.duration_s, options.athletes, options.athlete_id, options.rate_hz) == (
        60, 3, "team", 2.0
    )
    assert options.spool_path == Path("x.db")


@pytest.mark.parametrize(
    ("values", "flag", "words"),
    [
        ({"source": "gps"}, "--source", "is not a source"),
        ({"source": "replay:"}, "--source", "needs a file"),
        ({"source": "replay:/nonexistent/ride.fit"}, "--source", "no such file"),
        ({"source": "ble", "athletes": 3}, "--athletes", "only the simulated source"),
        ({"source": "ble:AA:BB", "rate_hz": 4.0}, "--rate-hz", "a watch sets its own rate"),
        ({"athletes": 0}, "--athletes", "at least 1"),
        ({"duration_s": -5.0}, "--duration", "above 0"),
        ({"rate_hz": 0.0}, "--rate-hz", "above 0"),
        ({"athlete_id": "no spaces allowed"}, "--athlete-id", "athlete_id"),
        ({"flush_timeout_s": -1.0}, "--flush-timeout", "0..86400"),
    ],
)
def test_bad_flags_get_an_error_naming_the_flag(
    values: dict[str, Any], flag: str, words: str
) -> None:
    source = values.pop("source", "simulated")
    with pytest.raises(ConfigError, match=words) as caught:
        parse_stream_options(source, **values)
    assert caught.value.setting == flag


def test_a_directory_is_not_a_spool_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory") as caught:
        parse_stream_options(spool_path=tmp_path)
    assert caught.value.setting == "--spool"


# --- presenters (pure) ---------------------------------------------------------------------------


def metrics(**changes: Any) -> ProducerMetrics:
    values: dict[str, Any] = dict(
        submitted=10, sent=8, retried=3, failed=3, spooled=2, queue_depth=0, calls=4,
        errors=MappingProxyType({"ProvisionedThroughputExceededException": 3}),
        send_latency=LatencyPercentiles(4.0, 12.4, 30.0, 4),
        delivery_latency=LatencyPercentiles(60.0, 250.0, 400.0, 8), spool_full=False,
    )
    return ProducerMetrics(**{**values, **changes})


def test_the_progress_line_shows_counts_latency_and_heart_rates() -> None:
    line = format_progress(
        StreamProgress(
            elapsed_s=75.2, samples=10, submitted=10, invalid=1, refused=0, events=2,
            last_heart_rate_bpm={"anna": 141, "ben": 97}, producer=metrics(),
        )
    )
    assert line.startswith("01:15  10 samples  sent 8  spooled 2  queue 0  retried 3  p95 12 ms")
    assert "invalid 1" in line and "bpm: anna 141 ben 97" in line
    assert "REFUSED" not in line
    refusing = StreamProgress(0, 0, 0, 0, 5, 0, {}, metrics(spool_full=True))
    assert "REFUSED 5 (spool full)" in format_progress(refusing)


def test_the_summary_says_what_was_sent_and_what_waits_in_the_spool() -> None:
    summary = StreamSummary(
        duration_s=12.0, samples=10, submitted=10, invalid=0, refused=0, events=1,
        athletes=("anna",), sessions=("s1",), stopped=True, producer=metrics(),
    )
    text = format_summary(summary)
    assert "streamed 12.0 s (stopped): 10 samples from 1 athlete(s)" in text
    assert "8 sent in 4 calls, 3 retried" in text
    assert "ProvisionedThroughputExceededException x3" in text
    assert "2 records are not acknowledged yet" in text
    assert not summary.complete
    done = StreamSummary(**{**summary.__dict__, "producer": metrics(sent=10, spooled=0)})
    assert done.complete
    assert "every accepted record was acknowledged" in format_summary(done)


# --- sessions against the emulated Kinesis -------------------------------------------------------


@pytest.fixture
def kinesis(settings: Settings) -> Any:
    return kinesis_client(settings)


@pytest.fixture
def stream(kinesis: Any, unique_name: Callable[[str], str]) -> Iterator[str]:
    with temporary_stream(kinesis, unique_name("hrnb-test-streaming"), shards=2) as name:
        yield name


@pytest.mark.stack
@run_async
async def test_every_item_reaches_the_listeners_and_every_valid_sample_the_stream(
    settings: Settings, kinesis: Any, stream: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items: list[Sample | ConnectionEvent] = [
        event("anna", "connected", 0),
        event("ben", "connected", 0),
    ]
    for seq in range(30):
        items += [sample("anna", seq), sample("ben", seq, bpm=90)]
    items.insert(20, event("ben", "contact_lost", 5))
    bad = sample("not valid!", 0)  # the wire format rejects this athlete id
    items.insert(31, bad)
    seen: list[Sample | ConnectionEvent] = []

    def broken_chart(item: Sample | ConnectionEvent) -> None:
        raise RuntimeError("chart went away")

    ticks: list[StreamProgress] = []
    producer = KinesisProducer(kinesis, stream, spool_path=tmp_path / "spool.db")
    async with producer:
        session = StreamSession(
            ScriptedSource(items, pause_s=0.01), producer,
            listeners=[broken_chart, seen.append], on_progress=ticks.append, progress_every_s=0.1,
        )
        summary = await session.run()

    assert seen == items  # in order, events included, the invalid sample too (the chart shows it)
    assert "chart went away" in caplog.text and "not a valid record" in caplog.text
    assert (summary.samples, summary.submitted, summary.invalid, summary.events) == (61, 60, 1, 3)
    assert summary.athletes == ("anna", "ben", "not valid!")
    assert summary.complete is False and summary.unsent == 0 and summary.stopped is False
    assert summary.producer.sent == 60
    assert len(ticks) >= 3 and ticks[-1].samples == 61
    assert [t.samples for t in ticks] == sorted(t.samples for t in ticks)
    assert ticks[-1].last_heart_rate_bpm["ben"] == 90
    valid = [key for key in keys(items) if key[0] != bad.athlete_id]
    report = check_delivery(read_stream(kinesis, stream), valid)
    assert report.exactly_once_in_order, report


@pytest.mark.stack
@run_async
async def test_the_listeners_stay_live_while_kinesis_is_unreachable(
    settings: Settings, kinesis: Any, stream: str, tmp_path: Path
) -> None:
    items = [sample("anna", seq) for seq in range(40)]
    seen_during_outage: list[int] = []
    with FaultProxy(settings.resolved_aws_endpoint_url or "") as proxy:
        proxy.set_fault(Refuse())
        client = kinesis_client(settings.with_overrides(aws_endpoint_url=proxy.url))
        async with KinesisProducer(client, stream, spool_path=tmp_path / "spool.db") as producer:
            session = StreamSession(
                ScriptedSource(items, pause_s=0.02), producer,
                listeners=[lambda item: seen_during_outage.append(producer.metrics().sent)],
                flush_timeout_s=0,
            )
            outage_summary = await session.run()
            proxy.clear()
            after = await producer.flush(timeout=30)

    assert len(seen_during_outage) == 40 and set(seen_during_outage) == {0}
    assert outage_summary.unsent == 40 and outage_summary.producer.sent == 0
    assert "40 records are not acknowledged yet" in format_summary(outage_summary)
    assert after.sent == 40
    assert check_delivery(read_stream(kinesis, stream), keys(items)).exactly_once_in_order


@pytest.mark.stack
@run_async
async def test_stop_ends_an_endless_source_and_flushes_what_it_gave(
    settings: Settings, kinesis: Any, stream: str, tmp_path: Path
) -> None:
    source = SimulatedSource(("anna", "ben"), rate_hz=20, duration_s=None, seed=3)
    async with KinesisProducer(kinesis, stream, spool_path=tmp_path / "spool.db") as producer:
        session = StreamSession(source, producer)
        running = asyncio.create_task(session.run())
        await asyncio.sleep(1.0)  # an endless source streams a while, then is stopped
        session.request_stop()
        summary = await asyncio.wait_for(running, 30)

    assert summary.stopped and summary.complete
    assert 20 <= summary.samples <= 60
    streamed = read_stream(kinesis, stream)
    assert len(streamed) == summary.samples
    assert {s.record["athlete_id"] for s in streamed} == {"anna", "ben"}


@pytest.mark.stack
@run_async
async def test_a_full_spool_is_counted_and_reported_not_hidden(
    settings: Settings, kinesis: Any, stream: str, tmp_path: Path
) -> None:
    source = SimulatedSource(
        tuple(f"a{n}" for n in range(10)), rate_hz=50, duration_s=10, speed=None, seed=1
    )
    with FaultProxy(settings.resolved_aws_endpoint_url or "") as proxy:
        proxy.set_fault(Refuse())
        client = kinesis_client(settings.with_overrides(aws_endpoint_url=proxy.url))
        producer = KinesisProducer(
            client, stream, spool_path=tmp_path / "spool.db", max_spool_bytes=1024 * 1024
        )
        async with producer:
            summary = await StreamSession(source, producer, flush_timeout_s=0).run()
            proxy.clear()
            await producer.flush(timeout=60)

    assert summary.samples == 5000
    assert summary.refused > 0
    assert summary.submitted + summary.refused == summary.samples
    assert "samples were refused because the spool was full" in format_summary(summary)
    assert len(read_stream(kinesis, stream)) == summary.submitted
