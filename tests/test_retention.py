"""Checkpoint retention (``storage_keep``) and ``mixopt gc``: what stays on disk, what MLflow says.

The expected survivors are computed here from the runs' recorded objectives by a plain sort
(the soup's order: objective, highest first), never from the retention module's own ranking.
Sweeps are recorded with the real MLflow client as the sweep records them, over real folders; the
slow tests run real sweeps of the tiny Gemma3 trainer on a local Ray, one of them SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.config import ConfigError, load_experiment
from mixopt.soup import SoupError, select_ingredients
from mixopt.sweep.retention import Keep, disk_bytes, prune_sweep

REPO = Path(__file__).resolve().parents[1]
TASKS = ["retrieval_0", "sts_1", "classification_2"]
PRUNED = "mixopt.checkpoint_pruned"


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def record_sweep(
    uri: str, name: str, storage: Path, trials: list[dict], status: str = "FINISHED"
) -> tuple[str, dict]:
    """A sweep's MLflow records as the sweep writes them, each trial's checkpoint a real folder of
    ``size`` bytes at ``storage/<trial id>/model``; returns (sweep run id, trial id -> run id)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    eid = exp.experiment_id if exp else client.create_experiment(name, artifact_location=str(storage / "art"))
    storage.mkdir(parents=True, exist_ok=True)
    tags = {"mixopt.role": "sweep", "mixopt.state_path": str(storage / "optimizer_state.json")}
    parent = client.create_run(eid, run_name="sweep", tags=tags).info.run_id
    ids = {}
    for t in trials:
        ckpt = storage / t["id"] / "model"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_bytes(b"w" * t.get("size", 1000))
        tags = {
            "mixopt.role": "trial",
            "mlflow.parentRunId": parent,
            "mixopt.trial_id": t["id"],
            "mixopt.status": t.get("status", "FINISHED"),
            "mixopt.checkpoint": str(ckpt),
            "mixopt.proposal": json.dumps({"a": 0.5, "b": 0.5}),
        }
        if "arm" in t:
            tags |= {"mixopt.stage": "verify", "mixopt.verify_arm": t["arm"]}
        rid = client.create_run(eid, run_name=t["id"], tags=tags).info.run_id
        metrics = [Metric("objective", t["objective"], 0, 0)] if "objective" in t else []
        client.log_batch(rid, metrics=metrics, params=[Param("w.a", "0.5"), Param("w.b", "0.5")])
        if t.get("status", "FINISHED") != "RUNNING":
            client.set_terminated(rid, "FAILED" if t.get("status") == "FAILED" else "FINISHED")
        ids[t["id"]] = rid
        time.sleep(0.002)  # distinct start times (milliseconds), the soup's tie order
    if status != "RUNNING":
        client.set_terminated(parent, status)
    return parent, ids


def set_tags_of(client: MlflowClient):
    def set_tags(run_id, tags):
        for k, v in tags.items():
            client.set_tag(run_id, k, v)

    return set_tags


TRIALS = [
    {"id": "trial-000", "objective": 0.61},
    {"id": "trial-001", "objective": 0.72},
    {"id": "trial-002", "objective": 0.55},
    {"id": "trial-003", "objective": 0.80},
    {"id": "trial-004", "objective": 0.40},
    {"id": "trial-005", "status": "FAILED"},  # left as it is: only finished trials are pruned
    {"id": "trial-006", "status": "RUNNING"},  # its checkpoint may be being written
    {"id": "trial-007", "objective": 0.72},  # ties trial-001, started later: ranked after it
    {"id": "verify-r00", "objective": 0.70, "arm": "recommended"},
    {"id": "verify-b00", "objective": 0.90, "arm": "baseline"},  # never a soup ingredient
]


def expected_kept(trials: list[dict], top: int, verify: bool, pins: set[str]) -> set[str]:
    """The reference: the soup's candidates sorted by objective by hand, plus verification and pins."""
    finished = [t for t in trials if t.get("status", "FINISHED") == "FINISHED"]
    candidates = [t for t in finished if t.get("arm", "recommended") == "recommended"]
    by_value = sorted(candidates, key=lambda t: t["objective"], reverse=True)
    kept = {t["id"] for t in by_value[:top]} | (pins & {t["id"] for t in finished})
    if verify:
        kept |= {t["id"] for t in finished if t.get("arm") == "recommended"}
    return kept


