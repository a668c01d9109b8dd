"""The sweep report where users look: its Pareto table as people read weights (rounded, no
``4.5e-19``); and (slow) a real sweep's report in the artifact pane of a real ``mlflow ui`` in
headless Chromium, driven by Playwright, with each of its figures also logged as a PNG image."""

from __future__ import annotations

import html
import re
import struct
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.tracking import SweepTracker
from tests.test_ui import CHROMIUM, mlflow_ui

NO_BROWSER = (
    "needs Chromium and Playwright (Debian: apt-get install chromium; pip install 'mixopt[dev]'); "
    ".ci/run installs them"
)


def test_the_pareto_table_prints_weights_rounded(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tasks = ["a", "b", "c"]
    tracker = SweepTracker(uri, "pareto")
    tracker.start_sweep("pareto", params={"tasks": ",".join(tasks)}, artifacts={})
    # Three trials, each best on one task (all on the front); one weight is 4.5e-19, a float's zero.
    trials = [
        ({"a": 4.5e-19, "b": 0.25, "c": 0.75}, {"a": 0.1, "b": 0.5, "c": 0.9}),
        ({"a": 0.5, "b": 0.5, "c": 0.0}, {"a": 0.9, "b": 0.4, "c": 0.2}),
        ({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, {"a": 0.5, "b": 0.8, "c": 0.5}),
    ]
    for k, (proposal, scores) in enumerate(trials):
        run = tracker.start_trial(f"trial-{k:03d}", proposal, tasks, "seed", k)
        metrics = {"objective": sum(scores.values()) / 3} | {f"score.{t}": v for t, v in scores.items()}
        tracker.log_metrics(run, metrics, 10)
        tracker.finish_trial(run, "FINISHED")
    tracker.end_sweep("FINISHED")
    out = tmp_path / "report.html"
    r = CliRunner().invoke(
        app, ["report", "--experiment", "pareto", "--out", str(out)], env={"MLFLOW_TRACKING_URI": uri}
    )
    assert r.exit_code == 0, r.output
    section = re.search(r'<section id="tradeoffs".*?</section>', out.read_text(), flags=re.S).group(0)
    rows = re.findall(r"<tr>((?:<td>.*?</td>)+)</tr>", section)
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    assert len(cells) == 3
    for (proposal, _), row in zip(trials, sorted(cells)):
        assert row[1:4] == [f"{proposal[t]:.3f}" for t in tasks], row
    assert not any("e-" in c for row in cells for c in row[1:4])


# --------------------------------------------------------------------------- in the MLflow UI


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (its first, by the format)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A real sweep (Ray, analytic trainer, verification) to its end: its store, run and report page."""
    if CHROMIUM is None:  # its figures are drawn as images with the browser, and shown in one
        pytest.skip(NO_BROWSER)
    import ray

    from mixopt.config import load_experiment
    from mixopt.sweep import run_sweep
    from mixopt.synth import SynthSpec, synthesize

    tmp_path = tmp_path_factory.mktemp("ui_report")
    data = tmp_path / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16), with_model=False)
    tasks = ["retrieval_0", "sts_1", "classification_2"]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = {
        "name": "ui_report",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data / t)} for t in tasks],
        "optimizer": {"n_seeds": 3, "max_trials": 5, "max_concurrent": 2},
        "trainer": {"target": "trainers.analytic:train", "steps": 10, "noise": 0.002},
        "tracking": {"uri": uri},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 2},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        summary = run_sweep(load_experiment(tmp_path / "exp.yaml"), verbose=False)
    finally:
        ray.shutdown()
    assert summary.verification is not None
    return tmp_path, uri, summary


@pytest.mark.slow
def test_each_report_figure_is_also_an_image_on_the_sweep_run(finished_sweep) -> None:
    tmp_path, uri, summary = finished_sweep
    client = MlflowClient(uri)
    page = (summary.storage_dir / "report.html").read_text()
    # Each figure of the page is a plotly div; each has its PNG on the run, named by its section.
    figures = re.findall(r'<div id="fig\d+" class="plotly-graph-div"', page)
    images = [a.path for a in client.list_artifacts(summary.parent_run_id, "report")]
    assert len(images) == len(figures) >= 5, (images, len(figures))
    sections = {name.split("/")[-1].split(".")[0].split("-")[0] for name in images}
    assert {"objective", "parallel", "importance", "interference", "tradeoffs", "line"} <= sections
    folder = Path(client.download_artifacts(summary.parent_run_id, "report", str(tmp_path / "dl")))
    for name in images:
        width, height = png_size(folder / Path(name).name)
        assert width >= 600 and height >= 200, name


@pytest.mark.slow
def test_the_report_renders_in_the_artifact_pane_of_mlflow_ui(finished_sweep) -> None:
    tmp_path, uri, summary = finished_sweep
    playwright = pytest.importorskip("playwright.sync_api", reason=NO_BROWSER)
    client = MlflowClient(uri)
    experiment_id = client.get_run(summary.parent_run_id).info.experiment_id
    with mlflow_ui(uri, tmp_path) as base:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            )
            try:
                view = browser.new_page(viewport={"width": 1600, "height": 1200})
                view.goto(
                    f"{base}/#/experiments/{experiment_id}/runs/{summary.parent_run_id}/artifacts/report.html"
                )
                # MLflow fetches report.html and shows it in an iframe from a blob URL, sandboxed to
                # allow-scripts: wait for that frame, then for plotly to have drawn inside it.
                frame_element = view.wait_for_selector("iframe", timeout=120_000)
                assert "allow-scripts" in (frame_element.get_attribute("sandbox") or "")
                frame = frame_element.content_frame()
                assert frame is not None
                frame.wait_for_selector("#verification", timeout=120_000)
                frame.wait_for_function(
                    "document.querySelectorAll('.plotly-graph-div .main-svg').length >= "
                    "document.querySelectorAll('.plotly-graph-div').length",
                    timeout=120_000,
                )
                verification = frame.inner_text("#verification")
                figures = frame.eval_on_selector_all(".plotly-graph-div", "els => els.map(e => e.id)")
                drawn = frame.eval_on_selector_all(
                    ".plotly-graph-div", "els => els.map(e => e.querySelectorAll('.main-svg').length)"
                )
                errors = frame.inner_text("#js-errors")
                src = frame.url
            finally:
                browser.close()
    assert src.startswith("blob:"), src
    assert summary.verification.line in html.unescape(verification), verification
    page = (summary.storage_dir / "report.html").read_text()
    assert figures == re.findall(r'<div id="(fig\d+)" class="plotly-graph-div"', page)
    assert len(figures) >= 5 and all(n >= 1 for n in drawn), drawn
    assert errors.strip() == ""
