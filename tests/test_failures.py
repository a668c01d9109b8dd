"""Failures told apart (issue 29, cases 5, 8, 10, 11): a full disk, a dead worker, bad data in a
trial, and a sweep whose every trial failed. Real Ray, real MLflow (sqlite), real driver processes."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mixopt.synth import SynthSpec, synthesize

TASKS = ["retrieval_0", "sts_1", "classification_2"]


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    out = tmp_path / "data"
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16), with_model=False)
    return out


def write_experiment(tmp_path: Path, data_dir: Path, **over) -> Path:
    exp = {
        "name": "failures",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "optimizer": {"n_seeds": 2, "max_trials": 2, "max_concurrent": 1},
        "trainer": {"target": "trainers.analytic:train", "steps": 10},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},
    }
    exp.update(over)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def driver(path: Path, *args: str, env_extra: dict | None = None, timeout: float = 400):
    """``mixopt sweep`` in its own process (its own local Ray), as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "mixopt.cli", "sweep", str(path), *args],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def runs(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("failures")
    found = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in found if r.data.tags.get("mixopt.role") == "sweep"]
    trials = sorted(
        (r for r in found if r.data.tags.get("mixopt.role") == "trial"),
        key=lambda r: r.data.tags["mixopt.trial_id"],
    )
    return client, parents, trials


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_leaves_no_temporary_file_when_the_write_fails(tmp_path: Path) -> None:
    """A write that fails part-way (here: a file size limit, EFBIG, in a child process) leaves the old
    file whole and no ``.name.*`` temporary next to it."""
    target = tmp_path / "optimizer_state.json"
    target.write_text('{"old": true}')
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from mixopt.atomic import write_text as atomic_write\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        f"    atomic_write(Path({str(target)!r}), 'x' * 100000)\n"
        "except OSError as e:\n"
        "    print(e.errno); sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == errno.EFBIG
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimizer_state.json"]


def test_failure_kind_follows_the_chain_a_trainer_leaves() -> None:
    """A trainer re-raises a DataError as TrialFailed ``from None``: still bad data; ENOSPC under it is
    the infrastructure; anything else the trial's own."""
    from mixopt.data import DataError
    from mixopt.sweep.common import failure_kind
    from mixopt.trial import TrialFailed

    def wrapped(inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except Exception as e:
                raise TrialFailed(f"trial trial-001: step 3: {e}") from None
        except TrialFailed as outer:
            return outer

    assert failure_kind(wrapped(DataError("/d/train.jsonl:500: missing 'positive'"))) == "data"
    assert failure_kind(wrapped(OSError(errno.ENOSPC, "No space left on device"))) == "infrastructure"
    assert failure_kind(wrapped(ValueError("weights"))) == "trial"
    assert failure_kind(TrialFailed("NaN loss")) == "trial"


# --------------------------------------------------------------------------- case 11


@pytest.mark.slow
def test_a_sweep_whose_every_trial_fails_is_marked_failed(tmp_path: Path, data_dir: Path) -> None:
    path = write_experiment(
        tmp_path,
        data_dir,
        trainer={
            "target": "trainers.analytic:train",
            "steps": 10,
            "fail_above": {t: 0.0 for t in TASKS},
        },
    )
    out = driver(path)
    assert out.returncode == 1, out.stderr[-3000:]
    _, parents, trials = runs(tmp_path)
    assert [t.data.tags["mixopt.status"] for t in trials] == ["FAILED", "FAILED"]
    assert [t.data.tags["mixopt.failure_kind"] for t in trials] == ["trial", "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"


# --------------------------------------------------------------------------- case 8


@pytest.mark.slow
def test_a_killed_worker_is_one_short_line_and_ray_s_text_is_in_the_run(
    tmp_path: Path, data_dir: Path
) -> None:
    seeds = [
        {"retrieval_0": 0.05, "sts_1": 0.05, "classification_2": 0.9},
        {"retrieval_0": 0.4, "sts_1": 0.3, "classification_2": 0.3},
    ]
    path = write_experiment(
        tmp_path,
        data_dir,
        search={"seed_mixtures": seeds},
        trainer={"target": "trainers.analytic:train", "steps": 10, "exit_above": {"classification_2": 0.85}},
    )
    out = driver(path)
    assert out.returncode == 1, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[mixopt] trial-000 FAILED")]
    assert len(lines) == 1, out.stdout
    assert "the worker process died" in lines[0] and len(lines[0]) < 250, lines[0]
    # Ray's long account is not repeated by mixopt (the summary's reasons list the short line).
    assert "The actor is dead because its worker process has died" not in out.stdout
    client, parents, trials = runs(tmp_path)
    dead = trials[0]
    assert dead.data.tags["mixopt.status"] == "FAILED"
    assert dead.data.tags["mixopt.failure_kind"] == "infrastructure"
    text = Path(client.download_artifacts(dead.info.run_id, "failure.txt", str(tmp_path))).read_text()
    assert "worker process has died" in text  # Ray's full text, kept with the run
    # A dead worker is the machine's failure, not the mixture's: the sweep stops there, resumable.
    assert [t.data.tags["mixopt.trial_id"] for t in trials] == ["trial-000"]
    assert parents[0].info.status == "KILLED"
    assert (
        "trial-000 failed for the infrastructure, not its mixture (the worker process died"
        in (out.stderr.strip().splitlines()[-1])
    )


# --------------------------------------------------------------------------- case 10


@pytest.mark.slow
def test_bad_row_500_in_a_trial_stops_the_sweep_with_exit_1_and_no_recommendation(tmp_path: Path) -> None:
    """``--data-check head`` lets a bad row 500 through; the trial that reads it fails with the row's
    file:line, nothing more is proposed, the sweep run is FAILED and nothing is recommended."""
    data = tmp_path / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=600, n_dev=16), with_model=False)
    train = data / "sts_1" / "train.jsonl"
    lines = train.read_text().splitlines(keepends=True)
    lines[499] = '{"text1": "a", "text2": "b"}\n'  # no score
    train.write_text("".join(lines))
    # The analytic trainer reads a task's first max_rows rows: a trial reaches row 500 when it
    # reads sts_1 (the first seed does, the second never gets its turn with max_concurrent 1).
    path = write_experiment(
        tmp_path,
        data,
        optimizer={"n_seeds": 3, "max_trials": 4, "max_concurrent": 1},
        trainer={"target": "trainers.analytic:train", "steps": 10, "max_rows": 600},
    )
    out = driver(path, "--data-check", "head")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert re.search(rf"trial-000 failed on bad data \(.*{re.escape(str(train))}:500", last), last
    assert "marked FAILED" in last
    assert "recommended" not in out.stdout
    _, parents, trials = runs(tmp_path)
    assert parents[0].info.status == "FAILED"
    # Stopped at the first bad-data failure: no trial after it.
    assert [t.data.tags["mixopt.trial_id"] for t in trials] == ["trial-000"]
    assert trials[0].data.tags["mixopt.failure_kind"] == "data"


