"""JupyterLab from this venv on a free loopback port, with a token, and Debian's chromium driven
by Playwright: what a user does in the browser, for tests.

Nothing goes beyond loopback: update checks, news and the PyPI extension manager are off, and
Chromium runs with background networking disabled. Playwright never downloads a browser here:
it launches ``/usr/bin/chromium`` by path.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from notebook_workbench import stop_group
from support import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: JupyterLab user settings: no news prompt, no update check (no network, no toast over the page).
_QUIET_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
}


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab server."""

    url: str
    token: str
    root: Path
    log: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"


@contextmanager
def jupyterlab(root: Path, workdir: Path, env: Mapping[str, str] | None = None,
               timeout_s: float = 90.0) -> Iterator[Lab]:
    """JupyterLab serving ``root``; its kernels inherit ``env`` on top of this process's."""
    settings_dir = workdir / "lab-settings"
    for relative, values in _QUIET_SETTINGS.items():
        path = settings_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    log = workdir / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    environment = {**os.environ, **(env or {}),
                   "JUPYTERLAB_SETTINGS_DIR": str(settings_dir),
                   "JUPYTERLAB_WORKSPACES_DIR": str(workdir / "lab-workspaces")}
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   env=environment, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({process.returncode}); see {log}")
            try:
                if requests.get(f"{url}/api/status", params={"token": token},
                                timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer within {timeout_s:.0f} s; "
                                   f"see {log}")
            time.sleep(0.5)  # polling interval until JupyterLab answers
        yield Lab(url, token, root, log)
    finally:
        stop_group(process)
