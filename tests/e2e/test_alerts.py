"""Alerts end to end: recorded samples on the stream -> the poller -> the packaged handler ->
episode state in OpenSearch -> SNS (the emulator) -> the alert log queue set-up subscribed ->
``hrnb.alerts``. Redelivery (a checkpoint rewound to the start) sends nothing twice; a worker
killed mid-episode (before the publish, or between the publish and the state write) misses no
episode; SNS refusing publishes for a while delays the notification, never loses it. A warm
worker writes each next state on top of the one it stored without reading it back, and reads it
again when it was changed meanwhile (another container's write)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import pytest
from e2e_helpers import Pipeline, say
from support import wait_until
from support.faultproxy import Delay, Drop, FaultProxy, Respond, path_matches

from hrnb import alerts
from hrnb.clients import aws_client
from hrnb.provision import EventSourceOptions
from hrnb.wire.episodes import AlertRules, Episode, EpisodeRules, EpisodeState, advance
from hrnb.wire.records import decode_record, encode_record, make_record

pytestmark = pytest.mark.stack

PipelineFactory = Callable[..., Pipeline]
#: Sustained above 160 for 8 s; the 20 s at 140 re-arm the athlete.
EPISODE = [170, 172, 175, 171, 169, 168, 174, 170, 166] + [140] * 20
SPIKE = [150, 195, 150, 150, 188, 150, 150, 150]


def recorded(athlete: str, bpms: list[int], *, session: str = "s1",
             start: datetime | None = None) -> list[bytes]:
    """A recorded session at 1 Hz, measured a while ago."""
    start = start or datetime.now(UTC) - timedelta(minutes=20)
    return [encode_record(make_record(
        athlete_id=athlete, session_id=session, device_id="strap-1", seq=seq,
        timestamp=start + timedelta(seconds=seq), heart_rate=bpm,
        rr_intervals_ms=(60000 / bpm,), sensor_contact=True)) for seq, bpm in enumerate(bpms)]


def notifications(pipe: Pipeline) -> list[alerts.Notification]:
    """Every SNS message the alert log queue received so far (drained into the log)."""
    alerts.drain(pipe.settings)
    return alerts.logged(pipe.settings)


def wait_notified(pipe: Pipeline, count: int, *, athlete: str | None = None) -> None:
    wait_until(lambda: len({n.episode_id for n in notifications(pipe)
                            if athlete in (None, n.athlete_id)}) >= count,
               timeout_s=60, what=f"{count} episodes notified")


def test_three_episodes_notified_once_even_when_every_batch_comes_again(
        pipeline: PipelineFactory) -> None:
    pipe = pipeline(shards=1, options=EventSourceOptions(batch_size=7),
                    hr_alert_threshold_bpm=160, alert_thresholds="e2e-b=185")
    spikes_and_episodes = SPIKE + EPISODE + SPIKE + SPIKE + EPISODE + SPIKE + EPISODE + SPIKE
    a_records = recorded("e2e-a", spikes_and_episodes)
    # e2e-b has its own threshold, 185: the same heart rates are no episode for it; one
    # above 185 is.
    b_records = recorded("e2e-b", EPISODE + [190] * 7 + [150] * 3)
    put_at = time.time() - 1.0
    pipe.put_raw(a_records, "e2e-a")
    pipe.put_raw(b_records, "e2e-b")
    pipe.wait_indexed(len(a_records) + len(b_records))
    wait_notified(pipe, 4)

    first = notifications(pipe)
    by_athlete = {athlete: [n for n in first if n.athlete_id == athlete]
                  for athlete in ("e2e-a", "e2e-b")}
    assert len(by_athlete["e2e-a"]) == 3  # three messages in the queue, no spike among them
    assert {n.threshold_bpm for n in by_athlete["e2e-a"]} == {160}
    [b_episode] = by_athlete["e2e-b"]
    assert (b_episode.threshold_bpm, b_episode.peak_bpm) == (185, 190)
    for notification in by_athlete["e2e-a"]:
        assert notification.peak_bpm == 175
        assert "athlete e2e-a above 160 bpm since" in notification.message
        assert len(notification.message) <= 160

    # Every batch again: the poller stopped, its checkpoint rewound to the start of the shard.
    poller = pipe.poller
    before = sum(batch["records"] for batch in poller.batches())
    poller.stop()
    checkpoint_path = poller.checkpoint_path(pipe.mapping_uuid)
    checkpoints = json.loads(checkpoint_path.read_text())
    for shard_id in checkpoints["shards"]:
        checkpoints["shards"][shard_id] = {"at_timestamp": put_at}
    checkpoint_path.write_text(json.dumps(checkpoints))
    poller.start()
    wait_until(lambda: sum(batch["records"] for batch in poller.batches())
               >= before + len(a_records) + len(b_records),
               timeout_s=60, what="every record handled a second time")
    again = notifications(pipe)
    assert len(again) == 4, [n.episode_id for n in again]
    assert [n.episode_id for n in alerts.episodes(again)] == sorted(
        (n.episode_id for n in first), key=lambda i: (i.split("@")[1], i))


def _worker(pipe: Pipeline) -> psutil.Process:
    """The poller's worker process (running the handler now)."""
    assert pipe.poller.process is not None
    [worker] = [child for child in psutil.Process(pipe.poller.process.pid).children(recursive=True)
                if any(part.endswith("hrnb/local/worker.py") for part in child.cmdline())]
    return worker


