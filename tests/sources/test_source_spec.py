"""``--source`` strings and their flags: the right source, or a ConfigError naming the flag."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from hrnb.errors import ConfigError
from hrnb.sources import (
    BleakSource,
    EmulatedWatchSource,
    ReplaySource,
    Sample,
    SimulatedSource,
    from_spec,
)


def test_simulated_athletes_get_numbered_ids() -> None:
    source = from_spec("simulated", athletes=3, athlete_id="team", rate_hz=2.0, seed=4)
    assert isinstance(source, SimulatedSource)
    assert source.athlete_ids == ("team-001", "team-002", "team-003")
    assert (source.rate_hz, source.seed, source.speed) == (2.0, 4, 1.0)
    assert from_spec("simulated").athlete_ids == ("sim-001",)  # type: ignore[attr-defined]
    assert from_spec(" Simulated ", athlete_id="me").athlete_ids == ("me",)  # type: ignore[attr-defined]


def test_ble_targets() -> None:
    first = from_spec("ble")
    by_name = from_spec("ble:Forerunner 255", athlete_id="runner", duration_s=900)
    assert isinstance(first, BleakSource) and first.target is None
    assert isinstance(by_name, BleakSource)
    assert (by_name.target, by_name.athlete_id, by_name.duration_s) == (
        "Forerunner 255",
        "runner",
        900,
    )


def test_replay_of_a_file(fit_data: Path) -> None:
    source = from_spec(f"replay:{fit_data / 'garmin-fenix-5-run.fit'}", speed=None)
    assert isinstance(source, ReplaySource)
    assert source.speed is None and source.retime


def test_emulated_watch_streams_through_bleak() -> None:
    source = from_spec("emulated", rate_hz=10.0, duration_s=1.2, seed=1)
    assert isinstance(source, EmulatedWatchSource)

    async def run() -> list[object]:
        async with source:
            return [item async for item in source]

    items = asyncio.run(run())
    samples = [item for item in items if isinstance(item, Sample)]
    assert len(samples) >= 8
    assert {s.device_id for s in samples} == {source.monitor.address}
    assert getattr(items[0], "kind", None) == "connected"


@pytest.mark.parametrize(
    ("spec", "options", "flag", "words"),
    [
        ("bluetooth", {}, "--source", "is not a source"),
        ("", {}, "--source", "is not a source"),
        ("simulated:fast", {}, "--source", "takes no"),
        ("emulated:x", {}, "--source", "takes no"),
        ("replay:", {}, "--source", "needs a file"),
        ("replay:/nonexistent/ride.fit", {}, "--source", "no such file"),
        ("replay:ride.gpx", {}, "--source", ".fit or .csv"),
        ("simulated", {"athletes": 0}, "--athletes", "at least 1"),
        ("simulated", {"athletes": 2.5}, "--athletes", "whole number"),
        ("simulated", {"athletes": True}, "--athletes", "whole number"),
        ("ble", {"athletes": 2}, "--athletes", "only the simulated source"),
        ("simulated", {"rate_hz": 0}, "--rate-hz", "above 0"),
        ("simulated", {"rate_hz": 500}, "--rate-hz", "at most 50"),
        ("simulated", {"rate_hz": math.nan}, "--rate-hz", "nan"),
        ("simulated", {"duration_s": -5}, "--duration", "above 0"),
        ("simulated", {"duration_s": math.inf}, "--duration", "finite"),
        ("simulated", {"speed": 0}, "--speed", "above 0"),
        ("simulated", {"speed": "fast"}, "--speed", "a number"),
        ("simulated", {"seed": "abc"}, "--seed", "whole number"),
        ("simulated", {"athlete_id": "bad id!"}, "--athlete-id", "athlete_id"),
        ("simulated", {"athletes": 2, "athlete_id": "x" * 126}, "--athlete-id", "1-128"),
        ("ble", {"speed": 2.0}, "--speed", "real time"),
        ("ble", {"rate_hz": 4.0}, "--rate-hz", "own rate"),
        ("ble:watch", {"seed": 1}, "--seed", "not random"),
        ("emulated", {"speed": None}, "--speed", "real time"),
    ],
)
def test_bad_specs_name_the_flag(spec: str, options: dict, flag: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_spec(spec, **options)
    assert caught.value.setting == flag
    assert flag in str(caught.value)
    assert words in str(caught.value)


def test_replay_flags_that_do_not_apply(fit_data: Path) -> None:
    spec = f"replay:{fit_data / 'garmin-fenix-5-run.fit'}"
    with pytest.raises(ConfigError, match="--rate-hz"):
        from_spec(spec, rate_hz=5.0)
    with pytest.raises(ConfigError, match="--seed"):
        from_spec(spec, seed=3)
