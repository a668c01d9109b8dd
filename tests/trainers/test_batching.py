"""Rows to contrastive examples, the streaming shuffle, and single-task mixture batches."""

from __future__ import annotations

import collections
import itertools
import json

import numpy as np
import pytest
import torch

from mixopt.data import ClassificationRow, RetrievalRow, STSRow
from trainers.batching import (
    Batch,
    BatchError,
    Example,
    MixtureSampler,
    TaskStream,
    classification_examples,
    retrieval_examples,
    shuffle_buffer,
    sts_examples,
    sts_threshold,
    teacher_targets,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_retrieval_rows_keep_query_positive_and_one_of_their_negatives():
    rows = [
        RetrievalRow(
            "q1", "p1", ("n1", "n2", "n3"), {"query": (1.0, 0.0), "negatives": ((0, 1), (1, 1), (2, 2))}
        ),
        RetrievalRow("q2", "p2", ()),
    ]
    ex = retrieval_examples(rows, rng())
    assert (ex[0].query, ex[0].positive) == ("q1", "p1") and ex[0].negative in rows[0].negatives
    k = rows[0].negatives.index(ex[0].negative)
    assert ex[0].teacher_negative == rows[0].teacher["negatives"][k]
    assert ex[0].teacher_query == (1.0, 0.0) and ex[0].teacher_positive is None
    assert ex[1].negative is None
    drawn = {retrieval_examples(rows[:1], rng(s))[0].negative for s in range(30)}
    assert drawn == {"n1", "n2", "n3"}


def test_sts_pairs_above_the_median_with_low_score_partners_as_negatives(tmp_path):
    rows = [
        STSRow("a", "b", 5.0),
        STSRow("a", "c", 0.5),  # a low-score partner of "a"
        STSRow("d", "e", 4.0),
        STSRow("f", "g", 1.0),
        STSRow("h", "i", 2.5),  # the median: not a positive
    ]
    path = tmp_path / "sts.jsonl"
    path.write_text(
        "".join(json.dumps({"text1": r.text1, "text2": r.text2, "score": r.score}) + "\n" for r in rows)
    )
    theta = sts_threshold(path)
    assert theta == 2.5
    ex = sts_examples(rows, theta, rng())
    assert [(e.query, e.positive) for e in ex] == [("a", "b"), ("d", "e")]
    assert ex[0].negative == "c"  # the own low-score partner
    assert ex[1].negative in {"c", "g", "i"}  # text2 of a low-score row
    assert sts_examples([STSRow("a", "b", 5.0)], 1.0, rng())[0].negative is None


def test_classification_pairs_same_label_positive_and_other_label_negative():
    rows = [ClassificationRow(f"t{i}", lab) for i, lab in enumerate("xxxyyz")]
    label = {r.text: r.label for r in rows}
    for seed in range(5):
        ex = classification_examples(rows, rng(seed))
        assert [e.query for e in ex] == ["t0", "t1", "t2", "t3", "t4"]  # t5 ("z") is alone: skipped
        for e in ex:
            assert e.group == label[e.query] == label[e.positive] and e.positive != e.query
            assert label[e.negative] != label[e.query]


def test_shuffle_buffer_is_a_seeded_streaming_permutation():
    consumed = []

    def source():
        for i in range(100):
            consumed.append(i)
            yield i

    stream = shuffle_buffer(source(), 10, rng(1))
    first = next(stream)
    assert len(consumed) == 11  # streams: only buffer + 1 rows read before the first is emitted
    out = [first, *stream]
    assert sorted(out) == list(range(100)) and out != list(range(100))
    assert out == list(shuffle_buffer(range(100), 10, rng(1)))
    assert out != list(shuffle_buffer(range(100), 10, rng(2)))
    # A buffer larger than the data is a full shuffle: every position is reachable for item 0.
    positions = {list(shuffle_buffer(range(8), 100, rng(s))).index(0) for s in range(200)}
    assert positions == set(range(8))


def test_task_stream_reads_the_file_epoch_after_epoch(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{i}"}) + "\n" for i in range(7)))
    stream = TaskStream("r", "retrieval", path, seed=0, shuffle_buffer=3, pair_window=2)
    got = [e.query for e in itertools.islice(stream, 21)]
    for epoch in range(3):
        assert sorted(got[7 * epoch : 7 * epoch + 7]) == [f"q{i}" for i in range(7)]
    again = [
        e.query for e in itertools.islice(TaskStream("r", "retrieval", path, seed=0, shuffle_buffer=3), 21)
    ]
    assert got == again


def test_task_stream_explains_an_sts_file_without_positives(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(json.dumps({"text1": f"a{i}", "text2": f"b{i}", "score": 1.0}) + "\n" for i in range(4))
    )
    with pytest.raises(BatchError, match="median"):
        next(TaskStream("s", "sts", path, seed=0))


def _stream(prefix: str, n_distinct: int):
    """Endless examples over a small pool of texts, so duplicates are frequent."""
    i = 0
    while True:
        yield Example(f"{prefix}q{i % n_distinct}", f"{prefix}p{(i * 7) % n_distinct}", f"{prefix}n{i % 5}")
        i += 1


def test_mixture_sampler_draws_tasks_by_weight_and_batches_from_one_task():
    mixture = {"a": 0.6, "b": 0.3, "c": 0.1, "d": 0.0}
    streams = {t: _stream(t, 50) for t in mixture}
    sampler = MixtureSampler(streams, mixture, batch_size=4, seed=3)
    n = 3000
    counts = collections.Counter()
    for _ in range(n):
        batch = sampler.next_batch()
        counts[batch.task] += 1
        assert all(t.startswith(batch.task) for e in batch.examples for t in e.texts)
    assert counts["d"] == 0
    for task in ("a", "b", "c"):
        w = mixture[task]
        assert abs(counts[task] / n - w) < 4 * (w * (1 - w) / n) ** 0.5


def test_batches_never_repeat_a_text():
    sampler = MixtureSampler({"a": _stream("a", 12)}, {"a": 1.0}, batch_size=4, seed=0)
    for _ in range(200):
        texts = [t for e in sampler.next_batch().examples for t in e.texts]
        assert len(texts) == len(set(texts))


def test_sampler_is_deterministic_and_fails_clearly():
    def run(seed):
        s = MixtureSampler({"a": _stream("a", 30), "b": _stream("b", 30)}, {"a": 0.5, "b": 0.5}, 3, seed=seed)
        return [s.next_batch() for _ in range(20)]

    assert run(1) == run(1) and run(1) != run(2)
    same = MixtureSampler({"a": itertools.repeat(Example("x", "y", "z"))}, {"a": 1.0}, batch_size=4, seed=0)
    with pytest.raises(BatchError, match="distinct texts"):
        same.next_batch()


def test_teacher_targets_follow_the_texts():
    batch = Batch(
        "t",
        (
            Example("q1", "p1", "n1", teacher_query=(1.0, 0.0), teacher_negative=(0.0, 2.0)),
            Example("q2", "p2", None, teacher_query=(0.0, 1.0)),
        ),
    )
    targets = teacher_targets(batch)
    vectors, present = targets.sides["query"]
    assert torch.equal(vectors, torch.tensor([[1.0, 0.0], [0.0, 1.0]])) and present.tolist() == [True, True]
    vectors, present = targets.sides["negative"]
    assert present.tolist() == [True, False] and vectors[0].tolist() == [0.0, 2.0]
    assert "positive" not in targets.sides
    assert teacher_targets(Batch("t", (Example("a", "b"),))) is None


def test_stratified_schedule_trains_each_task_its_share_in_every_prefix():
    mixture = {"a": 0.5, "b": 0.3, "c": 0.2, "d": 0.0}
    orders = []
    for seed in (0, 1):
        sampler = MixtureSampler(
            {t: _stream(t, 50) for t in mixture}, mixture, batch_size=4, seed=seed, schedule="stratified"
        )
        counts = collections.Counter()
        order = []
        for step in range(1, 81):
            task = sampler.next_batch().task
            counts[task] += 1
            order.append(task)
            for t, w in mixture.items():
                assert abs(counts[t] - step * w) < 2.0, (seed, step, t, counts[t])
        assert abs(counts["a"] - 40) <= 1 and abs(counts["b"] - 24) <= 1 and counts["d"] == 0
        orders.append(order)
    assert orders[0] != orders[1]  # the seed sets the phase
    # The bound holds for any mixture and seed (a naive count after every step, 2 to 11 tasks).
    rng = np.random.default_rng(0)
    for seed in range(300):
        w = rng.dirichlet(np.full(int(rng.integers(2, 12)), 0.7))
        names = [f"t{i}" for i in range(len(w))]
        sampler = MixtureSampler(
            {t: iter(()) for t in names}, dict(zip(names, w)), 2, seed=seed, schedule="stratified"
        )
        n = np.zeros(len(w))
        for step in range(1, 121):
            n[names.index(sampler.next_task())] += 1
            assert np.abs(n - step * sampler.probabilities).max() < 2.0


def test_random_schedule_spreads_like_a_binomial_and_unknown_schedules_are_refused():
    # 40 steps at w = 1/3: the random schedule's counts over seeds spread as Binomial(40, 1/3)
    # (sd 2.98); the stratified one gives 13 or 14 every time.
    mixture = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    random_counts, stratified_counts = [], []
    for seed in range(200):
        for schedule, out in (("random", random_counts), ("stratified", stratified_counts)):
            s = MixtureSampler({t: _stream(t, 50) for t in mixture}, mixture, 2, seed=seed, schedule=schedule)
            out.append(sum(s.next_task() == "a" for _ in range(40)))
    assert 2.4 < float(np.std(random_counts)) < 3.6
    assert set(stratified_counts) <= {13, 14}
    with pytest.raises(ValueError, match="schedule must be"):
        MixtureSampler({"a": _stream("a", 5)}, {"a": 1.0}, 2, seed=0, schedule="round-robin")
