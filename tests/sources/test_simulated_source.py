"""The simulated athlete: a plausible workout, consistent RR, determinism, many athletes."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime

import pytest

from hrnb.sources import ConnectionEvent, Sample, SimulatedSource
from hrnb.sources.simulated import WORKOUT, WORKOUT_SECONDS
from hrnb.wire.records import validate_record

Item = Sample | ConnectionEvent


def collect(source: SimulatedSource) -> list[Item]:
    async def run() -> list[Item]:
        async with source:
            return [item async for item in source]

    return asyncio.run(run())


def samples_of(items: list[Item], athlete_id: str | None = None) -> list[Sample]:
    return [
        item
        for item in items
        if isinstance(item, Sample) and (athlete_id is None or item.athlete_id == athlete_id)
    ]


def fingerprint(items: list[Item]) -> list[tuple]:
    return [
        (s.athlete_id, s.seq, s.received_at - samples_of(items)[0].received_at, s.measurement)
        for s in samples_of(items)
    ]


@pytest.fixture(scope="module")
def workout() -> list[Sample]:
    """One athlete through the whole 26-minute workout, without contact losses, at full speed."""
    source = SimulatedSource(
        speed=None, duration_s=WORKOUT_SECONDS, seed=11, contact_loss_every_s=None
    )
    return samples_of(collect(source))


def phase_windows() -> dict[str, list[tuple[float, float]]]:
    windows: dict[str, list[tuple[float, float]]] = {}
    start = 0.0
    for name, seconds, _, _ in WORKOUT:
        windows.setdefault(name, []).append((start, start + seconds))
        start += seconds
    return windows


def in_window(samples: list[Sample], start_s: float, end_s: float) -> list[Sample]:
    first = samples[0].received_at
    return [s for s in samples if start_s <= (s.received_at - first).total_seconds() < end_s]


def test_workout_rises_through_intervals_and_cools_down(workout: list[Sample]) -> None:
    windows = phase_windows()
    rest = statistics.mean(s.heart_rate for s in in_window(workout, 10, 60))
    warm_up_end = statistics.mean(s.heart_rate for s in in_window(workout, 330, 360))
    peaks = [
        max(s.heart_rate for s in in_window(workout, start, end))
        for start, end in windows["interval"]
    ]
    troughs = [
        min(s.heart_rate for s in in_window(workout, start, end))
        for start, end in windows["recovery"]
    ]
    cool_down_end = statistics.mean(s.heart_rate for s in in_window(workout, 1500, 1560))

    assert 45 <= rest <= 75
    assert rest + 30 < warm_up_end < min(peaks)
    assert all(150 <= peak <= 200 for peak in peaks)
    assert all(trough < peak - 25 for trough, peak in zip(troughs, peaks, strict=True))
    assert cool_down_end < warm_up_end
    assert len(workout) == WORKOUT_SECONDS  # one sample a second
    assert (
        max(abs(a.heart_rate - b.heart_rate) for a, b in zip(workout, workout[1:], strict=False))
        <= 15
    )  # noise, not jumps


def test_rr_intervals_match_the_heart_rate_and_vary_more_at_rest(workout: list[Sample]) -> None:
    def window_stats(start_s: float, end_s: float) -> tuple[float, float, float]:
        samples = in_window(workout, start_s, end_s)
        rr = [value for s in samples for value in s.measurement.rr_intervals_ms]
        rmssd = statistics.mean((b - a) ** 2 for a, b in zip(rr, rr[1:], strict=False)) ** 0.5
        return statistics.mean(rr), 60000 / statistics.mean(s.heart_rate for s in samples), rmssd

    rest_rr, rest_expected, rest_rmssd = window_stats(10, 60)
    hard_rr, hard_expected, hard_rmssd = window_stats(460 + 30, 460 + 60)  # second interval

    assert rest_rr == pytest.approx(rest_expected, rel=0.05)
    assert hard_rr == pytest.approx(hard_expected, rel=0.05)
    assert 15 <= rest_rmssd <= 120  # ms: a calm, healthy heart
    assert hard_rmssd < rest_rmssd / 2
    rr_all = [v for s in workout for v in s.measurement.rr_intervals_ms]
    assert all(v * 1024 / 1000 == round(v * 1024 / 1000) for v in rr_all)  # 1/1024 s resolution
    beats = sum(rr_all) / 1000
    assert beats == pytest.approx(WORKOUT_SECONDS, abs=3)  # every beat reported once


def test_energy_expended_is_sent_every_tenth_notification_and_accumulates(
    workout: list[Sample],
) -> None:
    energy = [(s.seq, s.measurement.energy_expended) for s in workout]
    reported = [(seq, kj) for seq, kj in energy if kj is not None]

    assert [seq % 10 for seq, _ in reported] == [9] * len(reported)
    values = [kj for _, kj in reported]
    assert values == sorted(values)
    assert 300 <= values[-1] <= 1500  # kJ for a 26-minute interval session


def test_contact_loss_is_reported_and_sends_zero_bpm() -> None:
    items = collect(SimulatedSource(speed=None, duration_s=3600, seed=5))

    kinds = [item.kind for item in items if isinstance(item, ConnectionEvent)]
    assert kinds[0] == "connected" and kinds[-1] == "disconnected"
    losses = kinds.count("contact_lost")
    assert 2 <= losses <= 20
    assert kinds.count("contact_restored") in (losses, losses - 1)
    lost = [s for s in samples_of(items) if s.measurement.sensor_contact is False]
    assert lost and all(s.heart_rate == 0 and not s.measurement.rr_intervals_ms for s in lost)
    assert all(s.measurement.sensor_contact is not None for s in samples_of(items))


def test_same_seed_same_session_other_seed_other_session() -> None:
    def run(seed: int) -> list[tuple]:
        return fingerprint(
            collect(SimulatedSource(["x", "y"], speed=None, duration_s=300, seed=seed))
        )

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_many_athletes_each_with_their_own_identity_and_sequence() -> None:
    ids = [f"rider-{index:03d}" for index in range(50)]
    items = collect(SimulatedSource(ids, speed=None, duration_s=30, seed=9))

    for athlete_id in ids:
        samples = samples_of(items, athlete_id)
        assert [s.seq for s in samples] == list(range(30))
        assert len({s.session_id for s in samples}) == 1
    assert len({s.session_id for s in samples_of(items)}) == 50
    assert len({s.device_id for s in samples_of(items)}) == 50
    series = {tuple(s.heart_rate for s in samples_of(items, a)) for a in ids}
    assert len(series) == 50  # not one athlete copied fifty times


def test_records_validate_and_flat_out_sessions_stay_out_of_the_future() -> None:
    items = collect(SimulatedSource(["a", "b"], speed=None, duration_s=600, seed=2))
    now = datetime.now(UTC)

    for sample in samples_of(items):
        validate_record(sample.to_record())
        assert sample.received_at <= now
    assert all(s.received_at.microsecond % 1000 == 0 for s in samples_of(items))


def test_real_time_pacing() -> None:
    started = time.monotonic()
    items = collect(SimulatedSource(rate_hz=10.0, duration_s=1.0, seed=4))
    elapsed = time.monotonic() - started

    assert len(samples_of(items)) == 10
    assert 0.85 <= elapsed <= 2.0
    gaps = [
        (b.received_at - a.received_at).total_seconds()
        for a, b in zip(samples_of(items), samples_of(items)[1:], strict=False)
    ]
    assert gaps == pytest.approx([0.1] * 9, abs=0.0011)


def test_speed_multiplies_the_pace() -> None:
    started = time.monotonic()
    items = collect(SimulatedSource(rate_hz=1.0, duration_s=20.0, speed=20.0, seed=4))
    elapsed = time.monotonic() - started

    assert len(samples_of(items)) == 20
    assert 0.85 <= elapsed <= 2.0
