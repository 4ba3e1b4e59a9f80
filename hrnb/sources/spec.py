"""Build a heart-rate source from the CLI's ``--source`` string and its companion flags.

    simulated              simulated athletes (``--athletes N``, ``--seed``, ``--rate-hz``)
    emulated               an emulated watch through Bleak's real client code, with a dropout
                           every two minutes to show reconnection (demos)
    ble                    the first watch advertising heart rate
    ble:ADDRESS_OR_NAME    that watch
    replay:FILE            a recorded .fit or .csv session (``--speed``)

Every flag is checked here, once, so a mistake is reported as a ConfigError naming the flag
before anything connects or reads.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

from hrnb.errors import ConfigError, RecordError
from hrnb.sources.base import DEFAULT_ATHLETE_ID, HeartRateSource, utc_now_ms
from hrnb.sources.ble import BleakSource
from hrnb.sources.emulated import EmulatedHeartRateMonitor, EmulatedWatchSource
from hrnb.sources.replay import REPLAY_SUFFIXES, ReplaySource
from hrnb.sources.simulated import WORKOUT_SECONDS, SimulatedAthlete, SimulatedSource, athlete_rng
from hrnb.wire.records import make_record

MAX_ATHLETES = 100_000
MAX_RATE_HZ = 50.0
EMULATED_DROPOUT_EVERY_S = 120.0
_SPECS = "simulated, emulated, ble, ble:ADDRESS_OR_NAME or replay:FILE (.fit or .csv)"


def from_spec(
    spec: str,
    *,
    athletes: int = 1,
    athlete_id: str | None = None,
    rate_hz: float = 1.0,
    duration_s: float | None = None,
    speed: float | None = 1.0,
    seed: int | None = None,
) -> HeartRateSource:
    """The source ``spec`` names, configured by the flags; ConfigError names a bad one.

    ``speed`` (None: as fast as possible) applies to simulated and replayed sources, ``rate_hz``
    and ``seed`` to simulated and emulated ones; a watch sets its own pace. ``athletes`` above 1
    gives ids ``<athlete_id or 'sim'>-001`` ... and needs the simulated source.
    """
    kind, _, argument = spec.strip().partition(":")
    kind = kind.lower()
    _check_number("--athletes", athletes, low=1, high=MAX_ATHLETES, whole=True)
    _check_number("--rate-hz", rate_hz, low=0.0, high=MAX_RATE_HZ, open_low=True)
    if duration_s is not None:
        _check_number("--duration", duration_s, low=0.0, high=math.inf, open_low=True)
    if speed is not None:
        _check_number("--speed", speed, low=0.0, high=math.inf, open_low=True)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"--seed must be a whole number, got {seed!r}", setting="--seed")

    if kind == "simulated":
        _no_argument(kind, argument)
        ids = _athlete_ids(athletes, athlete_id)
        return SimulatedSource(ids, rate_hz=rate_hz, duration_s=duration_s, speed=speed, seed=seed)
    if kind not in ("emulated", "ble", "replay"):
        raise ConfigError(f"--source {spec!r} is not a source; use {_SPECS}", setting="--source")
    if athletes != 1:
        raise ConfigError(
            f"--athletes {athletes}: only the simulated source has more than one athlete",
            setting="--athletes",
        )
    (single_id,) = _athlete_ids(1, athlete_id or DEFAULT_ATHLETE_ID)

    if kind == "emulated":
        _no_argument(kind, argument)
        _only_default("--speed", speed, 1.0, "an emulated watch runs in real time")
        athlete = SimulatedAthlete(
            athlete_rng(seed, 0), workout_seconds=duration_s or WORKOUT_SECONDS
        )
        address = "EE:" + ":".join(uuid.uuid4().hex[i : i + 2].upper() for i in range(0, 10, 2))
        return EmulatedWatchSource(
            EmulatedHeartRateMonitor(address),
            athlete,
            rate_hz=rate_hz,
            dropout_every_s=EMULATED_DROPOUT_EVERY_S,
            athlete_id=single_id,
            duration_s=duration_s,
        )
    if kind == "ble":
        _only_default("--speed", speed, 1.0, "a watch streams in real time")
        _only_default("--rate-hz", rate_hz, 1.0, "a watch sets its own rate")
        _only_default("--seed", seed, None, "a watch is not random")
        return BleakSource(argument.strip() or None, athlete_id=single_id, duration_s=duration_s)

    _only_default("--rate-hz", rate_hz, 1.0, "a recording keeps its own spacing")
    _only_default("--seed", seed, None, "a recording is not random")
    path = Path(argument.strip()).expanduser()
    if not argument.strip():
        raise ConfigError(
            "--source replay needs a file: replay:PATH.fit or replay:PATH.csv", setting="--source"
        )
    if path.suffix.lower() not in REPLAY_SUFFIXES:
        raise ConfigError(f"--source {spec!r}: replay reads .fit or .csv files", setting="--source")
    if not path.is_file():
        raise ConfigError(f"--source {spec!r}: no such file {path}", setting="--source")
    # Retimed to now, so the live chart and the pipeline see a session of today.
    return ReplaySource(path, athlete_id=single_id, speed=speed, duration_s=duration_s, retime=True)


def _check_number(
    flag: str,
    value: object,
    *,
    low: float,
    high: float,
    whole: bool = False,
    open_low: bool = False,
) -> None:
    """``value`` must be a finite number (whole if asked) in its range, else ConfigError."""
    kind = "a whole number" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
        raise ConfigError(f"{flag} must be {kind}, got {value!r}", setting=flag)
    if not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value!r}", setting=flag)
    if value < low or (open_low and value == low) or value > high:
        bound = f"above {low:g}" if open_low else f"at least {low:g}"
        upper = "" if math.isinf(high) else f" and at most {high:g}"
        raise ConfigError(f"{flag} must be {kind} {bound}{upper}, got {value!r}", setting=flag)


def _no_argument(kind: str, argument: str) -> None:
    if argument:
        raise ConfigError(
            f"--source {kind} takes no ':{argument}'; use {_SPECS}", setting="--source"
        )


def _only_default(flag: str, value: object, default: object, why: str) -> None:
    if value != default:
        raise ConfigError(f"{flag} {value!r} does not apply to this source: {why}", setting=flag)


def _athlete_ids(athletes: int, athlete_id: str | None) -> list[str]:
    """Ids as the wire format accepts them; several athletes get numbered suffixes."""
    if athletes == 1 and athlete_id is not None:
        ids = [athlete_id]
    else:
        base = athlete_id or "sim"
        ids = [f"{base}-{index:03d}" for index in range(1, athletes + 1)]
    for candidate in (ids[0], ids[-1]):
        try:
            make_record(
                athlete_id=candidate,
                session_id="check",
                device_id="check",
                seq=0,
                timestamp=utc_now_ms(),
                heart_rate=60,
            )
        except RecordError as exc:
            raise ConfigError(
                f"--athlete-id {athlete_id!r}: {exc}", setting="--athlete-id"
            ) from None
    return ids
