"""The sentence-transformers trainer target (trainers.sentence_transformers): the mixture-weighted batch
sampler against a naive count and the built-in trainer's stratified schedule, real trials of the tiny
Gemma3 encoder through SentenceTransformerTrainer, checkpoints that load and soup, loss validation at
the edge, and (slow) a real 2-trial sweep on Ray and MLflow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from mixopt.config import ConfigError, TaskConfig, experiment_from_dict
from mixopt.synth import SynthSpec, synthesize
from mixopt.trial import Trial, TrialFailed, load_trainer
from trainers.batching import MixtureSampler
from trainers.st_sampler import MixtureBatchSampler, batch_counts, task_schedule

TASKS = ("retrieval_0", "sts_1", "classification_2")
PROMPTS = {
    "retrieval": {"query": "task: search result | query: ", "document": "title: none | text: "},
    "sts": {
        "query": "task: sentence similarity | query: ",
        "document": "task: sentence similarity | query: ",
    },
    "classification": {
        "query": "task: classification | query: ",
        "document": "task: classification | query: ",
    },
}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """mixopt synth's three tasks (128 train / 32 dev rows each) and its tiny model (hidden size 64)."""
    root = tmp_path_factory.mktemp("st") / "synthetic"
    synthesize(root, n_tasks=3, seed=0, spec=SynthSpec(n_train=128, n_dev=32))
    return root


@pytest.fixture(scope="module")
def tasks(synth) -> tuple[TaskConfig, ...]:
    return tuple(
        TaskConfig(name=t, kind=t.rsplit("_", 1)[0], path=synth / t, prompt=PROMPTS[t.rsplit("_", 1)[0]])
        for t in TASKS
    )


def options(synth: Path, **over) -> dict:
    return {
        "model": str(synth / "model"),
        "matryoshka_dims": [64, 32],
        "batch_size": 8,
        "learning_rate": 5e-4,
        "max_seq_length": 32,
        "log_every": 4,
        "device": "cpu",
        **over,
    }


# --------------------------------------------------------------------------- the sampler


def naive_round(x: float) -> int:
    return math.floor(x + 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_batch_counts_are_round_w_times_steps_and_sum_to_steps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        k, steps = int(rng.integers(2, 6)), int(rng.integers(1, 300))
        w = rng.dirichlet(np.ones(k))
        counts = batch_counts(w, steps)
        assert sum(counts) == steps
        assert all(abs(c - x * steps) < 1 for c, x in zip(counts, w))
        reference = [naive_round(x * steps) for x in w]
        if sum(reference) == steps:
            assert counts == reference
    # Three tasks of 1/3 in 80 steps: round gives 27 each (81); the counts settle at 27, 27, 26.
    assert batch_counts([1, 1, 1], 80) == [27, 27, 26]


def test_the_schedule_is_the_built_in_stratified_one_with_exact_counts() -> None:
    rng = np.random.default_rng(1)
    for case in range(100):
        w = rng.dirichlet(np.ones(3))
        steps, seed = int(rng.integers(10, 200)), int(rng.integers(1000))
        mine = task_schedule(w, steps, seed)
        builtin = MixtureSampler(
            {n: iter(()) for n in TASKS}, dict(zip(TASKS, w)), 2, seed=seed, schedule="stratified"
        )
        reference = [TASKS.index(builtin.next_task()) for _ in range(steps)]
        assert np.bincount(mine, minlength=3).tolist() == batch_counts(w, steps)
        # The order is the built-in trainer's until the built-in would give a task more than its quota.
        differ = [t for t in range(steps) if mine[t] != reference[t]]
        if differ:
            first, quota = differ[0], batch_counts(w, steps)
            k = reference[first]
            assert reference[: first + 1].count(k) > quota[k], (case, first)
        # Every prefix holds each task within 2 of its share (a naive recount).
        counts = np.zeros(3)
        for t, k in enumerate(mine, start=1):
            counts[k] += 1
            assert np.abs(counts - t * w).max() < 2


def _dataset(n: int, tag: str):
    from datasets import Dataset

    return Dataset.from_dict(
        {"anchor": [f"{tag} a{i}" for i in range(n)], "positive": [f"{tag} p{i}" for i in range(n)]}
    )


def test_the_sampler_gives_one_dataset_per_batch_and_exact_counts_through_sentence_transformers(
    synth,
) -> None:
    """Batches as SentenceTransformerTrainer's dataloader yields them: one dataset each, counts exact."""
    from functools import partial

    from datasets import DatasetDict
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    # A small dataset (12 rows: one batch of 8 per epoch) must cycle through epochs for its share.
    data = DatasetDict(a=_dataset(100, "a"), b=_dataset(12, "b"), c=_dataset(60, "c"))
    weights, steps = [0.5, 0.3, 0.2], 37
    model = SentenceTransformer(str(synth / "model"), device="cpu")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(synth.parent / "unused"),
        max_steps=steps,
        per_device_train_batch_size=8,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=partial(MixtureBatchSampler, weights=weights, steps=steps),
        dataloader_drop_last=True,
        use_cpu=True,
        report_to="none",
        seed=3,
    )
    loss = {name: MultipleNegativesRankingLoss(model) for name in data}
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    loader = trainer.get_train_dataloader()
    assert len(loader) == steps
    names = []
    for batch in loader:
        assert len(set(batch["dataset_name"])) == 1
        names.append(batch["dataset_name"][0])
    assert [names.count(n) for n in "abc"] == [naive_round(w * steps) for w in weights] == [19, 11, 7]
    # Exactly the tasks of task_schedule, in its order.
    assert names == ["abc"[k] for k in task_schedule(weights, steps, 3)]


