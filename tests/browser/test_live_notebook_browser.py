"""The live-session notebook in JupyterLab, in Debian's chromium: run it with a simulated
athlete, watch the chart's line grow while it streams and the indexed panel catch up, and keep
screenshots of both moments.

Needs /usr/bin/chromium (Debian's ``chromium`` package, which ``make test`` installs when run
as root); Playwright drives it by path and never downloads a browser.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from lab_server import CHROMIUM, CHROMIUM_ARGS, Lab, jupyterlab
from notebook_workbench import Workbench, provisioned_workbench, source_notebook
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from hrnb.config import Settings
from hrnb.live.session import SUMMARY_FILE
from hrnb.notebooks import run_notebook

pytestmark = [pytest.mark.browser, pytest.mark.stack, pytest.mark.timeout(300)]

LIVE_SECONDS = 30
SEED = 1  # a session without lost skin contact: the line grows at every sample
ATHLETE = "sim-001"
NOTEBOOK = "02_live_session.ipynb"
#: Points drawn per trace of every Plotly figure on the page (gaps are None, not points).
TRACE_POINTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(
    gd => (gd.data || []).map(t => [t.name, (t.y || []).filter(v => v != null).length]))"""
PANEL_ROW = re.compile(r"(\S+): (\d+) indexed of (\d+) seen")


@pytest.fixture(scope="module")
def chromium() -> Path:
    if CHROMIUM.is_file():
        return CHROMIUM
    if os.geteuid() == 0:
        pytest.fail(f"{CHROMIUM} is missing; as root the browser test must run: "
                    "'apt-get install chromium' (make test does it)")
    pytest.skip(f"needs Debian's chromium at {CHROMIUM}: run 'sudo apt-get install chromium' "
                "or 'make test' as root, which installs it")


@pytest.fixture(scope="module")
def bench(chromium: Path, settings: Settings, lambda_build_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    """A workbench set up by the set-up notebook, as a user would before the live one."""
    directory = tmp_path_factory.mktemp("browser-workbench")
    with provisioned_workbench(settings, directory, lambda_build_dir) as workbench:
        run_notebook(source_notebook("setup"), directory / "01_setup.ipynb",
                     workbench.setup_parameters(), timeout_s=120)
        yield workbench


def line_points(page: Any) -> int:
    """Points on the athlete's heart-rate line as plotly.js holds them in the page."""
    traces = dict(page.evaluate(TRACE_POINTS_JS))
    return traces.get(ATHLETE, 0)


def panel_counts(page: Any) -> tuple[int, int] | None:
    """(indexed, seen) from the indexed panel's text, once it has a row for the athlete."""
    for athlete, indexed, seen in PANEL_ROW.findall(page.evaluate("document.body.innerText")):
        if athlete == ATHLETE:
            return int(indexed), int(seen)
    return None


def show_dashboard(page: Any, path: Path) -> Path:
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.screenshot(path=str(path))
    return path


def test_live_notebook_in_jupyterlab_draws_live_and_the_index_catches_up(
    bench: Workbench, chromium: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    root, out_dir = tmp_path / "notebooks", tmp_path / "out"
    root.mkdir()
    notebook = parameterize_notebook(
        load_notebook_node(str(source_notebook("live"))),
        {**bench.parameters, "source": "simulated", "duration_s": LIVE_SECONDS, "seed": SEED,
         "out_dir": str(out_dir)},
    )
    nbformat.write(notebook, root / NOTEBOOK)
    summary_file = out_dir / SUMMARY_FILE

    with jupyterlab(root, tmp_path) as lab, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            run_all(page, lab)

            # the chart's line grows while the session streams
            page.wait_for_function(f"() => ({TRACE_POINTS_JS})().some("
                                   f"([name, n]) => name === {ATHLETE!r} && n >= 3)",
                                   timeout=90_000)
            first = line_points(page)
            time.sleep(4)  # a stretch of the live session: the line must grow over it
            second = line_points(page)
            assert not summary_file.exists(), "the session ended before the second look"
            assert second > first >= 3
            running = show_dashboard(page, tmp_path / "live_session_running.png")

            # the indexed panel catches up with everything streamed
            readings: list[tuple[int, int]] = []
            deadline = time.monotonic() + LIVE_SECONDS + 120
            while time.monotonic() < deadline:
                counts = panel_counts(page)
                if counts and (not readings or counts != readings[-1]):
                    readings.append(counts)
                if summary_file.exists() and counts and counts[0] == counts[1]:
                    break
                time.sleep(0.5)  # polling interval of the panel reading
            done = show_dashboard(page, tmp_path / "live_session_done.png")
            final_points = line_points(page)
        finally:
            browser.close()

    assert summary_file.exists(), f"the notebook did not finish; see {lab.log}"
    summary = json.loads(summary_file.read_text())
    [athlete] = summary["athletes"]
    indexed, seen = readings[-1]
    assert athlete["samples"] == athlete["indexable"] == LIVE_SECONDS  # 1 Hz, all in contact
    assert indexed == seen == summary["indexed"] == LIVE_SECONDS
    assert readings[0][0] < indexed, f"the panel never showed the index behind: {readings}"
    assert summary["missing"] == 0
    assert final_points == athlete["indexable"]  # the line has every sample with a heart rate
    for shot in (running, done):
        assert shot.stat().st_size > 50_000, shot  # a rendered page, not a blank one
    print(f"screenshots: {running} {done}")


def run_all(page: Any, lab: Lab) -> None:
    """Open the notebook, wait for its kernel, and start Run All (without waiting for it)."""
    page.goto(lab.notebook_url(NOTEBOOK))
    page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.sessionContext",
                           timeout=90_000)
    page.evaluate("""async () => {
        const panel = window.jupyterapp.shell.currentWidget;
        await panel.context.ready;
        await panel.sessionContext.ready;
    }""")
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