@pytest.mark.parametrize("verify", [True, False])
def test_prune_keeps_the_top_n_verification_and_pins_and_tags_the_rest(tmp_path: Path, verify: bool) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "runs" / "exp" / "sweep-1"
    parent, ids = record_sweep(uri, "keep", storage, TRIALS)
    client = MlflowClient(uri)
    eid = client.get_experiment_by_name("keep").experiment_id
    before = _folder_bytes(storage)

    out = prune_sweep(client, eid, parent, storage, Keep(2, verify, ("trial-004",)), set_tags_of(client))

    kept = expected_kept(TRIALS, 2, verify, {"trial-004"})
    assert kept == ({"trial-003", "trial-001", "trial-004"} | ({"verify-r00"} if verify else set()))
    untouched = {"trial-005", "trial-006"}
    on_disk = {p.parent.name for p in storage.glob("*/model")}
    assert on_disk == kept | untouched
    pruned = {t["id"] for t in TRIALS} - kept - untouched
    assert {p.trial_id for p in out.pruned} == pruned
    for t in TRIALS:
        run = client.get_run(ids[t["id"]])
        assert (run.data.tags.get(PRUNED) == "true") == (t["id"] in pruned)
        if "objective" in t:  # the run and its metrics stay
            assert run.data.metrics["objective"] == t["objective"]
    assert not list(storage.glob(".pruned-*"))  # no tombstone left
    assert out.freed == before - _folder_bytes(storage) == 1000 * len(pruned)

    # A second prune finds nothing more to do: the decision is stable.
    again = prune_sweep(client, eid, parent, storage, Keep(2, verify, ("trial-004",)), set_tags_of(client))
    assert not again.pruned and not again.finished

    # The soup never selects a pruned trial; its top 2 are the same as with every checkpoint kept.
    sel = select_ingredients(client, "keep", "top9")
    assert {i.trial_id for i in sel.chosen} == kept
    assert [i.trial_id for i in select_ingredients(client, "keep", "top2").chosen] == [
        "trial-003",
        "trial-001",
    ]
    reasons = {s.trial_id: s.reason for s in sel.skipped}
    assert all("storage_keep" in reasons[t] for t in pruned if t != "verify-b00")
    # Naming a pruned trial is one clear line, naming the run and why.
    with pytest.raises(SoupError) as err:
        select_ingredients(client, "keep", ids["trial-002"])
    message = str(err.value)
    assert "\n" not in message and ids["trial-002"] in message and "storage_keep" in message


