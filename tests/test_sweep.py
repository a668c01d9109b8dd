"""End-to-end sweeps on real Ray (local) and real MLflow (sqlite and an HTTP server), tiny sizes."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mixopt.config import load_experiment

REPO = Path(__file__).resolve().parents[1]
TASKS = ["retrieval_0", "sts_1", "classification_2"]


def write_experiment(tmp_path: Path, data_dir: Path, **over) -> Path:
    exp = {
        "name": "sweep_test",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "search": {
            "seed_mixtures": [{"retrieval_0": 0.5, "sts_1": 0.25, "classification_2": 0.25}],
            "hyperparameters": {"rate": {"type": "log_float", "low": 0.5, "high": 4.0}},
        },
        "optimizer": {"n_seeds": 4, "max_trials": 8, "max_concurrent": 2, "random_state": 0},
        "trainer": {"target": "trainers.analytic:train", "steps": 20},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        # The verification stage has its own tests below; the others check the search alone.
        "verify": {"seeds": 0},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            exp.setdefault(section, {})[field] = value
        else:
            exp[section] = value
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def trial_runs(uri: str, name: str = "sweep_test"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mixopt.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mixopt.role") == "trial"]
    return client, parents, children


def test_sweep_end_to_end_records_everything(tmp_path: Path, data_dir: Path, ray_local) -> None:
    from mixopt.sweep import run_sweep

    exp = load_experiment(write_experiment(tmp_path, data_dir))
    summary = run_sweep(exp, verbose=False)
    client, parents, children = trial_runs(exp.tracking.resolved_uri())
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params["multi_fidelity"] == "False"  # no early stopping: single-fidelity
    assert parents[0].data.params["fidelity_scale"] == "False"
    assert len(children) == 8
    assert summary.finished == 8 and summary.failed == 0
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    origins = [c.data.params["origin"] for c in children]
    # 4 seeds, then GP proposals; of the last 2 of max_trials one or both exploit (one at a time:
    # the second is UCB when the first is still running).
    assert origins.count("seed") == 4 and origins.count("exploit") in (1, 2)
    assert origins.count("bo") == 4 - origins.count("exploit")
    for c in children:
        assert c.info.status == "FINISHED" and c.data.tags["mixopt.status"] == "FINISHED"
        weights = {t: json.loads(c.data.tags["mixopt.proposal"])[t] for t in TASKS}
        assert abs(sum(weights.values()) - 1) < 1e-9 and min(weights.values()) >= 0
        # The params are the exact weights rounded for the runs table (issue 29, case 14).
        for t, w in weights.items():
            assert c.data.params[f"w.{t}"] == ("0" if w == 0 else f"{w:.4f}")
        assert 0.5 <= float(c.data.params["hp.rate"]) <= 4.0
        assert c.data.tags["ray.node_id"]
        assert set(c.data.metrics) >= {"objective", "loss", *(f"score.{t}" for t in TASKS)}
        # The objective is the mean of the per-task scores (analytic trainer), recorded exactly.
        scores = [c.data.metrics[f"score.{t}"] for t in TASKS]
        assert c.data.metrics["objective"] == pytest.approx(sum(scores) / 3)
        # Training loss was logged by step, not just once.
        assert len(client.get_metric_history(c.info.run_id, "loss")) >= 2
    # The user's seed mixture ran first, exactly as given.
    first = min(children, key=lambda c: c.data.tags["mixopt.trial_id"])
    assert float(first.data.params["w.retrieval_0"]) == 0.5
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {
        "config.yaml",
        "seed_mixtures.json",
        "optimizer_state.json",
        "best_so_far.png",
        "top_mixtures.png",
    } <= artifacts
    best = max(c.data.metrics["objective"] for c in children)
    assert summary.best is not None and summary.best[1] == pytest.approx(best)
    # The sweep recorded its resolved config: `mixopt soup` without a YAML rebuilds the same experiment.
    from mixopt.tracking import recorded_experiment

    recorded, run_id = recorded_experiment(exp.tracking.resolved_uri())
    assert run_id == parents[0].info.run_id
    assert recorded == exp


@pytest.mark.slow
def test_failed_trials_are_recorded_and_the_sweep_goes_on(tmp_path: Path, data_dir: Path, ray_local) -> None:
    from mixopt.sweep import run_sweep

    # Seeds chosen to hit each failure of the trial's own: raise, NaN objective (a worker killed
    # mid-trial is the infrastructure's failure, which stops the sweep: test_infrastructure_failures.py).
    seeds = [
        {"retrieval_0": 0.9, "sts_1": 0.05, "classification_2": 0.05},
        {"retrieval_0": 0.05, "sts_1": 0.9, "classification_2": 0.05},
        {"retrieval_0": 0.05, "sts_1": 0.05, "classification_2": 0.9},
        {"retrieval_0": 0.4, "sts_1": 0.3, "classification_2": 0.3},
    ]
    path = write_experiment(
        tmp_path,
        data_dir,
        search={"seed_mixtures": seeds},
        trainer={
            "target": "trainers.analytic:train",
            "steps": 20,
            "fail_above": {"retrieval_0": 0.85},
            "nan_above": {"sts_1": 0.85},
        },
        optimizer={"n_seeds": 4, "max_trials": 6, "max_concurrent": 2},
    )
    summary = run_sweep(load_experiment(path), verbose=False)
    _, _, children = trial_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert len(children) == 6
    by_id = {c.data.tags["mixopt.trial_id"]: c for c in children}
    for tid, phrase in [
        ("trial-000", "injected failure"),
        ("trial-001", "non-finite objective"),
    ]:
        run = by_id[tid]
        assert run.info.status == "FAILED" and run.data.tags["mixopt.status"] == "FAILED"
        assert phrase in run.data.tags["mixopt.failure"]
    assert summary.failed == 2 and summary.finished == 4
    # The optimizer was told None for the failures, and the sweep went on past the seeds.
    state = json.loads((summary.storage_dir / "optimizer_state.json").read_text())
    from mixopt.optimizer import MixtureOptimizer

    opt = MixtureOptimizer.from_state_dict(state)
    assert [v is None for _, v in opt.history].count(True) == 2
    assert [c.data.params["origin"] for c in children].count("seed") == 4


def test_bad_config_starts_nothing_and_writes_nothing(tmp_path: Path, data_dir: Path) -> None:
    path = write_experiment(tmp_path, data_dir, optimizer={"max_trials": 0})
    proc = subprocess.run(
        [sys.executable, "-m", "mixopt.cli", "sweep", str(path)], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "optimizer.max_trials" in proc.stderr
    # Missing data: also refused before anything is written.
    tasks = [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS]
    tasks[1]["path"] = str(tmp_path / "nope")
    broken = write_experiment(tmp_path, data_dir, tasks=tasks)
    proc = subprocess.run(
        [sys.executable, "-m", "mixopt.cli", "sweep", str(broken)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "no such file" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sweep_against_an_mlflow_tracking_server(tmp_path: Path, data_dir: Path, ray_local) -> None:
    from mixopt.sweep import run_sweep

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--default-artifact-root",
            str(tmp_path / "art"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.5)
        time.sleep(2)
        path = write_experiment(
            tmp_path,
            data_dir,
            tracking={"uri": uri},
            optimizer={"n_seeds": 2, "max_trials": 4, "max_concurrent": 2},
        )
        summary = run_sweep(load_experiment(path), verbose=False)
        _, parents, children = trial_runs(uri)
        assert len(parents) == 1 and len(children) == 4 and summary.finished == 4
        assert all("objective" in c.data.metrics for c in children)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
def test_resume_after_sigkill_of_the_driver(tmp_path: Path, data_dir: Path) -> None:
    path = write_experiment(
        tmp_path,
        data_dir,
        trainer={"target": "trainers.analytic:train", "steps": 20, "seconds_per_step": 0.15},
        optimizer={"n_seeds": 4, "max_trials": 8, "max_concurrent": 2},
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "mixopt.cli", "sweep", str(path)]
    # Create the store's tables before two processes (driver, this test's polling) open it:
    # concurrent first-time schema migrations of one sqlite file would race.
    MlflowClient(uri).search_experiments()
    driver = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # Wait until some trials are done (and others running), then kill the driver outright.
    deadline = time.time() + 600  # generous: a loaded 2-core box runs the stage several times slower
    finished_before: dict[str, int] = {}
    last_error: Exception | None = None
    while time.time() < deadline:
        time.sleep(1)
        try:
            _, _, children = trial_runs(uri)
        except Exception as e:  # the experiment does not exist yet
            last_error = e
            continue
        last_error = None  # the message names a polling error only if the last poll failed
        # A trial is done once its run is closed: the status tag is set just before the end time,
        # and a poll between the two would record no end time to compare with.
        done = [
            c
            for c in children
            if c.data.tags.get("mixopt.status") in ("FINISHED", "FAILED") and c.info.end_time is not None
        ]
        if len(done) >= 3:
            finished_before = {c.data.tags["mixopt.trial_id"]: c.info.end_time for c in done}
            break
        assert driver.poll() is None, "the sweep ended before it could be killed"
    assert finished_before, f"no trial finished in time (last polling error: {last_error!r})"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    _, parents, children = trial_runs(uri)
    assert parents[0].info.status == "RUNNING"  # the killed driver could not close it
    assert len(children) < 8

    resumed = subprocess.run(
        cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    client, parents, children = trial_runs(uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    ids = [c.data.tags["mixopt.trial_id"] for c in children]
    assert sorted(ids) == [f"trial-{i:03d}" for i in range(8)]  # exactly max_trials, none duplicated
    assert all(c.data.tags["mixopt.status"] in ("FINISHED", "FAILED") for c in children)
    for c in children:  # trials that had finished were not run again
        if c.data.tags["mixopt.trial_id"] in finished_before:
            assert c.info.end_time == finished_before[c.data.tags["mixopt.trial_id"]]
    # Proposals are distinct: the optimizer continued, it did not start over.
    proposals = [json.loads(c.data.tags["mixopt.proposal"]) for c in children]
    assert len({json.dumps(p, sort_keys=True) for p in proposals}) == 8
    assert all(
        math.isfinite(c.data.metrics.get("objective", math.nan))
        for c in children
        if c.data.tags["mixopt.status"] == "FINISHED"
    )


@pytest.mark.slow
def test_four_concurrent_trials_on_sqlite_lose_nothing(tmp_path: Path, data_dir: Path, ray_local) -> None:
    from mixopt.sweep import run_sweep

    path = write_experiment(
        tmp_path,
        data_dir,
        resources={"cpus": 0.5},
        trainer={"target": "trainers.analytic:train", "steps": 40, "report_every": 1},
        optimizer={"n_seeds": 4, "max_trials": 8, "max_concurrent": 4},
    )
    summary = run_sweep(load_experiment(path), verbose=False)
    client, _, children = trial_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert summary.finished == 8 and len(children) == 8
    for c in children:
        # 40 loss points per trial, logged while 4 trials ran at once: none dropped.
        history = client.get_metric_history(c.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(1, 41))


@pytest.mark.slow
def test_early_stopping_with_asha(tmp_path: Path, data_dir: Path, ray_local) -> None:
    from mixopt.sweep import run_sweep

    path = write_experiment(
        tmp_path,
        data_dir,
        trainer={
            "target": "trainers.analytic:train",
            "steps": 40,
            "report_every": 5,
            "seconds_per_step": 0.05,
        },
        # Single-fidelity on purpose (early stopping alone would turn multi-fidelity on): a stopped
        # trial is told its last value as its result.
        optimizer={"n_seeds": 6, "max_trials": 6, "max_concurrent": 2, "multi_fidelity": False},
        sweep={"early_stopping": {"enabled": True, "grace_period": 5, "reduction_factor": 2}},
    )
    summary = run_sweep(load_experiment(path), verbose=False)
    client, _, children = trial_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert summary.finished == 6
    stopped = [c for c in children if c.data.tags.get("mixopt.stopped_early") == "true"]
    full = [c for c in children if "mixopt.stopped_early" not in c.data.tags]
    assert stopped and full  # ASHA cut some trials short and let others run to the end

    def last_step(run) -> int:
        return max(m.step for m in client.get_metric_history(run.info.run_id, "objective"))

    # A stopped trial is recorded with the objective it had reached, at the step it was stopped
    # (its per-task scores of that evaluation with it); a full trial reaches the last step.
    for c in stopped:
        assert last_step(c) < 40 and "score.sts_1" in c.data.metrics
    for c in full:
        assert last_step(c) == 40
    # ...and, single-fidelity, told to the optimizer as a finished trial with that objective.
    from mixopt.optimizer import MixtureOptimizer

    opt = MixtureOptimizer.from_state_dict(
        json.loads((summary.storage_dir / "optimizer_state.json").read_text())
    )
    assert not opt.multi_fidelity and not opt.stopped and not opt.partial and not opt.pending
    for c in stopped:
        p = json.loads(c.data.tags["mixopt.proposal"])
        (value,) = [v for q, v in opt.history if q == p]
        assert value == pytest.approx(c.data.metrics["objective"])


def test_reconcile_brings_a_restored_optimizer_in_line_with_mlflow(tmp_path: Path) -> None:
    """Each branch of resume's reconciliation, on a real sqlite store and a real optimizer state."""
    from mixopt.optimizer import MixtureOptimizer
    from mixopt.sweep.resume import reconcile as _reconcile
    from mixopt.tracking import SweepTracker

    tasks = ["a", "b", "c"]
    opt = MixtureOptimizer(tasks, n_seeds=6, random_state=0)
    p = opt.ask(5)
    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "reconcile")
    parent = tracker.start_sweep("s", {}, {})
    runs = [tracker.start_trial(f"trial-{i:03d}", p[i], tasks, "seed", 0) for i in range(4)]
    # trial-000: finished and told before the crash.
    opt.tell(p[0], 0.5)
    tracker.log_metrics(runs[0], {"objective": 0.5}, 10)
    tracker.finish_trial(runs[0], "FINISHED")
    # trial-001: finished in MLflow, the driver died before saving the tell.
    tracker.log_metrics(runs[1], {"objective": 0.7}, 10)
    tracker.finish_trial(runs[1], "FINISHED")
    # trial-002: running when the driver died.
    # trial-003: told (0.9) but its run never closed; it wrote a checkpoint.
    opt.tell(p[3], 0.9)
    tracker.log_metrics(runs[3], {"objective": 0.2}, 5)  # an intermediate evaluation
    (tmp_path / "trial-003" / "model").mkdir(parents=True)
    (tmp_path / "trial-003" / "model" / "modules.json").write_text("[]")
    # p[4]: asked, the driver died before its MLflow run existed.
    # trial-001's driver died between the status tag and MLflow's end: the run is still open.
    tracker.client.update_run(runs[1], status="RUNNING")
    assert tracker.client.get_run(runs[1]).info.status == "RUNNING"
    restored = MixtureOptimizer.from_state_dict(json.loads(json.dumps(opt.state_dict())))

    done, reruns, next_index = _reconcile(restored, tracker, parent, 10, tmp_path)

    assert done == 3 and next_index == 4
    assert reruns == [("trial-002", runs[2], p[2])]
    assert restored.pending == [p[2]]  # p[4] was cancelled, p[1] told
    assert (
        dict((json.dumps(q, sort_keys=True), v) for q, v in restored.history)[
            json.dumps(p[1], sort_keys=True)
        ]
        == 0.7
    )
    assert tracker.client.get_run(runs[1]).info.status == "FINISHED"  # closed on resume
    closed = tracker.client.get_run(runs[3])
    assert closed.info.status == "FINISHED" and closed.data.metrics["objective"] == 0.9
    assert closed.data.tags["mixopt.checkpoint"] == str(tmp_path / "trial-003" / "model")


