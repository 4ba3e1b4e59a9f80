"""Alert episodes: one per stretch of sustained high heart rate, not one per sample (pure).

Per athlete, samples are applied in timestamp order to a small JSON-able state:

- an episode **opens** when the heart rate stays above the athlete's threshold for ``sustain_s``
  (a single spike never alerts); its start is the first sample of that run, its id
  ``<athlete>@<start>``, so the same samples always give the same id;
- while open it tracks its peak; it **ends** (the athlete is re-armed) once the heart rate has
  stayed below ``threshold - rearm_margin_bpm`` for ``rearm_s``; in between it stays open;
- a sample without skin contact (``heart_rate`` null), or a gap of more than ``max_gap_s``
  between samples, is missing evidence: the run being timed (towards opening or re-arming)
  starts again at the next good sample. No alert is raised on data nobody measured, and an
  open episode stays open until the athlete is measured below the re-arm level again;
- the state keeps the timestamp of the last sample applied; a sample at or before it is skipped.
  Re-applying samples already seen (a redelivered batch, a checkpoint rewind) changes nothing, and
  a late sample older than the last one applied does not reorder history.

Timestamps are the wire format's (``2026-11-29T06:10:00.123Z``: fixed width, so text order is
time order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from hrnb.errors import ConfigError
from hrnb.wire.alert import DEFAULT_ALERT_THRESHOLD_BPM, check_alert_threshold

#: Defaults of the episode rules (seconds, bpm).
DEFAULT_SUSTAIN_S = 5.0
DEFAULT_REARM_S = 10.0
DEFAULT_REARM_MARGIN_BPM = 5
DEFAULT_MAX_GAP_S = 5.0


class EpisodeState(TypedDict):
    """One athlete's detector state, as stored (JSON)."""

    last: str | None  # timestamp of the last sample applied
    above_since: str | None  # first sample of the current run above the threshold
    run_peak: int | None  # highest bpm of that run
    below_since: str | None  # first sample of the current run below the re-arm level
    episode: EpisodeDict | None  # the open episode


class EpisodeDict(TypedDict):
    id: str
    athlete_id: str
    start: str
    peak_bpm: int
    threshold_bpm: int


@dataclass(frozen=True)
class EpisodeRules:
    """When an episode opens and ends, for one athlete."""

    threshold_bpm: int
    sustain_s: float = DEFAULT_SUSTAIN_S
    rearm_s: float = DEFAULT_REARM_S
    rearm_margin_bpm: int = DEFAULT_REARM_MARGIN_BPM
    max_gap_s: float = DEFAULT_MAX_GAP_S

    @property
    def rearm_below_bpm(self) -> int:
        return self.threshold_bpm - self.rearm_margin_bpm


@dataclass(frozen=True)
class Episode:
    """An episode as notified: who, since when (UTC), its peak so far and the threshold."""

    id: str
    athlete_id: str
    start: str
    peak_bpm: int
    threshold_bpm: int

    def message(self) -> str:
        """The notification text, readable as one SMS (at most 160 characters)."""
        clock = self.start[11:19]
        text = (f"hrnb: athlete {self.athlete_id} above {self.threshold_bpm} bpm since "
                f"{clock} UTC {self.start[:10]}, peak {self.peak_bpm} bpm")
        if len(text) <= 160:
            return text
        room = 160 - (len(text) - len(self.athlete_id)) - 1
        return text.replace(self.athlete_id, self.athlete_id[:room] + "…", 1)


def new_state() -> EpisodeState:
    return {"last": None, "above_since": None, "run_peak": None, "below_since": None,
            "episode": None}


def episode_id(athlete_id: str, start: str) -> str:
    return f"{athlete_id}@{start}"


