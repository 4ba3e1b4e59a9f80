"""A private emulator (``python -m hrnb.local.emulator``) on a free port, for tests that must
not share the stack: IAM enforcement on, or a strict behaviour switched off."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from support import free_port


@contextlib.contextmanager
def private_emulator(cache_dir: Path, env: Mapping[str, str] | None = None,
                     args: Sequence[str] = ()) -> Iterator[str]:
    """The emulator's URL while the ``with`` block runs; ``env`` adds variables such as
    ``INITIAL_NO_AUTH_ACTION_COUNT`` or ``HRNB_STRICT_*``, ``args`` command-line options
    (a SigV4 front of its own, say)."""
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    environment.update(DOCKER_HOST="none://", HRNB_CACHE_DIR=str(cache_dir))
    environment.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "hrnb.local.emulator", "-H", "127.0.0.1", "-p", str(port), *args],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)  # noqa: S310 (loopback)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the private emulator did not start") from None
                time.sleep(0.1)  # polling interval until the emulator answers
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