@pytest.mark.parametrize("held", ["_mget", "_bulk"], ids=["before-publish",
                                                          "between-publish-and-state-write"])
def test_a_worker_killed_mid_episode_misses_no_episode(pipeline: PipelineFactory,
                                                       held: str) -> None:
    pipe = pipeline(shards=1, opensearch_proxy=FaultProxy,
                    options=EventSourceOptions(batch_size=50))
    proxy = pipe.opensearch_proxy
    state = pipe.settings.alert_state_index
    # The state read (before the publish) or the state write (after it) is held while the
    # worker is killed.
    proxy.set_fault(Delay(5.0, match=path_matches(rf"/{state}/{held}"), times=1))
    records = recorded("e2e-k", EPISODE)
    pipe.put_raw(records, "e2e-k")
    wait_until(lambda: proxy.counters().delayed >= 1, timeout_s=30,
               what=f"the state {held} in flight")
    _worker(pipe).send_signal(signal.SIGKILL)
    say(f"killed the worker during the state {held}")
    wait_until(lambda: (pipe.poller.mapping() or {}).get("worker_restarts", 0) >= 1,
               timeout_s=30, what="a new worker")
    wait_notified(pipe, 1)
    pipe.wait_indexed(len(records))
    delivered = notifications(pipe)
    assert {n.episode_id for n in delivered} == {delivered[0].episode_id}
    assert len(alerts.episodes(delivered)) == 1


def test_a_lost_state_write_resends_the_same_episode_which_listing_dedupes(
        pipeline: PipelineFactory) -> None:
    """The crash window's side: published, state not written -> the retry publishes again."""
    pipe = pipeline(shards=1, opensearch_proxy=FaultProxy,
                    options=EventSourceOptions(batch_size=50))
    proxy = pipe.opensearch_proxy
    state = pipe.settings.alert_state_index
    proxy.set_fault(Drop(match=path_matches(rf"/{state}/_bulk"), times=1))
    pipe.put_raw(recorded("e2e-r", EPISODE), "e2e-r")
    wait_until(lambda: len(notifications(pipe)) >= 2, timeout_s=60, what="the resend")
    delivered = notifications(pipe)
    assert len(delivered) == 2 and len({n.message_id for n in delivered}) == 2
    assert len(alerts.episodes(delivered)) == 1


def test_sns_refusing_publishes_hands_the_batch_back_and_the_episode_is_notified_after(
        pipeline: PipelineFactory) -> None:
    """SNS answers 503 to the first three publishes (through a FaultProxy the function's
    SNS_ENDPOINT points at): the batch is handed back and retried, nothing is notified
    meanwhile, and once SNS answers the episode is notified once and every sample indexed."""
    pipe = pipeline(shards=1, options=EventSourceOptions(batch_size=50))
    sns = FaultProxy(str(pipe.settings.resolved_aws_endpoint_url))
    sns.start()
    try:
        sns.set_fault(Respond(503, b"<ErrorResponse><Error><Code>ServiceUnavailable</Code>"
                              b"</Error></ErrorResponse>", content_type="text/xml", times=3))
        lam = aws_client(pipe.settings, "lambda")
        variables = lam.get_function_configuration(
            FunctionName=pipe.settings.function_name)["Environment"]["Variables"]
        lam.update_function_configuration(
            FunctionName=pipe.settings.function_name,
            Environment={"Variables": {**variables, "SNS_ENDPOINT": sns.url}})
        wait_until(lambda: "redeployed" in pipe.poller.log_path.read_text(), timeout_s=60,
                   what="the function redeployed with the proxied SNS endpoint")
        records = recorded("e2e-s", EPISODE)
        pipe.put_raw(records, "e2e-s")
        wait_until(lambda: sns.counters().responded >= 3, timeout_s=90,
                   what="three publishes refused")
        wait_notified(pipe, 1)
        pipe.wait_indexed(len(records))
        delivered = notifications(pipe)
        assert len(delivered) == 1, [n.episode_id for n in delivered]
        assert sns.counters().by_status.get(503) == 3
        assert pipe.poller.discarded(pipe.mapping_uuid) == []  # retried, never given up
    finally:
        sns.stop()


