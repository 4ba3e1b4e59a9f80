"""The command line: bad flags and values get one clear line naming them, and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _hrnb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hrnb", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_version_and_help() -> None:
    assert _hrnb("--version").stdout.startswith("hrnb ")
    result = _hrnb("--help")
    for command in ("local", "scan", "stream", "query"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (("--target", "prod", "local", "status"), {}, "invalid choice: 'prod'"),
        (("local", "status"), {"HRNB_OPENSEARCH_PORT": "ninety"}, "HRNB_OPENSEARCH_PORT='ninety'"),
        (("local", "down", "--only", "kafka"), {}, "--only: unknown service(s) kafka"),
        (("scan", "--timeout", "-1"), {}, "--timeout must be positive"),
        (("query", "recent", "--minutes", "0"), {}, "--minutes must be positive"),
        (("query", "zones", "--resting-hr", "50"), {}, "--resting-hr needs --max-hr"),
        (("--region", "moon-1", "local", "status"), {}, "region 'moon-1'"),
        (("stream", "--athletes", "0"), {}, "--athletes must be a whole number"),
        (("stream", "--speed", "fast"), {}, "--speed: expected a number or 'max'"),
        (("stream", "--source", "replay:/no/such.fit"), {}, "no such file /no/such.fit"),
        (("stream", "--source", "carrier-pigeon"), {}, "--source"),
        # Issue #12 item 6: a trailing newline passed every "^...$" check.
        (("stream", "--athlete", "nl1\n"), {}, "--athlete-id 'nl1\\n'"),
        (("--prefix", "hrnb\n", "local", "status"), {}, "prefix 'hrnb\\n'"),
        (("--region", "eu-west-1\n", "local", "status"), {}, "region 'eu-west-1\\n'"),
        (("local", "status"), {"HRNB_INDEX_NAME": "hr\n"}, "index_name 'hr\\n'"),
        (("query", "last-per-interval", "--interval", "5s\n"), {}, "5s\\n"),
    ],
)
def test_bad_input_is_named(args: tuple[str, ...], env: dict[str, str], needle: str) -> None:
    result = _hrnb(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.path.exists("/run/dbus/system_bus_socket"),
                    reason="this machine has a system D-Bus; the test needs one without BlueZ")
def test_scan_without_bluetooth_suggests_the_simulated_source() -> None:
    result = _hrnb("scan", "--timeout", "0.5")
    assert result.returncode == 1
    assert "No Bluetooth stack" in result.stderr
    assert "--source simulated" in result.stderr
