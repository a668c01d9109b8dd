"""Task files written for sentence-transformers (``anchor``/``positive``/``negative``,
``sentence1``/``sentence2``/``score`` or ``label``, ``sentence``/``label``) are read as the same rows as
mixopt's own field names, and any other names through a task's ``columns:``; checked row by row
against the files in mixopt's names, then through the public commands (a sweep, slow)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.config import TaskConfig
from mixopt.data import iter_rows
from mixopt.synth import SynthSpec, synthesize

# kind -> mixopt's field -> sentence-transformers' column (negatives: one column per negative).
ST_NAMES = {
    "retrieval": {"query": "anchor", "positive": "positive"},
    "sts": {"text1": "sentence1", "text2": "sentence2", "score": "score"},
    "classification": {"text": "sentence", "label": "label"},
    "pair_classification": {"text1": "sentence1", "text2": "sentence2", "label": "label"},
}
OWN_NAMES = {
    "retrieval": {"query": "question", "positive": "answer", "negatives": "wrong"},
    "sts": {"text1": "left", "text2": "right", "score": "similarity"},
    "classification": {"text": "body", "label": "topic"},
    "pair_classification": {"text1": "left", "text2": "right", "label": "duplicate"},
}


def renamed(row: dict, names: dict, kind: str, numbered: bool) -> dict:
    """A mixopt row under other column names (a naive rewrite; ``numbered``: negative_1, negative_2...)."""
    out = {names[k]: v for k, v in row.items() if k in names}
    negatives = row.get("negatives") or []
    if kind == "retrieval" and negatives:
        if "negatives" in names:
            out[names["negatives"]] = negatives
        elif numbered:
            out |= {f"negative_{i + 1}": n for i, n in enumerate(negatives)}
        else:
            out["negative"] = negatives[0]
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The synthetic tasks and a pair-classification task, each also as ST-named JSONL, ST-named
    Parquet, and with its own column names (to be mapped)."""
    root = tmp_path_factory.mktemp("files")
    synthesize(root, n_tasks=3, seed=0, spec=SynthSpec(n_train=48, n_dev=16))
    (root / "pair_3").mkdir()
    for split in ("train", "dev"):
        rows = [json.loads(x) for x in (root / "sts_1" / f"{split}.jsonl").read_text().splitlines()]
        pair = [{"text1": r["text1"], "text2": r["text2"], "label": int(r["score"] >= 2.5)} for r in rows]
        (root / "pair_3" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pair))
    for task in ("retrieval_0", "sts_1", "classification_2", "pair_3"):
        kind = "pair_classification" if task == "pair_3" else task.rsplit("_", 1)[0]
        for variant in ("st", "st_parquet", "own"):
            (root / variant / task).mkdir(parents=True)
        for split in ("train", "dev"):
            rows = [json.loads(x) for x in (root / task / f"{split}.jsonl").read_text().splitlines()]
            st = [renamed(r, ST_NAMES[kind], kind, numbered=split == "dev") for r in rows]
            own = [renamed(r, OWN_NAMES[kind], kind, numbered=False) for r in rows]
            (root / "st" / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in st))
            (root / "own" / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in own))
            pq.write_table(pa.Table.from_pylist(st), root / "st_parquet" / task / f"{split}.parquet")
    return root


TASKS = {
    "retrieval_0": "retrieval",
    "sts_1": "sts",
    "classification_2": "classification",
    "pair_3": "pair_classification",
}


@pytest.mark.parametrize("task", list(TASKS))
def test_sentence_transformers_names_and_mapped_names_read_as_mixopts_rows(data, task) -> None:
    kind = TASKS[task]
    for split in ("train", "dev"):
        reference = list(iter_rows(data / task / f"{split}.jsonl", kind))
        assert reference
        for variant in ("st", "st_parquet"):
            config = TaskConfig(name=task, kind=kind, path=data / variant / task)
            source = config.train_file if split == "train" else config.dev_file
            assert list(iter_rows(source, kind)) == reference, (variant, split)
        mapping = {f: c for f, c in OWN_NAMES[kind].items()}
        config = TaskConfig(name=task, kind=kind, path=data / "own" / task, columns=mapping)
        source = config.train_file if split == "train" else config.dev_file
        assert str(source) == str(data / "own" / task / f"{split}.jsonl")
        assert list(iter_rows(source, kind)) == reference, ("own", split)


