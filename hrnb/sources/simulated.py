"""A plausible simulated athlete, for users without a watch at hand and for tests and benchmarks.

Each athlete follows a workout (rest → warm-up → intervals → cool-down) as a fraction of their
heart-rate reserve; the heart follows the target with a lag and wanders with noise; RR intervals
are drawn beat by beat around 60000/HR ms with respiratory and random variability that shrinks
with effort; now and then the strap loses skin contact for a few seconds. The athlete produces
the very bytes a strap would notify (0x2A37), which the source decodes with :mod:`hrnb.hrm`, so
the simulated path exercises the same codec as a watch. Everything is drawn from one seeded
``random.Random`` per athlete: the same seed gives the same session.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from hrnb.hrm import encode_measurement, parse_measurement
from hrnb.sources.base import HeartRateSource, Session, session_start, to_utc_ms
from hrnb.wire.records import MAX_ID_LENGTH

#: The workout as (phase, seconds, intensity at start, intensity at end); intensity is the
#: fraction of heart-rate reserve. It lasts 26 minutes and repeats when no duration is set.
WORKOUT: tuple[tuple[str, float, float, float], ...] = (
    ("rest", 60.0, 0.05, 0.05),
    ("warm-up", 300.0, 0.10, 0.55),
    *(
        step
        for _ in range(6)
        for step in (("interval", 60.0, 0.88, 0.92), ("recovery", 90.0, 0.45, 0.45))
    ),
    ("cool-down", 300.0, 0.45, 0.10),
)
WORKOUT_SECONDS = sum(seconds for _, seconds, _, _ in WORKOUT)

_RESPIRATION_HZ = 0.25
_ENERGY_EVERY = 10  # the Heart Rate Service sends energy expended in about one payload in ten


@dataclass(frozen=True, slots=True)
class AthleteProfile:
    """The physiology a simulated athlete is drawn with."""

    resting_hr_bpm: float
    max_hr_bpm: float
    uint16_values: bool  # some straps always send the 16-bit heart-rate format

    @classmethod
    def draw(cls, rng: random.Random) -> AthleteProfile:
        return cls(
            resting_hr_bpm=rng.uniform(50.0, 68.0),
            max_hr_bpm=rng.uniform(176.0, 196.0),
            uint16_values=rng.random() < 0.3,
        )


class SimulatedAthlete:
    """One athlete's heart and strap, stepped through time; deterministic for a given rng.

    ``workout_seconds`` stretches or squeezes the workout (a two-minute demo still shows every
    phase); ``contact_loss_every_s`` is the mean time between contact losses (None: never).
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        workout_seconds: float = WORKOUT_SECONDS,
        contact_loss_every_s: float | None = 600.0,
    ) -> None:
        self._rng = rng
        self.profile = AthleteProfile.draw(rng)
        self._scale = workout_seconds / WORKOUT_SECONDS
        # Heart-rate response lags effort; in a squeezed workout it must keep up.
        self._lag_up_s = max(1.0, 20.0 * min(1.0, self._scale))
        self._lag_down_s = max(1.0, 35.0 * min(1.0, self._scale))
        self._contact_loss_every_s = contact_loss_every_s
        self.elapsed_s = 0.0
        self._hr = self.profile.resting_hr_bpm
        self._noise = 0.0
        self._to_next_beat_s = 60.0 / self._hr * rng.random()
        self._current_rr_s = 60.0 / self._hr
        self._contact_lost_until = -1.0
        self._energy_kj = 0.0
        self._payloads = 0

    def intensity(self, at_s: float) -> float:
        """Fraction of heart-rate reserve the workout asks for at ``at_s`` seconds."""
        t = (at_s / self._scale) % WORKOUT_SECONDS
        for _, seconds, start, end in WORKOUT:
            if t < seconds:
                return start + (end - start) * t / seconds
            t -= seconds
        return WORKOUT[-1][3]

    def next_payload(self, dt_s: float) -> bytes:
        """Advance ``dt_s`` seconds; return the 0x2A37 payload the strap notifies at its end."""
        rng = self._rng
        profile = self.profile
        intensity = self.intensity(self.elapsed_s + dt_s)
        reserve = profile.max_hr_bpm - profile.resting_hr_bpm
        target = profile.resting_hr_bpm + intensity * reserve
        lag = self._lag_up_s if target > self._hr else self._lag_down_s
        self._hr += (target - self._hr) * (1.0 - math.exp(-dt_s / lag))
        # Ornstein-Uhlenbeck wander of about ±2 bpm around the response.
        self._noise += -self._noise * dt_s / 10.0 + 0.9 * math.sqrt(dt_s) * rng.gauss(0.0, 1.0)
        heart_rate = min(max(self._hr + self._noise, 30.0), profile.max_hr_bpm + 5.0)
        rr_ms = self._beats(dt_s, heart_rate, intensity)
        self.elapsed_s += dt_s
        self._energy_kj += max(5.0, 0.6309 * heart_rate - 33.1) * dt_s / 60.0  # Keytel, in kJ/min
        self._payloads += 1

        if self._contact_loss_every_s is not None:
            if self.elapsed_s >= self._contact_lost_until and rng.random() < (
                dt_s / self._contact_loss_every_s
            ):
                self._contact_lost_until = self.elapsed_s + rng.uniform(3.0, 12.0)
            if self.elapsed_s < self._contact_lost_until:
                # Without skin contact a strap reports 0 bpm and no beats.
                return encode_measurement(0, sensor_contact=False, uint16=profile.uint16_values)
        energy = None
        if self._payloads % _ENERGY_EVERY == 0:
            energy = min(round(self._energy_kj), 0xFFFF)
        return encode_measurement(
            round(heart_rate),
            sensor_contact=True,
            energy_expended=energy,
            rr_intervals_ms=rr_ms,
            uint16=profile.uint16_values,
        )

    def _beats(self, dt_s: float, heart_rate: float, intensity: float) -> list[float]:
        """RR intervals (ms, at the wire's 1/1024 s resolution) of beats ending within dt_s."""
        rng = self._rng
        finished: list[float] = []
        remaining = dt_s
        while self._to_next_beat_s <= remaining:
            remaining -= self._to_next_beat_s
            beat_at = self.elapsed_s + dt_s - remaining
            finished.append(round(self._current_rr_s * 1024) * 1000 / 1024)
            mean_rr = 60.0 / heart_rate
            # Respiratory sinus arrhythmia and beat-to-beat jitter fade with effort.
            calm = 1.0 - min(intensity, 1.0)
            sinus = (0.045 * calm + 0.004) * math.sin(2 * math.pi * _RESPIRATION_HZ * beat_at)
            jitter = rng.gauss(0.0, 0.025 * calm + 0.004)
            self._current_rr_s = mean_rr * (1.0 + sinus + jitter)
            self._to_next_beat_s = self._current_rr_s
        self._to_next_beat_s -= remaining
        return finished


