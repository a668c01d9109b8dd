"""What a sweep prints, as a user's terminal receives it (``mixopt sweep`` in a subprocess): mixopt's
own lines and nothing of Ray's, MLflow's or a trial's (those go to log files); ``--quiet`` drops the
line per trial event but never the end; when every trial fails the last line names the cause class
recorded for the failures (slow: real Ray and MLflow sweeps)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.synth import SynthSpec, synthesize

REPO = Path(__file__).resolve().parents[1]
TASKS = ["retrieval_0", "sts_1", "classification_2"]
# A line of mixopt's own: its prefix, the trials' table (header, rule, a row per trial), a blank line.
OWN = re.compile(r"^(\[mixopt\] .*|trial +origin +status .*|-+|trial-\d{3} .*|)$")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("console") / "data"
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16))
    return out


def write(tmp_path: Path, data: Path, name: str, **over) -> Path:
    exp = {
        "name": name,
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data / t)} for t in TASKS],
        "optimizer": {"n_seeds": 3, "max_trials": 4, "max_concurrent": 2},
        "trainer": {"target": "trainers.analytic:train", "steps": 10, "noise": 0.002},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 2},
    }
    exp.update(over)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def sweep(path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "mixopt.cli", "sweep", str(path), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=path.parent,
        env=env,
    )


@pytest.fixture(scope="module")
def quiet(tmp_path_factory, data) -> tuple[Path, subprocess.CompletedProcess]:
    """A quiet sweep of the analytic trainer, whose objective weighs two tasks 1e308 each (a sum
    that overflows a float: the objective is still their plain mean)."""
    tmp_path = tmp_path_factory.mktemp("quiet")
    path = write(tmp_path, data, "quiet", objective={"weights": {"retrieval_0": 1e308, "sts_1": 1e308}})
    return path, sweep(path, "--quiet")


def test_quiet_keeps_the_end_and_the_console_holds_only_mixopts_lines(quiet) -> None:
    path, r = quiet
    tmp_path = path.parent
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    # No line per trial event...
    assert not [x for x in out if " started (" in x or re.search(r"trial-\d{3} (FINISHED|FAILED) ", x)], out
    # ...and the end, every part of it: the table, the best and recommended mixtures, the
    # verification line, the report, the MLflow link.
    assert sum(x.startswith("trial      origin  status") for x in out) == 1
    assert sum(bool(re.match(r"trial-00\d  ", x)) for x in out) == 4
    assert any(x.startswith("[mixopt] best objective ") for x in out)
    assert any(x.startswith("[mixopt] recommended ") for x in out)
    assert any(
        re.match(r"\[mixopt\] recommended (beats|loses to) baseline|\[mixopt\] no significant", x)
        for x in out
    ), out
    report = next(x for x in out if x.startswith("[mixopt] report: "))
    assert Path(report.split()[2]).is_file()
    assert any(x.startswith("[mixopt] MLflow: sqlite:///") for x in out)
    assert any("http://127.0.0.1:5000/#/experiments/" in x for x in out)
    # Nothing of Ray's (its token-authentication warning) or MLflow's (creating its tables).
    for line in out + r.stderr.splitlines():
        assert OWN.match(line), line
    log = (tmp_path / "runs" / "quiet" / "driver.log").read_text()
    assert "mlflow" in log and "Creating initial MLflow database tables" in log


def test_recommend_under_weights_at_the_float_limit_is_the_recommendation_under_their_ratio(quiet) -> None:
    path, r = quiet
    assert r.returncode == 0, r.stdout + r.stderr
    uri = f"sqlite:///{path.parent}/mlflow.db"
    answers = []
    for weights in ("retrieval_0=1e308,classification_2=5e307", "retrieval_0=2,classification_2=1"):
        result = CliRunner().invoke(
            app, ["recommend", "--experiment", "quiet", "--tracking-uri", uri, "--objective", weights]
        )
        assert result.exit_code == 0, result.output
        answers.append(result.stdout.splitlines())
    assert answers[0] == answers[1]
    assert "retrieval_0=0.667" in answers[0][0] and "classification_2=0.333" in answers[0][0]


@pytest.mark.slow
def test_a_sentence_transformers_sweep_prints_only_mixopts_lines(tmp_path, data) -> None:
    trainer = {
        "target": "trainers.sentence_transformers:train",
        "steps": 4,
        "model": str(data / "model"),
        "batch_size": 8,
        "max_seq_length": 32,
        "cpu_threads": 1,
    }
    path = write(tmp_path, data, "st_console", trainer=trainer, verify={"seeds": 0})
    path.write_text(path.read_text().replace("max_trials: 4", "max_trials: 2"))
    r = sweep(path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Computing widget examples" not in r.stdout + r.stderr
    lines = r.stdout.splitlines() + r.stderr.splitlines()
    assert [x for x in lines if not OWN.match(x)] == []
    logs = next(x for x in lines if x.startswith("[mixopt] logs: "))
    assert "Ray's worker logs in " in logs and str(tmp_path / "runs" / "st_console" / "driver.log") in logs
    assert sum(" FINISHED objective=" in x for x in lines) == 2


# --------------------------------------------------------------------------- the cause class


@pytest.fixture(scope="module")
def ray_up():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def last_line(path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["sweep", str(path), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr.strip().splitlines()[-1]


def failure_kinds(tmp_path: Path, name: str) -> list[str]:
    """The failure kinds the sweep recorded on its trial runs (the summary's only source)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    return sorted(
        r.data.tags["mixopt.failure_kind"] for r in runs if r.data.tags.get("mixopt.role") == "trial"
    )


