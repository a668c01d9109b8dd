"""What a user sees on bad input (issue 14): one line naming file:line or the YAML path, the exit
code, and nothing written; warnings that name the task. Each test uses the issue's own input."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.config import load_experiment
from mixopt.synth import SynthSpec, synthesize

TASKS = ["retrieval_0", "sts_1", "classification_2"]


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    out = tmp_path / "data"
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16), with_model=False)
    return out


def write_experiment(tmp_path: Path, data_dir: Path, text: str | None = None, **over) -> Path:
    exp = {
        "name": "errors",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "optimizer": {"n_seeds": 2, "max_trials": 2, "max_concurrent": 1},
        "trainer": {"target": "trainers.analytic:train", "steps": 10},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},  # these tests are about the search; tests/test_verify.py covers verification
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            exp.setdefault(section, {})[field] = value
        else:
            exp[section] = value
    path = tmp_path / "exp.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(exp, sort_keys=False))
    return path


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def assert_refused(tmp_path: Path, code: int, err: str, pattern: str) -> None:
    """Exit 2, one line matching ``pattern``, and nothing written (no store, no storage)."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "runs").exists()


def rewrite_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[lineno - 1] = text
    path.write_text("".join(lines))


# --------------------------------------------------------------------------- data past row 50


def test_malformed_json_at_train_line_201_refuses_the_sweep(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=300, n_dev=16), with_model=False)
    train = data / "sts_1" / "train.jsonl"
    rewrite_line(train, 201, '{"text1": "a", "text2": "b", "score": \n')
    path = write_experiment(tmp_path, data)
    code, _, err = cli("sweep", str(path))
    assert_refused(tmp_path, code, err, rf"task sts_1: {re.escape(str(train))}:201: invalid JSON")


def test_retrieval_row_without_positive_past_row_50_full_check_catches_head_does_not(
    tmp_path: Path,
) -> None:
    from mixopt.sweep.checks import check_data
    from mixopt.sweep.common import SweepError

    data = tmp_path / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=120, n_dev=16), with_model=False)
    train = data / "retrieval_0" / "train.jsonl"
    row = json.loads(train.read_text().splitlines()[99])
    del row["positive"]
    rewrite_line(train, 100, json.dumps(row) + "\n")
    exp = load_experiment(write_experiment(tmp_path, data))
    check_data(exp, mode="head", use_cache=False)  # the first 50 rows are fine
    with pytest.raises(SweepError, match=rf"{re.escape(str(train))}:100: missing field\(s\) \['positive'\]"):
        check_data(exp, mode="full", use_cache=False)
    code, _, err = cli("sweep", str(tmp_path / "exp.yaml"))
    assert_refused(tmp_path, code, err, r"retrieval_0/train.jsonl:100: missing field")


def test_full_check_is_cached_by_size_and_mtime(tmp_path: Path, data_dir: Path) -> None:
    from mixopt.sweep.checks import cache_path, check_data
    from mixopt.sweep.common import SweepError

    exp = load_experiment(write_experiment(tmp_path, data_dir))
    report = check_data(exp)
    assert not cache_path(exp).exists()  # written only once the sweep goes ahead
    report.save_cache()
    assert cache_path(exp).parent == (tmp_path / "runs").resolve()
    # Same size and same mtime: the cached verdict stands and the file is not read again.
    train = data_dir / "sts_1" / "train.jsonl"
    st = train.stat()
    text = train.read_text()
    broken = text.replace('"score": ', '"score":X', 1)
    assert len(broken) == len(text)
    train.write_text(broken)
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns))
    check_data(exp)
    # A new mtime: read again, and the bad row is found.
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(SweepError, match=r"sts_1/train.jsonl:1: invalid JSON"):
        check_data(exp)


# --------------------------------------------------------------------------- checked before the sweep


def test_missing_model_directory_is_one_line_before_the_sweep(tmp_path: Path, data_dir: Path) -> None:
    missing = tmp_path / "models" / "tiny"
    path = write_experiment(
        tmp_path, data_dir, trainer={"target": "trainers.embedding:train", "model": str(missing)}
    )
    code, _, err = cli("sweep", str(path))
    assert_refused(tmp_path, code, err, rf"trainer.model: {re.escape(str(missing))}: no such directory")
    code, _, err = cli("validate", str(path))
    assert code == 2 and "trainer.model" in err and "no such directory" in err


