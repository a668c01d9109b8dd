"""A sweep that cannot start: refused at ``mixopt validate`` when the YAML says why, and otherwise
closed with its reason, never left RUNNING (which ``--resume`` and ``gc`` would then refuse).

Real parts: the CLI as a user runs it, a sqlite MLflow store, files on disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from mixopt.cli import app

TASKS = ["retrieval_0", "sts_1", "classification_2"]


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def write_experiment(tmp_path: Path, data_dir: Path, storage: str) -> Path:
    exp = {
        "name": "start",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "optimizer": {"n_seeds": 2, "max_trials": 2, "max_concurrent": 1},
        "trainer": {"target": "trainers.analytic:train", "steps": 5},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": storage,
        "verify": {"seeds": 0},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


@pytest.mark.parametrize("where", ["storage", "above", "experiment_folder"])
def test_storage_naming_a_file_is_refused_at_validate_naming_file_and_line(
    tmp_path: Path, data_dir: Path, where: str
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    storage = {"storage": notes, "above": notes / "runs", "experiment_folder": tmp_path / "runs"}[where]
    if where == "experiment_folder":  # the sweep writes storage/<name>/sweep-<id>: a file named "start"
        storage.mkdir()
        (storage / "start").write_text("a file where the sweep makes a folder\n")
    path = write_experiment(tmp_path, data_dir, str(storage))
    line = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.startswith("storage:"))
    blocked = {"storage": notes, "above": notes, "experiment_folder": storage / "start"}[where]
    for command in ("validate", "sweep"):
        code, out, err = cli(command, str(path))
        assert code == 2, out + err
        what = f"storage {storage} is" if blocked == storage else f"{blocked} is"
        assert err.strip() == (
            f"{path}:{line}: storage: {what} a file: give a folder for the trial checkpoints (the sweep "
            f"writes under {storage / 'start'})"
        )
    assert notes.read_text() == "my notes\n"
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was recorded


@pytest.mark.slow
def test_a_crash_at_start_marks_the_sweep_failed_with_its_reason_and_gc_and_resume_go_on(
    tmp_path: Path, data_dir: Path
) -> None:
    """The experiment's artifact store is a path under a file (a broken mount): the sweep's run is
    created, then its first artifact cannot be written. The run ends FAILED with the reason, the
    command says so in one line, ``--resume`` finds nothing to resume and ``gc`` goes through it."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    broken = tmp_path / "mount"
    broken.write_text("not a folder\n")
    MlflowClient(uri).create_experiment("start", artifact_location=str(broken / "artifacts"))
    path = write_experiment(tmp_path, data_dir, str(tmp_path / "runs"))

    code, out, err = cli("sweep", str(path))
    assert code == 1, out + err
    client = MlflowClient(uri)
    eid = client.get_experiment_by_name("start").experiment_id
    (run,) = client.search_runs([eid])
    assert run.info.status == "FAILED"
    reason = run.data.tags["mixopt.failure"]
    assert "config.yaml" in reason or "Error" in reason, reason
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"{path}: could not start: ") and lines[-1].endswith(
        f"; sweep run {run.info.run_id} is marked FAILED (no trial ran): fix the cause, then start the sweep again"
    ), lines[-1]
    assert "Traceback" not in err

    code, out, err = cli("sweep", str(path), "--resume")
    assert code == 2 and "nothing to resume" in err, out + err
    code, out, err = cli("gc", str(path), "--keep", "1")
    assert code == 0, out + err
    assert "still running" not in out and f"sweep run {run.info.run_id}" in out