def test_a_bad_row_names_the_users_column_and_an_unknown_one_the_names_a_kind_takes(tmp_path) -> None:
    from mixopt.data import DataError

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"sentence1": "a", "sentence2": "b", "score": 0.5}\n{"sentence1": "a", "sentence2": 3, "score": 1}\n'
    )
    with pytest.raises(DataError, match=re.escape(f"{bad}:2: column 'sentence2' (text2) must be a string")):
        list(iter_rows(bad, "sts"))
    bad.write_text('{"sentence1": "a", "text1": "b", "sentence2": "c", "score": 0.5}\n')
    with pytest.raises(DataError, match=r"text1: ambiguous, both 'sentence1' and 'text1' are present"):
        list(iter_rows(bad, "sts"))
    bad.write_text('{"premise": "a", "hypothesis": "b", "label": 1}\n')
    with pytest.raises(
        DataError,
        match=r"unknown field\(s\) \['hypothesis', 'premise'\] for a pair_classification row; .*text1: sentence1\|text1",
    ):
        list(iter_rows(bad, "pair_classification"))


def experiment(tmp_path: Path, data: Path, variant: str, trainer: dict) -> Path:
    tasks = []
    for task, kind in TASKS.items():
        t = {"name": task, "kind": kind, "path": str(data / variant / task)}
        if variant == "own":
            t["columns"] = OWN_NAMES[kind]
        tasks.append(t)
    exp = {
        "name": f"files_{variant}",
        "tasks": tasks,
        "optimizer": {"n_seeds": 2, "max_trials": 2, "max_concurrent": 1},
        "trainer": trainer,
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},
    }
    path = tmp_path / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


@pytest.mark.parametrize("variant", ["st", "st_parquet", "own"])
def test_validate_data_and_tasks_read_those_files(tmp_path, data, variant) -> None:
    path = experiment(tmp_path, data, variant, {"target": "trainers.analytic:train", "steps": 10})
    r = CliRunner().invoke(app, ["validate", str(path), "--data"])
    assert r.exit_code == 0, r.stderr
    assert (
        "dev score rests on retrieval_0 16 rows, sts_1 16 rows, classification_2 16 rows, pair_3 16 rows"
        in r.stderr
    )
    r = CliRunner().invoke(app, ["tasks", str(path)])
    assert r.exit_code == 0, r.stderr
    first = json.loads((data / "sts_1" / "train.jsonl").read_text().splitlines()[0])
    assert f"text1: {first['text1']}" in r.stdout
    assert "train: " in r.stdout and "48 rows" in r.stdout


@pytest.mark.slow
def test_a_sweep_of_the_sentence_transformers_trainer_on_sentence_transformers_files(tmp_path, data) -> None:
    from mlflow.tracking import MlflowClient

    trainer = {
        "target": "trainers.sentence_transformers:train",
        "steps": 4,
        "model": str(data / "model"),
        "batch_size": 8,
        "max_seq_length": 32,
        "cpu_threads": 1,
        "losses": {"pair_3": {"name": "OnlineContrastiveLoss"}, "sts": {"name": "CoSENTLoss"}},
    }
    path = experiment(tmp_path, data, "st", trainer)
    import ray

    assert not ray.is_initialized()
    r = CliRunner().invoke(app, ["sweep", str(path), "--quiet"])
    assert r.exit_code == 0, r.stdout + r.stderr
    # The local Ray the sweep started went with it: the process can start (or join) another.
    assert not ray.is_initialized()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("files_st").experiment_id])
    trials = [run for run in runs if run.data.tags.get("mixopt.role") == "trial"]
    assert len(trials) == 2 and all(run.info.status == "FINISHED" for run in trials)
    for run in trials:
        assert all(math.isfinite(run.data.metrics[f"score.{t}"]) for t in TASKS)
