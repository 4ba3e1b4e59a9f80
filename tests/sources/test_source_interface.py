"""The shared source interface: samples, records, contact events, closing, backpressure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from hrnb.errors import RecordError, SourceError
from hrnb.hrm import Measurement
from hrnb.sources import ConnectionEvent, HeartRateSource, Sample, SimulatedSource
from hrnb.sources.base import Session, session_start, to_utc_ms
from hrnb.wire.records import decode_record, encode_record, plausibility_problem, validate_record

AT = datetime(2026, 11, 29, 6, 10, 0, 123000, tzinfo=UTC)


def test_sample_becomes_a_valid_wire_record() -> None:
    sample = Sample(
        "athlete-1", "s1", "EE:00:00:00:00:01", 7, AT, Measurement(142, True, 310, (420.5,))
    )

    record = sample.to_record(sent_at=datetime(2026, 11, 29, 6, 10, 1, tzinfo=UTC))

    assert sample.heart_rate == 142
    assert validate_record(record) == record
    assert record["timestamp"] == "2026-11-29T06:10:00.123Z"
    assert record["sent_at"] == "2026-11-29T06:10:01.000Z"
    assert (record["seq"], record["heart_rate"], record["rr_intervals_ms"]) == (7, 142, [420.5])
    assert (record["sensor_contact"], record["energy_expended"]) == (True, 310)


def test_a_sample_without_skin_contact_is_a_record_without_heart_rate() -> None:
    sample = Sample("athlete-1", "s1", "d1", 8, AT, Measurement(0, False))

    record = sample.to_record()

    assert (record["heart_rate"], record["sensor_contact"]) == (None, False)
    assert decode_record(encode_record(record)) == record
    assert plausibility_problem(record, now=AT) is None  # data, not dead-lettered


def test_an_older_producers_no_contact_record_means_the_same() -> None:
    old_form = {**Sample("a", "s1", "d1", 8, AT, Measurement(72, True)).to_record(),
                "heart_rate": 0, "sensor_contact": False}
    assert validate_record(old_form)["heart_rate"] is None


@pytest.mark.parametrize("contact", [True, None])
def test_only_a_no_contact_record_may_lack_a_heart_rate(contact: bool | None) -> None:
    record = {**Sample("a", "s1", "d1", 8, AT, Measurement(72, contact)).to_record(),
              "heart_rate": None}
    with pytest.raises(RecordError, match="only a sample read without skin contact") as caught:
        validate_record(record)
    assert caught.value.field == "heart_rate"


def test_sample_with_an_invalid_field_is_refused_as_a_record() -> None:
    sample = Sample("bad id", "s1", "d1", 0, AT, Measurement(60))
    with pytest.raises(RecordError, match="athlete_id"):
        sample.to_record()


@pytest.mark.parametrize("field", ["athlete_id", "session_id", "device_id", "timestamp"])
def test_a_trailing_newline_makes_a_record_invalid(field: str) -> None:
    """Issue #12 item 6: athlete ``$'nl1\\n'`` was indexed as an athlete of its own."""
    record = Sample("nl1", "s1", "d1", 0, AT, Measurement(60)).to_record()
    validate_record(record)
    with pytest.raises(RecordError, match=field):
        validate_record({**record, field: record[field] + "\n"})


def test_the_longest_athlete_id_the_command_line_takes_makes_valid_records() -> None:
    """Issue #12 item 8: a 128-character athlete id passed the command line's check, then
    every record was invalid (the simulated device id ``simulated:<id>`` grew past 128)."""
    from hrnb.sources import from_spec
    from hrnb.wire.records import MAX_ID_LENGTH

    longest = "a" * MAX_ID_LENGTH
    source = from_spec("simulated", athlete_id=longest, duration_s=3, speed=None)

    async def first_samples() -> list[Sample]:
        return [item async for item in source if isinstance(item, Sample)]

    samples = asyncio.run(first_samples())
    assert len(samples) == 3
    for sample in samples:
        validate_record(sample.to_record())
    with pytest.raises(Exception, match="--athlete-id"):
        from_spec("simulated", athlete_id=longest + "a")


