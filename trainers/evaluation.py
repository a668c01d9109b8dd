"""Per-task dev evaluation at every Matryoshka dimension, and the trial objective.

- **Retrieval**: nDCG@10, MRR@10 and recall@1 with binary relevance. The dev corpus is every positive and
  every negative text of the dev split (deduplicated); each distinct dev query is scored against
  the whole corpus, and its relevant documents are the positives of all dev rows with that query.
  ``nDCG@10 = DCG@10 / IDCG@10``, ``DCG@10 = Σ_{r≤10} rel_r / log2(r + 1)``;
  ``MRR@10 = 1 / (rank of the first relevant document)`` if it is in the top 10, else 0;
  ``recall@1 = |top-1 ∩ relevant| / |relevant|`` (MTEB's ``recall_at_1``), reported, never a
  task's ``metric``.
- **STS**: Spearman rank correlation between the cosine of ``(text1, text2)`` and the gold score
  (average ranks for ties; a constant prediction scores 0).
- **Classification**: accuracy on dev of a **logistic regression** (scikit-learn, L2, C = 1, lbfgs, as
  MTEB) fitted on the embeddings of a **stratified sample** of ``classifier_train_rows`` rows of the
  train split (:func:`stratified_sample`: each label in proportion to its share of the split, rows
  drawn by a fixed hash of their index, so every trial's probe sees the same rows and a file sorted
  by label still gives a probe that has seen every class).
- **Clustering** (as MTEB's ``ClusteringEvaluator``): mini-batch k-means (scikit-learn
  ``MiniBatchKMeans``, k = the number of dev labels, batch 500, ``n_init="auto"``, seed 42) on the dev
  embeddings, scored by the **V-measure** against the dev labels: the harmonic mean of homogeneity
  ``h = 1 - H(C|K)/H(C)`` and completeness ``c = 1 - H(K|C)/H(K)`` (Rosenberg & Hirschberg 2007).
- **Pair classification** (as MTEB's ``PairClassificationEvaluator``, its ``ap`` score): the
  **average precision** of the cosine of ``(text1, text2)`` as a score for label 1:
  ``AP = Σ_n (R_n - R_{n-1}) P_n`` over descending score thresholds (scikit-learn).

Prompts: the query side uses the task's ``prompt.query`` and the document side ``prompt.document``
(retrieval queries / corpus; STS ``text1`` / ``text2``); classification texts take the query prompt,
as the query side of its training pairs does. Metric keys are ``<task>/<metric>/d<dim>`` with
metric in ``ndcg_at_10``, ``mrr_at_10``, ``recall_at_1``, ``spearman``, ``accuracy``, ``v_measure``, ``ap``
(MLflow-safe names). Clustering texts take the query prompt; pair-classification ``text1`` the query
prompt and ``text2`` the document prompt, as STS.

Non-finite inputs are refused, never scored: an embedding with a NaN or infinite coordinate raises
ValueError naming the task (the trial turns it into :class:`mixopt.trial.TrialFailed`), and the
metric functions reject NaN scores, which would otherwise rank arbitrarily (an all-NaN STS
prediction would get Spearman 1, NaN retrieval scores a finite nDCG).

The objective is the weighted mean ``Σ_k w_k s_k / Σ_k w_k`` of each task's configured metric
at the full dimension (:func:`mixopt.optimizer.objective.compose`), with the experiment's
``objective_weights`` when given; else the mean over tasks (``mean_task``) or the mean over task
kinds of the per-kind means (``mean_kind``), which are such weights too
(:attr:`mixopt.config.Experiment.objective_weights`).

``dev_rows`` (optional, per task): the 0-based positions, in read order, of the dev rows to score
on; a task it does not name is scored on all of its dev rows. The soup's greedy selection scores
candidates on one part of the dev rows and reports the final soup on the other, so that the
reported score is not the one the selection maximised.

Dev rows are read from their source once per trial: the trainer passes one :class:`DevRowCache`
to every evaluation of a trial. A dataset task with ``dev_fraction`` scans about
``dev_max_rows / dev_fraction`` rows of its train split to hold out its dev rows, and a trial
evaluates every ``eval_every`` steps and at the end; re-reading at each evaluation multiplies that
scan (and, for a hub dataset, its requests) by the number of evaluations.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import heapq
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mixopt.config import TaskConfig, TaskKind
from mixopt.data import ClassificationRow, Row, iter_rows
from mixopt.datasets import splitmix64
from mixopt.optimizer.objective import check_objective, composed_value, equal_weights, kind_weights
from mixopt.trial import TrialResult

from .losses import matryoshka_prefix

# The config's metric names (with '@', which MLflow rejects) -> metric key names.
METRIC_KEYS = {
    "ndcg@10": "ndcg_at_10",
    "mrr@10": "mrr_at_10",
    "recall@1": "recall_at_1",
    "spearman": "spearman",
    "accuracy": "accuracy",
    "v_measure": "v_measure",
    "ap": "ap",
}
# The seed of MTEB's evaluators; fixed so the score of a checkpoint does not depend on the trial seed.
CLUSTERING_SEED = 42
CLUSTERING_BATCH = 500
# Seeds the hash that orders rows for the probe's stratified sample.
PROBE_SEED = 0x70726F6265

EmbedFn = Callable[[Sequence[str]], Tensor]
# task name -> positions (0-based, in read order) of the dev rows to score on.
DevRows = Mapping[str, Collection[int]]


@dataclass(frozen=True)
class Evaluation:
    objective: float
    task_metrics: dict[str, float]
    task_scores: dict[str, float]


def metric_key(task: str, metric: str, dim: int) -> str:
    return f"{task}/{METRIC_KEYS.get(metric, metric)}/d{dim}"


def ndcg_mrr_at_k(scores: Tensor, relevant: Sequence[set[int]], k: int = 10) -> tuple[float, float]:
    """Mean nDCG@k and MRR@k over queries.

    Args:
        scores: ``[Q, D]`` query-document similarities.
        relevant: for each query, the set of relevant document indices (non-empty).
    """
    if scores.shape[0] != len(relevant):
        raise ValueError(f"{scores.shape[0]} score rows for {len(relevant)} queries")
    if not bool(torch.isfinite(scores).all()):
        # topk orders NaN as the largest value: NaN scores would still yield a finite nDCG.
        bad = int((~torch.isfinite(scores)).sum())
        raise ValueError(f"{bad} of {scores.numel()} retrieval scores are not finite; nDCG/MRR are undefined")
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.tolist()
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg, mrr = [], []
    for ranked, rel in zip(top, relevant):
        gains = np.array([1.0 if d in rel else 0.0 for d in ranked])
        dcg = float((gains * discounts[: len(gains)]).sum())
        idcg = float(discounts[: min(len(rel), k)].sum())
        ndcg.append(dcg / idcg)
        hits = np.flatnonzero(gains)
        mrr.append(1.0 / (hits[0] + 1) if hits.size else 0.0)
    return float(np.mean(ndcg)), float(np.mean(mrr))


def recall_at_k(scores: Tensor, relevant: Sequence[set[int]], k: int = 1) -> float:
    """Mean over queries of ``|top-k ∩ relevant| / |relevant|`` (``scores``: ``[Q, D]``, finite)."""
    if scores.shape[0] != len(relevant):
        raise ValueError(f"{scores.shape[0]} score rows for {len(relevant)} queries")
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.tolist()
    return float(np.mean([len(rel.intersection(ranked)) / len(rel) for ranked, rel in zip(top, relevant)]))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties sharing the average of their ranks. Raises ValueError on NaN."""
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        # NaN != NaN breaks the tie grouping and argsort puts NaNs last: the ranks would be arbitrary.
        raise ValueError(f"{int(np.isnan(x).sum())} of {len(x)} values to rank are NaN")
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: Pearson correlation of the average ranks. 0 when either side is constant.

    Raises ValueError when either side holds a NaN or an infinity (a NaN model must not score).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    for name, values in (("predictions", x), ("gold scores", y)):
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise ValueError(f"Spearman: {bad} of {len(values)} {name} are not finite")
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(np.sqrt((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else 0.0


def classification_accuracy(
    train_x: np.ndarray, train_y: Sequence[str], dev_x: np.ndarray, dev_y: Sequence[str]
) -> float:
    """Dev accuracy of a logistic regression (scikit-learn defaults, max_iter 1000) fit on train."""
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny, separable sets
        clf = LogisticRegression(max_iter=1000).fit(train_x, list(train_y))
    return float((clf.predict(dev_x) == np.asarray(list(dev_y))).mean())


def v_measure(embeddings: np.ndarray, labels: Sequence[str], seed: int = CLUSTERING_SEED) -> float:
    """V-measure of mini-batch k-means clusters (k = number of distinct labels) of ``embeddings`` ``[N, d]``."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    if not np.isfinite(embeddings).all():
        raise ValueError("clustering: embeddings hold NaN or infinite values")
    k = len(set(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's memory-leak notes on small inputs
        model = MiniBatchKMeans(n_clusters=k, batch_size=CLUSTERING_BATCH, n_init="auto", random_state=seed)
        assignment = model.fit(embeddings).labels_
    return float(v_measure_score(list(labels), assignment))


def pair_average_precision(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Average precision of ``scores`` as a ranking of the pairs with label 1 (scikit-learn's AP)."""
    from sklearn.metrics import average_precision_score

    x = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(
            f"pair classification: {int((~np.isfinite(x)).sum())} of {len(x)} scores are not finite"
        )
    return float(average_precision_score(np.asarray(labels), x))


def stratified_sample(
    rows: Iterable[ClassificationRow], n: int, seed: int = PROBE_SEED
) -> list[ClassificationRow]:
    """A stratified sample of at most ``n`` rows, streamed: each label gets ``round(n · share)`` rows (≥ 1).

    Row ``i`` (in file order) gets the key ``u(i)`` = a fixed hash of ``i`` (splitmix64, as the
    dataset hold-out); each label keeps its rows with the smallest keys (a bottom-k sample, i.e. a
    uniform sample without replacement, in one pass with ``n`` rows held per label). Deterministic:
    the same rows for every trial. Shares are the labels' counts over the whole split; rounding
    may give a few rows more or fewer than ``n``.
    """
    heaps: dict[str, list[tuple[int, int, ClassificationRow]]] = collections.defaultdict(list)
    counts: collections.Counter[str] = collections.Counter()
    index = 0
    batch: list[ClassificationRow] = []

    def flush() -> None:
        nonlocal index
        keys = holdout_keys(np.arange(index, index + len(batch)), seed)
        for j, row in enumerate(batch):
            counts[row.label] += 1
            item = (-int(keys[j]), index + j, row)  # max-heap on the key: pop the largest
            h = heaps[row.label]
            if len(h) < n:
                heapq.heappush(h, item)
            elif item > h[0]:
                heapq.heapreplace(h, item)
        index += len(batch)
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= 4096:
            flush()
    flush()
    total = sum(counts.values())
    out: list[tuple[int, ClassificationRow]] = []
    for label, h in heaps.items():
        take = max(1, round(n * counts[label] / total))
        smallest = sorted(h, reverse=True)[:take]  # largest -key first = smallest key first
        out.extend((i, r) for _, i, r in smallest)
    out.sort(key=lambda t: t[0])
    return [r for _, r in out]


def holdout_keys(indices: np.ndarray, seed: int) -> np.ndarray:
    """The uint64 hash keys of row indices (splitmix64 of ``i ^ seed``), as :func:`mixopt.datasets.holdout_mask`."""
    return splitmix64(np.asarray(indices, dtype=np.uint64) ^ np.uint64(seed))


@functools.lru_cache(maxsize=16)
def _probe_rows(source: object, n: int) -> tuple[ClassificationRow, ...]:
    # Cached per process: a trial evaluates several times, and the sample does not change.
    return tuple(stratified_sample(iter_rows(source, "classification"), n))


def _embed_checked(embed: EmbedFn, texts: Sequence[str], task: TaskConfig, what: str) -> Tensor:
    """``embed(texts)`` ``[N, d]``; raises ValueError naming the task if any coordinate is NaN or ±inf."""
    x = embed(texts)
    finite = torch.isfinite(x).all(dim=-1)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"task {task.name!r}: the model gave non-finite (NaN/inf) embeddings for {bad} of {len(texts)} "
            f"{what}; the weights have diverged (lower the learning rate or check the training data)"
        )
    return x


class DevRowCache:
    """Each task's dev rows, read from their source on first use and kept in memory, in read order.

    One cache serves every evaluation of a trial (module docstring). The rows are kept without
    their teacher embeddings, which evaluation never reads and which would make the cache
    ``rows x texts x D x 4`` bytes larger. ``rows_read`` counts the rows read from the sources.
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], tuple[Row, ...]] = {}
        self.rows_read = 0

    def rows(self, task: TaskConfig, kind: str) -> tuple[Row, ...]:
        """The dev rows of ``task`` read as ``kind`` rows (validated by the reader, as uncached)."""
        # The source in words identifies it: a file path, or a DatasetSplit's every setting.
        key = (task.name, kind, repr(task.dev_file))
        rows = self._rows.get(key)
        if rows is None:
            rows = tuple(
                dataclasses.replace(r, teacher=None) if r.teacher is not None else r
                for r in iter_rows(task.dev_file, kind)
            )
            self.rows_read += len(rows)
            self._rows[key] = rows
        return rows


def dev_rows_of(
    task: TaskConfig, kind: str, keep: Collection[int] | None = None, cache: DevRowCache | None = None
) -> Iterator:
    """The task's dev rows, in read order; only those at positions in ``keep`` when it is given.

    With ``cache`` the rows come from it (read from the source on the cache's first use).
    """
    rows = iter(cache.rows(task, kind)) if cache is not None else iter_rows(task.dev_file, kind)
    if keep is None:
        yield from rows
        return
    keep = frozenset(keep)
    for i, row in enumerate(rows):
        if i in keep:
            yield row


def _prefixes(x: Tensor, dims: Sequence[int]) -> dict[int, Tensor]:
    return {m: matryoshka_prefix(x.double(), m) for m in dims}


def evaluate_retrieval(
    task: TaskConfig,
    embed: EmbedFn,
    dims: Sequence[int],
    keep: Collection[int] | None = None,
    cache: DevRowCache | None = None,
) -> dict[str, float]:
    queries: dict[str, set[str]] = collections.defaultdict(set)
    corpus: dict[str, int] = {}
    for row in dev_rows_of(task, "retrieval", keep, cache):
        queries[row.query].add(row.positive)
        for text in (row.positive, *row.negatives):
            corpus.setdefault(text, len(corpus))
    if not queries:
        raise ValueError(f"task {task.name!r}: the dev file {task.dev_file} has no rows")
    query_texts = list(queries)
    relevant = [{corpus[p] for p in queries[q]} for q in query_texts]
    q_emb = _prefixes(
        _embed_checked(embed, [task.prompt.query + q for q in query_texts], task, "queries"), dims
    )
    d_emb = _prefixes(
        _embed_checked(embed, [task.prompt.document + d for d in corpus], task, "documents"), dims
    )
    out = {}
    for m in dims:
        scores = q_emb[m] @ d_emb[m].T
        ndcg, mrr = ndcg_mrr_at_k(scores, relevant)  # first: it refuses non-finite scores
        out[metric_key(task.name, "ndcg@10", m)] = ndcg
        out[metric_key(task.name, "mrr@10", m)] = mrr
        out[metric_key(task.name, "recall@1", m)] = recall_at_k(scores, relevant, 1)
    return out


def evaluate_sts(
    task: TaskConfig,
    embed: EmbedFn,
    dims: Sequence[int],
    keep: Collection[int] | None = None,
    cache: DevRowCache | None = None,
) -> dict[str, float]:
    rows = list(dev_rows_of(task, "sts", keep, cache))
    if len(rows) < 2:
        raise ValueError(
            f"task {task.name!r}: the dev file {task.dev_file} needs at least 2 rows for Spearman"
        )
    e1 = _prefixes(_embed_checked(embed, [task.prompt.query + r.text1 for r in rows], task, "text1s"), dims)
    e2 = _prefixes(
        _embed_checked(embed, [task.prompt.document + r.text2 for r in rows], task, "text2s"), dims
    )
    gold = [r.score for r in rows]
    return {
        metric_key(task.name, "spearman", m): spearman((e1[m] * e2[m]).sum(-1).numpy(), gold) for m in dims
    }


def evaluate_classification(
    task: TaskConfig,
    embed: EmbedFn,
    dims: Sequence[int],
    classifier_train_rows: int,
    keep: Collection[int] | None = None,
    cache: DevRowCache | None = None,
) -> dict[str, float]:
    train_rows = list(_probe_rows(task.train_file, classifier_train_rows))
    dev_rows = list(dev_rows_of(task, "classification", keep, cache))
    if len({r.label for r in train_rows}) < 2:
        raise ValueError(
            f"task {task.name!r}: the train split {task.train_file} holds fewer than 2 labels; "
            "the classifier needs at least 2"
        )
    if not dev_rows:
        raise ValueError(f"task {task.name!r}: the dev file {task.dev_file} has no rows")
    train_x = _prefixes(
        _embed_checked(embed, [task.prompt.query + r.text for r in train_rows], task, "train texts"), dims
    )
    dev_x = _prefixes(
        _embed_checked(embed, [task.prompt.query + r.text for r in dev_rows], task, "dev texts"), dims
    )
    train_y, dev_y = [r.label for r in train_rows], [r.label for r in dev_rows]
    return {
        metric_key(task.name, "accuracy", m): classification_accuracy(
            train_x[m].numpy(), train_y, dev_x[m].numpy(), dev_y
        )
        for m in dims
    }


def evaluate_clustering(
    task: TaskConfig,
    embed: EmbedFn,
    dims: Sequence[int],
    keep: Collection[int] | None = None,
    cache: DevRowCache | None = None,
) -> dict[str, float]:
    rows = list(dev_rows_of(task, "clustering", keep, cache))
    labels = [r.label for r in rows]
    if len(set(labels)) < 2:
        raise ValueError(
            f"task {task.name!r}: the dev split {task.dev_file} holds {len(set(labels))} label(s); "
            "clustering needs at least 2"
        )
    x = _prefixes(_embed_checked(embed, [task.prompt.query + r.text for r in rows], task, "dev texts"), dims)
    return {metric_key(task.name, "v_measure", m): v_measure(x[m].numpy(), labels) for m in dims}


def evaluate_pair_classification(
    task: TaskConfig,
    embed: EmbedFn,
    dims: Sequence[int],
    keep: Collection[int] | None = None,
    cache: DevRowCache | None = None,
) -> dict[str, float]:
    rows = list(dev_rows_of(task, "pair_classification", keep, cache))
    labels = [r.label for r in rows]
    if len(set(labels)) < 2:
        raise ValueError(
            f"task {task.name!r}: the dev split {task.dev_file} needs pairs of both labels (0 and 1) "
            "for average precision"
        )
    e1 = _prefixes(_embed_checked(embed, [task.prompt.query + r.text1 for r in rows], task, "text1s"), dims)
    e2 = _prefixes(
        _embed_checked(embed, [task.prompt.document + r.text2 for r in rows], task, "text2s"), dims
    )
    # The prefixes are re-normalised (matryoshka_prefix), so the dot product is the cosine.
    return {
        metric_key(task.name, "ap", m): pair_average_precision((e1[m] * e2[m]).sum(-1).numpy(), labels)
        for m in dims
    }


def evaluate_tasks(
    tasks: Sequence[TaskConfig],
    embed: EmbedFn,
    dims: Sequence[int],
    *,
    objective: str = "mean_task",
    weights: Mapping[str, float] | None = None,
    classifier_train_rows: int = 2000,
    dev_rows: DevRows | None = None,
    dev_cache: DevRowCache | None = None,
) -> Evaluation:
    """Evaluate every task on its dev split at every dim; combine the primary scores into the objective.

    Args:
        tasks: the experiment's tasks.
        embed: prompted texts -> unit-norm embeddings ``[N, d]`` (d = ``dims[0]``).
        dims: Matryoshka dims, the first the full dimension.
        objective: ``"mean_task"`` or ``"mean_kind"``; ignored when ``weights`` are given.
        weights: task name -> weight >= 0: the objective is the weighted mean of those tasks' scores.
        classifier_train_rows: size of the stratified train sample the classification probe is fitted on.
        dev_rows: per task, the positions of the dev rows to score on (all rows of a task not named).
        dev_cache: where the dev rows are read once and kept (a trial passes one to all its
            evaluations); without it each task's dev rows are read from the source anew.
    """
    if objective not in ("mean_task", "mean_kind"):
        raise ValueError(f"objective must be 'mean_task' or 'mean_kind', got {objective!r}")
    metrics: dict[str, float] = {}
    scores: dict[str, float] = {}
    for task in tasks:
        keep = None if dev_rows is None else dev_rows.get(task.name)
        if task.kind == TaskKind.retrieval:
            m = evaluate_retrieval(task, embed, dims, keep, dev_cache)
        elif task.kind == TaskKind.sts:
            m = evaluate_sts(task, embed, dims, keep, dev_cache)
        elif task.kind == TaskKind.clustering:
            m = evaluate_clustering(task, embed, dims, keep, dev_cache)
        elif task.kind == TaskKind.pair_classification:
            m = evaluate_pair_classification(task, embed, dims, keep, dev_cache)
        else:
            m = evaluate_classification(task, embed, dims, classifier_train_rows, keep, dev_cache)
        metrics.update(m)
        scores[task.name] = m[metric_key(task.name, task.metric or "", dims[0])]
    if weights is None:
        names = [t.name for t in tasks]
        weights = (
            equal_weights(names)
            if objective == "mean_task"
            else kind_weights({t.name: t.kind.value for t in tasks})
        )
    value = composed_value(check_objective(weights, "weights"), scores, None, "evaluate_tasks")
    return Evaluation(value, metrics, scores)


def score_checkpoint(
    checkpoint: Path,
    tasks: Sequence[TaskConfig],
    embed: EmbedFn,
    dims: Sequence[int],
    *,
    objective: str,
    classifier_train_rows: int,
    dev_rows: DevRows | None = None,
) -> TrialResult:
    """A saved checkpoint's scores as a trial's result (a trainer's ``evaluate_checkpoint``, once
    its model is loaded): every task evaluated by :func:`evaluate_tasks`, timed."""
    t0 = time.perf_counter()
    result = evaluate_tasks(
        tasks,
        embed,
        dims,
        objective=objective,
        classifier_train_rows=classifier_train_rows,
        dev_rows=dev_rows,
    )
    return TrialResult(
        objective=result.objective,
        task_metrics=result.task_metrics,
        task_scores=result.task_scores,
        checkpoint=Path(checkpoint).resolve(),
        extra={"eval_seconds": time.perf_counter() - t0},
    )
