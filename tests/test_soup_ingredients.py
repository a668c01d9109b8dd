"""What goes into the soup (issue 29, case 12) and the prompts it ships with (case 13).

References are independent of the code under test: the dev split is recomputed here from the raw
JSONL with a plain loop over the rule the soup states, scores on a half are the trainer's own
evaluation of a dev file holding only that half's rows (written here), baseline runs are found by
their mixture (the YAML's ``verify.baseline``), and prompts are checked through sentence-transformers'
own ``encode(..., prompt=...)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from mixopt.config import TaskConfig, experiment_from_dict
from mixopt.mteb_eval import EvalError, mteb_prompts
from mixopt.soup.evaluate import SPLIT_RULE, split_dev_rows

QUERY_PROMPT = "task: search result | query: "
DOC_PROMPT = "title: none | text: "
STS_PROMPT = "task: sentence similarity | query: "
BASELINE = {"retrieval_0": 0.5, "sts_1": 0.5}
TEXTS = ["alpha beta gamma", "some other words here"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """mixopt synth's retrieval, STS and classification tasks (16 dev rows each) with its tiny model."""
    from mixopt.synth import SynthSpec, synthesize

    out = tmp_path_factory.mktemp("soupdata") / "synthetic"
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=48, n_dev=16))
    return out


def options(synth: Path) -> dict:
    return {
        "model": str(synth / "model"),
        "matryoshka_dims": [64, 32],
        "batch_size": 8,
        "max_seq_length": 24,
        "learning_rate": 3e-3,
        "eval_batch_size": 64,
        "classifier_train_rows": 48,
        "cpu_threads": 1,
    }


def task_list(synth: Path, names=("retrieval_0", "sts_1")) -> list[dict]:
    prompts = {
        "retrieval_0": {"query": QUERY_PROMPT, "document": DOC_PROMPT},
        "sts_1": {"query": STS_PROMPT, "document": STS_PROMPT},
        "classification_2": {"query": "task: classification | query: ", "document": ""},
    }
    return [
        {"name": n, "kind": n.rsplit("_", 1)[0], "path": str(synth / n), "prompt": prompts[n]} for n in names
    ]


