"""Replay of FIT files the tests write themselves (fit-tool), one per case the real world has:
compressed timestamps, device system time with and without a correlation, heart rate in ``hr``
messages, time going backwards."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from garmin_fit_sdk import Decoder, Stream
from support.fit_files import (
    UTC_T0,
    correlation,
    hr_anchor,
    hr_beats,
    hr_beats_12,
    hrv,
    record,
    utc,
    write_fit,
)
from support.replaying import Item, replay, replay_until_error, samples_of

from hrnb.errors import ReplayError
from hrnb.sources import ReplaySource
from hrnb.sources.base import utc_now_ms


def replay_file(path: Path, **options: object) -> tuple[ReplaySource, list[Item]]:
    source = ReplaySource(path, athlete_id="swimmer", **{"speed": None, **options})
    return source, replay(source)


def series(items: list[Item]) -> list[tuple[float, int]]:
    """(seconds after the first sample, bpm) per sample."""
    samples = samples_of(items)
    first = samples[0].received_at
    return [((s.received_at - first).total_seconds(), s.heart_rate) for s in samples]


def sdk_records(path: Path) -> list[dict]:
    """Garmin's own decoder with heart-rate merging on (its default)."""
    stream = Stream.from_byte_array(bytearray(path.read_bytes()))
    messages, errors = Decoder(stream).read(merge_heart_rates=True)
    assert errors == []
    return messages["record_mesgs"]


# --- compressed timestamps -----------------------------------------------------------------------
def test_compressed_timestamps_on_utc_roll_over_every_32_seconds(tmp_path: Path) -> None:
    start = UTC_T0 + 20  # the 5-bit offset wraps 12 s in
    messages = [record(start, 100)]
    messages += [record(start + i, 100 + i, compressed=True) for i in range(1, 40)]
    source, items = replay_file(write_fit(tmp_path / "compressed.fit", messages))

    assert [(s.received_at, s.heart_rate) for s in samples_of(items)] == [
        (utc(start + i), 100 + i) for i in range(40)
    ]
    assert source.time_base == "utc"


def test_compressed_timestamps_before_any_full_time_are_device_time(tmp_path: Path) -> None:
    # A compressed header with no full timestamp before it counts from 0: system time.
    messages = [record(i, 90 + i, compressed=True) for i in range(3, 40, 3)]
    source, items = replay_file(write_fit(tmp_path / "compressed-system.fit", messages))

    assert series(items) == [(float(3 * i), 93 + 3 * i) for i in range(13)]
    assert source.time_base == "relative"


# --- system time ---------------------------------------------------------------------------------
def test_system_time_with_a_correlation_is_put_on_utc(tmp_path: Path) -> None:
    # System time 5,000.5 s is UTC_T0 + 0.75 s (fractions on both sides): 5,000 s is + 0.25 s.
    messages = [correlation(UTC_T0 + 0.75, 5000.5)]
    messages += [record(5000 + 2 * i, 120 + i) for i in range(10)]
    source, items = replay_file(write_fit(tmp_path / "system-correlated.fit", messages))

    samples = samples_of(items)
    assert [(s.received_at, s.heart_rate) for s in samples] == [
        (utc(UTC_T0 + 2 * i) + timedelta(milliseconds=250), 120 + i) for i in range(10)
    ]
    assert source.time_base == "correlated"
    assert "timestamp_correlation" in items[0].detail  # type: ignore[union-attr]


def test_system_time_without_a_correlation_replays_from_now_with_its_spacing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    offsets = (0, 1, 3)  # irregular spacing, kept
    messages = [record(300 + offset, 80 + i) for i, offset in enumerate(offsets)]
    path = write_fit(tmp_path / "ant-fs.fit", messages)
    before = utc_now_ms()

    with caplog.at_level(logging.INFO, logger="hrnb.sources.replay"):
        source, items = replay_file(path, speed=1.0)

    samples = samples_of(items)
    assert series(items) == [(float(offset), 80 + i) for i, offset in enumerate(offsets)]
    assert before <= samples[0].received_at <= utc_now_ms()
    assert source.time_base == "relative"
    assert "device-relative" in items[0].detail  # type: ignore[union-attr]
    assert any("device-relative" in message for message in caplog.messages)


def test_system_time_mixed_with_utc_and_no_correlation_is_refused(tmp_path: Path) -> None:
    path = write_fit(tmp_path / "mixed.fit", [record(300, 80), record(UTC_T0, 81)])
    with pytest.raises(ReplayError, match="record 2 mixes device-relative time") as caught:
        replay_file(path)
    assert caught.value.position == "record 2"