def test_restart_fills_in_the_params_a_kill_left_unlogged(tmp_path: Path) -> None:
    """A driver killed between creating a trial's run and logging its params: the rerun logs them."""
    from mixopt.tracking import PARENT, ROLE, STATUS, TRIAL_ID, SweepTracker

    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "restart")
    parent = tracker.start_sweep("s", {}, {})
    tags = {ROLE: "trial", PARENT: parent, TRIAL_ID: "trial-000", STATUS: "RUNNING"}
    bare = tracker.client.create_run(tracker.experiment_id, run_name="trial-000", tags=tags).info.run_id
    tracker.client.log_param(bare, "origin", "seed")  # one param made it before the kill
    tracker.restart_trial(bare, {"origin": "seed", "seed": "7", "w.a": "0.25"})
    assert tracker.client.get_run(bare).data.params == {"origin": "seed", "seed": "7", "w.a": "0.25"}
    tracker.restart_trial(bare, {"origin": "seed", "seed": "7", "w.a": "0.25"})  # again: a no-op
    assert tracker.client.get_run(bare).data.tags[STATUS] == "RUNNING"


# ---------------------------------------------------------------------- the verification stage


FAR_SEED = {"retrieval_0": 0.2, "sts_1": 0.2, "classification_2": 0.6}