# --------------------------------------------------------------------------- case 5

DISK_TRAINER = '''
from pathlib import Path
from trainers.analytic import Options, train as analytic_train


def train(trial, report):
    """The analytic trainer plus a 256 KiB checkpoint file, as a real trainer writes one."""
    result = analytic_train(trial, report)
    (Path(trial.output_dir) / "weights.bin").write_bytes(b"w" * 262144)
    return result
'''


@pytest.mark.slow
def test_a_full_disk_under_storage_is_one_line_then_resume_reruns_what_it_failed(
    tmp_path: Path, data_dir: Path
) -> None:
    """``storage`` on a 1 MiB tmpfs (mounted as root; skipped where mounting is not allowed): the disk
    fills mid-sweep; one line naming the path, the sweep run KILLED, no temporary files; with room
    again, ``--resume`` ends with every trial FINISHED, the disk's failures run again."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (tmp_path / "disk_trainer.py").write_text(DISK_TRAINER)
        path = write_experiment(
            tmp_path,
            data_dir,
            optimizer={"n_seeds": 2, "max_trials": 5, "max_concurrent": 1},
            trainer={"target": "disk_trainer:train", "steps": 10},
            storage=str(disk / "runs"),
        )
        env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
        out = driver(path, env_extra=env)
        assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
        last = out.stderr.strip().splitlines()[-1]
        assert re.fullmatch(
            rf"{re.escape(str(path))}: cannot write {re.escape(str(disk))}/\S+: No space left on device; "
            "free space there, then continue the sweep with --resume",
            last,
        ), last
        assert "Traceback" not in out.stderr
        _, parents, before = runs(tmp_path)
        assert parents[0].info.status == "KILLED"
        assert not [p for p in disk.rglob(".optimizer_state.json.*")]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed = driver(path, "--resume", env_extra=env)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        _, parents, trials = runs(tmp_path)
        assert parents[0].info.status == "FINISHED"
        assert [t.data.tags["mixopt.trial_id"] for t in trials] == [f"trial-{i:03d}" for i in range(5)]
        assert all(t.data.tags["mixopt.status"] == "FINISHED" for t in trials)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
