"""From task rows to single-task contrastive batches, streamed, seeded, with no duplicate texts.

Every example is a triple (query, positive, optional hard negative). How each task kind becomes
triples (the rules are applied inside a *pairing window* of ``pair_window`` consecutive rows of the
shuffled stream, so a file is never held whole):

- **retrieval**: ``(query, positive, one of the row's negatives)``; when a row lists several
  negatives one is drawn by the seeded generator; a row without negatives has no hard negative.
- **STS**: a row whose score is **above the task's threshold** ``θ`` (the median of the first
  10,000 training scores, so about half the rows qualify and ties at the median do not) becomes the
  pair ``(text1, text2)``. Rows at or below ``θ`` are not positives; their texts become hard
  negatives: the hard negative of ``(a, b)`` is a low-score partner of ``a`` itself (a text that
  appeared with ``a`` in a row scored ``≤ θ``) when the window holds one, otherwise ``text2`` of a
  random low-score row of the window.
- **classification**: each row's ``text`` is a query; its positive is another text **of the same
  label** from the window, its hard negative a text of a **different label**; the example carries
  the label as its *group*, so the loss does not treat other same-label positives of the batch as
  negatives (:func:`trainers.losses.false_negative_mask`). Rows whose label is alone in the window
  are skipped.

Teacher embeddings (if the rows carry them) follow their texts.

Streaming: :class:`TaskStream` reads the train file with :func:`mixopt.data.iter_rows` (line by line
/ batch by batch), passes it through a seeded **shuffle buffer** of ``shuffle_buffer`` rows, and
starts a new epoch (a new shuffle) when the file ends. A file smaller than the buffer is therefore
fully shuffled each epoch; a larger one is shuffled locally, as in tf.data / webdataset.

:class:`MixtureSampler` draws, at each step, one task with probability equal to its mixture weight
and fills the whole batch from that task (single-task batches, as in Gemini Embedding and
EmbeddingGemma), skipping examples that would repeat a text already in the batch (they are kept for
the next batch of that task).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixopt.data import ClassificationRow, RetrievalRow, Row, STSRow, iter_rows

from .losses import TeacherTargets

# A teacher embedding: a float32 array from mixopt.data (or any sequence of numbers).
Vector = Sequence[float]
STS_THRESHOLD_ROWS = 10_000


class BatchError(ValueError):
    """A task whose data cannot produce training batches; the message names the task and why."""


@dataclass(frozen=True)
class Example:
    """One training triple; ``teacher_*`` are the teacher embeddings of the texts, if any."""

    query: str
    positive: str
    negative: str | None = None
    group: str | None = None
    teacher_query: Vector | None = None
    teacher_positive: Vector | None = None
    teacher_negative: Vector | None = None

    @property
    def texts(self) -> tuple[str, ...]:
        return (
            (self.query, self.positive)
            if self.negative is None
            else (self.query, self.positive, self.negative)
        )


@dataclass(frozen=True)
class Batch:
    """A single-task batch."""

    task: str
    examples: tuple[Example, ...]

    @property
    def queries(self) -> list[str]:
        return [e.query for e in self.examples]

    @property
    def positives(self) -> list[str]:
        return [e.positive for e in self.examples]

    @property
    def negatives(self) -> list[str | None]:
        return [e.negative for e in self.examples]

    @property
    def groups(self) -> list[str | None]:
        return [e.group for e in self.examples]

    def __len__(self) -> int:
        return len(self.examples)


def _teacher(row: Row, field: str, index: int | None = None) -> Vector | None:
    if not row.teacher or field not in row.teacher:
        return None
    value = row.teacher[field]
    return value[index] if index is not None else value


def retrieval_examples(rows: Sequence[RetrievalRow], rng: np.random.Generator) -> list[Example]:
    """``(query, positive, a negative)`` per row; the negative drawn by ``rng`` when there are several."""
    out = []
    for row in rows:
        k = int(rng.integers(len(row.negatives))) if row.negatives else None
        out.append(
            Example(
                row.query,
                row.positive,
                row.negatives[k] if k is not None else None,
                teacher_query=_teacher(row, "query"),
                teacher_positive=_teacher(row, "positive"),
                teacher_negative=_teacher(row, "negatives", k) if k is not None else None,
            )
        )
    return out


def sts_examples(rows: Sequence[STSRow], threshold: float, rng: np.random.Generator) -> list[Example]:
    """Rows scored above ``threshold`` become ``(text1, text2)`` pairs; low-score texts their negatives."""
    low_rows = [r for r in rows if r.score <= threshold]
    # A low-score partner of a text: (partner text, its teacher embedding).
    partners: dict[str, list[tuple[str, Vector | None]]] = collections.defaultdict(list)
    for r in low_rows:
        partners[r.text1].append((r.text2, _teacher(r, "text2")))
        partners[r.text2].append((r.text1, _teacher(r, "text1")))
    out = []
    for r in rows:
        if r.score <= threshold:
            continue
        own = [c for c in partners.get(r.text1, []) if c[0] not in (r.text1, r.text2)]
        if own:
            neg, neg_teacher = own[int(rng.integers(len(own)))]
        elif low_rows:
            other = low_rows[int(rng.integers(len(low_rows)))]
            neg, neg_teacher = other.text2, _teacher(other, "text2")
        else:
            neg, neg_teacher = None, None
        if neg in (r.text1, r.text2):
            neg, neg_teacher = None, None
        out.append(
            Example(
                r.text1,
                r.text2,
                neg,
                teacher_query=_teacher(r, "text1"),
                teacher_positive=_teacher(r, "text2"),
                teacher_negative=neg_teacher,
            )
        )
    return out


def classification_examples(rows: Sequence[ClassificationRow], rng: np.random.Generator) -> list[Example]:
    """``(text, same-label text, other-label text)`` per row, with the label as the example's group."""
    by_label: dict[str, list[int]] = collections.defaultdict(list)
    for i, r in enumerate(rows):
        by_label[r.label].append(i)
    out = []
    for i, r in enumerate(rows):
        same = [j for j in by_label[r.label] if j != i and rows[j].text != r.text]
        if not same:
            continue
        pos = rows[same[int(rng.integers(len(same)))]]
        other_labels = [lab for lab in by_label if lab != r.label]
        neg = None
        if other_labels:
            members = by_label[other_labels[int(rng.integers(len(other_labels)))]]
            neg = rows[members[int(rng.integers(len(members)))]]
        out.append(
            Example(
                r.text,
                pos.text,
                neg.text if neg is not None else None,
                group=r.label,
                teacher_query=_teacher(r, "text"),
                teacher_positive=_teacher(pos, "text"),
                teacher_negative=_teacher(neg, "text") if neg is not None else None,
            )
        )
    return out