def test_model_path_or_hub_id() -> None:
    from mixopt.sweep.checks import looks_like_path

    assert looks_like_path("data/synthetic/model") and looks_like_path("./m") and looks_like_path("/abs/m")
    assert not looks_like_path("google/embeddinggemma-300m") and not looks_like_path("bert-base-uncased")


def test_classification_task_with_one_label(tmp_path: Path, data_dir: Path) -> None:
    train = data_dir / "classification_2" / "train.jsonl"
    rows = [json.loads(line) | {"label": "only"} for line in train.read_text().splitlines()]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = cli("sweep", str(write_experiment(tmp_path, data_dir)))
    assert_refused(tmp_path, code, err, r"task classification_2: .*every row has the label 'only'")


def test_train_file_with_one_row(tmp_path: Path, data_dir: Path) -> None:
    train = data_dir / "sts_1" / "train.jsonl"
    train.write_text(train.read_text().splitlines()[0] + "\n")
    code, _, err = cli("sweep", str(write_experiment(tmp_path, data_dir)))
    assert_refused(tmp_path, code, err, r"task sts_1: .*train.jsonl: only one row")


def test_retrieval_dev_split_with_one_row_is_refused(tmp_path: Path, data_dir: Path) -> None:
    dev = data_dir / "retrieval_0" / "dev.jsonl"
    dev.write_text(dev.read_text().splitlines()[0] + "\n")
    code, _, err = cli("sweep", str(write_experiment(tmp_path, data_dir)))
    assert_refused(
        tmp_path, code, err, r"task retrieval_0: .*dev.jsonl: 1 dev row; a score from fewer than 2"
    )


def test_dev_rows_per_task_are_reported_and_a_small_dev_split_is_a_warning(
    tmp_path: Path, data_dir: Path
) -> None:
    from mixopt.sweep.checks import check_data

    dev = data_dir / "sts_1" / "dev.jsonl"
    dev.write_text("".join(dev.read_text().splitlines(keepends=True)[:5]))
    report = check_data(load_experiment(write_experiment(tmp_path, data_dir)))
    # Counted independently: the non-blank lines of each dev file.
    expected = {
        t: sum(1 for ln in (data_dir / t / "dev.jsonl").read_text().splitlines() if ln.strip()) for t in TASKS
    }
    assert report.dev_rows == expected == {"retrieval_0": 16, "sts_1": 5, "classification_2": 16}
    assert (
        report.dev_rows_line()
        == "dev score rests on retrieval_0 16 rows, sts_1 5 rows, classification_2 16 rows"
    )
    assert [w for w in report.warnings if w.startswith("task sts_1: the dev score rests on 5 rows")]


def test_dev_labels_never_seen_in_train_warn_naming_the_task(tmp_path: Path, data_dir: Path) -> None:
    dev = data_dir / "classification_2" / "dev.jsonl"
    rows = [json.loads(line) for line in dev.read_text().splitlines()]
    rows[0]["label"] = "never-in-train"
    dev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = cli("validate", "--data", str(write_experiment(tmp_path, data_dir)))
    assert code == 0
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert warnings == [
        "[mixopt] warning: task classification_2: dev labels never seen in train: ['never-in-train']; "
        "those dev rows can never be classified right"
    ]


def test_constant_sts_dev_scores_warn_naming_the_task(tmp_path: Path, data_dir: Path) -> None:
    dev = data_dir / "sts_1" / "dev.jsonl"
    rows = [json.loads(line) | {"score": 3.0} for line in dev.read_text().splitlines()]
    dev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = cli("validate", "--data", str(write_experiment(tmp_path, data_dir)))
    assert code == 0
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("[mixopt] warning: task sts_1: every gold score in ")
    assert "Spearman is undefined" in warnings[0]


# --------------------------------------------------------------------------- config files