def test_session_numbers_samples_and_reports_contact_changes() -> None:
    session = Session("a", "d", "s")
    contacts = [None, True, False, False, None, True, True]

    items = [item for contact in contacts for item in session.items(Measurement(60, contact), AT)]

    kinds = [getattr(item, "kind", "sample") for item in items]
    assert kinds == [
        "sample",
        "sample",
        "contact_lost",
        "sample",
        "sample",
        "sample",
        "contact_restored",
        "sample",
        "sample",
    ]
    assert [item.seq for item in items if isinstance(item, Sample)] == list(range(7))


def test_times_are_utc_milliseconds() -> None:
    assert to_utc_ms(datetime(2026, 1, 1, 12, 0, 0, 999999, tzinfo=UTC)).microsecond == 999000
    with pytest.raises(ValueError, match="timezone"):
        to_utc_ms(datetime(2026, 1, 1))
    before = datetime.now(UTC)
    start = session_start(600.0, 10.0)  # ten minutes played 10x: must start 9 minutes ago
    assert 535 <= (before - start).total_seconds() <= 545
    assert session_start(None, None) >= to_utc_ms(before)


class CountingSource(HeartRateSource):
    """Emits numbered events as fast as it may; then fails if asked to."""

    max_pending = 4

    def __init__(self, count: int, fail_after: bool = False) -> None:
        super().__init__()
        self.count = count
        self.produced = 0
        self.fail_after = fail_after

    async def _produce(self) -> None:
        for number in range(self.count):
            await self._emit(ConnectionEvent("connected", AT, "a", "d", str(number)))
            self.produced += 1
        if self.fail_after:
            raise SourceError("the device went away for good")


def test_producer_waits_for_a_slow_consumer() -> None:
    async def scenario() -> list[int]:
        source = CountingSource(100)
        progress = []
        async for item in source:
            await asyncio.sleep(0.001)  # a slow consumer is the scenario
            progress.append(source.produced - int(item.detail))  # type: ignore[union-attr]
        return progress

    progress = asyncio.run(scenario())

    assert len(progress) == 100
    assert max(progress) <= CountingSource.max_pending + 1  # never ran far ahead


def test_failure_reaches_the_consumer_after_every_earlier_item() -> None:
    async def scenario() -> list[str]:
        seen: list[str] = []
        with pytest.raises(SourceError, match="for good"):
            async for item in CountingSource(3, fail_after=True):
                seen.append(item.detail)  # type: ignore[union-attr]
        return seen

    assert asyncio.run(scenario()) == ["0", "1", "2"]


def test_aclose_from_another_task_ends_a_waiting_consumer() -> None:
    async def scenario() -> int:
        source = SimulatedSource(rate_hz=1.0)  # real time: the consumer mostly waits
        received = 0

        async def consume() -> None:
            nonlocal received
            async for _ in source:
                received += 1

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.2)  # the consumer runs a while before the source is closed
        await source.aclose()
        await asyncio.wait_for(consumer, 5.0)  # ends cleanly, no exception
        await source.aclose()
        return received

    assert asyncio.run(scenario()) >= 1  # at least the "connected" event


def test_closing_before_iterating_yields_nothing() -> None:
    async def scenario() -> list[object]:
        source = SimulatedSource(rate_hz=1.0)
        await source.aclose()
        return [item async for item in source]

    assert asyncio.run(scenario()) == []


def test_a_flat_out_source_never_blocks_the_event_loop() -> None:
    """A notebook's loop keeps serving widgets while thousands of samples are generated."""

    async def scenario() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        longest_gap = 0.0
        stop = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal longest_gap
            last = loop.time()
            while not stop.is_set():
                await asyncio.sleep(0.005)  # the heartbeat measures the loop's responsiveness
                now = loop.time()
                longest_gap = max(longest_gap, now - last)
                last = now

        ticker = asyncio.create_task(heartbeat())
        athletes = [f"a{index}" for index in range(200)]
        count = 0
        async with SimulatedSource(athletes, duration_s=120, speed=None, seed=3) as source:
            async for _ in source:
                count += 1
        stop.set()
        await ticker
        return count, longest_gap

    count, longest_gap = asyncio.run(scenario())

    assert count > 200 * 120
    assert longest_gap < 0.25