def reference_split(path: Path, kind: str) -> tuple[list[int], list[int]]:
    """The rule the soup states, by hand: alternate in file order, retrieval by query, labels apart."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    select, report = [], []
    side: dict = {}
    count: dict = {}
    for i, row in enumerate(rows):
        if kind == "retrieval":
            group, stratum = row["query"], None
        elif kind in ("classification", "clustering", "pair_classification"):
            group, stratum = ("row", i), row["label"]
        else:
            group, stratum = ("row", i), None
        if group not in side:
            side[group] = count.get(stratum, 0) % 2
            count[stratum] = count.get(stratum, 0) + 1
        (select if side[group] == 0 else report).append(i)
    return select, report


def write_half(task: dict, rows: list[int], out: Path) -> dict:
    """A copy of ``task`` whose dev file holds only ``rows`` (the train file is the same)."""
    src = Path(task["path"])
    lines = [line for line in (src / "dev.jsonl").read_text().splitlines() if line.strip()]
    out.mkdir(parents=True, exist_ok=True)
    (out / "dev.jsonl").write_text("".join(lines[i] + "\n" for i in rows))
    spec = {k: v for k, v in task.items() if k != "path"}
    return spec | {"train": str(src / "train.jsonl"), "dev": str(out / "dev.jsonl")}


def half_tasks(tasks: list[dict], which: int, root: Path) -> list[TaskConfig]:
    out = []
    for t in tasks:
        halves = reference_split(Path(t["path"]) / "dev.jsonl", t["kind"])
        spec = write_half(t, halves[which], root / f"{t['name']}-{which}")
        out.append(TaskConfig.model_validate(spec))
    return out


# --------------------------------------------------------------------------- fast


def test_dev_split_is_the_stated_alternation_and_its_halves_are_disjoint(synth: Path) -> None:
    tasks = [
        TaskConfig.model_validate(t) for t in task_list(synth, ("retrieval_0", "sts_1", "classification_2"))
    ]
    split = split_dev_rows(tasks)
    for t in tasks:
        sel, rep = reference_split(t.dev_file, t.kind.value)
        assert (list(split.select[t.name]), list(split.report[t.name])) == (sel, rep)
        assert not set(sel) & set(rep) and sorted(sel + rep) == list(range(16))
        assert sel and rep
    assert SPLIT_RULE in split.describe()


def test_too_few_dev_rows_to_split_is_one_line(synth: Path, tmp_path: Path) -> None:
    from mixopt.soup import SoupError

    (tmp_path / "dev.jsonl").write_text(
        "".join(line + "\n" for line in (synth / "sts_1" / "dev.jsonl").read_text().splitlines()[:3])
    )
    task = TaskConfig(
        name="sts_1", kind="sts", train=synth / "sts_1" / "train.jsonl", dev=tmp_path / "dev.jsonl"
    )
    with pytest.raises(SoupError, match=r"task 'sts_1' has too few dev rows \(3\).*--method uniform") as e:
        split_dev_rows([task])
    assert "\n" not in str(e.value)


def test_evaluate_checkpoint_on_dev_rows_equals_the_evaluation_of_that_half_alone(
    synth: Path, tmp_path: Path
) -> None:
    from trainers.embedding import evaluate_checkpoint

    torch.set_num_threads(1)
    specs = task_list(synth, ("retrieval_0", "sts_1", "classification_2"))
    tasks = [TaskConfig.model_validate(t) for t in specs]
    split = split_dev_rows(tasks)
    model, opts = synth / "model", options(synth)
    for which, rows in ((0, split.select), (1, split.report)):
        got = evaluate_checkpoint(model, tasks, opts, dev_rows=rows)
        want = evaluate_checkpoint(model, half_tasks(specs, which, tmp_path), opts)
        assert got.task_metrics == pytest.approx(want.task_metrics, abs=1e-9)
        assert got.objective == pytest.approx(want.objective, abs=1e-9)
    full = evaluate_checkpoint(model, tasks, opts)
    assert full.task_metrics != pytest.approx(got.task_metrics, abs=1e-9)


def _task(name: str, kind: str, query: str, document: str) -> TaskConfig:
    return TaskConfig(
        name=name, kind=kind, path=Path("/nowhere"), prompt={"query": query, "document": document}
    )


def test_mteb_prompts_refuse_two_retrieval_tasks_with_different_prompts_unless_one_is_named() -> None:
    tasks = [
        _task("sci", "retrieval", "query: ", "passage: "),
        _task("faq", "retrieval", "question: ", "answer: "),
        _task("sts", "sts", "similar: ", "similar: "),
    ]
    with pytest.raises(
        EvalError, match=r"retrieval tasks sci, faq have different prompts.*--prompt-task"
    ) as e:
        mteb_prompts(tasks)
    assert "\n" not in str(e.value)
    assert mteb_prompts(tasks, ["faq"]) == {
        "Retrieval-query": "question: ",
        "Retrieval-document": "answer: ",
        "Reranking-query": "question: ",
        "Reranking-document": "answer: ",
        "STS": "similar: ",
    }
    with pytest.raises(EvalError, match="--prompt-task nope: not a task"):
        mteb_prompts(tasks, ["nope"])
    same = [_task("a", "retrieval", "q: ", "d: "), _task("b", "retrieval", "q: ", "d: ")]
    assert mteb_prompts(same)["Retrieval-query"] == "q: "


# --------------------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def swept(synth: Path, tmp_path_factory, ray_local) -> dict:
    """A real sweep of the tiny Gemma trainer: 2 search trials, then both verification arms."""
    from mixopt.sweep import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    config = {
        "name": "soup_ingredients",
        "tasks": task_list(synth),
        "optimizer": {"n_seeds": 2, "max_trials": 2, "max_concurrent": 1, "random_state": 0},
        "trainer": {"target": "trainers.embedding:train", "steps": 4, "seed": 0, **options(synth)},
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db"},
        "storage": str(root / "runs"),
        "resources": {"cpus": 1, "gpus": 0},
        "verify": {"seeds": 1, "baseline": BASELINE},
    }
    (root / "exp.yaml").write_text(yaml.safe_dump(config))
    exp = experiment_from_dict(config)
    torch.set_num_threads(1)
    run_sweep(exp, verbose=False)
    return {"exp": exp, "config": config, "root": root}


def _runs(exp) -> list:
    client = MlflowClient(exp.tracking.resolved_uri())
    eid = client.get_experiment_by_name(exp.experiment_name).experiment_id
    return [r for r in client.search_runs([eid]) if r.data.tags.get("mixopt.role") == "trial"]


@pytest.mark.slow
def test_ingredients_are_search_trials_and_the_recommended_arm_never_the_baseline(swept: dict) -> None:
    from mixopt.soup import format_selection, select_ingredients
    from mixopt.tracking import store

    exp = swept["exp"]
    runs = _runs(exp)
    is_baseline = {
        r.info.run_id: r.data.params.get("origin") == "verify"
        and {t: float(r.data.params[f"w.{t}"]) for t in BASELINE} == BASELINE
        for r in runs
    }
    baseline_runs = {rid for rid, b in is_baseline.items() if b}
    verify_runs = {r.info.run_id for r in runs if r.data.params.get("origin") == "verify"}
    assert len(baseline_runs) == 1 and len(verify_runs) == 2  # the sweep did verify both arms
    selection = select_ingredients(store.connect(exp.tracking.resolved_uri()), exp.experiment_name, "all")
    chosen = {i.run_id for i in selection.chosen}
    assert chosen == {r.info.run_id for r in runs} - baseline_runs
    assert {i.stage for i in selection.chosen if i.run_id in verify_runs} == {"verify"}
    (skipped,) = [s for s in selection.skipped if s.run_id in baseline_runs]
    assert "baseline arm" in skipped.reason
    printed = format_selection(selection)
    assert "baseline arm's verification runs are never ingredients" in printed
    # Named by id, the baseline run is refused in one line.
    from mixopt.soup import SoupError

    with pytest.raises(SoupError, match="verification run of the baseline arm"):
        select_ingredients(
            store.connect(exp.tracking.resolved_uri()), exp.experiment_name, next(iter(baseline_runs))
        )


@pytest.mark.slow
def test_greedy_selects_on_one_half_of_the_dev_rows_and_reports_on_the_other(
    swept: dict, tmp_path: Path
) -> None:
    from mixopt.soup import soup_from_sweep
    from trainers.embedding import evaluate_checkpoint

    exp, specs = swept["exp"], swept["config"]["tasks"]
    printed: list[str] = []
    selection, soup = soup_from_sweep(
        exp, runs="all", method="greedy", out=tmp_path / "greedy", echo=printed.append
    )
    opts = exp.trainer.options
    select_tasks, report_tasks = half_tasks(specs, 0, tmp_path / "h"), half_tasks(specs, 1, tmp_path / "h")
    # The greedy start is the best ingredient alone: its score is the selection half's evaluation.
    first = max(selection.chosen, key=lambda i: i.value)
    assert soup.greedy is not None and soup.greedy.steps[0].run_id == first.run_id
    on_select = evaluate_checkpoint(first.checkpoint, select_tasks, opts).objective
    assert soup.greedy.steps[0].soup_score == pytest.approx(on_select, abs=1e-5)
    # The reported score is the finished soup's on the other half only.
    assert soup.evaluation is not None
    want = evaluate_checkpoint(soup.out, report_tasks, opts)
    assert soup.evaluation.objective == pytest.approx(want.objective, abs=1e-5)
    assert soup.evaluation.task_scores == pytest.approx(dict(want.task_scores), abs=1e-5)
    assert soup.evaluation.objective != pytest.approx(
        evaluate_checkpoint(soup.out, select_tasks, opts).objective, abs=1e-9
    )
    card = (soup.out / "README.md").read_text()
    assert SPLIT_RULE in card and any(SPLIT_RULE in line for line in printed)


@pytest.mark.slow
def test_encode_query_and_document_use_the_named_tasks_prompts(swept: dict, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from mixopt.soup import soup_from_sweep

    exp = swept["exp"]

    def check(path: Path, query: str, document: str) -> None:
        model = SentenceTransformer(str(path), device="cpu")
        for got, prompt in (
            (model.encode_query(TEXTS, convert_to_tensor=True), query),
            (model.encode_document(TEXTS, convert_to_tensor=True), document),
        ):
            want = model.encode(TEXTS, prompt=prompt, convert_to_tensor=True)
            torch.testing.assert_close(got, want)
            assert not torch.allclose(got, model.encode(TEXTS, prompt="", convert_to_tensor=True))

    # Every trial checkpoint: the first retrieval task's prompts.
    ckpt = Path(
        next(r.data.tags["mixopt.checkpoint"] for r in _runs(exp) if "mixopt.checkpoint" in r.data.tags)
    )
    check(ckpt, QUERY_PROMPT, DOC_PROMPT)
    # The soup: by default the first retrieval task; --prompt-task names another.
    _, soup = soup_from_sweep(exp, runs="top2", out=tmp_path / "default", echo=None)
    check(soup.out, QUERY_PROMPT, DOC_PROMPT)
    card = (soup.out / "README.md").read_text()
    for name in (
        "query",
        "document",
        "retrieval_0/query",
        "retrieval_0/document",
        "sts_1/query",
        "sts_1/document",
    ):
        assert f"| `{name}` |" in card
    assert "model.encode_query(" in card and "model.encode_document(" in card
    _, soup = soup_from_sweep(exp, runs="top2", out=tmp_path / "sts", echo=None, prompt_task="sts_1")
    check(soup.out, STS_PROMPT, STS_PROMPT)
    assert SentenceTransformer(str(soup.out), device="cpu").prompts["retrieval_0/query"] == QUERY_PROMPT
