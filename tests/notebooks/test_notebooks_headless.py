"""The three notebooks executed headless, in the order a user runs them, on the local stack:
set-up (provision + end-to-end check), a live session with a simulated athlete, the queries,
and finally the set-up notebook's teardown cell. Each asserts what the run left behind: AWS
resources, documents in OpenSearch, exported files, the summary JSON, the figures."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from notebook_workbench import Workbench, plotly_array, provisioned_workbench, source_notebook
from support import admin_opensearch

from hrnb import provision
from hrnb.config import Settings
from hrnb.live.session import CHECK_ATHLETE_ID, SUMMARY_FILE
from hrnb.notebooks import run_notebook

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

LIVE_SECONDS = 20
ATHLETES = 2
SEED = 7  # athletes that keep skin contact: every sample is indexable
PLOTLY = "application/vnd.plotly.v1+json"


@pytest.fixture(scope="module")
def bench(settings: Settings, lambda_build_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    with provisioned_workbench(settings, tmp_path_factory.mktemp("workbench"),
                               lambda_build_dir) as workbench:
        yield workbench


@pytest.fixture(scope="module")
def set_up(bench: Workbench, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("setup") / "01_setup.ipynb"
    return run_notebook(source_notebook("setup"), out, bench.setup_parameters(), timeout_s=120)


@pytest.fixture(scope="module")
def live_run(bench: Workbench, set_up: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out_dir = tmp_path_factory.mktemp("live")
    executed = run_notebook(
        source_notebook("live"), out_dir / "02_live_session.ipynb",
        {**bench.parameters, "source": "simulated", "athletes": ATHLETES,
         "duration_s": LIVE_SECONDS, "seed": SEED, "out_dir": str(out_dir)},
        timeout_s=120,
    )
    return executed, json.loads((out_dir / SUMMARY_FILE).read_text())


def code_outputs(executed: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    notebook = nbformat.read(executed, as_version=4)
    return [(cell.source, cell.outputs) for cell in notebook.cells if cell.cell_type == "code"]


def count_documents(settings: Settings, **terms: Any) -> int:
    client = admin_opensearch(settings)
    client.indices.refresh(index=settings.index_name)
    filters = [{"terms" if isinstance(v, list) else "term": {k: v}} for k, v in terms.items()]
    body = {"query": {"bool": {"filter": filters}}}
    return client.count(index=settings.index_name, body=body)["count"]


def test_setup_notebook_provisions_everything_and_a_record_goes_end_to_end(
    bench: Workbench, set_up: Path
) -> None:
    settings = bench.settings
    remaining = " | ".join(provision.remaining_resources(settings))
    for resource in (f"stream {settings.stream_name}", f"function {settings.function_name}",
                     f"trigger {settings.stream_name} -> {settings.function_name}",
                     f"role {settings.role_name}",
                     f"log group {settings.log_group_name}", f"index {settings.index_name}",
                     f"index {settings.dlq_index_name}"):
        assert resource in remaining
    # nothing left to do: the steps the notebook ran one by one reached the desired state
    artifacts = provision.LambdaArtifacts.from_build_dir(bench.build_dir)
    assert provision.plan(settings, artifacts).changes == ()
    # the check record was indexed by the function (which stamps kinesis_arrival/ingested_at)
    client = admin_opensearch(settings)
    hits = client.search(index=settings.index_name, body={
        "query": {"term": {"athlete_id": CHECK_ATHLETE_ID}}})["hits"]["hits"]
    assert hits and all(h["_source"]["ingested_at"] and h["_source"]["kinesis_arrival"]
                        for h in hits)
    outputs = dict(code_outputs(set_up))
    check_cell = next(source for source in outputs if "verify_pipeline(" in source)
    printed = "".join(o.get("text", "") for o in outputs[check_cell])
    assert "came back from the index" in printed
    assert hits[0]["_id"].split("/")[1] in printed  # the same check session


def test_live_notebook_streams_indexes_everything_and_exports(
    bench: Workbench, live_run: tuple[Path, dict[str, Any]]
) -> None:
    executed, summary = live_run
    settings = bench.settings
    athletes = summary["athletes"]
    assert len(athletes) == ATHLETES
    assert summary["samples_streamed"] == ATHLETES * LIVE_SECONDS  # 1 Hz each
    assert summary["records_sent"] == summary["samples_streamed"] and summary["unsent"] == 0
    assert summary["caught_up"] and summary["missing"] == 0
    assert [a["samples"] for a in athletes] == [a["indexable"] for a in athletes]
    assert summary["indexed"] == summary["samples_streamed"]
    # the index, asked directly, holds exactly what the summary says
    sessions = [a["session_id"] for a in athletes]
    assert count_documents(settings, session_id=sessions) == summary["indexed"]
    end_to_end = summary["latency_ms"]["measured→indexed"]
    assert end_to_end["samples"] == summary["indexed"]
    assert 0 < end_to_end["p50"] <= end_to_end["p95"] <= end_to_end["p99"] <= end_to_end["max"]
    assert summary["latency_ms"]["measured→searchable"]["samples"] > 0
    for alert in summary["alerts"]:
        assert alert["peak_bpm"] > settings.hr_alert_threshold_bpm
        assert alert["athlete_id"] in {a["athlete_id"] for a in athletes}

    html, png = (Path(file) for file in summary["files"])
    assert html.name == "live_session.html" and png.name == "live_session.png"
    text = html.read_text()
    assert "plotly" in text and all(a["athlete_id"] in text for a in athletes)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 300 and len(data) > 20_000  # a drawn chart, not a blank
    for source, outputs in code_outputs(executed):
        assert not [o for o in outputs if o["output_type"] == "error"], source


def test_query_notebook_shows_each_query_and_plots_the_session(
    bench: Workbench, live_run: tuple[Path, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    _, summary = live_run
    index = bench.settings.index_name
    executed = run_notebook(source_notebook("query"),
                            tmp_path_factory.mktemp("query") / "03_query.ipynb",
                            {**bench.parameters, "minutes": 30}, timeout_s=120)
    cells = code_outputs(executed)
    shown = [source for source, outputs in cells
             if any(f"GET {index}/_search" in o.get("text", "") for o in outputs)]
    assert len(shown) == 9  # athletes, sessions, recent, per interval, summary, zones,
    #                          crossings, RMSSD, latency: each printed its request
    figures = {source.strip(): o["data"][PLOTLY] for source, outputs in cells for o in outputs
               if PLOTLY in o.get("data", {})}
    assert len(figures) == 9
    for source, figure in figures.items():
        assert figure["data"], f"an empty figure from {source}"
    # the athletes bar chart counts the samples the live session indexed, per athlete
    athletes_figure = figures["query.plot_athletes(who)"]["data"][0]
    counted = dict(zip(plotly_array(athletes_figure["x"]), plotly_array(athletes_figure["y"]),
                       strict=True))
    for athlete in summary["athletes"]:
        assert counted[athlete["athlete_id"]] == athlete["indexed"]
    # the heart-rate line has every indexed sample of each athlete
    samples_figure = figures["query.plot_samples(recent, threshold_bpm=settings."
                             "hr_alert_threshold_bpm)"]
    points = {trace["name"]: len(plotly_array(trace["y"])) for trace in samples_figure["data"]}
    for athlete in summary["athletes"]:
        assert any(athlete["athlete_id"] in name and count == athlete["indexed"]
                   for name, count in points.items()), points


def test_setup_notebook_teardown_cell_leaves_nothing(
    bench: Workbench, live_run: tuple[Path, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = bench.settings
    assert provision.remaining_resources(settings)
    run_notebook(source_notebook("setup"), tmp_path_factory.mktemp("teardown") / "01.ipynb",
                 bench.setup_parameters(teardown=True), timeout_s=120)
    assert provision.remaining_resources(settings) == ()
