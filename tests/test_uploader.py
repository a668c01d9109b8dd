"""``sweep.log_checkpoints``: checkpoints copied into MLflow on a background thread, not in Tune's callback.

Real parts: a sqlite MLflow store with its file artifact root, runs written by the sweep's own
tracker, checkpoint directories of real files. What the artifact store holds is read back with
MLflow's client and compared byte for byte with the files on disk.
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mixopt.tracking import CHECKPOINT, SweepTracker
from mixopt.tracking.tags import CHECKPOINT_LOGGED, CHECKPOINT_UPLOAD_FAILURE
from mixopt.tracking.writer import CheckpointUploader


def make_checkpoint(path: Path, seed: int) -> Path:
    (path / "1_Pooling").mkdir(parents=True)
    (path / "model.safetensors").write_bytes(bytes((seed + i) % 256 for i in range(50_000)))
    (path / "1_Pooling" / "config.json").write_text(f'{{"seed": {seed}}}')
    return path


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def uploaded(uri: str, run_id: str, tmp: Path) -> dict[str, bytes]:
    """What MLflow's artifact store holds under ``checkpoint`` for ``run_id`` ({} when nothing)."""
    client = MlflowClient(uri)
    if not client.list_artifacts(run_id, "checkpoint"):
        return {}
    dest = tmp / f"download-{run_id}"
    dest.mkdir()
    return files_of(Path(client.download_artifacts(run_id, "checkpoint", str(dest))))


def sweep_with_trials(tmp_path: Path, n: int) -> tuple[str, SweepTracker, list[str], list[Path]]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = SweepTracker(uri, "uploads")
    tracker.start_sweep("uploads", {}, {})
    runs, ckpts = [], []
    for i in range(n):
        run_id = tracker.start_trial(f"trial-{i:03d}", {"a": 1.0}, ["a"], "seed", i)
        ckpt = make_checkpoint(tmp_path / "runs" / f"trial-{i:03d}", i)
        tracker.finish_trial(run_id, "FINISHED", tags={CHECKPOINT: str(ckpt)})
        runs.append(run_id)
        ckpts.append(ckpt)
    return uri, tracker, runs, ckpts


def test_queueing_returns_before_the_copy_and_every_checkpoint_is_there_at_the_end(tmp_path: Path) -> None:
    uri, tracker, runs, ckpts = sweep_with_trials(tmp_path, 3)
    events: list[str] = []
    gate = threading.Event()

    def slow_copy(run_id: str, path: Path) -> None:
        gate.wait(30)  # an upload that takes as long as the test wants
        tracker.client.log_artifacts(run_id, str(path), "checkpoint")
        events.append(f"copied {run_id}")

    tracker.uploader = CheckpointUploader(tracker, upload=slow_copy)
    for run_id, ckpt in zip(runs, ckpts, strict=True):
        tracker.upload_checkpoint(run_id, ckpt)  # what the Tune callback calls
        events.append(f"returned {run_id}")
    assert all(e.startswith("returned") for e in events) and len(events) == 3
    assert pickle.loads(pickle.dumps(tracker)).uploader is None  # Tune pickles the tracker with its searcher
    gate.set()
    assert tracker.wait_for_uploads() == 0
    assert events[3:] == [f"copied {r}" for r in runs]
    for run_id, ckpt in zip(runs, ckpts, strict=True):
        assert uploaded(uri, run_id, tmp_path) == files_of(ckpt)
        assert MlflowClient(uri).get_run(run_id).data.tags[CHECKPOINT_LOGGED] == "true"


def test_a_failing_upload_is_retried_then_tagged_and_warned_and_the_next_one_still_goes(
    tmp_path: Path,
) -> None:
    uri, tracker, runs, ckpts = sweep_with_trials(tmp_path, 2)
    attempts: list[str] = []
    warnings: list[str] = []

    def copy(run_id: str, path: Path) -> None:
        attempts.append(run_id)
        if run_id == runs[0]:
            raise OSError(28, "No space left on device")
        tracker.client.log_artifacts(run_id, str(path), "checkpoint")

    tracker.uploader = CheckpointUploader(
        tracker, upload=copy, attempts=3, base_delay=0.01, warn=warnings.append
    )
    for run_id, ckpt in zip(runs, ckpts, strict=True):
        tracker.upload_checkpoint(run_id, ckpt)
    tracker.wait_for_uploads()
    assert attempts == [runs[0]] * 3 + [runs[1]]
    tags = MlflowClient(uri).get_run(runs[0]).data.tags
    assert "No space left on device" in tags[CHECKPOINT_UPLOAD_FAILURE] and CHECKPOINT_LOGGED not in tags
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert runs[0] in warnings[0] and str(ckpts[0]) in warnings[0] and "--resume" in warnings[0]
    assert uploaded(uri, runs[0], tmp_path) == {}
    assert uploaded(uri, runs[1], tmp_path) == files_of(ckpts[1])