def test_a_prune_killed_after_its_rename_is_finished_by_the_next(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "runs" / "exp" / "sweep-1"
    trials = [{"id": f"trial-00{i}", "objective": v} for i, v in enumerate([0.5, 0.9, 0.7])]
    parent, ids = record_sweep(uri, "killed", storage, trials)
    client = MlflowClient(uri)
    eid = client.get_experiment_by_name("killed").experiment_id
    # What a SIGKILL between the rename and the tag leaves: the tombstone, the run not yet tagged.
    stone = storage / f".pruned-{ids['trial-000']}"
    os.replace(storage / "trial-000" / "model", stone)
    # Meanwhile the half-pruned trial does not count as present: the soup skips it.
    sel = select_ingredients(client, "killed", "top9")
    assert {i.trial_id for i in sel.chosen} == {"trial-001", "trial-002"}

    out = prune_sweep(client, eid, parent, storage, Keep(1), set_tags_of(client))
    assert not stone.exists()
    assert [r for r, _ in out.finished] == [ids["trial-000"]]
    assert [p.trial_id for p in out.pruned] == ["trial-002"]  # 0.7 < 0.9: outside the top 1
    tags = {t: client.get_run(r).data.tags.get(PRUNED) for t, r in ids.items()}
    assert tags == {"trial-000": "true", "trial-001": None, "trial-002": "true"}
    assert {p.parent.name for p in storage.glob("*/model")} == {"trial-001"}


def test_a_checkpoint_outside_the_sweep_storage_is_never_deleted(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "runs" / "exp" / "sweep-1"
    trials = [{"id": "trial-000", "objective": 0.9}, {"id": "trial-001", "objective": 0.1}]
    parent, ids = record_sweep(uri, "outside", storage, trials)
    client = MlflowClient(uri)
    eid = client.get_experiment_by_name("outside").experiment_id
    out = prune_sweep(client, eid, parent, storage / "elsewhere", Keep(1), set_tags_of(client))
    assert not out.pruned and "outside the sweep's storage" in out.notes[0]
    assert (storage / "trial-001" / "model").is_dir()


def test_gc_prunes_finished_sweeps_skips_running_ones_and_dry_run_deletes_nothing(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    old = [{"id": f"trial-00{i}", "objective": v, "size": 3000} for i, v in enumerate([0.3, 0.8, 0.5, 0.6])]
    old_parent, old_ids = record_sweep(uri, "gcx", tmp_path / "runs" / "sweep-old", old)
    live = [{"id": f"trial-00{i}", "objective": v} for i, v in enumerate([0.1, 0.2])]
    record_sweep(uri, "gcx", tmp_path / "runs" / "sweep-live", live, status="RUNNING")
    client = MlflowClient(uri)
    runner = CliRunner()
    args = ["gc", "--experiment", "gcx", "--tracking-uri", uri, "--keep", "2"]

    dry = runner.invoke(app, args + ["--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would free 6.00 kB" in dry.output  # two of the old sweep's four, 3000 bytes each
    assert len(list(tmp_path.glob("runs/*/*/model"))) == 6
    assert not any(PRUNED in client.get_run(r).data.tags for r in old_ids.values())

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "freed 6.00 kB in 2 sweep(s)" in result.output
    assert "still running" in result.output
    survivors = {p.parent.name for p in (tmp_path / "runs" / "sweep-old").glob("*/model")}
    assert survivors == {"trial-001", "trial-003"}  # 0.8 and 0.6
    assert len(list((tmp_path / "runs" / "sweep-live").glob("*/model"))) == 2

    no_keep = runner.invoke(app, ["gc", "--experiment", "gcx", "--tracking-uri", uri])
    assert no_keep.exit_code == 2 and "--keep N" in no_keep.output
    assert len(no_keep.output.strip().splitlines()) == 1


def test_gc_without_a_yaml_prunes_by_the_config_the_newest_sweep_recorded(
    tmp_path: Path, data_dir: Path
) -> None:
    """No YAML, no --experiment: gc takes the newest sweep's experiment and the storage_keep of the
    config it recorded (top 2, trial-000 pinned); an older experiment's sweep is not its business."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    other = [{"id": f"trial-00{i}", "objective": v} for i, v in enumerate([0.1, 0.2, 0.3])]
    _, other_ids = record_sweep(uri, "older", tmp_path / "runs" / "older", other)
    values = [0.3, 0.8, 0.5, 0.6]
    trials = [{"id": f"trial-00{i}", "objective": v} for i, v in enumerate(values)]
    parent, ids = record_sweep(uri, "inferred", tmp_path / "runs" / "inferred", trials)
    config = {
        "name": "inferred",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "trainer": {"target": "trainers.analytic:train", "steps": 5},
        "tracking": {"uri": uri},
        "storage_keep": {"top": 2, "pin": ["trial-000"]},
    }
    client = MlflowClient(uri)
    client.log_text(parent, yaml.safe_dump(config), "config.yaml")

    result = CliRunner().invoke(app, ["gc", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert f"sweep run {parent} (experiment 'inferred'): using its recorded config" in result.output
    # The two best by objective (a plain sort), and the pinned trial.
    best = {t["id"] for t in sorted(trials, key=lambda t: -t["objective"])[:2]}
    kept = best | {"trial-000"}
    tags = {t: client.get_run(r).data.tags.get(PRUNED) for t, r in ids.items()}
    assert tags == {t: (None if t in kept else "true") for t in ids}
    assert {p.parent.name for p in (tmp_path / "runs" / "inferred").glob("*/model")} == kept
    assert not any(PRUNED in client.get_run(r).data.tags for r in other_ids.values())
    assert len(list((tmp_path / "runs" / "older").glob("*/model"))) == len(other)

    empty = f"sqlite:///{tmp_path}/empty.db"
    MlflowClient(empty).create_experiment("nothing")
    none = CliRunner().invoke(app, ["gc", "--tracking-uri", empty])
    assert none.exit_code == 2 and len(none.output.strip().splitlines()) == 1
    assert "no sweep recorded" in none.output and "--experiment NAME" in none.output


def test_storage_keep_config(tmp_path: Path, data_dir: Path) -> None:
    base = {
        "name": "cfg",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "trainer": {"target": "trainers.analytic:train", "steps": 5},
        "storage": "./runs",  # the plain string keeps working beside the new section
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(base))
    assert load_experiment(path).storage_keep is None  # off unless asked for
    path.write_text(yaml.safe_dump({**base, "storage_keep": {"top": 3, "pin": ["trial-002"]}}))
    keep = load_experiment(path).storage_keep
    assert (keep.top, keep.verify, keep.pin) == (3, True, ["trial-002"])
    for bad in ({"top": 0}, {"top": True}, {"verify": True}, {"top": 2, "pin": [""]}, {"top": 2, "topp": 1}):
        path.write_text(yaml.safe_dump({**base, "storage_keep": bad}))
        with pytest.raises(ConfigError, match="storage_keep"):
            load_experiment(path)
    shipped = yaml.safe_load((REPO / "experiments" / "embeddinggemma.yaml").read_text())
    assert shipped["storage_keep"]["top"] >= 5  # on for the GPU experiment, enough for --runs top5
    assert "storage_keep" not in yaml.safe_load((REPO / "experiments" / "tiny_synthetic.yaml").read_text())


# --------------------------------------------------------------------------- real sweeps (slow)


@pytest.fixture(scope="module")
def model_data(tmp_path_factory) -> Path:
    """mixopt synth's three tasks and its tiny Gemma3 encoder (the trainer writes real checkpoints)."""
    from mixopt.synth import SynthSpec, synthesize

    out = tmp_path_factory.mktemp("data") / "synthetic"
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16), with_model=True)
    return out


def write_sweep(tmp_path: Path, data: Path, max_trials: int, keep: dict | None) -> Path:
    exp = {
        "name": "keep_sweep",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data / t)} for t in TASKS],
        "optimizer": {"n_seeds": 3, "max_trials": max_trials, "max_concurrent": 2, "random_state": 0},
        "trainer": {
            "target": "trainers.embedding:train",
            "steps": 4,
            "seed": 0,
            "model": str(data / "model"),
            "matryoshka_dims": [64, 32],
            "batch_size": 8,
            "max_seq_length": 32,
            "eval_batch_size": 64,
            "classifier_train_rows": 64,
            "cpu_threads": 1,
        },
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "resources": {"cpus": 1, "gpus": 0},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},
    }
    if keep is not None:
        exp["storage_keep"] = keep
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def check_retained(uri: str, top: int) -> tuple[set[str], int]:
    """Assert that exactly the top ``top`` finished trials by their MLflow objective keep a checkpoint,
    the others are tagged pruned with no folder left, and no tombstone remains; (kept, bytes kept)."""
    client = MlflowClient(uri)
    eid = client.get_experiment_by_name("keep_sweep").experiment_id
    runs = client.search_runs([eid], "tags.`mixopt.role` = 'trial'", max_results=1000)
    finished = [r for r in runs if r.data.tags["mixopt.status"] == "FINISHED"]
    # The soup's order: objective, highest first; a tie (4 steps of a tiny model tie often) goes to
    # the trial that started first.
    by_value = sorted(finished, key=lambda r: (-r.data.metrics["objective"], r.info.start_time))
    reference = {r.data.tags["mixopt.trial_id"] for r in by_value[:top]}
    kept = set()
    for r in finished:
        ckpt = Path(r.data.tags["mixopt.checkpoint"])
        if ckpt.is_dir():
            kept.add(r.data.tags["mixopt.trial_id"])
            assert PRUNED not in r.data.tags
        else:
            assert r.data.tags.get(PRUNED) == "true", r.data.tags["mixopt.trial_id"]
    assert kept == reference, (kept, reference)
    storage = Path(next(r for r in finished).data.tags["mixopt.checkpoint"]).parents[1]
    assert not list(storage.glob(".pruned-*"))
    sel = select_ingredients(client, "keep_sweep", "top5")
    assert {i.trial_id for i in sel.chosen} == reference
    return kept, sum(
        disk_bytes(Path(r.data.tags["mixopt.checkpoint"]))
        for r in finished
        if r.data.tags["mixopt.trial_id"] in kept
    )


