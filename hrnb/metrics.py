"""Heart-rate physiology as pure functions: RMSSD, zones, time in zones, threshold episodes and
the live alert; and the one percentile definition of every latency figure. The live chart
(``hrnb.live``) and the stored-data queries (``hrnb.query``) both call these, so a number means
the same thing on screen and in a query result.

Units are in the names: bpm, ms, s. Times are timezone-aware ``datetime`` (UTC).

Sampling is irregular (a watch notifies about once a second, and drops out), so durations are
weighted: a sample holds until the next one, unless the gap is longer than ``max_gap_s`` — then
nobody knows what happened in it, and the sample counts for the series' typical interval only.

A sample without a heart rate (None or NaN: read without skin contact) is a gap: it ends the
sample before it, counts for no zone and ends a threshold episode.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Protocol, TypeGuard

from hrnb.errors import ConfigError

#: Five zones as fractions of max HR (or of heart-rate reserve with Karvonen); below the first
#: bound is zone 0.
DEFAULT_ZONE_FRACTIONS = (0.5, 0.6, 0.7, 0.8, 0.9)
ZONE_NAMES = ("Rest", "Z1 Recovery", "Z2 Endurance", "Z3 Tempo", "Z4 Threshold", "Z5 Maximum")
#: Gap (s) beyond which consecutive samples are not taken to be continuous.
DEFAULT_MAX_GAP_S = 5.0


# --- percentiles -------------------------------------------------------------------------------
class Ordered(Protocol):
    """Ascending values that can be indexed: a sorted list, or a sorted numpy array."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> float: ...


def percentile(ordered: Ordered, q: float) -> float:
    """The ``q`` quantile (0..1) of non-empty, ascending ``ordered``, interpolating linearly
    between the closest ranks: numpy's default and ``statistics.quantiles(method="inclusive")``.
    The producer's metrics, the latency query and the benchmarks all report this one."""
    if len(ordered) == 0:
        raise ValueError("no values to take a percentile of")
    if not 0 <= q <= 1:
        raise ValueError(f"q must be within 0..1, got {q}")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


# --- RMSSD -------------------------------------------------------------------------------------
def rmssd_ms(rr_intervals_ms: Iterable[float]) -> float | None:
    """Root mean square of successive RR differences (ms) over one unbroken run of beats; None
    with fewer than two intervals."""
    return rmssd_ms_over_runs([list(rr_intervals_ms)])


def rmssd_ms_over_runs(runs: Iterable[Sequence[float]]) -> float | None:
    """RMSSD over several unbroken runs: differences are only taken within a run, never across
    a dropout where beats were lost."""
    squares = [(later - earlier) ** 2 for run in runs for earlier, later in pairwise(run)]
    if not squares:
        return None
    return math.sqrt(math.fsum(squares) / len(squares))


# --- zones -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZoneBand:
    """One zone's heart-rate band: ``low_bpm <= bpm < high_bpm`` (``high_bpm`` None: no top)."""

    zone: int
    name: str
    low_bpm: float
    high_bpm: float | None


@dataclass(frozen=True)
class HeartRateZones:
    """Zone bounds from max HR (``resting_hr_bpm`` None) or Karvonen's heart-rate reserve:
    bound = rest + fraction × (max − rest)."""

    max_hr_bpm: int
    resting_hr_bpm: int | None = None
    fractions: tuple[float, ...] = DEFAULT_ZONE_FRACTIONS

    def __post_init__(self) -> None:
        if isinstance(self.max_hr_bpm, bool) or not isinstance(self.max_hr_bpm, int) or not (
            100 <= self.max_hr_bpm <= 250
        ):
            raise ConfigError(
                f"max_hr_bpm must be a whole number of bpm in 100..250, got {self.max_hr_bpm!r}",
                setting="max_hr_bpm",
            )
        rest = self.resting_hr_bpm
        if rest is not None and (
            isinstance(rest, bool) or not isinstance(rest, int) or not 25 <= rest < self.max_hr_bpm
        ):
            raise ConfigError(
                f"resting_hr_bpm must be a whole number of bpm from 25 up to below max_hr_bpm "
                f"({self.max_hr_bpm}), got {rest!r}",
                setting="resting_hr_bpm",
            )
        if len(self.fractions) != len(ZONE_NAMES) - 1 or list(self.fractions) != sorted(
            set(self.fractions)
        ) or not all(0 < f < 1 for f in self.fractions):
            raise ConfigError(
                f"fractions must be {len(ZONE_NAMES) - 1} increasing values in (0, 1), "
                f"got {self.fractions!r}",
                setting="fractions",
            )

    @property
    def method(self) -> str:
        return "max_hr" if self.resting_hr_bpm is None else "karvonen"

    @property
    def lower_bounds_bpm(self) -> tuple[float, ...]:
        """Lowest bpm of zones 1..5."""
        rest = self.resting_hr_bpm or 0
        return tuple(rest + f * (self.max_hr_bpm - rest) for f in self.fractions)

    def zone_of(self, bpm: float) -> int:
        """0 (below zone 1) to 5; a bpm on a bound belongs to the higher zone."""
        return bisect_right(self.lower_bounds_bpm, bpm)

    def name_of(self, bpm: float) -> str:
        return ZONE_NAMES[self.zone_of(bpm)]

    def bands(self) -> list[ZoneBand]:
        """Zones 1..5 as bands to draw; zone 5 is open at the top."""
        bounds = self.lower_bounds_bpm
        tops: list[float | None] = [*bounds[1:], None]
        return [
            ZoneBand(zone, ZONE_NAMES[zone], low, high)
            for zone, (low, high) in enumerate(zip(bounds, tops, strict=True), start=1)
        ]


