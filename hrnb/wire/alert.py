"""The heart-rate alert threshold: its default and bounds, for the settings, the function (which
sets ``alert`` on each document) and the queries and live chart that draw it."""

from __future__ import annotations

from hrnb.errors import ConfigError

#: Above this many bpm a sample is an alert unless a setting says otherwise.
DEFAULT_ALERT_THRESHOLD_BPM = 150
#: The thresholds hrnb accepts (bpm, inclusive).
ALERT_THRESHOLD_BOUNDS_BPM = (20, 250)


def check_alert_threshold(value: object, *, setting: str) -> int:
    """``value`` (an int, or text from the environment) as bpm within the bounds; ConfigError
    naming ``setting`` otherwise."""
    low, high = ALERT_THRESHOLD_BOUNDS_BPM
    try:
        bpm = int(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
    except ValueError:
        bpm = None
    if bpm is None or not low <= bpm <= high:
        raise ConfigError(
            f"{setting}={value!r} must be a whole number of bpm in {low}..{high}",
            setting=setting,
        )
    return bpm