def sts_threshold(path: str | Path, n_rows: int = STS_THRESHOLD_ROWS) -> float:
    """The median score of the first ``n_rows`` rows of an STS file (streamed)."""
    scores = []
    for row in iter_rows(path, "sts"):
        scores.append(row.score)
        if len(scores) >= n_rows:
            break
    if not scores:
        raise BatchError(f"{path}: the file has no rows")
    return float(np.median(scores))


def shuffle_buffer(rows: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Stream ``rows`` in a locally shuffled order through a buffer of ``size`` items.

    The buffer fills, then each incoming item replaces a uniformly drawn buffered item, which is
    emitted; at the end the remainder is emitted in a random order.
    """
    if size < 1:
        raise ValueError(f"shuffle buffer size must be >= 1, got {size}")
    buffer: list[Any] = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        k = int(rng.integers(size))
        buffer[k], row = row, buffer[k]
        yield row
    for k in rng.permutation(len(buffer)):
        yield buffer[k]


class TaskStream:
    """An endless, seeded stream of :class:`Example` for one task, epoch after epoch.

    Args:
        name: the task name (for messages).
        kind: ``"retrieval"``, ``"sts"`` or ``"classification"``.
        path: the train file (``.jsonl`` or ``.parquet``).
        seed: seeds the shuffle and the pairing.
        shuffle_buffer: rows held by the shuffle buffer.
        pair_window: rows grouped to form STS / classification pairs.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        path: str | Path,
        *,
        seed: int | Sequence[int],
        shuffle_buffer: int = 10_000,
        pair_window: int = 1024,
    ):
        # ``path`` may also be a row source (a dataset split): anything mixopt.data.iter_rows reads.
        self.path = path if hasattr(path, "iter_rows") else Path(path)
        self.name, self.kind = name, str(getattr(kind, "value", kind))
        if self.kind not in ("retrieval", "sts", "classification"):
            raise ValueError(f"task {name!r}: unknown kind {kind!r}")
        self.rng = np.random.default_rng(seed)
        self.buffer_size, self.pair_window = shuffle_buffer, pair_window
        self.threshold = sts_threshold(self.path) if self.kind == "sts" else None
        self._it = self._generate()

    def __iter__(self) -> Iterator[Example]:
        return self

    def __next__(self) -> Example:
        return next(self._it)

    def _convert(self, window: list[Row]) -> list[Example]:
        if self.kind == "retrieval":
            return retrieval_examples(window, self.rng)
        if self.kind == "sts":
            assert self.threshold is not None
            return sts_examples(window, self.threshold, self.rng)
        return classification_examples(window, self.rng)

    def _generate(self) -> Iterator[Example]:
        while True:
            produced = 0
            window: list[Row] = []
            for row in shuffle_buffer(iter_rows(self.path, self.kind), self.buffer_size, self.rng):
                window.append(row)
                if len(window) == self.pair_window:
                    examples = self._convert(window)
                    produced += len(examples)
                    yield from examples
                    window = []
            if window:
                examples = self._convert(window)
                produced += len(examples)
                yield from examples
            if produced == 0:
                raise BatchError(self._why_empty())

    def _why_empty(self) -> str:
        where = f"task {self.name!r} ({self.path})"
        if self.kind == "sts":
            return (
                f"{where}: no STS row scores above the median {self.threshold:g}, so there are no positive "
                "pairs; STS training needs graded scores"
            )
        if self.kind == "classification":
            return f"{where}: no label has two texts, so there are no same-label pairs"
        return f"{where}: the file has no rows"