def athlete_rng(seed: int | None, index: int) -> random.Random:
    """The random stream of athlete ``index``: fixed by the seed, independent per athlete."""
    return random.Random(f"hrnb-athlete:{seed}:{index}") if seed is not None else random.Random()


class SimulatedSource(HeartRateSource):
    """Simulated athletes, in real time (``speed=1``), N× faster, or as fast as possible (None).

    Sample times run on the session's own clock from ``start_at``; by default the session starts
    now, or earlier when it runs faster than real time for a set duration, so that no timestamp
    lies in the future (see :func:`~hrnb.sources.base.session_start`). Each athlete has its own
    session, device id and sequence.
    """

    def __init__(
        self,
        athlete_ids: Sequence[str] = ("sim-001",),
        *,
        rate_hz: float = 1.0,
        duration_s: float | None = None,
        speed: float | None = 1.0,
        seed: int | None = None,
        start_at: datetime | None = None,
        contact_loss_every_s: float | None = 600.0,
    ) -> None:
        super().__init__()
        if not athlete_ids or len(set(athlete_ids)) != len(athlete_ids):
            raise ValueError("athlete_ids must be distinct and not empty")
        self.athlete_ids = tuple(athlete_ids)
        self.rate_hz = rate_hz
        self.duration_s = duration_s
        self.speed = speed
        self.seed = seed
        self._start_at = start_at
        workout = duration_s if duration_s is not None else WORKOUT_SECONDS
        self.athletes = [
            SimulatedAthlete(
                athlete_rng(seed, index),
                workout_seconds=workout,
                contact_loss_every_s=contact_loss_every_s,
            )
            for index in range(len(self.athlete_ids))
        ]
        self.sessions = [
            # Cut to the wire's length: any athlete id the command line accepts stays valid.
            Session(athlete_id, f"simulated:{athlete_id}"[:MAX_ID_LENGTH])
            for athlete_id in self.athlete_ids
        ]

    async def _produce(self) -> None:
        period = 1.0 / self.rate_hz
        if self._start_at is not None:
            start_at = to_utc_ms(self._start_at)
        else:
            start_at = session_start(self.duration_s, self.speed)
        for session in self.sessions:
            await self._emit(session.event("connected", start_at, "simulated athlete"))

        # Athletes notify out of step with one another, as real straps do.
        # Entries are (due time, athlete, notifications sent), times from the session start.
        offsets = [period * ((index * 0.618034) % 1.0) for index in range(len(self.athletes))]
        due = [(offset, index, 0) for index, offset in enumerate(offsets)]
        heapq.heapify(due)
        end_s = math.inf if self.duration_s is None else self.duration_s - 1e-9
        loop = asyncio.get_running_loop()
        started = loop.time()
        emitted = 0
        while due:
            at_s, index, sent = heapq.heappop(due)
            if at_s >= end_s:
                continue
            if self.speed is not None:
                delay = started + at_s / self.speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif emitted % 256 == 0:
                await asyncio.sleep(0)  # let the loop breathe when running flat out
            emitted += 1
            payload = self.athletes[index].next_payload(period)
            received_at = start_at + timedelta(milliseconds=round(at_s * 1000))
            for item in self.sessions[index].items(parse_measurement(payload), received_at):
                await self._emit(item)
            heapq.heappush(due, (offsets[index] + (sent + 1) * period, index, sent + 1))

        end = start_at + timedelta(seconds=self.duration_s or 0.0)
        for session in self.sessions:
            await self._emit(session.event("disconnected", end, "end of simulated session"))
