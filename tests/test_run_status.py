"""Every run's status is true, whenever the driver stops and however it is resumed.

- SIGTERM during the verification marks its running trials KILLED, not only the sweep run; the
  next ``--resume`` runs them again and ends with every trial FINISHED, none twice.
- A resume's progress line never shows a best below the best objective already recorded.
- A resume with ``--max-trials`` below what is recorded runs nothing, and leaves no trial shown
  RUNNING (in MLflow or in the final table): the interrupted one is closed KILLED, with the reason.

Real `mixopt sweep` processes on a local Ray, a sqlite MLflow store, the analytic trainer slowed
to a few seconds a trial so that a signal finds trials running. The reference is MLflow's record,
read back with its own client.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
TASKS = ["retrieval_0", "sts_1", "classification_2"]


def write_experiment(tmp_path: Path, data_dir: Path, **over) -> Path:
    exp = {
        "name": "status",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "optimizer": {"n_seeds": 2, "max_trials": 5, "max_concurrent": 1, "random_state": 0},
        "trainer": {"target": "trainers.analytic:train", "steps": 20, "seconds_per_step": 0.15},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},
        **over,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


class Driver:
    """A real `mixopt sweep` process, its output in files (a full pipe would block it)."""

    def __init__(self, tmp_path: Path, path: Path, *args: str, tag: str) -> None:
        self.out, self.err = tmp_path / f"{tag}.out", tmp_path / f"{tag}.err"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        env.pop("RAY_ADDRESS", None)
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mixopt.cli", "sweep", str(path), *args],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=err,
            )

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 400) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.out.read_text())) < count:
            assert self.proc.poll() is None, f"the driver ended first:\n{self.output()[-4000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} in time:\n{self.output()[-4000:]}"
            time.sleep(0.3)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=180) == 143, self.output()[-4000:]

    def finish(self, timeout: float = 600) -> int:
        return self.proc.wait(timeout=timeout)


def runs(tmp_path: Path) -> tuple[list, list, list]:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("status")
    all_runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in all_runs if r.data.tags.get("mixopt.role") == "sweep"]
    trials = [r for r in all_runs if r.data.tags.get("mixopt.role") == "trial"]
    search = sorted((r for r in trials if r.data.tags.get("mixopt.stage") != "verify"), key=_tid)
    verify = sorted((r for r in trials if r.data.tags.get("mixopt.stage") == "verify"), key=_tid)
    return parents, search, verify


def _tid(r) -> str:
    return r.data.tags["mixopt.trial_id"]


def recorded_best(search: list) -> float:
    return max(r.data.metrics["objective"] for r in search if r.data.tags["mixopt.status"] == "FINISHED")


@pytest.mark.slow
def test_sigterm_in_search_and_in_verification_then_resume_ends_with_every_status_true(
    tmp_path: Path, data_dir: Path
) -> None:
    # A good mixture first, then one almost all on classification, which scores far lower: the
    # SIGTERM comes while the second runs, so the resume's first line is a trial below the best.
    seeds = [
        {"retrieval_0": 0.45, "sts_1": 0.35, "classification_2": 0.2},
        {"retrieval_0": 0.02, "sts_1": 0.02, "classification_2": 0.96},
    ]
    path = write_experiment(tmp_path, data_dir, verify={"seeds": 2}, search={"seed_mixtures": seeds})
    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()  # tables, before two processes

    first = Driver(tmp_path, path, tag="first")
    first.wait_for(r"trial-000 FINISHED")
    first.wait_for(r"trial-001 started \(")
    first.terminate()
    _, search, _ = runs(tmp_path)
    best_before = recorded_best(search)

    # Resumed: every progress line's best is at least the best recorded before it.
    second = Driver(tmp_path, path, "--resume", tag="second")
    second.wait_for(r"verify-\S+ started \(")
    lines = re.findall(
        r"(trial-\d+) FINISHED objective=([\d.]+) \| \d+/\d+ done, best ([\d.]+)", second.out.read_text()
    )
    assert lines[0][0] == "trial-001" and float(lines[0][1]) < best_before, lines  # the rerun, below it
    bests = [float(b) for _, _, b in lines]
    assert all(b >= round(best_before, 3) for b in bests), (bests, best_before)
    second.terminate()  # during the verification
    (parent,), search, verify = runs(tmp_path)
    assert parent.info.status == "KILLED"
    assert verify and all(r.info.status != "RUNNING" for r in verify + search), [
        (_tid(r), r.info.status) for r in verify + search
    ]

    third = Driver(tmp_path, path, "--resume", tag="third")
    assert third.finish() == 0, third.output()[-4000:]
    (parent,), search, verify = runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert [_tid(r) for r in search] == [f"trial-{i:03d}" for i in range(5)]
    assert len(verify) == 4 and len({_tid(r) for r in verify}) == 4  # 2 seeds x 2 arms, none twice
    for r in search + verify:
        assert r.info.status == "FINISHED" and r.data.tags["mixopt.status"] == "FINISHED", _tid(r)


@pytest.mark.slow
def test_a_resume_with_max_trials_below_the_recorded_leaves_nothing_running(
    tmp_path: Path, data_dir: Path
) -> None:
    path = write_experiment(tmp_path, data_dir)
    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()
    first = Driver(tmp_path, path, tag="first")
    first.wait_for(r"trial-\d+ FINISHED", count=2)
    first.wait_for(r"trial-\d+ started \(", count=3)
    first.terminate()
    _, search, _ = runs(tmp_path)
    done = [r for r in search if r.data.tags["mixopt.status"] in ("FINISHED", "FAILED")]
    interrupted = [r for r in search if r.data.tags["mixopt.status"] == "RUNNING"]
    assert len(done) >= 2 and len(interrupted) == 1

    resumed = Driver(tmp_path, path, "--resume", "--max-trials", str(len(done)), tag="resumed")
    assert resumed.finish() == 0, resumed.output()[-4000:]
    table = resumed.out.read_text()
    assert "RUNNING" not in table, table
    (parent,), search, _ = runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert [_tid(r) for r in search] == [_tid(r) for r in sorted(done + interrupted, key=_tid)]
    by_id = {_tid(r): r for r in search}
    for r in done:
        assert by_id[_tid(r)].data.tags["mixopt.status"] == r.data.tags["mixopt.status"]
    gone = by_id[_tid(interrupted[0])]
    assert gone.info.status == "KILLED" and gone.data.tags["mixopt.status"] == "KILLED"
    assert "not run again" in gone.data.tags["mixopt.failure"]
    assert re.search(rf"{_tid(gone)}\s+\S+\s+KILLED", table), table
