"""The sweep report in a real headless browser (issue 33): every section rendered, no JavaScript
error; and a real (Ray, analytic trainer) sweep logs the page on its parent run."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mixopt.report import REPORT_ARTIFACT, write_report
from mixopt.report.html import SECTIONS
from tests.test_report import record_sweep
from tests.test_ui import CHROMIUM

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium); .ci/run installs it"
    ),
]


def chromium(tmp_path: Path, *args: str) -> str:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # CI containers run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=20000",  # let plotly draw every figure
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "HOME": str(tmp_path)},
    ).stdout


def test_every_section_renders_with_no_javascript_error(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    record_sweep(uri, "ui", 8)
    page = tmp_path / "report.html"
    write_report(page, uri, "ui")
    dom = chromium(tmp_path, "--window-size=1300,1000", "--dump-dom", page.as_uri())
    errors = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, flags=re.S)
    assert errors is not None and errors.group(1).strip() == "", errors and errors.group(1)
    for key, title in SECTIONS:
        section = re.search(rf'<section id="{key}".*?</section>', dom, flags=re.S)
        assert section is not None and title in section.group(0), key
        if key == "verification":
            assert "recommended beats baseline" in section.group(0)
        else:  # plotly drew the figure: its SVG exists only after the script ran in the browser
            assert 'class="main-svg"' in section.group(0), key
            assert "not available" not in section.group(0), key


def test_a_sweep_logs_its_report_on_the_parent_run(tmp_path: Path, capsys) -> None:
    import ray

    from mixopt.config import load_experiment
    from mixopt.sweep import run_sweep
    from mixopt.synth import SynthSpec, synthesize

    data = tmp_path / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16), with_model=False)
    tasks = ["retrieval_0", "sts_1", "classification_2"]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = {
        "name": "report_sweep",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data / t)} for t in tasks],
        "optimizer": {"n_seeds": 3, "max_trials": 4, "max_concurrent": 2},
        "trainer": {"target": "trainers.analytic:train", "steps": 10, "noise": 0.002},
        "tracking": {"uri": uri},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 2},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        summary = run_sweep(load_experiment(tmp_path / "exp.yaml"), verbose=False)
    finally:
        ray.shutdown()
    from mixopt.sweep.progress import print_summary

    capsys.readouterr()
    print_summary(load_experiment(tmp_path / "exp.yaml"), summary)
    # The summary names the page it wrote (the file itself, beside the optimizer state).
    assert f"report: {tmp_path / 'runs'}" in capsys.readouterr().out
    assert (summary.storage_dir / REPORT_ARTIFACT).is_file()
    client = MlflowClient(uri)
    assert REPORT_ARTIFACT in {a.path for a in client.list_artifacts(summary.parent_run_id)}
    page = Path(client.download_artifacts(summary.parent_run_id, REPORT_ARTIFACT, str(tmp_path)))
    text = page.read_text()
    assert summary.verification is not None and summary.verification.line in text
    for k in range(4):
        assert f"trial-{k:03d}" in text
    dom = chromium(tmp_path, "--window-size=1300,1000", "--dump-dom", page.as_uri())
    assert re.search(r'<pre id="js-errors"[^>]*></pre>', dom), "a JavaScript error on the page"
    for key, _ in SECTIONS[1:]:
        section = re.search(rf'<section id="{key}".*?</section>', dom, flags=re.S)
        assert section is not None and "could not be drawn" not in section.group(0), key
