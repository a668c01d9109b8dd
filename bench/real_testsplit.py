"""The only code of the real-data benchmark that reads a test split: a checkpoint scored on them.

A task of ``experiments/real_minilm.yaml`` is a folder with ``train.jsonl``, ``dev.jsonl`` and
``test.jsonl`` (bench/real_data.py); the sweep, the verification and the soup read the first two
only. :func:`test_tasks` turns each task into one whose *dev* file is its ``test.jsonl`` (its train
file, which the classification probe is fitted on, unchanged), so that the trainer's own
``evaluate_checkpoint`` scores a checkpoint on the test rows exactly as a trial is scored on dev:
the same metrics, prompts, sequence length and probe. Nothing is fitted or chosen on what it
returns; bench/real.py calls it last, after every model is made.

Test metrics (:data:`TEST_METRICS`): STS-B Spearman, news nDCG@10 and recall@1, reviews accuracy,
each at the model's full dimension; the *test mean* is the mean of the tasks' own metrics (the
objective's metric of each task, as on dev).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TEST_FILE = "test.jsonl"
# Per task kind, the metrics the table shows (the first is the task's own metric, as on dev).
TEST_METRICS = {"sts": ("spearman",), "retrieval": ("ndcg@10", "recall@1"), "classification": ("accuracy",)}


def test_tasks(tasks: Sequence[Any]) -> tuple[Any, ...]:
    """Each task with its dev file replaced by the ``test.jsonl`` beside its ``train.jsonl``."""
    from mixopt.config import TaskConfig

    out = []
    for t in tasks:
        test = Path(t.train_file).with_name(TEST_FILE)
        if not test.is_file():
            raise FileNotFoundError(f"task {t.name!r}: no {test} (bench/real_data.py writes it)")
        data = t.model_dump(exclude={"path", "train", "dev"})
        out.append(TaskConfig.model_validate({**data, "train": t.train_file, "dev": test}))
    return tuple(out)


def metric_names(tasks: Sequence[Any]) -> list[tuple[str, str]]:
    """``(task, metric)`` pairs of the table's test columns, in task order."""
    return [(t.name, m) for t in tasks for m in TEST_METRICS.get(t.kind.value, (t.metric,))]


def scores_of(result: Any, tasks: Sequence[Any], dim: int) -> dict[str, float]:
    """``{"<task>/<metric>": value}`` at dimension ``dim``, plus ``"mean"`` (mean of each task's own metric)."""
    from trainers.evaluation import metric_key

    out = {
        f"{task}/{metric}": float(result.task_metrics[metric_key(task, metric, dim)])
        for task, metric in metric_names(tasks)
    }
    out["mean"] = float(sum(result.task_scores[t.name] for t in tasks) / len(tasks))
    return out


def evaluate_on_test(
    target: str, checkpoint: Path, tasks: Sequence[Any], options: Mapping[str, Any]
) -> dict[str, Any]:
    """``checkpoint`` scored on every task's test split by the trainer ``target``'s ``evaluate_checkpoint``.

    Returns ``{"scores": scores_of(...), "metrics": every metric, "seconds": the evaluation's}``.
    """
    import time

    from mixopt.trial import load_trainer

    evaluate = load_trainer(target).require("evaluate_checkpoint", "scoring on the test splits")
    t0 = time.perf_counter()
    result = evaluate(Path(checkpoint), test_tasks(tasks), options)
    dim = _full_dim(result.task_metrics)
    return {
        "scores": scores_of(result, tasks, dim),
        "metrics": {k: float(v) for k, v in result.task_metrics.items()},
        "seconds": time.perf_counter() - t0,
    }


def _full_dim(metrics: Mapping[str, float]) -> int:
    """The largest ``d<dim>`` of the metric keys: the model's full dimension."""
    return max(int(k.rsplit("/d", 1)[1]) for k in metrics)
