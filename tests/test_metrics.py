"""Pure physiology: RMSSD against numpy, zones by both methods, durations, episodes, alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hrnb.errors import ConfigError
from hrnb.metrics import (
    HeartRateZones,
    ThresholdEpisode,
    ZoneBand,
    is_above,
    percentile,
    rmssd_ms,
    rmssd_ms_over_runs,
    sample_durations_s,
    threshold_episodes,
    time_in_zones_s,
    update_alert,
    zones_from_max_hr,
    zones_karvonen,
)

T0 = datetime(2026, 3, 1, 7, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def numpy_rmssd(rr: list[float]) -> float:
    """Independent RMSSD: numpy's diff, square, mean, sqrt."""
    return float(np.sqrt(np.mean(np.square(np.diff(np.asarray(rr, dtype=float))))))


# --- RMSSD ---------------------------------------------------------------------------------------
def test_rmssd_of_known_intervals() -> None:
    # differences +10 and -20 ms: sqrt((100 + 400) / 2)
    assert rmssd_ms([800.0, 810.0, 790.0]) == pytest.approx(250**0.5)


@given(st.lists(st.floats(min_value=250, max_value=2000), min_size=2, max_size=300))
def test_rmssd_matches_numpy(rr: list[float]) -> None:
    assert rmssd_ms(rr) == pytest.approx(numpy_rmssd(rr), rel=1e-9, abs=1e-9)


def test_rmssd_needs_two_intervals() -> None:
    assert rmssd_ms([]) is None
    assert rmssd_ms([812.5]) is None
    assert rmssd_ms_over_runs([[800.0], [900.0]]) is None


def test_rmssd_never_differences_across_a_dropout() -> None:
    runs = [[800.0, 810.0, 830.0], [1000.0, 990.0]]
    expected = numpy_rmssd([800.0, 810.0, 830.0]) ** 2 * 2 + numpy_rmssd([1000.0, 990.0]) ** 2
    assert rmssd_ms_over_runs(runs) == pytest.approx((expected / 3) ** 0.5)
    assert rmssd_ms_over_runs(runs) != pytest.approx(numpy_rmssd([800, 810, 830, 1000, 990]))


# --- zones ---------------------------------------------------------------------------------------
def test_zones_from_max_hr() -> None:
    zones = zones_from_max_hr(200)
    assert zones.method == "max_hr"
    assert zones.lower_bounds_bpm == pytest.approx((100, 120, 140, 160, 180))
    assert [zones.zone_of(b) for b in (60, 99, 100, 119, 120, 159, 160, 179, 180, 230)] == [
        0, 0, 1, 1, 2, 3, 4, 4, 5, 5,
    ]
    assert zones.name_of(165) == "Z4 Threshold"


def test_zones_karvonen_use_heart_rate_reserve() -> None:
    zones = zones_karvonen(190, 60)  # reserve 130 bpm
    assert zones.method == "karvonen"
    assert zones.lower_bounds_bpm == pytest.approx((125, 138, 151, 164, 177))
    assert zones.zone_of(150) == 2
    assert zones.zone_of(151) == 3
    assert zones_from_max_hr(190).zone_of(150) == 3  # same bpm, other method, other zone