# --- the state a warm worker keeps -----------------------------------------------------------
def samples_of(payloads: list[bytes]) -> list[tuple[str, int | None]]:
    """(timestamp, heart_rate) of recorded samples, as the alerter applies them."""
    return [(record["timestamp"], record["heart_rate"]) for record in map(decode_record, payloads)]


def rules_of(pipe: Pipeline, athlete: str) -> EpisodeRules:
    """The athlete's episode rules, as the deployed function reads them."""
    variables = aws_client(pipe.settings, "lambda").get_function_configuration(
        FunctionName=pipe.settings.function_name)["Environment"]["Variables"]
    return AlertRules.from_env(variables).for_athlete(athlete)


def stored_state(pipe: Pipeline, athlete: str) -> dict[str, Any] | None:
    """The athlete's episode state document, read straight from the node (a realtime get)."""
    index = pipe.settings.alert_state_index
    if not pipe.search.exists(index=index, id=athlete):
        return None
    return dict(pipe.search.get(index=index, id=athlete)["_source"]["state"])


def wait_handled(pipe: Pipeline, count: int) -> list[dict[str, Any]]:
    """The function's batch summaries once it handled ``count`` records in all (each summary is
    logged after the batch's state write)."""
    return wait_until(lambda: sum(b["records"] for b in pipe.poller.batches()) >= count
                      and pipe.poller.batches(), timeout_s=30, what=f"{count} records handled")


def state_mgets(pipe: Pipeline) -> None:
    """Count the function's reads of the episode state (``counters().delayed``)."""
    pipe.opensearch_proxy.set_fault(
        Delay(0, match=path_matches(rf"/{pipe.settings.alert_state_index}/_mget")))


#: What a worker handles and keeps before its state is changed elsewhere: no run above.
KEPT_BPMS = [140] * 5


@dataclass(frozen=True)
class ChangedElsewhere:
    """A state this worker kept, then another writer moved on with samples it never sees."""

    start: datetime
    rules: EpisodeRules
    kept: EpisodeState
    elsewhere: list[tuple[str, int | None]]
    outside: EpisodeState  # the state as stored now
    opened: list[Episode]  # what the other writer opened


def kept_then_changed_elsewhere(pipe: Pipeline, athlete: str,
                                elsewhere_bpms: list[int]) -> ChangedElsewhere:
    """The worker handles ``KEPT_BPMS`` and keeps the state it stored; then the state
    is re-written from outside as ``elsewhere_bpms`` (at 1 Hz from 5 s) would advance it."""
    state_mgets(pipe)
    start = datetime.now(UTC) - timedelta(minutes=20)
    rules = rules_of(pipe, athlete)
    first = recorded(athlete, KEPT_BPMS, start=start)
    pipe.put_raw(first, athlete)
    wait_handled(pipe, len(first))
    kept, _ = advance(None, athlete, samples_of(first), rules)
    assert stored_state(pipe, athlete) == kept
    elsewhere = samples_of(recorded(athlete, elsewhere_bpms, session="s2",
                                    start=start + timedelta(seconds=5)))
    outside, opened = advance(kept, athlete, elsewhere, rules)
    pipe.search.index(index=pipe.settings.alert_state_index, id=athlete, body={"state": outside})
    return ChangedElsewhere(start, rules, kept, elsewhere, outside, opened)


