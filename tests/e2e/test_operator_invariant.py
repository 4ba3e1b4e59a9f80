"""The invariant under random operator histories (issue #12): every sample Kinesis acknowledged
is in the index exactly once, or the command that took it said which are not.

A hypothesis state machine drives a private stack (its own emulator and OpenSearch node, so
services can be restarted) through operator actions and faults: set-up and teardown of two
prefixes sharing one state directory, bursts of several athletes streaming (``run_stream``, what
``hrnb stream`` runs, with its verified ending), the poller SIGKILLed and started again, the
emulator restarted (it forgets everything), ``local down``/``up`` of the emulator and poller,
and OpenSearch restarted. After every step:

- every sample a command reported indexed (acknowledged minus its reported missing) is still
  in the index, unless its own prefix was torn down since;
- no sample is in the index twice;
- what a command reported missing was really missing when it said so (checked by the command's
  own catch-up, and here: reported indexed means found).

``HRNB_INVARIANT_HISTORIES`` (default 25) and ``HRNB_INVARIANT_STEPS`` (default 3) size the run,
``HRNB_INVARIANT_BUDGET_S`` bounds a long one; ``HRNB_INVARIANT_SEED`` replays one;
``HRNB_INVARIANT_REPORT`` names a JSON file for the totals (``make soak``). Every failure prints
its seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
from e2e_helpers import Key, say
from hypothesis import HealthCheck, settings
from hypothesis import seed as use_seed
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from operator_stack import OperatorStack, PrivateServices

from hrnb import provision
from hrnb.config import Settings
from hrnb.errors import ProvisionError
from hrnb.local import launcher

pytestmark = pytest.mark.stack

HISTORIES = int(os.environ.get("HRNB_INVARIANT_HISTORIES", "25"))
STEPS = int(os.environ.get("HRNB_INVARIANT_STEPS", "3"))
#: OpenSearch takes tens of seconds to start here: restarts are rationed per run.
OPENSEARCH_RESTARTS = int(os.environ.get("HRNB_INVARIANT_OPENSEARCH_RESTARTS", "1"))


@dataclass
class Totals:
    """What the run did, for the report (``make soak``)."""

    histories: int = 0
    steps: int = 0
    streams: int = 0
    refused: int = 0  # stream commands that stopped before accepting a sample (no set-up)
    samples: int = 0  # acknowledged by Kinesis
    reported_missing: int = 0  # acknowledged, and said missing by the command
    lost: int = 0  # reported indexed, then not in the index
    duplicated: int = 0
    actions: dict[str, int] = field(default_factory=dict)  # steps by kind


@dataclass
class World:
    """The stack and what must be in it, kept across histories (the stack is not reset)."""

    ops: OperatorStack
    services: PrivateServices
    prefixes: tuple[Settings, Settings]
    totals: Totals
    expected: dict[str, set[Key]] = field(default_factory=dict)  # prefix -> reported indexed
    ready: set[str] = field(default_factory=set)  # prefixes set up since the last amnesia
    opensearch_restarts: int = 0


WORLD: World | None = None


class OperatorHistory(RuleBasedStateMachine):
    """One history of operator actions and faults on the shared private stack."""

    def __init__(self) -> None:
        super().__init__()
        assert WORLD is not None
        self.world = WORLD
        self.world.totals.histories += 1

    def _step(self, action: str) -> None:
        totals = self.world.totals
        totals.steps += 1
        kind = action.split(" ", 1)[0]
        totals.actions[kind] = totals.actions.get(kind, 0) + 1
        say(f"history {totals.histories}: {action}")

    @initialize()
    def first_prefix_set_up(self) -> None:
        """Histories start streamable (set-up is the slowest step: only when needed)."""
        if self.world.prefixes[0].prefix not in self.world.ready:
            self.set_up(0)

    @rule(choice=st.integers(0, 99), which=st.integers(0, 1), athletes=st.integers(1, 6),
          seconds=st.integers(2, 4), seed=st.integers(0, 10_000))
    def operate(self, choice: int, which: int, athletes: int, seconds: int, seed: int) -> None:
        """One operator action, weighted (hypothesis would pick the cheap rules most): mostly
        streaming, with set-up, teardown and faults in between."""
        if choice < 55:
            self.stream(which, athletes, seconds, seed)
        elif choice < 65:
            self.set_up(which)
        elif choice < 72:
            self.tear_down(which)
        elif choice < 82:
            self.kill_poller()
        elif choice < 88:
            self.restart_emulator()
        elif choice < 94:
            self.local_down_up()
        elif self.world.opensearch_restarts < OPENSEARCH_RESTARTS:
            self.restart_opensearch()
        else:
            self.stream(which, athletes, seconds, seed)

    def set_up(self, which: int) -> None:
        own = self.world.prefixes[which]
        self._step(f"setup {own.prefix}")
        self.world.ops.setup(own)
        self.world.ready.add(own.prefix)

    def tear_down(self, which: int) -> None:
        own = self.world.prefixes[which]
        self._step(f"teardown {own.prefix}")
        report = self.world.ops.teardown(own)
        assert not report.remaining, report.remaining
        self.world.expected.pop(own.prefix, None)  # its index went with it, as asked
        self.world.ready.discard(own.prefix)

    def stream(self, which: int, athletes: int, seconds: int, seed: int) -> None:
        own = self.world.prefixes[which]
        self._step(f"stream {own.prefix}: {athletes} athlete(s) x {seconds} s")
        totals = self.world.totals
        totals.streams += 1
        try:
            summary = self.world.ops.stream(own, athletes=athletes, seconds=seconds, seed=seed,
                                            verify_timeout_s=20.0)
        except ProvisionError as exc:  # refused before accepting anything: nothing to lose
            assert "hrnb setup" in str(exc)
            totals.refused += 1
            return
        check = summary.index_check
        assert check is not None
        assert summary.unsent == 0, "the emulator answers: everything is acknowledged"
        totals.samples += check.acknowledged
        totals.reported_missing += check.missing
        missing = {(athlete, session, seq)
                   for athlete, session, runs in check.missing_runs
                   for seq in _seqs(runs)}
        acknowledged = _acknowledged(summary)
        assert len(missing) == check.missing
        self.world.expected.setdefault(own.prefix, set()).update(acknowledged - missing)

    def kill_poller(self) -> None:
        self._step("poller SIGKILLed, started again")
        poller = self.world.ops.poller
        poller.stop(signal.SIGKILL)
        poller.start()

    def restart_emulator(self) -> None:
        self._step("emulator restarted (forgets every resource)")
        self.world.services.restart(launcher.AWS)
        self.world.ready.clear()

    def local_down_up(self) -> None:
        self._step("local down / up (emulator and poller)")
        world = self.world
        world.ops.poller.stop()
        launcher.down(world.services.settings, only=(launcher.AWS,))
        launcher.up(world.services.settings, poller=False)
        world.ops.poller.start()
        world.ready.clear()

    def restart_opensearch(self) -> None:
        self._step("OpenSearch restarted")
        self.world.opensearch_restarts += 1
        self.world.services.restart(launcher.OPENSEARCH)

    @invariant()
    def acknowledged_samples_are_indexed_once(self) -> None:
        totals = self.world.totals
        for own in self.world.prefixes:
            found = self.world.ops.keys(own)
            twice = [key for key, count in found.items() if count > 1]
            lost = self.world.expected.get(own.prefix, set()) - set(found)
            totals.duplicated += len(twice)
            totals.lost += len(lost)
            assert not twice, f"{own.prefix}: indexed more than once: {sorted(twice)[:5]}"
            assert not lost, (f"{own.prefix}: {len(lost)} samples reported indexed are not: "
                              f"{sorted(lost)[:5]}")


def _seqs(runs: str) -> Iterator[int]:
    for part in runs.split(", "):
        low, _, high = part.partition("–")
        yield from range(int(low), int(high or low) + 1)


def _acknowledged(summary) -> set[Key]:  # type: ignore[no-untyped-def]
    """The samples of this command, all acknowledged (unsent == 0): seqs 0.. per session."""
    check = summary.index_check
    per_session = check.acknowledged // max(1, len(summary.sessions))
    return {(athlete, session, seq)
            for athlete, session in zip(summary.athletes, summary.sessions, strict=True)
            for seq in range(per_session)}


@pytest.fixture
def world(settings: Settings, lambda_artifacts: provision.LambdaArtifacts, tmp_path: Path,
          unique_name: Callable[[str], str],
          free_ports: Callable[[], tuple[int, int]]) -> Iterator[World]:
    global WORLD
    services = PrivateServices(settings, tmp_path, *free_ports())
    services.up()
    ops = OperatorStack(services.settings, lambda_artifacts, tmp_path)
    ops.poller.start()
    WORLD = World(ops, services, (ops.settings(unique_name("inv")),
                                  ops.settings(unique_name("oth"))), Totals())
    try:
        yield WORLD
    finally:
        WORLD = None
        ops.close()
        services.down()


@pytest.mark.timeout(int(os.environ.get("HRNB_INVARIANT_TIMEOUT_S", "900")))
def test_operator_histories_keep_the_invariant(world: World) -> None:
    """Runs of at most 25 histories, each from its own seed, until HISTORIES histories ran (or
    HRNB_INVARIANT_BUDGET_S seconds passed: the soak reports what it ran)."""
    budget_s = float(os.environ.get("HRNB_INVARIANT_BUDGET_S") or "inf")
    given = os.environ.get("HRNB_INVARIANT_SEED")
    seeds: list[int] = []
    started = time.monotonic()
    totals = world.totals
    try:
        while totals.histories < HISTORIES and time.monotonic() - started < budget_s:
            chosen = int(given) if given and not seeds else random.SystemRandom().randrange(2**32)
            seeds.append(chosen)
            try:
                run_state_machine_as_test(
                    use_seed(chosen)(OperatorHistory),
                    settings=settings(max_examples=min(25, HISTORIES - totals.histories),
                                      stateful_step_count=STEPS, deadline=None, database=None,
                                      print_blob=True, suppress_health_check=list(HealthCheck)),
                )
            except BaseException:
                print(f"operator invariant failed with seed {chosen}: "
                      f"HRNB_INVARIANT_SEED={chosen} replays it")
                raise
    finally:
        report = {**asdict(totals), "seeds": seeds,
                  "seconds": round(time.monotonic() - started, 1)}
        say(f"operator histories: {json.dumps(report)}")
        if os.environ.get("HRNB_INVARIANT_REPORT"):
            Path(os.environ["HRNB_INVARIANT_REPORT"]).write_text(json.dumps(report, indent=1))
    assert totals.histories >= min(HISTORIES, 25)