@pytest.mark.slow
def test_every_trial_failing_in_the_trainer_says_the_trainer_raised(tmp_path, data, ray_up) -> None:
    fail = {t: 0.0 for t in TASKS}
    path = write(
        tmp_path,
        data,
        "raised",
        trainer={"target": "trainers.analytic:train", "steps": 10, "fail_above": fail},
    )
    code, line = last_line(path)
    assert code == 1
    assert failure_kinds(tmp_path, "raised") == ["trial"] * 4
    assert re.fullmatch(
        rf"{re.escape(str(path))}: every trial failed \(4\): the trainer raised \(4x\): "
        r"4x TrialFailed: injected failure: weight of \w+ = [\d.]+ > 0\.0",
        line,
    ), line


@pytest.mark.slow
def test_a_trial_losing_its_worker_stops_the_sweep_saying_infrastructure(tmp_path, data, ray_up) -> None:
    # A dead worker is the infrastructure's failure, not the mixture's: the sweep stops at the first
    # one (the optimizer is never told it) and its last line says so, with the way to resume.
    died = {t: 0.0 for t in TASKS}
    path = write(
        tmp_path,
        data,
        "died",
        optimizer={"n_seeds": 2, "max_trials": 2, "max_concurrent": 1},
        trainer={"target": "trainers.analytic:train", "steps": 10, "exit_above": died},
    )
    code, line = last_line(path)
    assert code == 1
    assert failure_kinds(tmp_path, "died") == ["infrastructure"]
    assert line.startswith(f"{path}: trial-000 failed for the infrastructure, not its mixture ("), line
    assert "the worker process died" in line and "--resume" in line, line
    assert "trainer raised" not in line and "bad data" not in line


@pytest.mark.slow
def test_a_trial_on_a_bad_row_says_bad_data_with_the_row(tmp_path, data, ray_up) -> None:
    bad = tmp_path / "bad_sts"
    bad.mkdir()
    rows = (data / "sts_1" / "train.jsonl").read_text().splitlines()
    row = json.loads(rows[59])
    row["score"] = "high"
    rows[59] = json.dumps(row)
    (bad / "train.jsonl").write_text("\n".join(rows) + "\n")
    (bad / "dev.jsonl").write_text((data / "sts_1" / "dev.jsonl").read_text())
    path = write(tmp_path, data, "baddata", optimizer={"n_seeds": 2, "max_trials": 2, "max_concurrent": 1})
    config = yaml.safe_load(path.read_text())
    config["tasks"][1]["path"] = str(bad)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    # The head check reads 50 rows: row 60 is found by the trial that reads it.
    code, line = last_line(path, "--data-check", "head")
    assert code == 1
    assert failure_kinds(tmp_path, "baddata") == ["data"]
    assert "failed on bad data" in line and f"{bad / 'train.jsonl'}:60: " in line, line