def test_yaml_key_left_blank_is_file_line(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("name: blank\ntasks:\ntrainer:\n  target: trainers.analytic:train\n")
    code, _, err = cli("validate", str(path))
    assert code == 2
    assert err.strip() == f"{path}:2: tasks: the key has no value (left blank?): input should be a valid list"


def test_binary_file_as_the_yaml(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}\n\xff\xfe\x00\x01")
    code, _, err = cli("validate", str(path))
    assert code == 2
    assert err.strip() == f"{path}:2: not UTF-8 (byte 0xff); is this the experiment YAML?"
    text = tmp_path / "nul.yaml"
    text.write_bytes(b"name: x\n\x00\n")
    code, _, err = cli("validate", str(text))
    assert (
        code == 2
        and err.strip() == f"{text}:2: not a text file (character 0x00); is this the experiment YAML?"
    )


def test_directory_as_the_yaml(tmp_path: Path) -> None:
    code, _, err = cli("sweep", str(tmp_path))
    assert code == 2 and err.strip() == f"{tmp_path}: is a directory; give the experiment YAML file"


def test_dev_jsonl_that_is_a_directory(tmp_path: Path, data_dir: Path) -> None:
    dev = data_dir / "sts_1" / "dev.jsonl"
    dev.unlink()
    dev.mkdir()
    path = write_experiment(tmp_path, data_dir)
    code, _, err = cli("sweep", str(path))
    assert_refused(
        tmp_path, code, err, rf"task sts_1: {re.escape(str(dev))}: is a directory, not a data file"
    )


def test_invalid_utf8_in_a_task_file_is_file_line(tmp_path: Path, data_dir: Path) -> None:
    train = data_dir / "classification_2" / "train.jsonl"
    lines = train.read_bytes().splitlines(keepends=True)
    lines[6] = b'{"text": "caf\xe9", "label": "a"}\n'  # Latin-1, not UTF-8: é is the 14th byte
    train.write_bytes(b"".join(lines))
    code, _, err = cli("sweep", str(write_experiment(tmp_path, data_dir)))
    assert_refused(tmp_path, code, err, rf"{re.escape(str(train))}:7: not UTF-8 \(byte 0xe9 at column 14\)")


def test_max_trials_true_is_an_error(tmp_path: Path, data_dir: Path) -> None:
    path = write_experiment(tmp_path, data_dir, optimizer={"max_trials": True})
    code, _, err = cli("validate", str(path))
    line = next(
        i for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.strip().startswith("max_trials:")
    )
    assert code == 2
    assert (
        err.strip() == f"{path}:{line}: optimizer.max_trials: must be an integer, got true (a YAML boolean)"
    )


def test_empty_storage_from_an_unset_variable_is_an_error(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNSET", raising=False)
    path = write_experiment(tmp_path, data_dir)
    text = path.read_text().replace(f"storage: {tmp_path / 'runs'}", "storage: ${UNSET:-}")
    path.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("storage:"))
    code, _, err = cli("validate", str(path))
    assert code == 2
    assert err.strip() == (
        f"{path}:{line}: storage: storage is empty: give the folder for trial checkpoints (default ./runs)"
    )


def test_storage_uri_is_refused_at_validate_time_with_the_sweeps_explanation(
    tmp_path: Path, data_dir: Path
) -> None:
    from mixopt.config import STORAGE_URI_MESSAGE

    path = write_experiment(tmp_path, data_dir, storage="s3://bucket/runs")
    code, _, err = cli("validate", str(path))
    assert code == 2 and err.count("\n") == 1
    assert err.strip().endswith("storage: " + STORAGE_URI_MESSAGE.format(storage="s3://bucket/runs"))
    assert "every node mounts" in err


def test_max_concurrent_64_on_this_machine_warns_how_many_can_run(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = write_experiment(tmp_path, data_dir, optimizer={"max_concurrent": 64})
    code, out, err = cli("validate", str(path))
    cpus = len(os.sched_getaffinity(0))
    assert code == 0 and "max_concurrent: 64" in out
    assert err.strip() == (
        f"[mixopt] warning: optimizer.max_concurrent 64: this machine (a local Ray) has {cpus} CPU and a "
        f"trial asks for resources.cpus=1, so at most {cpus} trial{'s' if cpus != 1 else ''} can run at a time"
    )


def test_trial_slots_is_the_scarcest_resource() -> None:
    from mixopt.config import experiment_from_dict
    from mixopt.sweep.checks import trial_slots

    exp = experiment_from_dict(
        {
            "name": "x",
            "tasks": [{"name": "a", "kind": "sts", "path": "/nonexistent"}],
            "trainer": {"target": "trainers.analytic:train"},
            "resources": {"cpus": 4, "gpus": 0.5, "custom": {"accel": 1}},
        }
    )
    assert trial_slots(exp, {"CPU": 16, "GPU": 8, "accel": 3}) == 3  # min(16 // 4, 8 // 0.5, 3 // 1)
    assert trial_slots(exp, {"CPU": 16, "GPU": 1, "accel": 3}) == 2
    assert trial_slots(exp, {"CPU": 16}) == 0


# --------------------------------------------------------------------------- failure reasons


def test_one_line_reason_from_a_ray_wrapped_traceback() -> None:
    from mixopt.sweep.callback import one_line_reason

    text = (
        'Traceback (most recent call last):\n  File "ray/_private/worker.py", line 1053, in get_objects\n'
        "ray.exceptions.RayTaskError(TrialFailed): \x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1, ip=1.2.3.4)\n"
        '  File "/x/trainers/analytic.py", line 103, in train\n    raise TrialFailed(f"injected")\n'
        "mixopt.trial.TrialFailed: injected failure: weight of retrieval_0 = 0.509 > 0.0\n"
    )
    assert one_line_reason(text) == "TrialFailed: injected failure: weight of retrieval_0 = 0.509 > 0.0"
    assert one_line_reason("\x1b[31mtorch.OutOfMemoryError: CUDA out of memory\x1b[0m") == (
        "OutOfMemoryError: CUDA out of memory"
    )


def test_distinct_failure_reasons_group_reasons_that_differ_only_in_numbers() -> None:
    from mixopt.sweep.progress import failure_counts

    trials = [
        {"status": "FAILED", "failure": "TrialFailed: weight of a = 0.5 > 0.0"},
        {"status": "FAILED", "failure": "TrialFailed: weight of a = 0.25 > 0.0"},
        {"status": "FAILED", "failure": "ValueError: task 'b': bad"},
        {"status": "FINISHED", "failure": None},
    ]
    assert failure_counts(trials) == [
        ("TrialFailed: weight of a = 0.5 > 0.0", 2),
        ("ValueError: task 'b': bad", 1),
    ]


@pytest.mark.slow
def test_every_trial_failed_exits_non_zero_with_the_distinct_reasons(tmp_path: Path, data_dir: Path) -> None:
    """Real Ray and MLflow: every trial raises; exit 1, the reasons, no 'next: mixopt soup'."""
    import ray
    from mlflow.tracking import MlflowClient

    path = write_experiment(
        tmp_path,
        data_dir,
        optimizer={"n_seeds": 3, "max_trials": 3, "max_concurrent": 2},
        trainer={
            "target": "trainers.analytic:train",
            "steps": 10,
            "fail_above": {"retrieval_0": 0.0, "sts_1": 0.0, "classification_2": 0.0},
        },
    )
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        code, out, err = cli("sweep", str(path))
    finally:
        ray.shutdown()
    assert code == 1
    assert "next: mixopt soup" not in out
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"{re.escape(str(path))}: every trial failed \(3\): the trainer raised \(3x\): "
        r"3x TrialFailed: injected failure: weight of \w+ = [\d.]+ > 0\.0",
        last,
    ), last
    assert "3 trial(s) failed, by cause:" in out and "  the trainer raised: 3x TrialFailed" in out
    # The trial's table appears once, at the end.
    assert out.count("trial      origin  status") == 1
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("errors")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("mixopt.role") == "trial"]
    assert len(runs) == 3
    for r in runs:
        reason = r.data.tags["mixopt.failure"]
        assert (
            "\n" not in reason and "\x1b" not in reason and reason.startswith("TrialFailed: injected failure")
        )
        text = Path(client.download_artifacts(r.info.run_id, "failure.txt", str(tmp_path))).read_text()
        # Ray's record of the failure: the worker's frames down to the trainer's raise.
        assert 'trainers/analytic.py", line' in text and "raise TrialFailed" in text and "\x1b" not in text


