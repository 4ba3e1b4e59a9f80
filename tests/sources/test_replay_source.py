"""Replaying recorded sessions: real Garmin FIT files and CSVs, good and bad."""

from __future__ import annotations

import asyncio
import csv
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.replaying import replay, replay_until_error, samples_of

from hrnb.sources import ConnectionEvent, ReplaySource, Sample

PDT = timezone(timedelta(hours=-7))


def expected_series(csv_path: Path) -> list[tuple[datetime, int]]:
    """python-fitparse's expected records: ``Sun Jun 11 07:34:09 PDT 2017,61,...``."""
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    series = []
    for row in rows:
        assert row["timestamp"].split()[4] == "PDT"
        local = datetime.strptime(row["timestamp"].replace(" PDT", ""), "%a %b %d %H:%M:%S %Y")
        series.append((local.replace(tzinfo=PDT).astimezone(UTC), int(row["heart_rate"])))
    return series


@pytest.mark.parametrize("name", ["garmin-fenix-5-run", "garmin-edge-820-bike"])
def test_fit_replay_reproduces_the_recorded_heart_rate_series_exactly(
    fit_data: Path, name: str
) -> None:
    items = replay(ReplaySource(fit_data / f"{name}.fit", athlete_id="runner", speed=None))

    samples = samples_of(items)
    assert [(s.received_at, s.heart_rate) for s in samples] == expected_series(
        fit_data / f"{name}-records.csv"
    )
    assert [s.seq for s in samples] == list(range(len(samples)))
    assert isinstance(items[0], ConnectionEvent) and items[0].kind == "connected"
    assert isinstance(items[-1], ConnectionEvent) and items[-1].kind == "disconnected"
    assert {s.device_id for s in samples} == {f"replay:{name}.fit"}


def test_fit_rr_intervals_belong_to_the_record_that_follows_them(fit_data: Path) -> None:
    samples = samples_of(
        replay(ReplaySource(fit_data / "garmin-fenix-5-run.fit", athlete_id="r", speed=None))
    )

    assert samples[2].measurement.rr_intervals_ms == (1093.0,)
    assert samples[3].measurement.rr_intervals_ms == (1165.0, 1063.0)
    for before, sample in zip(samples, samples[1:], strict=False):
        if sample.measurement.rr_intervals_ms:
            # The beats reported with a record fill (about) the time since the previous one.
            elapsed_ms = (sample.received_at - before.received_at).total_seconds() * 1000
            assert sum(sample.measurement.rr_intervals_ms) == pytest.approx(elapsed_ms, abs=1300)
    for sample in samples:
        sample.to_record()  # every replayed sample is a valid wire record


def test_replay_keeps_the_original_spacing_at_n_times_speed(fit_data: Path) -> None:
    speed = 25.0
    arrivals: list[tuple[float, Sample]] = []

    async def run() -> None:
        source = ReplaySource(fit_data / "garmin-edge-820-bike.fit", athlete_id="r", speed=speed)
        async for item in source:
            if isinstance(item, Sample):
                arrivals.append((time.monotonic(), item))

    asyncio.run(run())

    recorded = [(s.received_at - arrivals[0][1].received_at).total_seconds() for _, s in arrivals]
    played = [at - arrivals[0][0] for at, _ in arrivals]
    assert recorded[-1] == 65.0  # irregular: 5 s, 2 s, 1 s ... 9 s gaps
    for recorded_s, played_s in zip(recorded, played, strict=True):
        assert played_s == pytest.approx(recorded_s / speed, abs=0.1)


def test_retimed_replay_ends_by_now_and_keeps_spacing(fit_data: Path) -> None:
    path = fit_data / "garmin-fenix-5-run.fit"
    original = samples_of(replay(ReplaySource(path, athlete_id="r", speed=None)))
    before = datetime.now(UTC)

    retimed = samples_of(replay(ReplaySource(path, athlete_id="r", speed=None, retime=True)))

    shift = retimed[0].received_at - original[0].received_at
    assert [s.received_at - shift for s in retimed] == [s.received_at for s in original]
    assert before - timedelta(seconds=1) <= retimed[-1].received_at <= datetime.now(UTC)


def test_duration_keeps_the_first_seconds(fit_data: Path) -> None:
    samples = samples_of(
        replay(
            ReplaySource(
                fit_data / "garmin-fenix-5-run.fit", athlete_id="r", speed=None, duration_s=10
            )
        )
    )
    assert [s.heart_rate for s in samples] == [61, 61, 58, 56, 59, 63]  # 0 s to 7 s


def test_truncated_fit_replays_what_precedes_the_cut_then_names_the_file(
    fit_data: Path, tmp_path: Path
) -> None:
    whole = (fit_data / "garmin-fenix-5-run.fit").read_bytes()
    cut = tmp_path / "cut-short.fit"
    cut.write_bytes(whole[: len(whole) // 2])  # mid-way through the records

    items, error = replay_until_error(ReplaySource(cut, athlete_id="r", speed=None))

    expected = expected_series(fit_data / "garmin-fenix-5-run-records.csv")
    samples = samples_of(items)
    assert 0 < len(samples) < len(expected)
    assert [(s.received_at, s.heart_rate) for s in samples] == expected[: len(samples)]
    assert error.path == str(cut)
    assert "cut-short.fit" in str(error) and "truncated" in str(error)
    assert f"{len(samples)} heart-rate sample(s)" in str(error)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("activity-unexpected-eof.fit", "truncated"),
        ("activity-settings-corruptheader.fit", "header"),
    ],
)
def test_damaged_fit_files_give_a_clear_error(fit_data: Path, name: str, problem: str) -> None:
    items, error = replay_until_error(ReplaySource(fit_data / name, athlete_id="r", speed=None))

    assert samples_of(items) == []  # these recordings hold no heart rate before the damage
    assert name in str(error) and problem in str(error)
    assert error.path == str(fit_data / name)