def zones_from_max_hr(max_hr_bpm: int) -> HeartRateZones:
    """Zones as 50/60/70/80/90 % of max HR."""
    return HeartRateZones(max_hr_bpm)


def zones_karvonen(max_hr_bpm: int, resting_hr_bpm: int) -> HeartRateZones:
    """Zones as 50/60/70/80/90 % of heart-rate reserve above resting HR (Karvonen)."""
    return HeartRateZones(max_hr_bpm, resting_hr_bpm)


# --- durations, time in zones, threshold episodes ------------------------------------------------
def sample_durations_s(
    timestamps: Sequence[datetime], max_gap_s: float = DEFAULT_MAX_GAP_S
) -> list[float]:
    """How long each sample's value holds: until the next sample, or — after the last sample or
    before a gap longer than ``max_gap_s`` — the median of the regular intervals (0 with none)."""
    seconds = [t.timestamp() for t in timestamps]
    gaps = [later - earlier for earlier, later in pairwise(seconds)]
    if any(gap < 0 for gap in gaps):
        raise ValueError("timestamps must be in time order")
    regular = [gap for gap in gaps if 0 < gap <= max_gap_s]
    typical = statistics.median(regular) if regular else 0.0
    durations = [gap if gap <= max_gap_s else typical for gap in gaps]
    return [*durations, typical] if seconds else []


def has_heart_rate(bpm: float | None) -> TypeGuard[float]:
    """False for a sample without a heart rate (None, or NaN as pandas holds a null)."""
    return bpm is not None and not math.isnan(bpm)


def time_in_zones_s(
    timestamps: Sequence[datetime],
    bpms: Sequence[float | None],
    zones: HeartRateZones,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
) -> dict[int, float]:
    """Seconds spent in each zone 0..5 (every zone present, 0.0 when never reached); time
    without a heart rate counts for none."""
    if len(timestamps) != len(bpms):
        raise ValueError(f"{len(timestamps)} timestamps but {len(bpms)} heart rates")
    totals = dict.fromkeys(range(len(ZONE_NAMES)), 0.0)
    for bpm, duration in zip(bpms, sample_durations_s(timestamps, max_gap_s), strict=True):
        if has_heart_rate(bpm):
            totals[zones.zone_of(bpm)] += duration
    return totals


def is_above(bpm: float, threshold_bpm: float) -> bool:
    """The alert rule: strictly above the threshold (150 bpm alerts only at 151)."""
    return bpm > threshold_bpm


@dataclass(frozen=True)
class ThresholdEpisode:
    """A run of samples above the threshold. ``end`` is when the last one stopped holding;
    ``ongoing`` means the data ended while still above."""

    start: datetime
    end: datetime
    duration_s: float
    peak_bpm: int
    samples: int
    ongoing: bool


def threshold_episodes(
    timestamps: Sequence[datetime],
    bpms: Sequence[int | None],
    threshold_bpm: float,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
) -> list[ThresholdEpisode]:
    """Episodes above ``threshold_bpm``; a sample at or below it or without a heart rate, or a
    gap longer than ``max_gap_s``, ends one."""
    if len(timestamps) != len(bpms):
        raise ValueError(f"{len(timestamps)} timestamps but {len(bpms)} heart rates")
    durations = sample_durations_s(timestamps, max_gap_s)
    episodes: list[ThresholdEpisode] = []
    run: list[int] = []  # indices of the current episode

    def close(ongoing: bool) -> None:
        first, last = run[0], run[-1]
        episodes.append(
            ThresholdEpisode(
                start=timestamps[first],
                end=timestamps[last] + timedelta(seconds=durations[last]),
                duration_s=math.fsum(durations[i] for i in run),
                peak_bpm=max(int(bpm) for i in run if has_heart_rate(bpm := bpms[i])),
                samples=len(run),
                ongoing=ongoing,
            )
        )
        run.clear()

    for i, bpm in enumerate(bpms):
        broken = bool(run) and (
            (timestamps[i] - timestamps[run[-1]]).total_seconds() > max_gap_s
        )
        above = has_heart_rate(bpm) and is_above(bpm, threshold_bpm)
        if run and (broken or not above):
            close(ongoing=False)
        if above:
            run.append(i)
    if run:
        close(ongoing=True)
    return episodes


# --- live alert ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    """An athlete above the threshold right now, since ``since``."""

    since: datetime
    latest_bpm: int
    peak_bpm: int

    def duration_s(self, now: datetime) -> float:
        return max(0.0, (now - self.since).total_seconds())


def update_alert(
    alert: Alert | None, at: datetime, bpm: int, threshold_bpm: float
) -> Alert | None:
    """The alert after one more sample: raised on the first sample above the threshold, kept
    (with its start and peak) while samples stay above, cleared by one at or below."""
    if not is_above(bpm, threshold_bpm):
        return None
    if alert is None:
        return Alert(since=at, latest_bpm=bpm, peak_bpm=bpm)
    return Alert(since=alert.since, latest_bpm=bpm, peak_bpm=max(alert.peak_bpm, bpm))