def verify_runs(uri: str, name: str = "sweep_test"):
    _, _, children = trial_runs(uri, name)
    search = [c for c in children if c.data.tags.get("mixopt.stage") == "search"]
    verify = [c for c in children if c.data.tags.get("mixopt.stage") == "verify"]
    assert len(search) + len(verify) == len(children)
    return search, verify


def _check_verification_record(
    client: MlflowClient, parent, search, verify, n_seeds: int, tmp_path: Path
) -> None:
    """The verification trials and the parent run's summary, against an independent computation."""
    from scipy import stats

    assert len(verify) == 2 * n_seeds
    arms = {"recommended": {}, "baseline": {}}
    for c in verify:
        assert c.info.status == "FINISHED" and c.data.params["origin"] == "verify"
        arms[c.data.tags["mixopt.verify_arm"]][int(c.data.params["seed"])] = c.data.metrics["objective"]
    # Paired: the same seeds for both arms, none used by a search trial; one mixture per arm.
    assert set(arms["recommended"]) == set(arms["baseline"]) and len(arms["recommended"]) == n_seeds
    search_seeds = {int(c.data.params["seed"]) for c in search}
    assert not search_seeds & set(arms["recommended"])
    for arm in arms:
        assert (
            len({c.data.tags["mixopt.proposal"] for c in verify if c.data.tags["mixopt.verify_arm"] == arm})
            == 1
        )
    seeds = sorted(arms["recommended"])
    rec = [arms["recommended"][s] for s in seeds]
    base = [arms["baseline"][s] for s in seeds]
    ci = stats.ttest_rel(rec, base).confidence_interval(0.95)
    m = client.get_run(parent.info.run_id).data.metrics
    assert m["verify.n"] == n_seeds
    assert m["verify.diff"] == pytest.approx(float(np.mean(np.subtract(rec, base))), abs=1e-12)
    assert (m["verify.ci_low"], m["verify.ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert {"recommended.mean_pred", "recommended.sd_pred", "gp.noise_sd"} <= set(m)
    pooled = np.sqrt((np.var(rec, ddof=1) + np.var(base, ddof=1)) / 2)
    assert m["verify.seed_sd"] == pytest.approx(pooled, rel=1e-9)
    with_artifact = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "recommended.json" in with_artifact
    doc = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "recommended.json", str(tmp_path))).read_text()
    )
    assert [p["seed"] for p in doc["verification"]["pairs"]] == seeds
    recommended = json.loads(
        next(c for c in verify if c.data.tags["mixopt.verify_arm"] == "recommended").data.tags[
            "mixopt.proposal"
        ]
    )
    assert recommended == pytest.approx(doc["proposal"])
    line = client.get_run(parent.info.run_id).data.tags["mixopt.verify"]
    assert f"{n_seeds} seeds paired" in line
    assert ("includes 0" in line) == (ci.low <= 0 <= ci.high)


