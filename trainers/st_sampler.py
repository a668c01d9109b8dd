"""Mixture-weighted multi-dataset batching for sentence-transformers: one task per batch, exact counts.

sentence-transformers' multi-dataset samplers are round-robin and proportional-to-size
(:mod:`sentence_transformers.base.sampler`); a task mixture needs the share of batches each task
gets to be set by a weight instead. :class:`MixtureBatchSampler` does that, in three small parts:

- :func:`batch_counts`: task ``k`` of weight ``w_k`` gets ``N_k = round(w_k T)`` of the ``T``
  batches. When those roundings do not sum to ``T`` (three tasks of 1/3 and ``T = 80`` give
  27 + 27 + 27), the largest-remainder rule settles it: every task gets ``floor(w_k T)``, and the
  ``T - Σ floor`` tasks with the largest remainders one more. Whenever ``Σ round(w_k T) = T`` the
  two agree, and in every case ``|N_k - w_k T| < 1`` and ``Σ N_k = T``.
- :func:`task_schedule`: the order of the tasks, the built-in trainer's ``task_sampling:
  stratified`` schedule (:class:`trainers.batching.MixtureSampler`, same seeded phase): each step
  adds ``w_k`` to every task's credit, the task with the largest credit is drawn and pays 1, so
  every prefix holds each task within 2 of its share. One rule is added: a task that has had its
  ``N_k`` batches is no longer drawn, which makes the final counts exact. Until the built-in
  schedule would give a task more than its ``N_k`` the order is the built-in trainer's, batch for
  batch, for the same seed and weights (the built-in's own counts end within 2 of ``w_k T``, so
  the two part only in the last few batches of a task).
- :class:`MixtureBatchSampler`: a :class:`~sentence_transformers.base.sampler.MultiDatasetDefaultBatchSampler`
  that yields, for each scheduled task, the next batch of that task's own batch sampler (e.g.
  ``NoDuplicatesBatchSampler``), so every batch comes from one dataset (in-batch negatives need
  it). A task's sampler that runs out starts a new epoch of that task (a new shuffle).

Use it in any sentence-transformers training::

    from functools import partial
    args = SentenceTransformerTrainingArguments(
        output_dir="out", max_steps=1000, batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=partial(MixtureBatchSampler, weights=[0.5, 0.3, 0.2], steps=1000),
    )
    trainer = SentenceTransformerTrainer(model, args, train_dataset=DatasetDict(a=..., b=..., c=...), loss=...)

``weights`` are in the order of the ``DatasetDict``'s datasets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import accumulate

import numpy as np
import torch
from sentence_transformers.base.sampler import MultiDatasetDefaultBatchSampler
from torch.utils.data import BatchSampler, ConcatDataset


def _normalised(weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(list(weights), dtype=np.float64)
    if w.ndim != 1 or not len(w) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0, with a positive sum; got {list(weights)}")
    return w / w.sum()


def batch_counts(weights: Sequence[float], steps: int) -> list[int]:
    """``N_k``, the batches of each task in ``steps`` batches: ``round(w_k · steps)``, settled to sum to ``steps``.

    Largest remainder (Hamilton): ``floor(w_k T)`` each, then one more for the ``T - Σ floor``
    largest remainders (ties to the earlier task). ``weights`` are normalised to sum to 1.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    w = _normalised(weights)
    exact = w * steps
    counts = np.floor(exact + 1e-9).astype(int)
    missing = steps - int(counts.sum())
    remainders = exact - counts
    for k in sorted(range(len(w)), key=lambda k: (-remainders[k], k))[:missing]:
        counts[k] += 1
    return [int(c) for c in counts]


def task_schedule(weights: Sequence[float], steps: int, seed: int) -> list[int]:
    """The task index of each of ``steps`` batches: the stratified schedule, with exact final counts.

    The credits start at the built-in trainer's seeded phase ``u - mean(u)``, ``u ~ U[0, 1)`` drawn
    by ``numpy.random.default_rng([seed, 8])`` (:class:`trainers.batching.MixtureSampler`); tasks
    of weight 0 are never drawn.
    """
    w = _normalised(weights)
    quota = batch_counts(w, steps)
    live = [k for k in range(len(w)) if w[k] > 0]
    p = w[live]
    phase = np.random.default_rng([seed, 8]).uniform(size=len(live))
    credit = phase - phase.mean()
    left = np.array([quota[k] for k in live])
    out = []
    for _ in range(steps):
        credit += p
        j = int(np.argmax(np.where(left > 0, credit, -np.inf)))
        credit[j] -= 1.0
        left[j] -= 1
        out.append(live[j])
    return out


class MixtureBatchSampler(MultiDatasetDefaultBatchSampler):
    """``steps`` single-dataset batches, dataset ``k`` in exactly ``batch_counts(weights, steps)[k]`` of them.

    Args:
        dataset: the ``ConcatDataset`` of the ``DatasetDict``'s datasets (sentence-transformers builds it).
        batch_samplers: one batch sampler per dataset, in the same order.
        generator: seeds the per-dataset samplers' shuffles (``seed + epoch``), as in sentence-transformers.
        seed: seeds the task order (:func:`task_schedule`) and the shuffles.
        weights: one weight per dataset, in the ``DatasetDict``'s order (normalised; 0: never drawn).
        steps: the number of batches (the trainer's ``max_steps`` times gradient accumulation).
    """

    def __init__(
        self,
        dataset: ConcatDataset,
        batch_samplers: list[BatchSampler],
        generator: torch.Generator | None = None,
        seed: int = 0,
        *,
        weights: Sequence[float],
        steps: int,
    ) -> None:
        super().__init__(dataset, batch_samplers=batch_samplers, generator=generator, seed=seed)
        if len(weights) != len(batch_samplers):
            raise ValueError(
                f"{len(weights)} weights for {len(batch_samplers)} datasets; give one per dataset"
            )
        self.weights = _normalised(weights)
        self.steps = int(steps)
        self.counts = batch_counts(self.weights, self.steps)

    def __iter__(self) -> Iterator[list[int]]:
        if self.generator is not None and self.seed is not None:
            self.generator.manual_seed(self.seed + self.epoch)
        offsets = [0, *accumulate(len(d) for d in self.dataset.datasets)]
        epochs = [self.epoch] * len(self.batch_samplers)
        iterators: list[Iterator[list[int]] | None] = [None] * len(self.batch_samplers)
        for k in task_schedule(self.weights, self.steps, 0 if self.seed is None else self.seed + self.epoch):
            batch = None
            for _ in range(2):  # the current pass, then at most one fresh epoch of this dataset
                if iterators[k] is None:
                    sampler = self.batch_samplers[k]
                    if hasattr(sampler, "set_epoch"):
                        sampler.set_epoch(epochs[k])
                    iterators[k] = iter(sampler)
                    epochs[k] += 1
                batch = next(iterators[k], None)
                if batch is not None:
                    break
                iterators[k] = None
            if batch is None:
                raise ValueError(
                    f"dataset {k} of the mixture yields no batch of {self.batch_size} (it has "
                    f"{len(self.dataset.datasets[k])} rows); give it more rows or lower the batch size"
                )
            yield [i + offsets[k] for i in batch]

    def __len__(self) -> int:
        return self.steps
