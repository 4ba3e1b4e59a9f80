"""The episode detector: sustained runs alert once, spikes never; batches and redelivery do not
change the episodes (pure, no stack)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hrnb.errors import ConfigError
from hrnb.wire.episodes import (
    Episode,
    EpisodeRules,
    advance,
    check_seconds,
    parse_thresholds,
)
from hrnb.wire.records import format_timestamp

T0 = datetime(2026, 12, 1, 14, 3, 12, tzinfo=UTC)
RULES = EpisodeRules(threshold_bpm=160)


def samples(bpms: list[int | None], *, start: datetime = T0, step_s: float = 1.0
            ) -> list[tuple[str, int | None]]:
    return [(format_timestamp(start + timedelta(seconds=i * step_s)), bpm)
            for i, bpm in enumerate(bpms)]


def run(batches: list[list[tuple[str, int | None]]], rules: EpisodeRules = RULES
        ) -> list[Episode]:
    state = None
    opened: list[Episode] = []
    for batch in batches:
        state, new = advance(json.loads(json.dumps(state)), "a1", batch, rules)  # stored as JSON
        opened += new
    return opened


def test_sustained_run_opens_one_episode_with_its_start_and_peak() -> None:
    series = samples([150, 161, 170, 175, 168, 165, 166, 171, 180])
    [episode] = run([series])
    assert episode.start == series[1][0]
    assert episode.id == f"a1@{series[1][0]}"
    assert episode.peak_bpm == 175  # the peak when it opened (after 5 s above)
    assert episode.threshold_bpm == 160


def test_spikes_and_short_runs_never_alert() -> None:
    assert run([samples([150, 200, 150, 170, 171, 172, 173, 174, 150, 190, 150])]) == []


def test_threshold_itself_is_not_above() -> None:
    assert run([samples([160] * 20)]) == []


def test_episode_stays_open_until_rearmed_below_margin_for_rearm_time() -> None:
    high = [170] * 6
    # 158 is below the threshold but not below 155: still the same episode.
    assert len(run([samples(high + [158] * 20 + high)])) == 1
    # Below 155 for 9 s: not re-armed; for 10 s: re-armed, the next run is a new episode.
    assert len(run([samples(high + [150] * 10 + high)])) == 1
    assert len(run([samples(high + [150] * 11 + high)])) == 2


def test_no_contact_and_gaps_restart_the_run() -> None:
    assert run([samples([170, 170, 170, None, 170, 170, 170])]) == []
    gap = samples([170] * 3) + samples([170] * 3, start=T0 + timedelta(seconds=60))
    assert run([gap]) == []
    # An open episode stays open through missing data: no re-arm without evidence.
    assert len(run([samples([170] * 6 + [None] * 30 + [170] * 6)])) == 1


def test_configurable_rules() -> None:
    quick = EpisodeRules(threshold_bpm=160, sustain_s=1.0, rearm_s=2.0, rearm_margin_bpm=0)
    assert len(run([samples([170, 170, 150, 150, 150, 170, 170])], quick)) == 2


def test_message_fits_an_sms_and_names_everything() -> None:
    [episode] = run([samples([170] * 6 + [181])])
    text = episode.message()
    assert text == "hrnb: athlete a1 above 160 bpm since 14:03:12 UTC 2026-12-01, peak 170 bpm"
    long = Episode(id="x", athlete_id="a" * 64, start=episode.start, peak_bpm=200,
                   threshold_bpm=160)
    assert len(long.message()) <= 160 and "peak 200 bpm" in long.message()


# --- properties: batching and redelivery change nothing -------------------------------------------
bpm_values = st.one_of(st.none(), st.integers(140, 185), st.sampled_from([150, 170]))
series_strategy = st.lists(bpm_values, min_size=0, max_size=120).map(samples)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[tuple[str, int | None]],
                                         list[list[tuple[str, int | None]]]]:
    """A series and how it was delivered: split into batches, with redelivered prefixes
    (retries, rewinds) inserted anywhere after what they repeat."""
    series = draw(series_strategy)
    cuts = sorted(draw(st.lists(st.integers(0, len(series)), max_size=8)))
    bounds = [0, *cuts, len(series)]
    batches = [series[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    delivered: list[list[tuple[str, int | None]]] = []
    for batch in batches:
        delivered.append(batch)
        if draw(st.booleans()):
            seen = [sample for earlier in delivered for sample in earlier]
            start = draw(st.integers(0, len(seen)))
            delivered.append(seen[start:])  # a rewind to any point already passed
    return series, delivered


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_any_batching_and_redelivery_give_the_same_episodes(
    case: tuple[list[tuple[str, int | None]], list[list[tuple[str, int | None]]]],
) -> None:
    series, delivered = case
    assert run(delivered) == run([series])


@settings(max_examples=100, deadline=None)
@given(series_strategy)
def test_episode_ids_are_unique_and_spikes_need_sustain(
    series: list[tuple[str, int | None]],
) -> None:
    episodes = run([series])
    assert len({episode.id for episode in episodes}) == len(episodes)
    for episode in episodes:
        assert episode.peak_bpm > episode.threshold_bpm


# --- settings -------------------------------------------------------------------------------------
def test_thresholds_parse_and_name_bad_entries() -> None:
    assert parse_thresholds(" a1=160, b-2=175 ,", setting="S") == {"a1": 160, "b-2": 175}
    assert parse_thresholds("", setting="S") == {}
    for bad, word in (("a1", "athlete=bpm"), ("=150", "athlete=bpm"), ("a1=fast", "a1"),
                      ("a1=400", "a1"), ("a1=150,a1=160", "twice")):
        with pytest.raises(ConfigError, match=word) as caught:
            parse_thresholds(bad, setting="HRNB_ALERT_THRESHOLDS")
        assert caught.value.setting == "HRNB_ALERT_THRESHOLDS"
    with pytest.raises(ConfigError, match="seconds"):
        check_seconds("-1", setting="HRNB_ALERT_SUSTAIN_S")
