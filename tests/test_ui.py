"""The MLflow UI in a real headless browser: a tiny analytic sweep's trials, with their weights and
objective, in the runs table that the sweep's printed link opens (issue 14)."""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mixopt.config import load_experiment
from mixopt.synth import SynthSpec, synthesize
from mixopt.tracking import EXPERIMENT_KIND, ui_url

TASKS = ["retrieval_0", "sts_1", "classification_2"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium); .ci/run installs it"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")
        time.sleep(1)


@contextlib.contextmanager
def mlflow_ui(uri: str, cwd: Path, command: str = "ui") -> Iterator[str]:
    """A real ``mlflow ui`` (or ``mlflow server``) over the store at ``uri`` on a free port, up until
    the block ends; yields its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            command,
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", 180)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def page_text(dom: str) -> str:
    """The visible text of a dumped DOM (scripts and styles dropped)."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def test_the_runs_table_shows_the_trials_with_weights_and_objective(tmp_path: Path) -> None:
    import ray

    from mixopt.sweep import run_sweep

    data = tmp_path / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16), with_model=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = {
        "name": "ui_test",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data / t)} for t in TASKS],
        "search": {"bounds": {"retrieval_0": {"min": 0.05}}},
        "optimizer": {"n_seeds": 3, "max_trials": 3, "max_concurrent": 2},
        "trainer": {"target": "trainers.analytic:train", "steps": 10},
        "tracking": {"uri": uri},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},  # the search trials are what the runs table is checked for
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        summary = run_sweep(load_experiment(tmp_path / "exp.yaml"), verbose=False)
    finally:
        ray.shutdown()
    assert summary.finished == 3

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ui_test")
    assert experiment.tags[EXPERIMENT_KIND] == "custom_model_development"
    # The parent run carries the three figures (the experiment sets a task bound).
    figures = {a.path for a in client.list_artifacts(summary.parent_run_id)}
    assert {"best_so_far.png", "top_mixtures.png", "gp_posterior.png"} <= figures
    trials = {
        r.data.tags["mixopt.trial_id"]: r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("mixopt.role") == "trial"
    }
    assert len(trials) == 3

    with mlflow_ui(uri, tmp_path, "server") as base:
        url = ui_url(base, experiment.experiment_id)
        dom = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",  # CI containers run as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--window-size=1600,1000",
                "--virtual-time-budget=60000",  # let the app fetch the runs and render the table
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "HOME": str(tmp_path)},
        ).stdout
    text = page_text(dom)
    assert "Training runs" in text or "Runs" in text, text[:2000]
    # The column headers, then each trial's row: its name, objective and weights as MLflow shows them.
    for column in ["objective", *(f"w.{t}" for t in TASKS)]:
        assert f" {column} " in text, (column, text[:3000])
    for trial_id, run in trials.items():
        assert trial_id in text, (trial_id, text[:3000])
        assert str(run.data.metrics["objective"]) in text
        for t in TASKS:
            assert run.data.params[f"w.{t}"] in text
