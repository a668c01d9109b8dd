"""A failure of the machine is not a result: a dead worker, an allocation the OS refuses, a full disk.

Each fault hits one trial of a real `mixopt sweep` (its own local Ray, a sqlite MLflow store): the
sweep stops with one line, its run KILLED, the optimizer never told the trial as its mixture's
value; once the fault is gone, ``--resume`` runs that trial again and the sweep ends with exactly
``max_trials`` trials, every one FINISHED, none duplicated. The faults are real: the worker process
exits, ``bytearray`` asks the OS for a petabyte, the checkpoint is written onto a 1 MiB tmpfs
(mounted as root; skipped where mounting is not allowed). The reference for "told" is the saved
optimizer state read back through the optimizer's own public ``history`` and ``pending``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mixopt.optimizer import MixtureOptimizer
from mixopt.synth import SynthSpec, synthesize

REPO = Path(__file__).resolve().parents[1]
TASKS = ["retrieval_0", "sts_1", "classification_2"]
FAULTY = "trial-001"

# The analytic trainer and a checkpoint of real files, written as the built-in trainers write one
# (a temporary folder renamed into place, so a failed write leaves nothing); trial-001 meets the
# fault named in the file $FAULT_FILE while that file exists.
TRAINER = """
import os
from pathlib import Path

from mixopt import atomic
from mixopt.checksums import write_checksums
from trainers.analytic import Options, train as analytic_train

CHECKPOINT_BYTES = 2 * 2**20


def train(trial, report):
    result = analytic_train(trial, report)
    fault_file = Path(os.environ["FAULT_FILE"])
    fault = fault_file.read_text().strip() if fault_file.exists() else ""
    if trial.trial_id == "trial-001" and fault == "dead_worker":
        os._exit(1)  # the worker process is gone, as after the kernel's OOM killer or a lost node
    if trial.trial_id == "trial-001" and fault == "out_of_memory":
        bytearray(2**50)  # a petabyte: the allocation fails, MemoryError
    with atomic.directory(Path(trial.output_dir) / "model") as tmp:
        (tmp / "weights.bin").write_bytes(os.urandom(CHECKPOINT_BYTES if trial.trial_id == "trial-001" else 4096))
        write_checksums(tmp)
    return result
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "FAULT_FILE": str(tmp_path / "fault"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
    }
    env.pop("RAY_ADDRESS", None)
    return env


def _sweep(tmp_path: Path, path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mixopt.cli", "sweep", str(path), *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _runs(uri: str) -> tuple[list, list]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("infra")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mixopt.role") == "sweep"]
    trials = sorted(
        (r for r in runs if r.data.tags.get("mixopt.role") == "trial"),
        key=lambda r: r.data.tags["mixopt.trial_id"],
    )
    return parents, trials


def _state(storage: Path) -> MixtureOptimizer:
    (path,) = storage.rglob("optimizer_state.json")
    return MixtureOptimizer.from_state_dict(json.loads(path.read_text()))


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.decode().strip()}")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["dead_worker", "out_of_memory", "full_disk"])
def test_an_infrastructure_failure_stops_the_sweep_and_resume_runs_the_trial_again(
    tmp_path: Path, fault: str
) -> None:
    data = tmp_path / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16), with_model=False)
    storage = tmp_path / "runs"
    if fault == "full_disk":
        # Room for the driver's state files and the 4 KiB checkpoints, not for trial-001's 2 MiB.
        _mount_tmpfs(tmp_path / "disk", "1m")
        storage = tmp_path / "disk" / "runs"
    (tmp_path / "fault_trainer.py").write_text(TRAINER)
    (tmp_path / "fault").write_text(fault)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = {
        "name": "infra",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data / t)} for t in TASKS],
        "optimizer": {"n_seeds": 2, "max_trials": 4, "max_concurrent": 1, "random_state": 0},
        "trainer": {"target": "fault_trainer:train", "steps": 5},
        "tracking": {"uri": uri},
        "storage": str(storage),
        "verify": {"seeds": 0},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    try:
        out = _sweep(tmp_path, path)
        assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
        assert "Traceback" not in out.stderr
        (parent,), trials = _runs(uri)
        parent_id = parent.info.run_id
        last = out.stderr.strip().splitlines()[-1]
        assert re.fullmatch(
            rf"{re.escape(str(path))}: {FAULTY} failed for the infrastructure, not its mixture \(.+\); sweep "
            rf"run {parent_id} marked KILLED, and the trial runs again on resume; continue it with "
            rf"`mixopt sweep {re.escape(str(path))} --resume`",
            last,
        ), last
        assert parent.info.status == "KILLED"
        assert FAULTY in parent.data.tags["mixopt.failure"]
        # Stopped at the fault: nothing after it, nothing left RUNNING.
        assert [r.data.tags["mixopt.trial_id"] for r in trials] == ["trial-000", FAULTY]
        faulty = trials[1]
        assert faulty.data.tags["mixopt.status"] == "FAILED" and faulty.info.status == "FAILED"
        assert faulty.data.tags["mixopt.failure_kind"] == "infrastructure"
        proposal = json.loads(faulty.data.tags["mixopt.proposal"])
        opt = _state(storage)
        assert proposal not in [p for p, _ in opt.history], "the optimizer was told the fault"
        assert proposal in opt.pending

        # The fault gone (the worker's cause fixed, the memory there, the disk grown): resume.
        (tmp_path / "fault").unlink()
        if fault == "full_disk":
            subprocess.run(["mount", "-o", "remount,size=64m", str(tmp_path / "disk")], check=True)
        resumed = _sweep(tmp_path, path, "--resume")
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        (parent,), trials = _runs(uri)
        assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
        assert [r.data.tags["mixopt.trial_id"] for r in trials] == [f"trial-{i:03d}" for i in range(4)]
        assert all(r.data.tags["mixopt.status"] == "FINISHED" and r.info.status == "FINISHED" for r in trials)
        assert json.loads(trials[1].data.tags["mixopt.proposal"]) == proposal  # the same trial, run again
        assert len({r.data.tags["mixopt.proposal"] for r in trials}) == 4
        opt = _state(storage)
        assert len(opt.history) == 4 and all(v is not None for _, v in opt.history)
        assert not opt.pending
    finally:
        if fault == "full_disk":
            subprocess.run(["umount", "-l", str(tmp_path / "disk")], capture_output=True)
