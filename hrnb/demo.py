"""`make demo` / `hrnb demo`: the main job on the embedded local stack with a simulated athlete.

It runs what a user would: the local stack up, the setup notebook (provisioning on the stack),
the live-session notebook headless for about a minute, then the query notebook; the executed
notebooks, an HTML export and a PNG of the chart, and the session's summary land in ``out/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrnb.boundary import file_errors
from hrnb.config import Settings
from hrnb.errors import ConfigError, HrnbError
from hrnb.live.session import SUMMARY_FILE
from hrnb.local import launcher
from hrnb.notebooks import notebook_path, run_notebook

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoResult:
    """Where everything went, and the live session's summary as the notebook wrote it."""

    out_dir: Path
    notebooks: tuple[Path, ...]
    exports: tuple[Path, ...]
    summary: dict[str, Any]


def run_demo(
    settings: Settings,
    *,
    build_dir: Path,
    out_dir: Path,
    duration_s: float = 60.0,
    athletes: int = 1,
    progress: Progress = lambda message: None,
) -> DemoResult:
    """Stack up, set-up, live session, queries; raise HrnbError naming the step that failed."""
    if not settings.is_local:
        raise ConfigError("the demo runs on the local stack only (HRNB_TARGET=local)",
                          setting="target")
    if not 5 <= duration_s <= 3600:
        raise ConfigError(f"--duration must be 5..3600 s, got {duration_s:g}", setting="duration")
    if not 1 <= athletes <= 50:
        raise ConfigError(f"--athletes must be 1..50, got {athletes}", setting="athletes")
    if not (build_dir / "manifest.json").exists():
        raise HrnbError(f"no Lambda build in {build_dir}: run 'make lambda' first")
    out_dir = out_dir.resolve()
    with file_errors("create the output directory", out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    common = {"target": "local", "prefix": settings.prefix, "index_name": settings.index_name}

    progress("1/4 local stack")
    stack = launcher.up(settings, progress=progress)
    if stack.service(launcher.POLLER).pid is None:
        raise HrnbError("the local event source mapping poller is not running: "
                        "see 'hrnb local status'")
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("2/4 set-up notebook: provisioning on the local stack", "setup",
         {**common, "build_dir": str(build_dir.resolve())}),
        (f"3/4 live-session notebook: {athletes} simulated athlete(s) for {duration_s:g} s",
         "live", {**common, "source": "simulated", "athletes": athletes,
                  "duration_s": duration_s, "out_dir": str(out_dir)}),
        ("4/4 query notebook", "query", dict(common)),
    ]
    executed = []
    for message, name, parameters in steps:
        progress(message)
        source = notebook_path(name)
        executed.append(run_notebook(source, out_dir / source.name, parameters,
                                     timeout_s=duration_s + 600))
    with file_errors("read the session summary", out_dir / SUMMARY_FILE):
        summary = json.loads((out_dir / SUMMARY_FILE).read_text())
    exports = tuple(sorted(p for p in out_dir.iterdir() if p.suffix in (".html", ".png")))
    return DemoResult(out_dir=out_dir, notebooks=tuple(executed), exports=exports,
                      summary=summary)