def test_the_sampler_refuses_mismatched_weights() -> None:
    from torch.utils.data import BatchSampler, ConcatDataset, SequentialSampler

    sets = [list(range(10)), list(range(5))]
    samplers = [BatchSampler(SequentialSampler(s), 2, True) for s in sets]
    with pytest.raises(ValueError, match="3 weights for 2 datasets"):
        MixtureBatchSampler(ConcatDataset(sets), samplers, weights=[0.2, 0.3, 0.5], steps=4)
    with pytest.raises(ValueError, match="weights must be finite"):
        MixtureBatchSampler(ConcatDataset(sets), samplers, weights=[-1, 2], steps=4)


# --------------------------------------------------------------------------- validation at the edge


def _experiment(synth: Path, **trainer) -> dict:
    return {
        "name": "st",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(synth / t)} for t in TASKS],
        "trainer": {
            "target": "trainers.sentence_transformers:train",
            "steps": 4,
            **options(synth),
            **trainer,
        },
    }


@pytest.mark.parametrize(
    "losses, message",
    [
        ({"retrieval_0": {"name": "NoSuchLoss"}}, "trainer.losses.retrieval_0: unknown loss 'NoSuchLoss'"),
        (
            {"retrieval_0": {"name": "CachedMultipleNegativesRankingLoss", "mini_batch": 4}},
            "trainer.losses.retrieval_0: CachedMultipleNegativesRankingLoss has no argument 'mini_batch'",
        ),
        (
            {"retrieval_0": {"name": "CachedMultipleNegativesRankingLoss", "mini_batch_size": "big"}},
            "CachedMultipleNegativesRankingLoss's argument 'mini_batch_size': Input should be a valid integer",
        ),
        ({"sts": {"name": "MatryoshkaLoss"}}, "MatryoshkaLoss needs the argument(s) ['matryoshka_dims']"),
        (
            {"sts": {"name": "BatchAllTripletLoss"}},
            "trainer.losses.sts: BatchAllTripletLoss reads (sentence, label), which task sts_1 (sts) cannot give",
        ),
        ({"sts_1": {"name": "CoSENTLoss", "loss": {"name": "CoSENTLoss"}}}, "CoSENTLoss wraps no loss"),
        (
            {"retrieval_0": {"name": "MultipleNegativesRankingLoss", "similarity_fct": "cos"}},
            "argument 'similarity_fct': Input should be callable",
        ),
    ],
)
def test_a_bad_loss_is_one_line_naming_its_yaml_path(synth, losses, message) -> None:
    with pytest.raises(ConfigError) as e:
        experiment_from_dict(_experiment(synth, losses=losses), source="exp.yaml")
    text = str(e.value)
    assert len(text.splitlines()) == 1 and text.startswith("exp.yaml: trainer.losses")
    assert message in text


def test_fp16_is_refused_and_good_losses_load(synth) -> None:
    with pytest.raises(ConfigError, match="trainer.dtype: float16 is not supported"):
        experiment_from_dict(_experiment(synth, dtype="float16"))
    good = {
        "retrieval_0": {"name": "CachedMultipleNegativesRankingLoss", "mini_batch_size": 4},
        "sts": {"name": "CoSENTLoss", "scale": 10},
        "classification": {
            "name": "MatryoshkaLoss",
            "matryoshka_dims": [64, 32],
            "loss": {"name": "BatchAllTripletLoss"},
        },
    }
    exp = experiment_from_dict(_experiment(synth, losses=good))
    assert exp.trainer.options["losses"] == good


def test_the_trainer_provides_the_contract() -> None:
    import trainers.sentence_transformers as st

    trainer = load_trainer("trainers.sentence_transformers:train")
    assert trainer.train is st.train and trainer.options is st.Options
    assert trainer.evaluate_checkpoint is st.evaluate_checkpoint and trainer.preflight is None


# --------------------------------------------------------------------------- real trials