def test_csv_with_header_rr_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "ride.csv"
    path.write_text(
        "timestamp,heart_rate,rr_intervals_ms,cadence\n"
        "2026-11-29T06:10:00.000Z,61,980.5 990,80\n"
        "2026-11-29T07:10:01.250+01:00,62,,81\n"
        "\n"
        "1795932603.5,63,950;940,82\n"
    )

    samples = samples_of(replay(ReplaySource(path, athlete_id="r", speed=None)))

    assert [
        (s.received_at.isoformat(), s.heart_rate, s.measurement.rr_intervals_ms) for s in samples
    ] == [
        ("2026-11-29T06:10:00+00:00", 61, (980.5, 990.0)),
        ("2026-11-29T06:10:01.250000+00:00", 62, ()),
        ("2026-11-29T06:10:03.500000+00:00", 63, (950.0, 940.0)),
    ]


def test_bad_csv_rows_are_reported_by_line_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "session.csv"
    path.write_text(
        "2026-11-29T06:10:00Z,60\n"  # 1: no header, positional columns
        "2026-11-29T06:10:01Z,sixty\n"  # 2
        "2026-11-29T06:10:02,61\n"  # 3: no offset
        "2026-11-29T06:10:03Z,62,800 abc\n"  # 4
        "2026-11-29T06:10:04Z,\n"  # 5: empty heart rate
        "2026-11-29T06:10:05Z,-1\n"  # 6
        "2026-11-29T06:10:06Z,64,800,extra\n"  # 7
        "yesterday,65\n"  # 8
        "2026-11-29T06:10:08Z,70000\n"  # 9
        "2026-11-29T06:10:09Z,66,0\n"  # 10: an RR of 0 ms
        "2026-11-29T06:10:10Z,67,812.5\n"  # 11
    )
    source = ReplaySource(path, athlete_id="r", speed=None)

    with caplog.at_level(logging.WARNING, logger="hrnb.sources.replay"):
        samples = samples_of(replay(source))

    assert [(s.seq, s.heart_rate) for s in samples] == [(0, 60), (1, 67)]
    assert [row.line for row in source.bad_rows] == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    reasons = [row.reason for row in source.bad_rows]
    for line, words in zip(
        range(2, 11),
        [
            "not a whole number",
            "no UTC offset",
            "'abc' is not a number",
            "'' is not a whole number",
            "outside 0..65535",
            "got 4 columns",
            "neither ISO-8601",
            "outside 0..65535",
            "outside (0, 64000]",
        ],
        strict=True,
    ):
        assert words in reasons[line - 2], (line, reasons[line - 2])
        assert any(f"line {line} skipped" in message for message in caplog.messages)
    assert source.bad_rows[0].text == "2026-11-29T06:10:01Z,sixty"


def test_csv_without_usable_rows_or_columns_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,heart_rate\n2026-11-29T06:10:00Z,x\n")
    _, error = replay_until_error(ReplaySource(empty, athlete_id="r"))
    assert "holds no heart-rate samples (1 bad rows skipped)" in str(error)

    headless = tmp_path / "nohr.csv"
    headless.write_text("timestamp,bpm\n2026-11-29T06:10:00Z,61\n")
    _, error = replay_until_error(ReplaySource(headless, athlete_id="r"))
    assert "lacks column(s) heart_rate" in str(error) and error.path == str(headless)


def test_unreadable_or_unsupported_files(tmp_path: Path) -> None:
    _, error = replay_until_error(ReplaySource(tmp_path / "gone.fit", athlete_id="r"))
    assert "gone.fit" in str(error) and "No such file" in str(error)

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _, error = replay_until_error(ReplaySource(text, athlete_id="r"))
    assert ".fit or .csv" in str(error)


def test_a_csv_replays_as_it_is_read_not_after_the_whole_file(tmp_path: Path) -> None:
    """A named pipe stands in for a file too large to read first: the replay must hand out the
    first sample while the rest of the 'file' has not been written yet."""
    fifo = tmp_path / "live.csv"
    os.mkfifo(fifo)
    first_seen = threading.Event()
    rest_waited_for_a_sample: list[bool] = []
    start = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)

    def row(i: int) -> str:
        return f"{(start + timedelta(seconds=i)).isoformat()},{100 + i}\n"

    def writer() -> None:
        with fifo.open("w") as out:
            out.write("timestamp,heart_rate\n" + "".join(row(i) for i in range(3)))
            out.flush()
            # The rest arrives once the replay has handed out a sample (or after 10 s: a replay
            # that reads the whole file first never does before the file ends).
            rest_waited_for_a_sample.append(first_seen.wait(timeout=10))
            out.write("".join(row(i) for i in range(3, 2000)))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()

    async def run() -> list[int]:
        bpms: list[int] = []
        async with ReplaySource(fifo, speed=None) as source:
            async for item in source:
                if isinstance(item, Sample):
                    first_seen.set()
                    bpms.append(item.heart_rate)
        return bpms

    bpms = asyncio.run(asyncio.wait_for(run(), timeout=60))
    thread.join(5)
    assert rest_waited_for_a_sample == [True]
    assert bpms == [100 + i for i in range(2000)]


def test_a_binary_file_named_csv_is_a_replay_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "photo.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary" * 50)

    _, error = replay_until_error(ReplaySource(path, speed=None))

    assert str(path) in str(error) and "not a UTF-8 text CSV file" in str(error)
