"""A workbench of its own for tests that run the notebooks: a unique prefix and index, a state
directory (spool, code store, checkpoints), the Lambda built from this checkout, and a local
event source mapping poller for this prefix's function. The notebooks' kernels find the state
directory through ``HRNB_STATE_DIR``, as a user's would.

Shared by ``tests/notebooks`` and ``tests/browser``.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hrnb import provision
from hrnb.config import Settings
from hrnb.local.launcher import stop_process_group
from hrnb.notebooks import notebook_path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Workbench:
    """Settings and notebook parameters of one test run's own pipeline."""

    settings: Settings
    build_dir: Path
    poller_log: Path

    @property
    def parameters(self) -> dict[str, Any]:
        """What every notebook needs to find this run's resources."""
        return {"target": "local", "prefix": self.settings.prefix,
                "index_name": self.settings.index_name}

    def setup_parameters(self, **more: Any) -> dict[str, Any]:
        return {**self.parameters, "build_dir": str(self.build_dir), **more}


@contextmanager
def provisioned_workbench(settings: Settings, directory: Path,
                          build_dir: Path) -> Iterator[Workbench]:
    """A fresh prefix with its own poller; whatever the notebooks create is torn down after.
    ``build_dir`` holds the Lambda build (the session's ``lambda_build_dir`` fixture)."""
    prefix = f"nb{uuid.uuid4().hex[:8]}"
    own = settings.with_overrides(prefix=prefix, index_name=f"{prefix}-hr",
                                  dlq_index_name=f"{prefix}-hr-dlq",
                                  state_dir=directory / "state")
    poller_log = directory / "esm.log"
    with pytest.MonkeyPatch.context() as patch, poller_log.open("ab") as log:
        patch.setenv("HRNB_STATE_DIR", str(own.state_dir))
        # ... while the stack (its CA and master user) stays where it runs.
        patch.setenv("HRNB_STACK_STATE_DIR", str(own.local_stack_dir))
        poller = subprocess.Popen(
            [sys.executable, "-m", "hrnb.local.poller", "--state-dir", str(own.state_dir),
             "--aws-endpoint-url", str(own.resolved_aws_endpoint_url), "--region", own.region,
             "--function", own.function_name],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
        )
        try:
            yield Workbench(own, build_dir, poller_log)
        finally:
            stop_group(poller)
            if provision.remaining_resources(own):
                provision.teardown(own)


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Stop the process group this test started (children included)."""
    stop_process_group(process.pid, timeout_s)
    process.wait()


def source_notebook(name: str) -> Path:
    return notebook_path(name, REPO_ROOT / "notebooks")


def plotly_array(value: Any) -> list[Any]:
    """A trace array from a figure's JSON: plotly writes numeric arrays as base64 typed
    arrays (``{"dtype": "i2", "bdata": ...}``)."""
    if isinstance(value, Mapping) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)
