"""Delivered alerts: subscriptions validated before AWS is asked, the log that keeps what was
shown, one line per episode; the topic -> queue delivery on the running emulator."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hrnb import alerts, cli, provision
from hrnb.clients import aws_client
from hrnb.config import Settings
from hrnb.errors import ConfigError
from hrnb.live.dashboard import notified_html
from hrnb.wire.episodes import Episode


@pytest.mark.parametrize(("protocol", "endpoint", "named"), [
    ("sms", "0044 20 7946 0000", "E.164"),
    ("sms", "+0123456789", "E.164"),
    ("https", "http://example.org/hook", "https://"),
    ("email", "coach", "email address"),
    ("fax", "+14155550123", "email, sms or https"),
])
def test_subscriptions_are_checked_before_aws_is_asked(protocol: str, endpoint: str,
                                                       named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        provision.check_endpoint(protocol, endpoint)


def test_a_bad_number_is_one_line_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["alerts", "subscribe", "--sms", "12345"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hrnb: error: sms subscription: '12345'")
    assert "Traceback" not in err


def _envelope(episode: Episode, message_id: str) -> dict[str, object]:
    attributes = {"episode_id": episode.id, "athlete_id": episode.athlete_id,
                  "start": episode.start, "peak_bpm": str(episode.peak_bpm),
                  "threshold_bpm": str(episode.threshold_bpm)}
    return {"Type": "Notification", "MessageId": message_id, "Message": episode.message(),
            "MessageAttributes": {name: {"Type": "String", "Value": value}
                                  for name, value in attributes.items()}}


EPISODE = Episode(id="a1@2026-12-01T14:03:12.000Z", athlete_id="a1",
                  start="2026-12-01T14:03:12.000Z", peak_bpm=172, threshold_bpm=160)


def test_listing_dedupes_by_episode_and_by_message() -> None:
    first = alerts.Notification.from_envelope(_envelope(EPISODE, "m1"))
    resent = alerts.Notification.from_envelope(_envelope(EPISODE, "m2"))
    assert (first.peak_bpm, first.threshold_bpm, first.start) == (172, 160, EPISODE.start)
    assert alerts.episodes([first, resent, first]) == [first]
    with pytest.raises(ConfigError, match="not an hrnb episode"):
        alerts.Notification.from_envelope({"Message": "hello"})


def test_the_notified_panel_shows_each_episode_message() -> None:
    first = alerts.Notification.from_envelope(_envelope(EPISODE, "m1"))
    assert "no episode" in notified_html([])
    panel = notified_html([first])
    assert "1 episode(s)" in panel and "above 160 bpm since 14:03:12 UTC" in panel


# --- on the running emulator ------------------------------------------------------------------
@pytest.fixture
def alerting(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """This test's own topic and log queue, as set-up makes them; removed afterwards."""
    own = settings.with_overrides(prefix=f"al{uuid.uuid4().hex[:6]}", state_dir=tmp_path)
    clients = provision.AwsClients(own)
    steps = provision.ensure_alerts(own, clients)
    assert [step.action for step in steps] == ["created"] * 3
    assert [step.action for step in provision.ensure_alerts(own, clients)] == ["unchanged"] * 3
    yield own
    from hrnb.provision.alerts import _teardown_alerts

    gone = _teardown_alerts(own, clients, apply=True)
    assert {step.step for step in gone if step.action == "deleted"} == {
        "alert topic", "alert subscription", "alert log queue"}


@pytest.mark.stack
def test_published_episodes_reach_the_queue_and_the_log_keeps_what_was_listed(
        alerting: Settings, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    sns = aws_client(alerting, "sns")
    topic = provision.AwsClients(alerting).arns.alert_topic
    envelope = _envelope(EPISODE, "unused")
    for _ in range(2):  # the same episode published twice (the crash window's side)
        sns.publish(TopicArn=topic, Message=EPISODE.message(), MessageAttributes={
            name: {"DataType": "String", "StringValue": value["Value"]}  # type: ignore[index]
            for name, value in envelope["MessageAttributes"].items()})  # type: ignore[attr-defined]
    assert alerts.drain(alerting) == 2
    assert alerts.drain(alerting) == 0  # moved out of the queue, kept in the log
    logged = alerts.logged(alerting)
    assert len(logged) == 2 and len({n.message_id for n in logged}) == 2
    lines = alerts.log_path(alerting).read_text().splitlines()
    assert [json.loads(line)["episode_id"] for line in lines] == [EPISODE.id] * 2

    monkeypatch.setenv("HRNB_PREFIX", alerting.prefix)
    monkeypatch.setenv("HRNB_STATE_DIR", str(alerting.state_dir))
    assert cli.main(["alerts"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].split() == ["a1", EPISODE.start, "172", "160", EPISODE.id]