def test_the_next_batch_of_a_container_does_not_read_the_state_back(
        pipeline: PipelineFactory) -> None:
    """An episode that starts in one batch and opens two batches later, on one warm worker: the
    second batch writes on top of the state the first stored without an ``_mget``; the third,
    which opens the episode, reads the state first (an episode is announced only from the state
    as stored), and the episode keeps the start the first batch saw."""
    pipe = pipeline(shards=1, opensearch_proxy=FaultProxy,
                    options=EventSourceOptions(batch_size=50))
    state_mgets(pipe)
    start = datetime.now(UTC) - timedelta(minutes=20)
    first = recorded("e2e-w", EPISODE[:4], start=start)
    second = recorded("e2e-w", EPISODE[4:5], session="s2", start=start + timedelta(seconds=4))
    third = recorded("e2e-w", EPISODE[5:], session="s3", start=start + timedelta(seconds=5))
    rules = rules_of(pipe, "e2e-w")
    pipe.put_raw(first, "e2e-w")
    wait_handled(pipe, len(first))
    kept, opened = advance(None, "e2e-w", samples_of(first), rules)
    assert (stored_state(pipe, "e2e-w"), opened) == (kept, [])  # a run above, not open yet
    assert pipe.opensearch_proxy.counters().delayed == 1  # read once: the worker was cold

    pipe.put_raw(second, "e2e-w")
    wait_handled(pipe, len(first) + len(second))
    kept, opened = advance(kept, "e2e-w", samples_of(second), rules)
    assert (stored_state(pipe, "e2e-w"), opened) == (kept, [])  # still not open
    assert kept["last"] == samples_of(second)[-1][0]
    assert pipe.opensearch_proxy.counters().delayed == 1, "the second batch read the state back"

    pipe.put_raw(third, "e2e-w")
    batches = wait_handled(pipe, len(first) + len(second) + len(third))
    final, [episode] = advance(kept, "e2e-w", samples_of(third), rules)
    assert stored_state(pipe, "e2e-w") == final
    assert pipe.opensearch_proxy.counters().delayed == 2  # read before announcing the episode
    assert (pipe.poller.mapping() or {}).get("worker_restarts") == 0  # one warm worker
    assert [b["failed"] for b in batches] == [0] * len(batches)
    wait_notified(pipe, 1)
    assert [n.episode_id for n in notifications(pipe)] == [episode.id]
    assert episode.start == samples_of(first)[0][0]  # the first batch's run, kept


def test_a_state_changed_behind_the_workers_back_is_read_again_not_overwritten(
        pipeline: PipelineFactory) -> None:
    """Another container moves the athlete's state on after this worker stored (and kept) it:
    the worker's next write fails the version check, it reads the state again and advances
    that one, in the same invocation (nothing handed back)."""
    pipe = pipeline(shards=1, opensearch_proxy=FaultProxy,
                    options=EventSourceOptions(batch_size=50))
    # Elsewhere, three samples above the threshold this worker never sees: a run starts at 5 s.
    changed = kept_then_changed_elsewhere(pipe, "e2e-o", [170, 171, 172])
    start, rules, kept, elsewhere, outside = (changed.start, changed.rules, changed.kept,
                                              changed.elsewhere, changed.outside)
    # This worker's next samples: the run goes on (4 s above: no episode yet, whichever state).
    second = recorded("e2e-o", [173, 174], session="s3", start=start + timedelta(seconds=8))
    pipe.put_raw(second, "e2e-o")
    batches = wait_handled(pipe, len(KEPT_BPMS) + len(second))

    final, opened = advance(outside, "e2e-o", samples_of(second), rules)
    blind, _ = advance(kept, "e2e-o", samples_of(second), rules)
    assert (final["above_since"], blind["above_since"]) == (elsewhere[0][0],
                                                            samples_of(second)[0][0])
    assert stored_state(pipe, "e2e-o") == final  # not `blind`, not `outside`
    assert pipe.opensearch_proxy.counters().delayed == 2  # read again after the conflict
    assert [b["failed"] for b in batches] == [0] * len(batches)
    assert opened == [] and notifications(pipe) == []
    pipe.assert_nothing_given_up()


def test_an_episode_opened_elsewhere_is_not_notified_again_from_a_stale_kept_state(
        pipeline: PipelineFactory) -> None:
    """Another container opened (and notified) an episode after this worker stored the
    athlete's state; this worker's next samples are the same episode going on: it notifies
    nothing."""
    pipe = pipeline(shards=1, opensearch_proxy=FaultProxy,
                    options=EventSourceOptions(batch_size=50))
    changed = kept_then_changed_elsewhere(pipe, "e2e-d", EPISODE[:9])
    start, rules, outside, [open_episode] = (changed.start, changed.rules, changed.outside,
                                             changed.opened)
    second = recorded("e2e-d", [176, 178, 177, 176, 175, 174, 173, 172], session="s3",
                      start=start + timedelta(seconds=14))
    pipe.put_raw(second, "e2e-d")
    batches = wait_handled(pipe, len(KEPT_BPMS) + len(second))

    final, opened = advance(outside, "e2e-d", samples_of(second), rules)
    assert opened == [] and final["episode"] == {**outside["episode"], "peak_bpm": 178}
    assert stored_state(pipe, "e2e-d") == final
    assert [b["failed"] for b in batches] == [0] * len(batches)
    # The worker's publish precedes its state write, so it would be in the queue by now.
    assert [n.episode_id for n in notifications(pipe)] == [], (
        f"notified again while {open_episode.id} is open")
