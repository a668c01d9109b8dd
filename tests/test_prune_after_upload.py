"""``storage_keep`` with ``sweep.log_checkpoints``: a checkpoint leaves the disk only once MLflow
holds it whole, so every checkpoint is somewhere, whole, at every moment.

A real sweep (local Ray, sqlite MLflow with its file artifact store) of a trainer that writes a
checkpoint of many files, as a real one does, with its SHA-256 manifest. The reference is hashlib:
each finished trial's manifest is pinned by its run's tag ``mixopt.checkpoint_checksums``, and the
files found on disk or downloaded from MLflow must match it. A fast test gives the uploader a copy
that drops a file: it is not tagged logged, one warning line says so, and the prune keeps it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from mixopt.sweep.retention import Keep, prune_sweep
from mixopt.synth import SynthSpec, synthesize
from mixopt.tracking import CHECKPOINT, SweepTracker
from mixopt.tracking.tags import CHECKPOINT_LOGGED, CHECKPOINT_PRUNED, CHECKPOINT_UPLOAD_FAILURE
from mixopt.tracking.writer import CheckpointUploader

REPO = Path(__file__).resolve().parents[1]
TASKS = ["retrieval_0", "sts_1", "classification_2"]

# The analytic trainer, plus a checkpoint of 1500 files written as the built-in trainers write one.
TRAINER = """
import dataclasses
import os
from pathlib import Path

from mixopt import atomic
from mixopt.checksums import write_checksums
from trainers.analytic import Options, train as analytic_train


def train(trial, report):
    result = analytic_train(trial, report)
    checkpoint = Path(trial.output_dir) / "model"
    with atomic.directory(checkpoint) as tmp:
        for i in range(1500):  # many small files: a copy that takes a while, as a large one does
            (tmp / f"shard-{i:04d}.bin").write_bytes(os.urandom(4096))
        write_checksums(tmp)
    return dataclasses.replace(result, checkpoint=checkpoint)
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def whole(folder: Path, pinned: str) -> bool:
    """``folder`` holds the manifest its run pinned, and every file the manifest lists, unchanged."""
    manifest = folder / "mixopt_checksums.json"
    if not manifest.is_file() or sha(manifest) != pinned:
        return False
    files = json.loads(manifest.read_text())["files"]
    return bool(files) and all((folder / n).is_file() and sha(folder / n) == d for n, d in files.items())


@pytest.mark.slow
def test_a_pruned_checkpoint_is_whole_in_mlflow_and_a_kept_one_is_whole_on_disk(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16), with_model=False)
    (tmp_path / "ckpt_trainer.py").write_text(TRAINER)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = {
        "name": "uploads",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data / t)} for t in TASKS],
        "optimizer": {"n_seeds": 3, "max_trials": 6, "max_concurrent": 1, "random_state": 0},
        "trainer": {"target": "ckpt_trainer:train", "steps": 5},
        "tracking": {"uri": uri},
        "storage": str(tmp_path / "runs"),
        "storage_keep": {"top": 1},
        "sweep": {"log_checkpoints": True},
        "verify": {"seeds": 0},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-m", "mixopt.cli", "sweep", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "was not copied" not in out.stderr

    client = MlflowClient(uri)
    eid = client.get_experiment_by_name("uploads").experiment_id
    trials = client.search_runs([eid], "tags.`mixopt.role` = 'trial'", max_results=100)
    assert len(trials) == 6 and all(r.data.tags["mixopt.status"] == "FINISHED" for r in trials)
    on_disk = set()
    for r in trials:
        tags, run_id = r.data.tags, r.info.run_id
        pinned = tags["mixopt.checkpoint_checksums"]
        disk = Path(tags[CHECKPOINT])
        dest = tmp_path / "download" / run_id
        dest.mkdir(parents=True)
        in_mlflow = bool(client.list_artifacts(run_id, "checkpoint")) and whole(
            Path(client.download_artifacts(run_id, "checkpoint", str(dest))), pinned
        )
        if tags.get(CHECKPOINT_PRUNED) == "true":
            assert not disk.exists()
            assert tags.get(CHECKPOINT_LOGGED) == "true" and in_mlflow, (
                f"{tags['mixopt.trial_id']} is nowhere whole"
            )
        else:
            assert whole(disk, pinned), tags["mixopt.trial_id"]
            on_disk.add(tags["mixopt.trial_id"])
        if tags.get(CHECKPOINT_LOGGED) == "true":
            assert in_mlflow, f"{tags['mixopt.trial_id']} is tagged logged, but MLflow's copy is not whole"
    best = max(trials, key=lambda r: (r.data.metrics["objective"], -r.info.start_time))
    assert on_disk == {best.data.tags["mixopt.trial_id"]}  # once every upload is confirmed, top 1 stays


def test_an_incomplete_upload_is_not_tagged_logged_one_line_says_so_and_the_disk_copy_stays(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = SweepTracker(uri, "partial")
    tracker.start_sweep("partial", {}, {})
    storage = tmp_path / "runs"
    runs = []
    for i, value in enumerate([0.9, 0.1]):
        ckpt = storage / f"trial-{i:03d}" / "model"
        ckpt.mkdir(parents=True)
        for n in range(3):
            (ckpt / f"part-{n}.bin").write_bytes(os.urandom(1000))
        run_id = tracker.start_trial(f"trial-{i:03d}", {"a": 1.0}, ["a"], "seed", i)
        tracker.log_metrics(run_id, {"objective": value}, 0)
        tracker.finish_trial(run_id, "FINISHED", tags={CHECKPOINT: str(ckpt)})
        runs.append((run_id, ckpt))

    def drops_a_file(run_id: str, path: Path) -> None:  # a copy cut short: one file never arrives
        for f in sorted(path.iterdir())[:-1]:
            tracker.client.log_artifact(run_id, str(f), "checkpoint")

    warnings: list[str] = []
    tracker.uploader = CheckpointUploader(
        tracker, upload=drops_a_file, attempts=2, base_delay=0.01, warn=warnings.append
    )
    for run_id, ckpt in runs:
        tracker.upload_checkpoint(run_id, ckpt)
    tracker.wait_for_uploads()
    client = MlflowClient(uri)
    for run_id, _ in runs:
        tags = client.get_run(run_id).data.tags
        assert CHECKPOINT_LOGGED not in tags
        assert "lacks 1 of the 3 files" in tags[CHECKPOINT_UPLOAD_FAILURE]
    assert len(warnings) == 2 and all("\n" not in w and "was not copied whole" in w for w in warnings)
    # trial-001 is outside storage_keep's top 1, but its only whole copy is the disk's: kept.
    outcome = prune_sweep(
        client,
        tracker.experiment_id,
        tracker.parent_id,
        storage,
        Keep(1, logged_first=True),
        tracker.set_tags,
    )
    assert outcome.pruned == [] and all(ckpt.is_dir() for _, ckpt in runs)