def test_resume_uploads_what_a_killed_driver_left_undone(tmp_path: Path) -> None:
    uri, tracker, runs, ckpts = sweep_with_trials(tmp_path, 4)
    gate, started = threading.Event(), threading.Event()

    def first_blocks(run_id: str, path: Path) -> None:
        if run_id == runs[0]:
            started.set()
            gate.wait(30)
        tracker.client.log_artifacts(run_id, str(path), "checkpoint")

    tracker.uploader = CheckpointUploader(tracker, upload=first_blocks)
    for run_id, ckpt in zip(runs[:3], ckpts[:3], strict=True):
        tracker.upload_checkpoint(run_id, ckpt)
    # Ctrl-C while the first copy runs: it completes, the two queued behind it are left.
    assert started.wait(30)
    threading.Timer(0.2, gate.set).start()
    assert tracker.wait_for_uploads(drain=False) == 2
    assert MlflowClient(uri).get_run(runs[0]).data.tags.get(CHECKPOINT_LOGGED) == "true"
    assert [uploaded(uri, r, tmp_path) for r in runs[1:3]] == [{}, {}]
    # A half-copied checkpoint (the driver killed mid-copy) has files but no CHECKPOINT_LOGGED tag.
    MlflowClient(uri).log_artifact(runs[1], str(ckpts[1] / "model.safetensors"), "checkpoint")
    # Trial 3's checkpoint was deleted from disk: nothing to upload, and no error.
    for p in sorted(ckpts[3].rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    ckpts[3].rmdir()

    resumed = SweepTracker(uri, "uploads")
    resumed.reopen_sweep(tracker.parent_id)
    assert resumed.upload_missing_checkpoints() == 2
    resumed.wait_for_uploads()
    for run_id, ckpt in zip(runs[:3], ckpts[:3], strict=True):
        assert uploaded(uri, run_id, tmp_path) == files_of(ckpt)
        assert MlflowClient(uri).get_run(run_id).data.tags[CHECKPOINT_LOGGED] == "true"
    assert resumed.upload_missing_checkpoints() == 0


@pytest.mark.parametrize("drain", [True, False])
def test_waiting_without_uploads_is_a_no_op(tmp_path: Path, drain: bool) -> None:
    _, tracker, _, _ = sweep_with_trials(tmp_path, 0)
    assert tracker.wait_for_uploads(drain=drain) == 0


@pytest.mark.slow
def test_a_sweep_with_log_checkpoints_has_every_checkpoint_in_mlflow_when_it_returns(
    tmp_path: Path, ray_local
) -> None:
    """Real Ray, the tiny Gemma trainer, the sweep's own callback: the uploads happen off the
    callback, and ``run_sweep`` returns only once they are all in the artifact store."""
    import yaml

    from mixopt.config import load_experiment
    from mixopt.sweep import run_sweep
    from mixopt.synth import SynthSpec, synthesize

    data = tmp_path / "data"
    synthesize(data, n_tasks=2, seed=0, spec=SynthSpec(n_train=48, n_dev=16))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = {
        "name": "log_ckpt",
        "tasks": [
            {"name": "retrieval_0", "kind": "retrieval", "path": str(data / "retrieval_0")},
            {"name": "sts_1", "kind": "sts", "path": str(data / "sts_1")},
        ],
        "optimizer": {"n_seeds": 2, "max_trials": 2, "max_concurrent": 1, "random_state": 0},
        "trainer": {
            "target": "trainers.embedding:train",
            "steps": 3,
            "seed": 0,
            "model": str(data / "model"),
            "matryoshka_dims": [64, 32],
            "batch_size": 8,
            "max_seq_length": 24,
            "eval_batch_size": 64,
            "cpu_threads": 1,
        },
        "tracking": {"uri": uri},
        "resources": {"cpus": 1, "gpus": 0},
        "storage": str(tmp_path / "runs"),
        "sweep": {"log_checkpoints": True},
        "verify": {"seeds": 0},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    summary = run_sweep(load_experiment(path), verbose=False)
    assert summary.finished == 2
    client = MlflowClient(uri)
    for trial in summary.trials:
        run = client.get_run(trial["run_id"])
        ckpt = Path(run.data.tags[CHECKPOINT])
        assert run.data.tags[CHECKPOINT_LOGGED] == "true"
        assert uploaded(uri, trial["run_id"], tmp_path) == files_of(ckpt)