# --------------------------------------------------------------------------- Ray address, Ctrl-C


def test_an_address_with_nothing_there_is_a_bounded_wait_then_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    import time

    path = write_experiment(tmp_path, data_dir)
    t0 = time.monotonic()
    code, _, err = cli("sweep", str(path), "--address", "127.0.0.1:1", "--connect-timeout", "2")
    waited = time.monotonic() - t0
    assert_refused(
        tmp_path,
        code,
        err,
        r"no Ray cluster answers at 127\.0\.0\.1:1 \(waited 2s: Connection refused\); start one \(ray start --head\)",
    )
    assert 2 <= waited < 30


@pytest.mark.slow
@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_ends_the_sweep_parent_killed_and_resume_finishes_it(
    tmp_path: Path, data_dir: Path, signame: str, code: int
) -> None:
    """A real driver process, a real SIGINT (Ctrl-C) or SIGTERM (a scheduler's pre-emption) while
    trials run: exit 128 + the signal's number with one line naming the YAML as given, the parent
    run and the interrupted trial runs KILLED (not RUNNING, not FINISHED), no C stack dump, and
    ``--resume`` runs exactly the missing trials."""
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    path = write_experiment(
        tmp_path,
        data_dir,
        trainer={"target": "trainers.analytic:train", "steps": 20, "seconds_per_step": 0.2},
        optimizer={"n_seeds": 3, "max_trials": 4, "max_concurrent": 2},
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()  # create the tables before two processes open the store
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "mixopt.cli", "sweep", str(path)]
    driver = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # Interrupt once a trial has started (Ray up, trials running).
    deadline = time.monotonic() + 240
    seen = ""
    while time.monotonic() < deadline and driver.poll() is None:
        line = driver.stdout.readline()
        seen += line
        if " started (" in line:
            break
    assert " started (" in seen, seen
    t0 = time.monotonic()
    driver.send_signal(getattr(signal, signame))
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == code, (seen + out)[-3000:] + err[-3000:]
    assert "Fatal Python error" not in err and "Stack (most recent call first)" not in err
    assert time.monotonic() - t0 < 120
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("errors")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("mixopt.role") == "sweep"]
    assert parent.info.status == "KILLED"
    how = " (SIGTERM)" if signame == "SIGTERM" else ""
    assert err.strip().splitlines()[-1] == (
        f"{path}: interrupted{how}: sweep run {parent.info.run_id} marked KILLED; continue it with "
        f"`mixopt sweep {path} --resume`"
    )
    before = [r for r in runs if r.data.tags.get("mixopt.role") == "trial"]
    assert len(before) < 4 and all(r.info.status != "RUNNING" for r in before)
    assert any(r.info.status == "KILLED" for r in before)  # the trial that was running

    resumed = subprocess.run(
        cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("mixopt.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("mixopt.role") == "trial"]
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.tags["mixopt.trial_id"] for r in trials) == [f"trial-{i:03d}" for i in range(4)]
    assert all(r.data.tags["mixopt.status"] == "FINISHED" for r in trials)


# --------------------------------------------------------------------------- the terminal


def test_progress_line_counts_done_best_elapsed_and_time_left() -> None:
    from mixopt.sweep.progress import Printer

    p = Printer(TASKS, total=48, enabled=False, already_done=0)
    p.t0 = 0.0
    for i in range(12):
        p.started(f"trial-{i:03d}", "seed", {"retrieval_0": 0.5, "sts_1": 0.3, "classification_2": 0.2})
        p.ended(f"trial-{i:03d}", "FINISHED" if i != 3 else "FAILED", 0.5 + i / 100 if i != 3 else None, "x")
    # 12 done in 14 minutes: 70 s each, 36 left -> 42 minutes.
    assert p.progress(now=14 * 60) == "12/48 done, best 0.610, elapsed 14m, ~42m left"
    resumed = Printer(TASKS, total=48, enabled=False, already_done=40)
    resumed.t0 = 0.0
    assert resumed.progress(now=5) == "40/48 done, best -, elapsed 5s"


def test_the_searcher_saves_and_restores_the_optimizer_state(tmp_path: Path) -> None:
    from mixopt.optimizer import MixtureOptimizer
    from mixopt.sweep.common import State
    from mixopt.sweep.progress import Printer
    from mixopt.sweep.searcher import MixtureSearcher
    from mixopt.tracking import SweepTracker

    exp = load_experiment(write_experiment(tmp_path, tmp_path / "data"), check_trainer=False)
    opt = MixtureOptimizer(TASKS, n_seeds=3, random_state=0)
    for p in opt.ask(2):
        opt.tell(p, p["sts_1"])
    state = State(opt, tmp_path / "state.json")
    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "searcher")
    searcher = MixtureSearcher(state, tracker, exp, 4, [], 0, Printer(TASKS, 4, enabled=False))
    searcher.save(str(tmp_path / "ckpt" / "searcher.json"))
    saved = opt.state_dict()
    state.optimizer = MixtureOptimizer(TASKS, n_seeds=3, random_state=1)
    searcher.restore(str(tmp_path / "ckpt" / "searcher.json"))
    assert state.optimizer.state_dict() == saved
    assert [v for _, v in state.optimizer.history] == [p["sts_1"] for p, _ in opt.history]
