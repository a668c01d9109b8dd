"""Tasks from Hugging Face datasets: the same rows as the equivalent JSONL folder, hold-outs, errors.

The independent reference for every dataset layout is mixopt's JSONL reader on a folder holding the
same rows in mixopt's own format (written here by hand, not by the code under test).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

from mixopt.config import ConfigError, TaskConfig, experiment_from_dict, load_experiment
from mixopt.data import DataError, iter_rows, training_rows
from mixopt.datasets import DatasetSplit
from mixopt.task_listing import describe_task

REPO = Path(__file__).resolve().parents[1]
ANALYTIC = {"target": "trainers.analytic:train", "steps": 5}


@pytest.fixture(autouse=True)
def _hf_cache_in_tmp(tmp_path, monkeypatch):
    # Streaming a local file still writes a lock under the datasets cache: keep it in tmp_path.
    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    from mixopt import datasets as mds

    mds._open.cache_clear()
    mds._auto_scale.cache_clear()


# ---------------------------------------------------------------------- rows in each convention

N = 40


def retrieval_columns() -> dict[str, list]:
    return {
        "anchor": [f"question {i} about topic {i % 7}" for i in range(N)],
        "positive": [f"passage answering {i}" for i in range(N)],
        "negative_1": [f"unrelated passage {i}" for i in range(N)],
        "negative_2": [f"another unrelated {i}" for i in range(N)],
        "id": list(range(N)),  # an extra column the task ignores
    }


def retrieval_reference(cols: dict[str, list]) -> list[dict]:
    return [
        {
            "query": cols["anchor"][i],
            "positive": cols["positive"][i],
            "negatives": [cols["negative_1"][i], cols["negative_2"][i]],
        }
        for i in range(N)
    ]


def sts_columns() -> dict[str, list]:
    return {
        "sentence1": [f"a man plays guitar {i}" for i in range(N)],
        "sentence2": [f"someone plays music {i}" for i in range(N)],
        "score": [(i * 7 % 26) / 5.0 for i in range(N)],  # 0..5, STS-B's scale
    }


def sts_reference(cols: dict[str, list]) -> list[dict]:
    # sentence-transformers divides a 0–5 score by 5.
    return [
        {"text1": cols["sentence1"][i], "text2": cols["sentence2"][i], "score": cols["score"][i] / 5}
        for i in range(N)
    ]


NAMES = ["sports", "politics", "science"]


def classification_columns() -> dict[str, list]:
    return {"sentence": [f"news item {i}" for i in range(N)], "label": [i % 3 for i in range(N)]}


def classification_reference(cols: dict[str, list]) -> list[dict]:
    return [{"text": cols["sentence"][i], "label": NAMES[cols["label"][i]]} for i in range(N)]


def pair_columns() -> dict[str, list]:
    return {
        "sentence1": [f"how do I {i}" for i in range(N)],
        "sentence2": [f"what is the way to {i}" for i in range(N)],
        "label": [i % 2 for i in range(N)],
    }


def pair_reference(cols: dict[str, list]) -> list[dict]:
    return [
        {"text1": cols["sentence1"][i], "text2": cols["sentence2"][i], "label": cols["label"][i]}
        for i in range(N)
    ]


CASES = {
    "retrieval": (retrieval_columns, retrieval_reference, None),
    "sts": (sts_columns, sts_reference, None),
    "classification": (classification_columns, classification_reference, NAMES),
    "clustering": (classification_columns, classification_reference, NAMES),
    "pair_classification": (pair_columns, pair_reference, None),
}


def make_dataset(kind: str) -> datasets.Dataset:
    columns, _, names = CASES[kind]
    ds = datasets.Dataset.from_dict(columns())
    if names:
        ds = ds.cast_column("label", datasets.ClassLabel(names=names))
    return ds


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reference_rows(kind: str, tmp_path: Path) -> list:
    columns, reference, _ = CASES[kind]
    return list(iter_rows(write_jsonl(tmp_path / "ref" / kind / "train.jsonl", reference(columns())), kind))


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("layout", ["save_to_disk", "dataset_dict", "parquet", "jsonl_glob"])
def test_a_dataset_gives_the_same_rows_as_the_jsonl_folder(kind, layout, tmp_path):
    ds = make_dataset(kind)
    if layout == "save_to_disk":
        ds.save_to_disk(str(tmp_path / "disk"))
        source = DatasetSplit(str(tmp_path / "disk"), kind)
    elif layout == "dataset_dict":
        datasets.DatasetDict({"train": ds, "test": ds.select(range(5))}).save_to_disk(str(tmp_path / "dd"))
        source = DatasetSplit(str(tmp_path / "dd"), kind, split="train")
    elif layout == "parquet":
        ds.to_parquet(str(tmp_path / "files" / "part-0.parquet"))
        source = DatasetSplit(str(tmp_path / "files" / "*.parquet"), kind)
    else:
        # JSON lines keep no ClassLabel: write the label names themselves.
        rows = ds.to_list()
        if CASES[kind][2]:
            rows = [{**r, "label": NAMES[r["label"]]} for r in rows]
        write_jsonl(tmp_path / "files" / "a.jsonl", rows[:25])
        write_jsonl(tmp_path / "files" / "b.jsonl", rows[25:])
        source = DatasetSplit(str(tmp_path / "files" / "*.jsonl"), kind)
    assert list(iter_rows(source, kind)) == reference_rows(kind, tmp_path)


def test_the_trainer_gets_the_same_examples_from_a_dataset_as_from_the_jsonl_folder(tmp_path):
    from trainers.batching import TaskStream

    for kind in CASES:
        ds = make_dataset(kind)
        ds.to_parquet(str(tmp_path / kind / "train.parquet"))
        ref = write_jsonl(tmp_path / "ref" / kind / "train.jsonl", CASES[kind][1](CASES[kind][0]()))
        from mixopt.data import TRAINING_KIND

        def stream(source, kind=kind):
            s = TaskStream(
                kind, TRAINING_KIND[kind], training_rows(source, kind), seed=[3, 1], pair_window=16
            )
            return [next(s) for _ in range(30)]

        got = stream(DatasetSplit(str(tmp_path / kind / "train.parquet"), kind))
        assert got == stream(ref), kind


def test_pair_classification_trains_on_its_positive_pairs_only(tmp_path):
    rows = pair_reference(pair_columns())
    path = write_jsonl(tmp_path / "p" / "train.jsonl", rows)
    view = list(iter_rows(training_rows(path, "pair_classification"), "retrieval"))
    expected = [(r["text1"], r["text2"]) for r in rows if r["label"] == 1]
    assert [(r.query, r.positive) for r in view] == expected and all(not r.negatives for r in view)


def splitmix64_reference(x: int) -> int:
    """splitmix64 on Python ints (the published constants), independent of the numpy version."""
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def test_dev_fraction_is_a_disjoint_stable_hash_holdout(tmp_path):
    from mixopt.datasets import HOLDOUT_SEED

    n = 3000
    ds = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(n)], "label": [i % 5 for i in range(n)]})
    ds.save_to_disk(str(tmp_path / "d"))
    task = TaskConfig(name="c", kind="classification", dataset=str(tmp_path / "d"), dev_fraction=0.1)
    train = [r.text for r in iter_rows(task.train_file, "classification")]
    dev = [r.text for r in iter_rows(task.dev_file, "classification")]
    expected_dev = [
        f"t{i}" for i in range(n) if (splitmix64_reference(i ^ HOLDOUT_SEED) >> 11) * 2.0**-53 < 0.1
    ]
    assert dev == expected_dev
    assert set(train).isdisjoint(dev) and sorted(train + dev) == sorted(f"t{i}" for i in range(n))
    assert 0.08 < len(dev) / n < 0.12
    # Stable across readings (trials) and across layouts of the same rows.
    ds.to_parquet(str(tmp_path / "d.parquet"))
    again = TaskConfig(name="c", kind="classification", dataset=str(tmp_path / "d.parquet"), dev_fraction=0.1)
    assert [r.text for r in iter_rows(again.dev_file, "classification")] == dev
    assert task.dev_file.num_rows() == len(dev) and task.train_file.num_rows() == len(train)
    capped = TaskConfig(
        name="c", kind="classification", dataset=str(tmp_path / "d"), dev_fraction=0.1, dev_max_rows=7
    )
    assert [r.text for r in iter_rows(capped.dev_file, "classification")] == dev[:7]


def test_sts_scores_on_a_0_1_scale_are_kept_and_score_scale_overrides(tmp_path):
    ds = datasets.Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [0.2, 0.9]})
    ds.save_to_disk(str(tmp_path / "d"))
    assert [r.score for r in iter_rows(DatasetSplit(str(tmp_path / "d"), "sts"), "sts")] == [0.2, 0.9]
    scaled = DatasetSplit(str(tmp_path / "d"), "sts", score_scale=4.0)
    assert [r.score for r in iter_rows(scaled, "sts")] == [0.05, 0.225]


def test_columns_mapping_reads_any_column_names(tmp_path):
    ds = datasets.Dataset.from_dict(
        {"question": ["q1", "q2"], "answer": ["a1", "a2"], "hard": [["n1", "n2"], ["n3"]]}
    )
    ds.save_to_disk(str(tmp_path / "d"))
    task = TaskConfig(
        name="qa",
        kind="retrieval",
        dataset=str(tmp_path / "d"),
        dev_fraction=0.5,
        columns={"query": "question", "positive": "answer", "negatives": "hard"},
    )
    rows = list(
        iter_rows(DatasetSplit(task.dataset, "retrieval", columns=task.train_file.columns), "retrieval")
    )
    assert [(r.query, r.positive, r.negatives) for r in rows] == [
        ("q1", "a1", ("n1", "n2")),
        ("q2", "a2", ("n3",)),
    ]


# ---------------------------------------------------------------------- config


def test_config_accepts_the_three_ways_and_resolves_relative_dataset_paths(tmp_path):
    (tmp_path / "local").mkdir()
    exp = experiment_from_dict(
        {
            "name": "x",
            "tasks": [
                {
                    "name": "a",
                    "kind": "retrieval",
                    "dataset": "sentence-transformers/natural-questions",
                    "dev_fraction": 0.01,
                    "columns": {"positive": "answer"},
                },
                {"name": "b", "kind": "sts", "dataset": "local", "dev_split": "validation"},
                {"name": "c", "kind": "clustering", "dataset": "./data/*.parquet", "dev_fraction": 0.2},
            ],
            "trainer": ANALYTIC,
        },
        base_dir=tmp_path,
    )
    assert exp.task("a").dataset == "sentence-transformers/natural-questions"  # a hub id stays as it is
    assert exp.task("b").dataset == str(tmp_path / "local")
    assert exp.task("c").dataset == str(tmp_path / "data/*.parquet")
    assert exp.task("c").metric == "v_measure" and exp.task("b").dev_file.split == "validation"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"path": "x", "dataset": "a/b", "dev_fraction": 0.1}, "exactly one of the three"),
        ({"dataset": "a/b"}, "exactly one of 'dev_split'"),
        ({"dataset": "a/b", "dev_split": "train"}, "is the train split"),
        ({"dataset": "a/b", "dev_fraction": 1.5}, "less than 1"),
        (
            {"dataset": "a/b", "dev_fraction": 0.1, "columns": {"title": "t"}},
            "not a field of a retrieval row",
        ),
        ({"path": "x", "split": "test"}, "apply only to a task with 'dataset'"),
    ],
)
def test_bad_dataset_task_configs_are_one_line_each(task, message):
    with pytest.raises(ConfigError) as e:
        experiment_from_dict(
            {"name": "x", "tasks": [{"name": "t", "kind": "retrieval", **task}], "trainer": ANALYTIC}
        )
    assert message in str(e.value) and len(e.value.problems) == 1


# ---------------------------------------------------------------------- bad datasets: one line, nothing written


def write_yaml(tmp_path: Path, task: dict) -> Path:
    exp = {
        "name": "bad",
        "tasks": [{"name": "t", "prompt": {"query": "q: "}, **task}],
        # One task: a searched hyperparameter gives the sweep something to optimise.
        "search": {"hyperparameters": {"rate": {"type": "float", "low": 1.0, "high": 20.0}}},
        "trainer": ANALYTIC,
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def run_cli(*args: str, env: dict | None = None, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mixopt.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=300,
    )


def bad_datasets(tmp_path: Path) -> dict[str, tuple[dict, str]]:
    datasets.Dataset.from_dict({"anchor": ["q"], "answer": ["a"]}).save_to_disk(str(tmp_path / "missing"))
    datasets.Dataset.from_dict({"text": [], "label": []}).save_to_disk(str(tmp_path / "empty"))
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"text": [], "label": []}, features=features).to_parquet(
        str(tmp_path / "empty.parquet")
    )
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0.5, 1.5]}).save_to_disk(
        str(tmp_path / "float")
    )
    (tmp_path / "corrupt.parquet").write_bytes(b"not parquet at all")
    return {
        "missing column": (
            {"kind": "retrieval", "dataset": str(tmp_path / "missing"), "dev_fraction": 0.5},
            "positive: no column 'positive'",
        ),
        "empty split": (
            {"kind": "classification", "dataset": str(tmp_path / "empty"), "dev_fraction": 0.5},
            "has no rows",
        ),
        "empty parquet": (
            {"kind": "classification", "dataset": str(tmp_path / "empty.parquet"), "dev_fraction": 0.5},
            "has no rows",
        ),
        "wrong label type": (
            {"kind": "classification", "dataset": str(tmp_path / "float"), "dev_fraction": 0.5},
            "column 'label' holds float",
        ),
        "unreadable path": (
            {"kind": "sts", "dataset": str(tmp_path / "nowhere" / "x.parquet"), "dev_fraction": 0.5},
            "no such file or directory",
        ),
        "corrupt file": (
            {"kind": "sts", "dataset": str(tmp_path / "corrupt.parquet"), "dev_fraction": 0.5},
            "cannot load",
        ),
        "hub id with no network": (
            {"kind": "sts", "dataset": "sentence-transformers/stsb", "dev_split": "validation"},
            "cannot reach the Hugging Face Hub",
        ),
    }


def test_bad_datasets_give_one_clear_line_and_write_nothing(tmp_path):
    from typer.testing import CliRunner

    from mixopt.cli import app

    for what, (task, message) in bad_datasets(tmp_path).items():
        work = tmp_path / what.replace(" ", "_")
        work.mkdir()
        path = write_yaml(work, task)
        before = sorted(p.name for p in work.iterdir())
        if what == "hub id with no network":
            # A fresh process, so that huggingface_hub reads HF_HUB_OFFLINE at import.
            assert run_cli("validate", str(path), cwd=work).returncode == 0  # validation alone: no hub
            r = run_cli("validate", str(path), "--data", cwd=work, env={"HF_HUB_OFFLINE": "1"})
            code, err = r.returncode, r.stderr
        else:
            assert CliRunner().invoke(app, ["validate", str(path)]).exit_code == 0, what
            r = CliRunner().invoke(app, ["validate", str(path), "--data"])
            code, err = r.exit_code, r.stderr
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (what, err)
        assert lines[0].startswith("task t: ") and message in lines[0], (what, lines[0])
        assert sorted(p.name for p in work.iterdir()) == before, what
        if what == "missing column":
            # The line names the dataset, the split, the columns it has and what it needs.
            assert "split 'train'" in err and "['anchor', 'answer']" in err and "positive: positive" in err


def test_the_sweep_refuses_a_bad_dataset_before_any_trial(tmp_path):
    from mixopt.sweep import SweepError
    from mixopt.sweep.checks import check_data

    task, message = bad_datasets(tmp_path)["missing column"]
    exp = load_experiment(write_yaml(tmp_path, task))
    with pytest.raises(SweepError, match=message):
        check_data(exp)


def test_an_ambiguous_column_is_named(tmp_path):
    datasets.Dataset.from_dict({"anchor": ["a"], "query": ["b"], "positive": ["c"]}).save_to_disk(
        str(tmp_path / "d")
    )
    with pytest.raises(DataError, match="query: ambiguous, both 'anchor' and 'query' are present"):
        list(iter_rows(DatasetSplit(str(tmp_path / "d"), "retrieval"), "retrieval"))


# ---------------------------------------------------------------------- mixopt tasks


def test_mixopt_tasks_prints_sources_counts_and_prompted_examples(tmp_path):
    make_dataset("retrieval").to_parquet(str(tmp_path / "r.parquet"))
    folder = tmp_path / "sts_folder"
    write_jsonl(folder / "train.jsonl", sts_reference(sts_columns()))
    write_jsonl(folder / "dev.jsonl", sts_reference(sts_columns())[:5])
    exp = {
        "name": "listing",
        "tasks": [
            {
                "name": "r",
                "kind": "retrieval",
                "dataset": str(tmp_path / "r.parquet"),
                "dev_fraction": 0.25,
                "prompt": {"query": "task: search result | query: ", "document": "title: none | text: "},
            },
            {"name": "s", "kind": "sts", "path": str(folder), "prompt": {"query": "S: ", "document": "S: "}},
        ],
        "trainer": ANALYTIC,
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    from typer.testing import CliRunner

    from mixopt.cli import app

    r = CliRunner().invoke(app, ["tasks", str(tmp_path / "exp.yaml")])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "r (retrieval, metric ndcg@10): dataset " in out
    assert "query: task: search result | query: question 0 about topic 0" in out  # first train row
    assert "positive: title: none | text: passage answering 0" in out
    assert f"train: {folder / 'train.jsonl'} — {N} rows" in out and "— 5 rows" in out
    assert "text1: S: a man plays guitar 0" in out
    exp_obj = load_experiment(tmp_path / "exp.yaml")
    n_dev = exp_obj.task("r").dev_file.num_rows()
    assert f"— {N - n_dev} rows" in out and f"— {n_dev} rows" in out
    assert describe_task(exp_obj.task("s"))[0].startswith("s (sts, metric spearman)")


# ---------------------------------------------------------------------- a real sweep on dataset tasks


def _as_datasets(folder: Path, kind: str, out: Path) -> dict:
    """Write a synthetic JSONL task folder as a Hugging Face dataset in sentence-transformers' columns."""
    split_rows = {
        s: [json.loads(x) for x in (folder / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "dev")
    }
    if kind == "retrieval":  # a DatasetDict saved to disk: anchor / positive / negative_1
        dd = datasets.DatasetDict(
            {
                s: datasets.Dataset.from_dict(
                    {
                        "anchor": [r["query"] for r in rows],
                        "positive": [r["positive"] for r in rows],
                        "negative_1": [r["negatives"][0] for r in rows],
                    }
                )
                for s, rows in split_rows.items()
            }
        )
        assert all(len(r["negatives"]) == 1 for rows in split_rows.values() for r in rows)
        dd.save_to_disk(str(out))
        return {"dataset": str(out), "dev_split": "dev"}
    if kind == "sts":  # parquet files in a folder, scores on STS-B's 0–5 scale
        out.mkdir(parents=True)
        for s, rows in split_rows.items():
            datasets.Dataset.from_dict(
                {
                    "sentence1": [r["text1"] for r in rows],
                    "sentence2": [r["text2"] for r in rows],
                    "score": [r["score"] * 5 for r in rows],
                }
            ).to_parquet(str(out / f"{'validation' if s == 'dev' else s}-00000.parquet"))
        return {"dataset": str(out), "dev_split": "validation", "score_scale": 5}
    names = sorted({r["label"] for rows in split_rows.values() for r in rows})
    dd = datasets.DatasetDict(
        {
            s: datasets.Dataset.from_dict(
                {"text": [r["text"] for r in rows], "label": [names.index(r["label"]) for r in rows]}
            ).cast_column("label", datasets.ClassLabel(names=names))
            for s, rows in split_rows.items()
        }
    )
    dd.save_to_disk(str(out))
    return {"dataset": str(out), "dev_split": "dev"}


@pytest.mark.slow
def test_a_real_two_trial_sweep_on_dataset_tasks_matches_the_jsonl_folders(tmp_path, monkeypatch):
    import ray
    from mlflow.tracking import MlflowClient

    from mixopt.sweep import run_sweep
    from mixopt.synth import SynthSpec, synthesize
    from mixopt.trial import Trial
    from trainers.embedding import train

    data = tmp_path / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=48, n_dev=16))
    kinds = {"retrieval_0": "retrieval", "sts_1": "sts", "classification_2": "classification"}
    options = {
        "model": str(data / "model"),
        "matryoshka_dims": [64, 32],
        "batch_size": 8,
        "max_seq_length": 24,
        "learning_rate": 3e-3,
        "eval_batch_size": 64,
        "classifier_train_rows": 48,
        "cpu_threads": 1,
    }
    exp = {
        "name": "dataset_sweep",
        "tasks": [
            {"name": n, "kind": k, **_as_datasets(data / n, k, tmp_path / "hf" / n)} for n, k in kinds.items()
        ],
        "search": {"seed_mixtures": [{"retrieval_0": 0.5, "sts_1": 0.25, "classification_2": 0.25}]},
        "optimizer": {"n_seeds": 2, "max_trials": 2, "max_concurrent": 1, "random_state": 0},
        "trainer": {"target": "trainers.embedding:train", "steps": 3, "seed": 0, **options},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},  # the search trials alone are compared with the JSONL folders
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    experiment = load_experiment(tmp_path / "exp.yaml")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        summary = run_sweep(experiment, verbose=False)
    finally:
        ray.shutdown()
    assert summary.finished == 2 and summary.failed == 0
    client = MlflowClient(experiment.tracking.resolved_uri())
    runs = client.search_runs([client.get_experiment_by_name("dataset_sweep").experiment_id])
    trials = [r for r in runs if r.data.tags.get("mixopt.role") == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    for r in trials:  # the sweep pins each checkpoint's checksum manifest on its run (issue 29, case 6)
        manifest = Path(r.data.tags["mixopt.checkpoint"]) / "mixopt_checksums.json"
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
        assert r.data.tags["mixopt.checkpoint_checksums"] == digest

    # The same trial on the JSONL folders (the reference) gives the same objective: same rows, same order.
    first = min(trials, key=lambda r: r.data.tags["mixopt.trial_id"])
    exact = json.loads(first.data.tags["mixopt.proposal"])  # the params are rounded for display
    mixture = {n: exact[n] for n in kinds}
    folder_tasks = tuple(
        TaskConfig(name=n, kind=k, path=data / n, prompt=experiment.task(n).prompt) for n, k in kinds.items()
    )
    reference = train(
        Trial(
            mixture=mixture,
            hyperparameters={},
            seed=int(first.data.params.get("seed", 0)),
            steps=3,
            output_dir=tmp_path / "reference",
            tasks=folder_tasks,
            options=experiment.trainer.options,
            trial_id="ref",
        ),
        lambda step, m: None,
    )
    assert first.data.metrics["objective"] == pytest.approx(reference.objective, abs=1e-6)
    for n in kinds:
        assert first.data.metrics[f"score.{n}"] == pytest.approx(reference.task_scores[n], abs=1e-6)

    # `mixopt soup --mteb-tasks` on the soup of both trials: mteb's score on the soup's run and card.
    pytest.importorskip("mteb")
    from typer.testing import CliRunner

    from mixopt.cli import app

    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb_cache"))
    out = tmp_path / "soup"
    r = CliRunner().invoke(
        app,
        [
            "soup",
            str(tmp_path / "exp.yaml"),
            "--runs",
            "top2",
            "--out",
            str(out),
            "--mteb-tasks",
            "mteb_local_tasks:LocalSTS",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "record no checksums" not in r.output  # every ingredient verified
    results = json.loads((out / "mteb_results.json").read_text())["results"]
    score = results[0]["scores"]["test"][0]["main_score"]
    soup_run = next(
        x
        for x in client.search_runs([client.get_experiment_by_name("dataset_sweep").experiment_id])
        if x.data.tags.get("mixopt.role") == "soup"
    )
    # (The soup's synthetic vocabulary does not cover the task's words: the score may be NaN, as mteb gives it.)
    assert soup_run.data.metrics["mteb.MixoptLocalSTS"] == pytest.approx(score, nan_ok=True)
    card = (out / "README.md").read_text()
    assert "## Ingredients" in card and "## MTEB" in card and f"{score:.4f}" in card