class MixtureSampler:
    """Single-task batches: a task drawn with its mixture weight, then ``batch_size`` distinct-text examples.

    Two task schedules:

    - ``"random"``: each step draws its task independently with probability ``w_k`` (EmbeddingGemma's
      recipe). After ``t`` steps task ``k`` has had ``n_k ~ Binomial(t, w_k)`` batches: in a short
      trial the spread (``sqrt(t w_k (1 - w_k))``, 3 of 40 steps at ``w = 1/3``) is noise on top of
      the mixture's effect.
    - ``"stratified"``: smooth weighted round-robin. Every task holds a credit; each step adds
      ``w_k`` to every credit, picks the task with the largest credit and takes 1 from it. Since
      ``n_k(t) = t w_k + credit_k(0) - credit_k(t)`` and the credits stay bounded,
      ``|n_k(t) - t w_k| < 2`` for every task at every step: the trial trains on its mixture's
      proportions, in any prefix. The seed sets the initial credits (a random phase,
      ``u_k - mean(u)``, ``u ~ U[0, 1)``), so seeds still differ in the order of tasks.

    Args:
        streams: task name -> endless example iterator (e.g. :class:`TaskStream`).
        mixture: task name -> weight (tasks of weight 0 are never drawn).
        batch_size: examples per batch (>= 2: in-batch negatives need company).
        seed: seeds the task draws.
        max_scan: examples examined per batch before giving up on distinct texts (default 8 x batch).
        schedule: ``"random"`` or ``"stratified"``.
    """

    def __init__(
        self,
        streams: Mapping[str, Iterator[Example]],
        mixture: Mapping[str, float],
        batch_size: int,
        seed: int,
        max_scan: int | None = None,
        schedule: str = "random",
    ):
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {batch_size}")
        if schedule not in ("random", "stratified"):
            raise ValueError(f"schedule must be 'random' or 'stratified', got {schedule!r}")
        self.names = [t for t in streams if mixture.get(t, 0.0) > 0]
        if not self.names:
            raise ValueError(f"no task has a positive weight in {dict(mixture)}")
        weights = np.array([mixture[t] for t in self.names], dtype=np.float64)
        self.probabilities = weights / weights.sum()
        self.streams = streams
        self.batch_size = batch_size
        self.max_scan = max_scan or 8 * batch_size
        self.schedule = schedule
        self.rng = np.random.default_rng([seed, 7])
        phase = np.random.default_rng([seed, 8]).uniform(size=len(self.names))
        self.credit = phase - phase.mean()
        self.pending: dict[str, collections.deque[Example]] = {t: collections.deque() for t in self.names}

    def next_task(self) -> str:
        """The task of the next batch, by the sampler's schedule."""
        if self.schedule == "random":
            return self.names[int(self.rng.choice(len(self.names), p=self.probabilities))]
        self.credit += self.probabilities
        k = int(np.argmax(self.credit))
        self.credit[k] -= 1.0
        return self.names[k]

    def next_batch(self) -> Batch:
        return self.batch_for(self.next_task())

    def batch_for(self, task: str) -> Batch:
        """The next batch of ``task``: examples whose texts all differ from each other."""
        pending, stream = self.pending[task], self.streams[task]
        chosen: list[Example] = []
        seen: set[str] = set()
        deferred: list[Example] = []
        scanned = 0
        while len(chosen) < self.batch_size and scanned < self.max_scan:
            example = pending.popleft() if pending else next(stream)
            scanned += 1
            texts = example.texts
            if len(set(texts)) < len(texts):
                continue  # repeats itself: never usable
            if seen.isdisjoint(texts):
                chosen.append(example)
                seen.update(texts)
            else:
                deferred.append(example)
        # Deferred examples go first next time; the queue is bounded so a task with many repeated
        # texts cannot grow it without limit.
        pending.extend(deferred)
        while len(pending) > 4 * self.batch_size:
            pending.popleft()
        if len(chosen) < 2:
            raise BatchError(
                f"task {task!r}: could not find 2 examples with distinct texts in {scanned} tries; "
                "the task's texts repeat too much for contrastive batches"
            )
        return Batch(task, tuple(chosen))