@pytest.mark.slow
def test_verification_stage_trials_and_summary_are_in_mlflow(
    tmp_path: Path, data_dir: Path, ray_local
) -> None:
    from mixopt.optimizer import MixtureOptimizer
    from mixopt.sweep import run_sweep

    path = write_experiment(
        tmp_path,
        data_dir,
        # A first seed mixture (the baseline) far from the analytic optimum, about (0.50, 0.28,
        # 0.22): the default seed (0.5, 0.25, 0.25) is near it, and a recommendation within 1 % of
        # the baseline is one trial, not two arms (the plan's "same": no verification trials).
        search__seed_mixtures=[FAR_SEED],
        trainer={"target": "trainers.analytic:train", "steps": 20, "seed": 100, "noise": 0.01},
        optimizer={"n_seeds": 4, "max_trials": 6, "max_concurrent": 2},
        verify={"seeds": 3},
    )
    summary = run_sweep(load_experiment(path), verbose=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client, parents, _ = trial_runs(uri)
    search, verify = verify_runs(uri)
    # Every search trial trained with its own seed: trainer.seed + its index.
    assert sorted(int(c.data.params["seed"]) for c in search) == list(range(100, 106))
    assert summary.finished == 6 and len(search) == 6  # the summary counts the search alone
    _check_verification_record(client, parents[0], search, verify, 3, tmp_path)
    # The baseline is the user's first seed mixture (the uniform default is tested below).
    base = json.loads(
        next(c for c in verify if c.data.tags["mixopt.verify_arm"] == "baseline").data.tags["mixopt.proposal"]
    )
    assert {t: base[t] for t in FAR_SEED} == FAR_SEED
    # Verification trials were not told to the optimizer.
    state = json.loads((summary.storage_dir / "optimizer_state.json").read_text())
    assert len(MixtureOptimizer.from_state_dict(state).history) == 6
    assert summary.verification is not None and summary.verification.n == 3
    assert summary.recommended is not None and summary.recommended.source == "posterior_mean"


@pytest.mark.slow
def test_resume_after_sigkill_during_verification(tmp_path: Path, data_dir: Path) -> None:
    path = write_experiment(
        tmp_path,
        data_dir,
        search__seed_mixtures=[FAR_SEED],  # a baseline the recommendation is not (see above)
        trainer={"target": "trainers.analytic:train", "steps": 20, "seconds_per_step": 0.1, "noise": 0.01},
        optimizer={"n_seeds": 3, "max_trials": 4, "max_concurrent": 2},
        verify={"seeds": 4},
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "mixopt.cli", "sweep", str(path)]
    MlflowClient(uri).search_experiments()  # create the tables before two processes open the store
    driver = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 600  # generous: a loaded 2-core box runs the stage several times slower
    finished_before: dict[str, int] = {}
    last_error: Exception | None = None
    while time.time() < deadline:
        time.sleep(1)
        try:
            _, verify = verify_runs(uri)
        except Exception as e:  # the experiment does not exist yet
            last_error = e
            continue
        last_error = None  # the message names a polling error only if the last poll failed
        # Closed runs only: the status tag is set a moment before MLflow's end time.
        done = [
            c
            for c in verify
            if c.data.tags.get("mixopt.status") in ("FINISHED", "FAILED") and c.info.end_time is not None
        ]
        if len(done) >= 3:
            finished_before = {c.data.tags["mixopt.trial_id"]: c.info.end_time for c in done}
            break
        assert driver.poll() is None, "the sweep ended before it could be killed"
    assert finished_before, f"no verification trial finished in time (last polling error: {last_error!r})"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    _, parents, _ = trial_runs(uri)
    assert parents[0].info.status == "RUNNING"
    plan = json.loads(next((tmp_path / "runs").glob("sweep_test/sweep-*/verify_plan.json")).read_text())
    _, verify = verify_runs(uri)
    assert len([c for c in verify if c.data.tags["mixopt.status"] == "FINISHED"]) < 8

    resumed = subprocess.run(
        cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    client, parents, _ = trial_runs(uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    search, verify = verify_runs(uri)
    assert sorted(c.data.tags["mixopt.trial_id"] for c in search) == [f"trial-{i:03d}" for i in range(4)]
    assert sorted(c.data.tags["mixopt.trial_id"] for c in verify) == sorted(
        t["trial_id"] for t in plan["trials"]
    )
    for c in verify:  # verification trials that had finished were not run again
        if c.data.tags["mixopt.trial_id"] in finished_before:
            assert c.info.end_time == finished_before[c.data.tags["mixopt.trial_id"]]
    # The resumed stage tested the recommendation the plan recorded before the kill.
    rec = next(c for c in verify if c.data.tags["mixopt.verify_arm"] == "recommended")
    assert json.loads(rec.data.tags["mixopt.proposal"]) == plan["recommendation"]["proposal"]
    _check_verification_record(client, parents[0], search, verify, 4, tmp_path)
    assert "seeds paired" in resumed.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_failed_verification_trials_are_recorded_and_the_line_says_so(
    tmp_path: Path, data_dir: Path, ray_local
) -> None:
    from mixopt.sweep import run_sweep

    # The baseline (retrieval_0 = 0.6, outside the search bounds) fails on every seed; the bounds
    # keep every search trial and the recommendation below the failure threshold.
    path = write_experiment(
        tmp_path,
        data_dir,
        search={"bounds": {"retrieval_0": {"max": 0.4}}},
        trainer={"target": "trainers.analytic:train", "steps": 20, "fail_above": {"retrieval_0": 0.45}},
        optimizer={"n_seeds": 3, "max_trials": 4, "max_concurrent": 2},
        verify={"seeds": 2, "baseline": {"retrieval_0": 0.6, "sts_1": 0.2, "classification_2": 0.2}},
    )
    summary = run_sweep(load_experiment(path), verbose=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client, parents, _ = trial_runs(uri)
    _, verify = verify_runs(uri)
    assert len(verify) == 4
    status = {c.data.tags["mixopt.trial_id"]: c.data.tags["mixopt.status"] for c in verify}
    assert status == {
        "verify-r00": "FINISHED",
        "verify-b00": "FAILED",
        "verify-r01": "FINISHED",
        "verify-b01": "FAILED",
    }
    assert all(
        "injected failure" in c.data.tags["mixopt.failure"]
        for c in verify
        if status[c.data.tags["mixopt.trial_id"]] == "FAILED"
    )
    line = client.get_run(parents[0].info.run_id).data.tags["mixopt.verify"]
    assert line.startswith("verification inconclusive: none of the 2 seed pairs finished")
    m = client.get_run(parents[0].info.run_id).data.metrics
    assert m["verify.n"] == 0 and m["verify.failed"] == 2 and "verify.diff" not in m
    assert summary.verification.line == line and parents[0].info.status == "FINISHED"


def test_the_tune_parts_pickle_as_tune_stores_them(tmp_path: Path) -> None:
    """Tune cloudpickles its search algorithm, scheduler and callbacks into the experiment's
    ``tuner.pkl``: the sweep's classes are module-level and pickle by reference with their parts."""
    import pickle

    from ray import cloudpickle

    from mixopt.optimizer import MixtureOptimizer
    from mixopt.sweep.callback import SweepCallback
    from mixopt.sweep.common import State
    from mixopt.sweep.progress import Printer
    from mixopt.sweep.searcher import FixedSearcher, MixtureSearcher
    from mixopt.sweep.stopping import PredictedStop
    from mixopt.sweep.verify import PlannedTrial
    from mixopt.tracking import SweepTracker

    exp = load_experiment(write_experiment(tmp_path, tmp_path / "data"), check_trainer=False)
    opt = MixtureOptimizer(TASKS, n_seeds=3, random_state=0)
    for p in opt.ask(2):
        opt.tell(p, p["sts_1"])
    state = State(opt, tmp_path / "state.json")
    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "pickled")
    printer = Printer(TASKS, 4, enabled=False)
    searcher = MixtureSearcher(state, tracker, exp, 4, [], 2, printer)
    planned = PlannedTrial("verify-r00", "recommended", 16, {"retrieval_0": 1.0, "sts_1": 0.0})
    parts = [
        searcher,
        FixedSearcher([(planned, None)], tracker, TASKS, printer),
        SweepCallback(tracker, printer, exp, state),
        PredictedStop(searcher),
    ]
    for part in parts:
        data = cloudpickle.dumps(part)
        assert b"_make_skeleton_class" not in data  # every class by reference, none by its code
        assert type(pickle.loads(data)) is type(part)
    back = pickle.loads(cloudpickle.dumps(searcher))
    assert back.state.optimizer.state_dict() == opt.state_dict() and back.index == 2
    assert pickle.loads(cloudpickle.dumps(parts[1])).queue == [(planned, None)]