@pytest.fixture(scope="module")
def two_trials(synth, tasks, tmp_path_factory):
    """Two real trials (different mixtures and seeds, one with per-task losses), with their reports."""
    import trainers.sentence_transformers as st

    out = []
    losses = {
        "retrieval_0": {"name": "CachedMultipleNegativesRankingLoss", "mini_batch_size": 4},
        "classification": {"name": "BatchAllTripletLoss"},
    }
    for i, (mix, over) in enumerate(
        [((0.5, 0.3, 0.2), {"eval_every": 6}), ((0.2, 0.2, 0.6), {"losses": losses})]
    ):
        reports: list[tuple[int, dict]] = []
        trial = Trial(
            mixture=dict(zip(TASKS, mix)),
            hyperparameters={"learning_rate": 1e-3},
            seed=i,
            steps=12,
            output_dir=tmp_path_factory.mktemp(f"trial{i}"),
            tasks=tasks,
            options=options(synth, **over),
        )
        result = st.train(trial, lambda step, m, reports=reports: reports.append((step, dict(m))))
        out.append((trial, result, reports))
    return out


def test_a_trial_reports_and_scores_every_task(two_trials) -> None:
    trial, result, reports = two_trials[0]
    objectives = [(s, m["objective"]) for s, m in reports if "objective" in m]
    assert [s for s, _ in objectives] == [6, 12] and objectives[-1][1] == result.objective
    assert [s for s, m in reports if "loss" in m] == [4, 8, 12]
    # Each task's dev score at each evaluation, and each task's training loss at each log: the
    # Trainer's own logged loss is the mean over the interval's batches, so the per-task means
    # weighted by their batch counts (a naive recount of the schedule) give it back.
    evaluations = [m for _, m in reports if "objective" in m]
    assert all({f"score.{t}" for t in TASKS} <= set(m) for m in evaluations)
    assert {t: evaluations[-1][f"score.{t}"] for t in TASKS} == result.task_scores
    schedule = task_schedule([trial.mixture[t] for t in TASKS], trial.steps, trial.seed)
    for step, m in [(s, m) for s, m in reports if "loss" in m]:
        counts = np.bincount(schedule[step - 4 : step], minlength=3)
        losses = {t: m[f"loss.{t}"] for k, t in enumerate(TASKS) if counts[k]}
        assert {k[len("loss.") :] for k in m if k.startswith("loss.")} == {
            t for k, t in enumerate(TASKS) if counts[k]
        }
        mean = sum(counts[TASKS.index(t)] * v for t, v in losses.items()) / counts.sum()
        assert m["loss"] == pytest.approx(mean, rel=1e-4), step
    assert all(math.isfinite(m["loss"]) and m["tokens_per_s"] > 0 for _, m in reports if "loss" in m)
    assert set(result.task_scores) == set(TASKS)
    # The objective is the mean of the task scores (mean_task), each the task's metric at the full dim.
    assert result.objective == pytest.approx(np.mean(list(result.task_scores.values())))
    assert result.task_scores["sts_1"] == result.task_metrics["sts_1/spearman/d64"]
    assert {"sts_1/spearman/d32", "retrieval_0/ndcg_at_10/d32"} <= set(result.task_metrics)
    assert result.extra["train_tokens"] > 0


def test_a_checkpoint_loads_in_sentence_transformers_as_mixopt_loads_it(two_trials) -> None:
    """The ST layout: SentenceTransformer and mixopt's own loader (a second implementation) embed alike."""
    from sentence_transformers import SentenceTransformer

    from mixopt.checksums import verify_checksums
    from trainers.model import embed, load_encoder

    trial, result, _ = two_trials[0]
    ckpt = result.checkpoint
    assert ckpt == (trial.output_dir / "model").resolve()
    assert not list(ckpt.rglob("*.bin")) and (ckpt / "mixopt_checksums.json").exists()
    assert verify_checksums(ckpt, "trial 0") is True
    model = SentenceTransformer(str(ckpt), device="cpu")
    assert model.prompts["query"] == PROMPTS["retrieval"]["query"]
    assert model.prompts["sts_1/document"] == PROMPTS["sts"]["document"]
    texts = ["task: search result | query: w1 w2", "title: none | text: w3"]
    ours = model.encode(texts, convert_to_tensor=True)
    loaded = load_encoder(ckpt)
    theirs = embed(loaded.encoder, loaded.tokenizer, texts, max_seq_length=32, batch_size=4)
    assert torch.allclose(ours, theirs, atol=1e-5)
    # Training moved the weights away from the base model's.
    base = load_file(str(Path(trial.options["model"]) / "model.safetensors"))
    tuned = load_file(str(ckpt / "model.safetensors"))
    assert any(not torch.equal(base[k], tuned[k]) for k in base)