def teacher_targets(batch: Batch) -> TeacherTargets | None:
    """The batch's teacher embeddings per side (zeros and ``present=False`` where a text has none).

    Vectors (float32 arrays from :mod:`mixopt.data`, or any sequences of numbers) are stacked in
    one call per side and checked vectorised: one length, finite.
    """
    sides = {
        "query": [e.teacher_query for e in batch.examples],
        "positive": [e.teacher_positive for e in batch.examples],
        "negative": [e.teacher_negative for e in batch.examples],
    }
    dims = {len(v) for vectors in sides.values() for v in vectors if v is not None}
    if not dims:
        return None
    if len(dims) > 1:
        raise BatchError(
            f"task {batch.task!r}: teacher embeddings of different lengths {sorted(dims)} in one batch"
        )
    dim = dims.pop()
    out = {}
    for side, vectors in sides.items():
        rows = [i for i, v in enumerate(vectors) if v is not None]
        if not rows:
            continue
        stacked = np.asarray([vectors[i] for i in rows], dtype=np.float32)  # [n, D]
        if not np.isfinite(stacked).all():
            raise BatchError(f"task {batch.task!r}: a {side} teacher embedding is not finite")
        matrix = np.zeros((len(vectors), dim), dtype=np.float32)
        matrix[rows] = stacked
        present = np.zeros(len(vectors), dtype=bool)
        present[rows] = True
        out[side] = (torch.from_numpy(matrix), torch.from_numpy(present))
    return TeacherTargets(out)