def _seconds(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def advance(
    state: Mapping[str, Any] | None,
    athlete_id: str,
    samples: Iterable[tuple[str, int | None]],
    rules: EpisodeRules,
) -> tuple[EpisodeState, list[Episode]]:
    """Apply ``(timestamp, heart_rate)`` samples of one athlete; the new state and the episodes
    that opened (in order). ``state`` is not changed; samples need not be sorted."""
    current: EpisodeState = {**new_state(), **(state or {})}  # type: ignore[typeddict-item]
    opened: list[Episode] = []
    for timestamp, bpm in sorted(samples, key=lambda sample: sample[0]):
        last = current["last"]
        if last is not None and timestamp <= last:
            continue
        if last is not None and _seconds(timestamp, last) > rules.max_gap_s:
            current["above_since"] = current["run_peak"] = current["below_since"] = None
        current["last"] = timestamp
        if bpm is None:
            current["above_since"] = current["run_peak"] = current["below_since"] = None
            continue
        episode = current["episode"]
        if episode is None:
            _towards_opening(current, athlete_id, timestamp, bpm, rules, opened)
            continue
        if bpm > episode["peak_bpm"]:
            current["episode"] = {**episode, "peak_bpm": bpm}
        if bpm >= rules.rearm_below_bpm:
            current["below_since"] = None
            continue
        below_since = current["below_since"] or timestamp
        current["below_since"] = below_since
        if _seconds(timestamp, below_since) >= rules.rearm_s:
            current["episode"] = current["below_since"] = None
    return current, opened


def _towards_opening(current: EpisodeState, athlete_id: str, timestamp: str, bpm: int,
                     rules: EpisodeRules, opened: list[Episode]) -> None:
    if bpm <= rules.threshold_bpm:
        current["above_since"] = current["run_peak"] = None
        return
    above_since = current["above_since"] or timestamp
    peak = max(bpm, current["run_peak"] or bpm)
    current["above_since"], current["run_peak"] = above_since, peak
    if _seconds(timestamp, above_since) < rules.sustain_s:
        return
    episode: EpisodeDict = {"id": episode_id(athlete_id, above_since), "athlete_id": athlete_id,
                            "start": above_since, "peak_bpm": peak,
                            "threshold_bpm": rules.threshold_bpm}
    current["episode"] = episode
    current["above_since"] = current["run_peak"] = None
    opened.append(Episode(**episode))


@dataclass(frozen=True)
class AlertRules:
    """The episode rules of every athlete: the default threshold, per-athlete overrides."""

    threshold_bpm: int
    thresholds: Mapping[str, int] = field(default_factory=dict)
    sustain_s: float = DEFAULT_SUSTAIN_S
    rearm_s: float = DEFAULT_REARM_S
    rearm_margin_bpm: int = DEFAULT_REARM_MARGIN_BPM

    def for_athlete(self, athlete_id: str) -> EpisodeRules:
        return EpisodeRules(threshold_bpm=self.thresholds.get(athlete_id, self.threshold_bpm),
                            sustain_s=self.sustain_s, rearm_s=self.rearm_s,
                            rearm_margin_bpm=self.rearm_margin_bpm)

    def environment(self) -> dict[str, str]:
        """The function's environment variables for these rules (read by :meth:`from_env`)."""
        return {
            "HR_ALERT_THRESHOLD": str(self.threshold_bpm),
            "HR_ALERT_THRESHOLDS": ",".join(f"{a}={b}" for a, b in sorted(self.thresholds.items())),
            "HR_ALERT_SUSTAIN_S": f"{self.sustain_s:g}",
            "HR_ALERT_REARM_S": f"{self.rearm_s:g}",
            "HR_ALERT_REARM_MARGIN_BPM": str(self.rearm_margin_bpm),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AlertRules:
        def get(name: str, default: object) -> object:
            return environ.get(name) or default

        return cls(
            threshold_bpm=check_alert_threshold(get("HR_ALERT_THRESHOLD",
                                                    DEFAULT_ALERT_THRESHOLD_BPM),
                                                setting="HR_ALERT_THRESHOLD"),
            thresholds=parse_thresholds(environ.get("HR_ALERT_THRESHOLDS", ""),
                                        setting="HR_ALERT_THRESHOLDS"),
            sustain_s=check_seconds(get("HR_ALERT_SUSTAIN_S", DEFAULT_SUSTAIN_S),
                                    setting="HR_ALERT_SUSTAIN_S"),
            rearm_s=check_seconds(get("HR_ALERT_REARM_S", DEFAULT_REARM_S),
                                  setting="HR_ALERT_REARM_S"),
            rearm_margin_bpm=check_margin(get("HR_ALERT_REARM_MARGIN_BPM",
                                              DEFAULT_REARM_MARGIN_BPM),
                                          setting="HR_ALERT_REARM_MARGIN_BPM"),
        )


# --- settings ------------------------------------------------------------------------------------
def parse_thresholds(text: str, *, setting: str) -> dict[str, int]:
    """Per-athlete thresholds from ``"athlete-a=160,athlete-b=175"``; ConfigError naming
    ``setting`` and the bad entry otherwise."""
    thresholds: dict[str, int] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        athlete, sep, value = (part.strip() for part in entry.partition("="))
        if not sep or not athlete:
            raise ConfigError(
                f"{setting}: {entry!r} is not athlete=bpm (e.g. athlete-a=160,athlete-b=175)",
                setting=setting)
        if athlete in thresholds:
            raise ConfigError(f"{setting}: athlete {athlete!r} is given twice", setting=setting)
        try:
            thresholds[athlete] = check_alert_threshold(value, setting=f"{setting} ({athlete})")
        except ConfigError as exc:
            raise ConfigError(str(exc), setting=setting) from None
    return thresholds


def check_seconds(value: object, *, setting: str, low: float = 0.0,
                  high: float = 600.0) -> float:
    """``value`` (a number, or text from the environment) as seconds in ``low..high``."""
    try:
        seconds = float(value) if isinstance(value, int | float | str) else None
    except ValueError:
        seconds = None
    if seconds is None or isinstance(value, bool) or not low <= seconds <= high:
        raise ConfigError(f"{setting}={value!r} must be a number of seconds in {low:g}..{high:g}",
                          setting=setting)
    return seconds


def check_margin(value: object, *, setting: str) -> int:
    """The re-arm margin below the threshold: 0..50 bpm."""
    try:
        bpm = int(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
    except ValueError:
        bpm = None
    if bpm is None or not 0 <= bpm <= 50:
        raise ConfigError(f"{setting}={value!r} must be a whole number of bpm in 0..50",
                          setting=setting)
    return bpm
