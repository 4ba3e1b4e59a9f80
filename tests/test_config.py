"""Settings: validated when built, HRNB_* overrides, and the local target can never reach AWS."""

from __future__ import annotations

from pathlib import Path

import pytest

from hrnb.clients import aws_client
from hrnb.config import LOCAL_ACCESS_KEY_ID, Settings
from hrnb.errors import ConfigError


def test_defaults_derive_every_name_from_the_prefix() -> None:
    settings = Settings.from_env({}, prefix="team7")
    assert settings.target == "local"
    assert settings.region == "ap-south-1"
    names = [settings.stream_name, settings.role_name, settings.function_name,
             settings.domain_name, settings.layer_name, settings.index_name,
             settings.dlq_index_name]
    assert all(name.startswith("team7-") for name in names)
    assert len(set(names)) == len(names)


def test_index_names_follow_the_prefix_unless_given() -> None:
    """Issue #12 item 1: two prefixes never share an index unless told to."""
    hrnb = Settings.from_env({})
    other = hrnb.with_overrides(prefix="other")
    assert (hrnb.index_name, hrnb.dlq_index_name) == ("hrnb-heart-rate", "hrnb-heart-rate-dlq")
    assert (other.index_name, other.dlq_index_name) == ("other-heart-rate",
                                                        "other-heart-rate-dlq")
    named = Settings.from_env({"HRNB_INDEX_NAME": "heart_rate"}).with_overrides(prefix="other")
    assert named.index_name == "heart_rate" and named.dlq_index_name == "other-heart-rate-dlq"


@pytest.mark.parametrize("variable", ["HRNB_PREFIX", "HRNB_REGION", "HRNB_INDEX_NAME",
                                      "HRNB_DLQ_INDEX_NAME"])
def test_a_trailing_newline_is_refused(variable: str) -> None:
    """Issue #12 item 6: ``$`` matched before a trailing newline."""
    good = {"HRNB_PREFIX": "nl", "HRNB_REGION": "eu-west-1", "HRNB_INDEX_NAME": "hr",
            "HRNB_DLQ_INDEX_NAME": "hr-dlq"}[variable]
    Settings.from_env({variable: good})
    with pytest.raises(ConfigError):
        Settings.from_env({variable: good + "\n"})


def test_environment_overrides_are_typed() -> None:
    settings = Settings.from_env(
        {"HRNB_REGION": "eu-west-1", "HRNB_OPENSEARCH_PORT": "9333", "HRNB_STATE_DIR": "/tmp/x"}
    )
    assert settings.region == "eu-west-1"
    assert settings.opensearch_port == 9333
    assert settings.resolved_opensearch_url == "https://127.0.0.1:9333"  # the SigV4 front
    assert settings.resolved_opensearch_node_port == 9334
    assert settings.state_dir == Path("/tmp/x")
    assert settings.local_ca_path == Path("/tmp/x/tls/ca.pem")
    plain = Settings.from_env({"HRNB_OPENSEARCH_PORT": "9333", "HRNB_OPENSEARCH_SECURITY": "off"})
    assert plain.opensearch_security is False
    assert plain.resolved_opensearch_url == "http://127.0.0.1:9333"
    assert plain.resolved_opensearch_node_port == 9333
    readers = Settings.from_env({"HRNB_READER_PRINCIPALS": " arn:aws:iam::123456789012:root, "
                                 "arn:aws:iam::123456789012:role/analyst"})
    assert readers.reader_principal_arns == ("arn:aws:iam::123456789012:root",
                                             "arn:aws:iam::123456789012:role/analyst")


def test_a_copy_with_its_own_state_dir_still_talks_to_the_running_stack() -> None:
    settings = Settings.from_env({"HRNB_STATE_DIR": "/tmp/stack"})
    private = settings.with_overrides(state_dir=Path("/tmp/private"))
    assert private.local_ca_path == Path("/tmp/stack/tls/ca.pem")


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        ({"HRNB_TARGET": "prod"}, "target"),
        ({"HRNB_REGION": "mars-1"}, "region"),
        ({"HRNB_PREFIX": "Bad_Prefix"}, "prefix"),
        ({"HRNB_OPENSEARCH_PORT": "ninety"}, "opensearch_port"),
        ({"HRNB_AWS_PORT": "70000"}, "aws_port"),
        ({"HRNB_HR_ALERT_THRESHOLD_BPM": "400"}, "hr_alert_threshold_bpm"),
        ({"HRNB_INDEX_NAME": "Heart Rate"}, "index_name"),
        ({"HRNB_OPENSEARCH_SECURITY": "maybe"}, "opensearch_security"),
        ({"HRNB_READER_PRINCIPALS": "arn:aws:iam::123456789012:root,alice"}, "reader_principals"),
        ({"HRNB_ALERT_THRESHOLDS": "athlete-a=160,athlete-b"}, "alert_thresholds"),
        ({"HRNB_ALERT_THRESHOLDS": "athlete-a=999"}, "alert_thresholds"),
        ({"HRNB_ALERT_SUSTAIN_S": "soon"}, "alert_sustain_s"),
        ({"HRNB_ALERT_REARM_S": "-3"}, "alert_rearm_s"),
        ({"HRNB_ALERT_REARM_MARGIN_BPM": "90"}, "alert_rearm_margin_bpm"),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    assert caught.value.setting == setting
    assert setting.split("_")[0] in str(caught.value).lower()


def test_alert_settings_become_the_functions_episode_rules() -> None:
    settings = Settings.from_env({"HRNB_ALERT_THRESHOLDS": "athlete-a=160, athlete-b=175",
                                  "HRNB_ALERT_SUSTAIN_S": "3",
                                  "HRNB_HR_ALERT_THRESHOLD_BPM": "155"})
    rules = settings.alert_rules
    assert rules.for_athlete("athlete-b").threshold_bpm == 175
    assert rules.for_athlete("someone").threshold_bpm == 155
    assert rules.for_athlete("athlete-a").sustain_s == 3.0
    assert type(rules).from_env(rules.environment()) == rules  # what the function reads back


def test_local_target_refuses_remote_endpoints() -> None:
    with pytest.raises(ConfigError, match="only talks to this machine"):
        Settings(target="local", aws_endpoint_url="https://kinesis.ap-south-1.amazonaws.com")
    with pytest.raises(ConfigError, match="only talks to this machine"):
        Settings(target="local", opensearch_url="https://search-x.ap-south-1.es.amazonaws.com")


def test_aws_target_refuses_loopback_endpoints() -> None:
    with pytest.raises(ConfigError, match="points at this machine"):
        Settings(target="aws", aws_endpoint_url="http://127.0.0.1:5000")


def test_local_clients_use_the_emulator_and_dummy_credentials() -> None:
    settings = Settings.from_env({}, aws_port=5999)
    client = aws_client(settings, "kinesis")
    assert client.meta.endpoint_url == "http://127.0.0.1:5999"
    assert client._request_signer._credentials.access_key == LOCAL_ACCESS_KEY_ID
    assert client.meta.region_name == "ap-south-1"