def test_two_checkpoints_soup_to_their_mean_and_score_as_a_trial(two_trials, tasks, tmp_path) -> None:
    from sentence_transformers import SentenceTransformer

    import trainers.sentence_transformers as st
    from mixopt.soup.average import average_checkpoints

    (t0, r0, _), (_, r1, _) = two_trials
    soup = tmp_path / "soup"
    average_checkpoints([r0.checkpoint, r1.checkpoint], soup)
    for rel in ("model.safetensors", "2_Dense/model.safetensors", "3_Dense/model.safetensors"):
        a, b, s = (load_file(str(d / rel)) for d in (r0.checkpoint, r1.checkpoint, soup))
        for k in a:  # a naive mean of the two checkpoints' tensors
            assert torch.allclose(s[k], (a[k] + b[k]) / 2, atol=1e-6), (rel, k)
    SentenceTransformer(str(soup), device="cpu")
    scored = st.evaluate_checkpoint(soup, tasks, t0.options)
    assert set(scored.task_scores) == set(TASKS) and math.isfinite(scored.objective)
    # The checkpoint re-scored is the trial's own final score (the same dev rows, metrics and dims).
    again = st.evaluate_checkpoint(r0.checkpoint, tasks, t0.options)
    assert again.objective == pytest.approx(r0.objective, abs=1e-6)


def test_a_task_too_small_for_a_batch_fails_the_trial_with_one_line(synth, tasks, tmp_path) -> None:
    import trainers.sentence_transformers as st

    trial = Trial(
        mixture=dict(zip(TASKS, (0.4, 0.3, 0.3))),
        hyperparameters={},
        seed=0,
        steps=2,
        output_dir=tmp_path,
        tasks=tasks,
        options=options(synth, batch_size=500),
    )
    with pytest.raises(
        TrialFailed, match=r"fewer training examples than batch_size 500; lower trainer.batch_size"
    ):
        st.train(trial, lambda s, m: None)
    assert not (tmp_path / "model").exists()


def test_a_loss_for_no_task_and_no_kind_fails_the_trial_before_training(synth, tasks, tmp_path) -> None:
    import trainers.sentence_transformers as st

    trial = Trial(
        mixture=dict(zip(TASKS, (0.4, 0.3, 0.3))),
        hyperparameters={},
        seed=0,
        steps=2,
        output_dir=tmp_path,
        tasks=tasks,
        options=options(synth, losses={"retrieval_9": {"name": "CoSENTLoss"}}),
    )
    with pytest.raises(
        TrialFailed, match=r"trainer.losses: retrieval_9: 'retrieval_9' is neither a task nor"
    ):
        st.train(trial, lambda s, m: None)
    assert not (tmp_path / "model").exists()


# --------------------------------------------------------------------------- a real sweep


@pytest.mark.slow
def test_a_two_trial_sweep_on_ray_and_mlflow_with_this_trainer(synth, tmp_path) -> None:
    import ray
    from mlflow.tracking import MlflowClient
    from sentence_transformers import SentenceTransformer

    from mixopt.config import load_experiment
    from mixopt.soup.pipeline import soup_from_sweep
    from mixopt.sweep import run_sweep

    exp_dict = _experiment(synth, eval_every=5, steps=10)
    exp_dict.update(
        optimizer={"n_seeds": 2, "max_trials": 2, "max_concurrent": 2, "random_state": 0},
        tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        storage=str(tmp_path / "runs"),
        verify={"seeds": 0},
        resources={"cpus": 1, "gpus": 0},
    )
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp_dict))
    exp = load_experiment(path)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        summary = run_sweep(exp, verbose=False)
    finally:
        ray.shutdown()
    assert summary.finished == 2 and summary.failed == 0
    client = MlflowClient(exp.tracking.resolved_uri())
    runs = client.search_runs([client.get_experiment_by_name("st").experiment_id])
    trials = [r for r in runs if r.data.tags.get("mixopt.role") == "trial"]
    assert len(trials) == 2
    for r in trials:
        assert r.info.status == "FINISHED"
        scores = [r.data.metrics[f"score.{t}"] for t in TASKS]
        assert r.data.metrics["objective"] == pytest.approx(np.mean(scores))
        # The intermediate objective (eval_every 5) and the loss were logged by step.
        assert [m.step for m in client.get_metric_history(r.info.run_id, "objective")][:1] == [5]
        assert len(client.get_metric_history(r.info.run_id, "loss")) >= 2
    _, result = soup_from_sweep(exp, runs="top2", out=tmp_path / "soup", echo=None)
    SentenceTransformer(str(tmp_path / "soup"), device="cpu")
    # The soup was scored by this trainer's evaluate_checkpoint, as a trial is.
    assert result.evaluation is not None and set(result.evaluation.task_scores) == set(TASKS)
    assert math.isfinite(result.evaluation.objective) and len(result.ingredients) == 2
