"""`hrnb local up|down|status` on a private stack (own ports and state directory), so these
tests can stop what they start without touching the shared one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support import free_port

from hrnb.config import Settings
from hrnb.local import launcher

pytestmark = pytest.mark.stack


def _hrnb(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hrnb", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def private_env(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> dict[str, str]:
    """Environment for a second stack: fresh ports and state, the shared download cache."""
    state = tmp_path_factory.mktemp("private-stack")
    env = dict(os.environ)
    env.update(
        HRNB_STATE_DIR=str(state),
        HRNB_CACHE_DIR=str(settings.cache_dir),
        HRNB_AWS_PORT=str(free_port()),
        HRNB_OPENSEARCH_PORT=str(free_port()),
    )
    return env


@pytest.fixture(scope="module")
def private_stack(private_env: dict[str, str]) -> Iterator[Settings]:
    settings = Settings.from_env(private_env)
    first = _hrnb(private_env, "local", "up", "--no-poller", "--json")
    assert first.returncode == 0, first.stderr
    yield settings
    _hrnb(private_env, "local", "down", "--wipe")


def test_up_reports_endpoints_and_a_healthy_2_19_node(private_stack: Settings,
                                                      private_env: dict[str, str]) -> None:
    result = _hrnb(private_env, "local", "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["healthy"] is True
    assert report["opensearch_version"].startswith("2.19.")
    assert report["aws_endpoint_url"] == private_stack.resolved_aws_endpoint_url
    assert report["opensearch_url"] == private_stack.resolved_opensearch_url
    assert report["pids"]["aws"] and report["pids"]["opensearch"]
    for service in ("aws", "opensearch"):
        assert Path(report["logs"][service]).is_file()


def test_up_twice_is_a_no_op(private_stack: Settings, private_env: dict[str, str]) -> None:
    before = launcher.status(private_stack)
    again = _hrnb(private_env, "local", "up", "--no-poller", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["started"] == []
    assert "already running" in again.stderr
    assert report["pids"]["aws"] == before.service("aws").pid
    assert report["pids"]["opensearch"] == before.service("opensearch").pid


def test_down_leaves_no_process_behind(private_stack: Settings,
                                       private_env: dict[str, str]) -> None:
    before = launcher.status(private_stack)
    pids = [before.service(name).pid for name in ("aws", "opensearch")]
    children = [c.pid for pid in pids for c in psutil.Process(pid).children(recursive=True)]
    result = _hrnb(private_env, "local", "down")
    assert result.returncode == 0, result.stderr
    assert "aws" in result.stdout and "opensearch" in result.stdout
    assert not [pid for pid in pids + children if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    after = launcher.status(private_stack)
    assert not after.healthy
    # Start it again for any later test of this module.
    assert _hrnb(private_env, "local", "up", "--no-poller").returncode == 0


def test_busy_port_gives_a_clear_error(private_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = dict(private_env, HRNB_AWS_PORT=str(port), HRNB_STATE_DIR=str(tmp_path))
        result = _hrnb(env, "local", "up", "--no-poller")
    assert result.returncode == 1
    assert f"port {port} is busy" in result.stderr
    assert "HRNB_AWS_PORT" in result.stderr


def test_missing_java_names_it_and_the_install_command(private_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {k: v for k, v in private_env.items() if k not in ("JAVA_HOME", "OPENSEARCH_JAVA_HOME")}
    env.update(
        PATH=str(empty_bin),
        JAVA_HOME=str(tmp_path / "no-such-jdk"),
        HRNB_STATE_DIR=str(tmp_path / "state"),
        HRNB_AWS_PORT=str(free_port()),
        HRNB_OPENSEARCH_PORT=str(free_port()),
    )
    result = _hrnb(env, "local", "up", "--no-poller")
    assert result.returncode == 1
    assert "needs Java 17" in result.stderr
    assert "apt-get install openjdk-17" in result.stderr
    # The emulator it had started is stopped again: nothing half-started is left.
    assert not launcher.status(Settings.from_env(env)).service("aws").healthy


@pytest.mark.parametrize("pid_file", ["bare pid", "another start time"])
def test_a_stale_pid_file_names_nobody_hrnb_signals(tmp_path: Path, pid_file: str) -> None:
    """Issue #12 item 5: a pid file that outlived its process (a reboot) named someone else's
    process; ``local status`` called it healthy and ``local down`` signalled its group."""
    someone = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        own = Settings(state_dir=tmp_path, aws_port=free_port(), opensearch_port=free_port())
        path = tmp_path / "pids" / "poller.pid"
        path.parent.mkdir()
        if pid_file == "bare pid":  # written before pid files carried an identity
            path.write_text(f"{someone.pid}\n")
        else:
            started = psutil.Process(someone.pid).create_time() - 3600
            path.write_text(json.dumps({"pid": someone.pid, "create_time": started,
                                        "command": ["python", "-m", "hrnb.local.poller"]}))
        poller = launcher.status(own).service(launcher.POLLER)
        assert not poller.healthy and poller.pid is None
        assert launcher.down(own, only=(launcher.POLLER,)).stopped == ()
        assert someone.poll() is None, "hrnb signalled a process it did not start"
    finally:
        someone.kill()
        someone.wait()