# --- hr messages ---------------------------------------------------------------------------------
def test_hr_messages_fill_records_as_garmins_sdk_merges_them(tmp_path: Path) -> None:
    # Records every second without heart rate; beats every 0.8 s from the strap's clock,
    # which reads 500.0 s at UTC_T0 - 0.5 s; one record already has a heart rate of its own.
    beats = [500.0 + 0.8 * k for k in range(1, 25)]
    messages = [hr_anchor(UTC_T0, 500.5, 100)]
    messages += [hr_beats(beats[k:k + 4], [101 + k + j for j in range(4)]) for k in (0, 4, 8)]
    messages += [hr_beats_12(beats[12:20], [113 + j for j in range(8)])]
    messages += [hr_beats(beats[20:24], [121, 122, 123, 124])]
    messages += [hrv(0.8, 0.8)]
    messages += [record(UTC_T0 + i, 150 if i == 5 else None) for i in range(20)]
    path = write_fit(tmp_path / "hrm-pro.fit", messages)

    _, items = replay_file(path)

    expected = [(m["timestamp"], m["heart_rate"]) for m in sdk_records(path) if "heart_rate" in m]
    samples = samples_of(items)
    assert [(s.received_at, s.heart_rate) for s in samples] == expected
    assert len(samples) == 19  # the SDK leaves the last record alone: no beat after it
    assert samples[5].heart_rate != 150  # merged values replace the record's own, as in the SDK
    assert samples[0].measurement.rr_intervals_ms == (800.0, 800.0)


def test_hr_messages_without_an_anchor_name_the_message(tmp_path: Path) -> None:
    path = write_fit(tmp_path / "no-anchor.fit", [hr_beats([1.0], [90]), record(UTC_T0)])
    with pytest.raises(ReplayError, match="hr message 1: beats come before any hr message with a "
                                          "timestamp") as caught:
        replay_file(path)
    assert caught.value.position == "hr message 1"


def test_swim_whose_heart_rate_is_only_in_hr_messages_gives_the_sdks_sample_count(
    tmp_path: Path,
) -> None:
    """Done-when of issue 15: a pool swim (HRM-Swim stores beats, the watch has no optical HR
    under water) with rests at the wall longer than the SDK's 5 s gap fill."""
    messages: list[object] = []
    strap_s = 1000.0  # the strap's beat clock
    time_s = UTC_T0
    bpm = 110
    for length in range(30):
        messages.append(hr_anchor(time_s, strap_s, bpm))
        beats = [strap_s + 0.45 * (k + 1) for k in range(64)]  # ~133 bpm for 28.8 s
        for k in range(0, 64, 8):
            messages.append(hr_beats_12(beats[k:k + 8], [bpm + (k + j) % 7 for j in range(8)]))
        rest_s = 8 + length % 5  # at the wall: the watch records, the strap has no beats
        messages += [record(time_s + second) for second in range(0, 29 + rest_s)]
        time_s += 29 + rest_s
        strap_s += 29 + rest_s
        bpm = 110 + (length * 3) % 40
    path = write_fit(tmp_path / "pool-swim.fit", messages)
    sdk = sdk_records(path)
    expected = sum(1 for m in sdk if m.get("heart_rate") is not None)
    assert 0 < expected < len(sdk)

    source, items = replay_file(path)

    samples = samples_of(items)
    assert len(samples) == expected
    assert [s.heart_rate for s in samples] == [m["heart_rate"] for m in sdk if "heart_rate" in m]
    assert source.records_without_heart_rate == len(sdk) - expected


# --- one time rule -------------------------------------------------------------------------------
def test_fit_time_going_backwards_stops_with_the_record_named(tmp_path: Path) -> None:
    messages = [record(UTC_T0, 90), record(UTC_T0 + 1, 91), record(UTC_T0 + 1, 92),
                record(UTC_T0 - 5, 93), record(UTC_T0 + 3, 94)]
    path = write_fit(tmp_path / "backwards.fit", messages)

    items, error = replay_until_error(ReplaySource(path, athlete_id="r", speed=None))

    assert [s.heart_rate for s in samples_of(items)] == [90, 91, 92]  # equal times are kept
    assert error.position == "record 4"
    assert "backwards.fit: record 4 goes back in time" in str(error)
    assert "before record 3's" in str(error)


def test_csv_time_going_backwards_stops_with_the_line_named(tmp_path: Path) -> None:
    path = tmp_path / "backwards.csv"
    path.write_text("timestamp,heart_rate\n2026-11-29T06:10:00Z,90\n2026-11-29T06:10:01Z,91\n"
                    "2026-11-29T06:09:00Z,92\n2026-11-29T06:10:03Z,93\n")
    source = ReplaySource(path, athlete_id="r", speed=None)

    items, error = replay_until_error(source)

    assert [s.heart_rate for s in samples_of(items)] == [90, 91]
    assert error.position == "line 4"
    assert "backwards.csv: line 4 goes back in time" in str(error)
    assert source.bad_rows == []