@pytest.mark.slow
def test_a_sweep_keeps_only_the_top_checkpoints(tmp_path: Path, model_data: Path, ray_local) -> None:
    from mixopt.sweep import run_sweep

    summary = run_sweep(load_experiment(write_sweep(tmp_path, model_data, 5, {"top": 2})), verbose=False)
    assert summary.finished == 5
    kept, kept_bytes = check_retained(f"sqlite:///{tmp_path}/mlflow.db", 2)
    assert len(kept) == 2
    one = kept_bytes // 2
    print(
        f"\n[retention] 5 trials, storage_keep.top 2: {kept_bytes} bytes of checkpoints on disk, "
        f"about {5 * one} without retention"
    )


@pytest.mark.slow
def test_sigkill_mid_sweep_and_resume_leave_consistent_checkpoints(tmp_path: Path, model_data: Path) -> None:
    path = write_sweep(tmp_path, model_data, 6, {"top": 2})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "mixopt.cli", "sweep", str(path)]
    MlflowClient(uri).search_experiments()  # the schema, before two processes open the store
    driver = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 600
    pruned_before = False
    while time.time() < deadline and not pruned_before:
        time.sleep(0.5)
        assert driver.poll() is None, "the sweep ended before it could be killed"
        try:
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name("keep_sweep")
            runs = client.search_runs([exp.experiment_id], "tags.`mixopt.role` = 'trial'") if exp else []
        except Exception:
            continue
        # Kill once a prune has happened (3+ trials finished), while later trials still run.
        pruned_before = any(r.data.tags.get(PRUNED) == "true" for r in runs) or bool(
            list(tmp_path.glob("runs/keep_sweep/sweep-*/.pruned-*"))
        )
    assert pruned_before, "no checkpoint was pruned in time"
    driver.send_signal(signal.SIGKILL)
    driver.wait()

    resumed = subprocess.run(
        cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    kept, _ = check_retained(uri, 2)
    assert len(kept) == 2