def test_zone_bands_cover_zones_one_to_five() -> None:
    assert zones_from_max_hr(200).bands() == [
        ZoneBand(1, "Z1 Recovery", 100, 120),
        ZoneBand(2, "Z2 Endurance", 120, 140),
        ZoneBand(3, "Z3 Tempo", 140, 160),
        ZoneBand(4, "Z4 Threshold", 160, 180),
        ZoneBand(5, "Z5 Maximum", 180, None),
    ]


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"max_hr_bpm": 90}, "max_hr_bpm"),
        ({"max_hr_bpm": 190.5}, "max_hr_bpm"),
        ({"max_hr_bpm": 190, "resting_hr_bpm": 190}, "resting_hr_bpm"),
        ({"max_hr_bpm": 190, "resting_hr_bpm": 10}, "resting_hr_bpm"),
        ({"max_hr_bpm": 190, "fractions": (0.5, 0.7, 0.6, 0.8, 0.9)}, "fractions"),
    ],
)
def test_zones_reject_bad_values_by_name(kwargs: dict, setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        HeartRateZones(**kwargs)
    assert caught.value.setting == setting
    assert setting in str(caught.value)


# --- durations and time in zones -----------------------------------------------------------------
def test_sample_durations_hold_until_next_and_not_across_gaps() -> None:
    stamps = [at(s) for s in (0, 1, 2, 3, 33, 34)]  # 30 s dropout after t=3
    assert sample_durations_s(stamps, max_gap_s=5) == [1, 1, 1, 1, 1, 1]
    assert sample_durations_s([at(0), at(2), at(3)], max_gap_s=5) == [2, 1, 1.5]
    assert sample_durations_s([at(0)]) == [0.0]
    assert sample_durations_s([]) == []
    with pytest.raises(ValueError, match="time order"):
        sample_durations_s([at(1), at(0)])


def test_time_in_zones_weighs_each_sample_by_how_long_it_held() -> None:
    zones = zones_from_max_hr(200)  # 100 / 120 / 140 / 160 / 180
    stamps = [at(s) for s in (0, 1, 2, 4, 5, 6)]
    bpms = [90, 110, 130, 130, 185, 185]
    # 90 holds 1 s, 110 1 s, 130 2 s + 1 s, 185 1 s + last (median 1 s)
    assert time_in_zones_s(stamps, bpms, zones) == {0: 1, 1: 1, 2: 3, 3: 0, 4: 0, 5: 2}
    with pytest.raises(ValueError, match="2 timestamps but 1"):
        time_in_zones_s([at(0), at(1)], [90], zones)


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_time_without_a_heart_rate_counts_for_no_zone(missing: float | None) -> None:
    zones = zones_from_max_hr(200)
    stamps = [at(s) for s in range(6)]
    bpms = [185, 185, missing, missing, 130, 130]  # contact lost for 2 s
    assert time_in_zones_s(stamps, bpms, zones) == {0: 0, 1: 0, 2: 2, 3: 0, 4: 0, 5: 2}


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_a_sample_without_a_heart_rate_ends_an_episode(missing: float | None) -> None:
    bpms = [160, 170, missing, 165, 165.0]
    episodes = threshold_episodes([at(s) for s in range(5)], bpms, threshold_bpm=150)
    assert episodes == [
        ThresholdEpisode(at(0), at(2), 2.0, 170, 2, ongoing=False),
        ThresholdEpisode(at(3), at(5), 2.0, 165, 2, ongoing=True),
    ]
    assert isinstance(episodes[1].peak_bpm, int)


# --- threshold episodes --------------------------------------------------------------------------
def test_threshold_episodes_with_durations_gaps_and_an_ongoing_one() -> None:
    seconds = [0, 1, 2, 3, 4, 5, 6, 30, 31, 32, 33]
    bpms = [140, 150, 151, 160, 155, 149, 152, 158, 170, 148, 151]
    episodes = threshold_episodes([at(s) for s in seconds], bpms, threshold_bpm=150)
    assert episodes == [
        ThresholdEpisode(at(2), at(5), 3.0, 160, 3, ongoing=False),
        # 152 at t=6 is cut by the 24 s dropout: it holds for the typical 1 s only
        ThresholdEpisode(at(6), at(7), 1.0, 152, 1, ongoing=False),
        ThresholdEpisode(at(30), at(32), 2.0, 170, 2, ongoing=False),
        ThresholdEpisode(at(33), at(34), 1.0, 151, 1, ongoing=True),
    ]


def test_no_episode_at_exactly_the_threshold() -> None:
    assert not is_above(150, 150)
    assert is_above(151, 150)
    assert threshold_episodes([at(0), at(1)], [150, 150], threshold_bpm=150) == []


# --- live alert ----------------------------------------------------------------------------------
def test_alert_raised_kept_with_peak_and_cleared() -> None:
    alert = None
    history = []
    for second, bpm in enumerate([148, 152, 165, 158, 150, 151]):
        alert = update_alert(alert, at(second), bpm, threshold_bpm=150)
        history.append(alert and (alert.since, alert.latest_bpm, alert.peak_bpm))
    assert history == [
        None,
        (at(1), 152, 152),
        (at(1), 165, 165),
        (at(1), 158, 165),
        None,
        (at(5), 151, 151),
    ]
    assert update_alert(None, at(0), 151, 150).duration_s(at(12)) == 12.0


# --- percentiles -------------------------------------------------------------------------------
@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200),
       st.sampled_from([0.0, 0.5, 0.95, 0.99, 1.0]))
def test_percentile_is_numpys_linear_interpolation(values: list[float], q: float) -> None:
    ordered = sorted(values)
    assert percentile(ordered, q) == pytest.approx(float(np.percentile(values, q * 100)))


def test_percentile_refuses_no_values_and_q_outside_0_to_1() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="q must be within 0..1"):
        percentile([1.0], 95)
