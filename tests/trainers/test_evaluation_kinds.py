"""Clustering (V-measure), pair classification (AP) and the stratified probe sample, against references."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mixopt.config import TaskConfig
from trainers.evaluation import evaluate_tasks, pair_average_precision, stratified_sample, v_measure


def naive_average_precision(scores, labels) -> float:
    """AP as the mean of precision@k over the ranks k of the positives (distinct scores)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, total = 0, 0.0
    for k, i in enumerate(order, start=1):
        if labels[i] == 1:
            hits += 1
            total += hits / k
    return total / sum(labels)


def naive_v_measure(labels, clusters) -> float:
    """V-measure from its definition: harmonic mean of homogeneity and completeness (entropies)."""
    n = len(labels)

    def entropy(xs):
        return -sum(c / n * math.log(c / n) for c in Counter(xs).values())

    def conditional(a, b):  # H(a | b)
        joint = Counter(zip(a, b))
        nb = Counter(b)
        return -sum(c / n * math.log(c / nb[y]) for (_, y), c in joint.items())

    h = 1.0 if entropy(labels) == 0 else 1 - conditional(labels, clusters) / entropy(labels)
    c = 1.0 if entropy(clusters) == 0 else 1 - conditional(clusters, labels) / entropy(clusters)
    return 2 * h * c / (h + c) if h + c else 0.0


def test_pair_average_precision_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=200).tolist()
    labels = (rng.random(200) < 0.3).astype(int).tolist()
    assert pair_average_precision(scores, labels) == pytest.approx(naive_average_precision(scores, labels))
    with pytest.raises(ValueError, match="not finite"):
        pair_average_precision([0.1, float("nan")], [0, 1])


def test_v_measure_of_separated_blobs_is_one_and_of_noise_is_low():
    rng = np.random.default_rng(1)
    centers = np.eye(8)[:4] * 10
    labels = [f"c{i % 4}" for i in range(200)]
    x = np.stack([centers[i % 4] + rng.normal(scale=0.1, size=8) for i in range(200)])
    assert v_measure(x, labels) == pytest.approx(1.0)
    noise = rng.normal(size=(200, 8))
    assert v_measure(noise, labels) < 0.2


def test_v_measure_is_the_definition_on_the_kmeans_clusters():
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.default_rng(2)
    labels = [f"c{i % 3}" for i in range(150)]
    x = np.stack([np.eye(4)[i % 3] + rng.normal(scale=0.6, size=4) for i in range(150)])
    clusters = MiniBatchKMeans(n_clusters=3, batch_size=500, n_init="auto", random_state=42).fit(x).labels_
    assert v_measure(x, labels) == pytest.approx(naive_v_measure(labels, clusters.tolist()))


def test_stratified_sample_of_a_label_sorted_stream_keeps_every_class_in_proportion():
    from mixopt.data import ClassificationRow

    rows = (
        [ClassificationRow(f"t{i}", "a") for i in range(600)]
        + [ClassificationRow(f"u{i}", "b") for i in range(300)]
        + [ClassificationRow(f"v{i}", "c") for i in range(100)]
    )
    sample = stratified_sample(iter(rows), 100)
    counts = Counter(r.label for r in sample)
    assert counts == {"a": 60, "b": 30, "c": 10}
    assert len(set(sample)) == len(sample) and set(sample) <= set(rows)
    # In stream order, and the same sample every time (no trial seed involved).
    positions = [rows.index(r) for r in sample]
    assert positions == sorted(positions)
    assert stratified_sample(iter(rows), 100) == sample
    # Not the first rows of each label: spread over the whole label block.
    a_positions = [p for p, r in zip(positions, sample) if r.label == "a"]
    assert max(a_positions) > 400 and min(a_positions) < 200


def write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_evaluate_tasks_scores_clustering_pair_classification_and_a_sorted_classification_file(tmp_path):
    topics = ["sport", "music", "food"]
    clus = tmp_path / "clus"
    write(clus / "train.jsonl", [{"text": f"{t} {i}", "label": t} for i in range(5) for t in topics])
    write(clus / "dev.jsonl", [{"text": f"{t} {i}", "label": t} for i in range(10) for t in topics])
    pair = tmp_path / "pair"
    pairs = [
        {"text1": f"{t} a{i}", "text2": f"{u} b{i}", "label": int(t == u)}
        for i, (t, u) in enumerate([(a, b) for a in topics for b in topics] * 2)
    ]
    write(pair / "train.jsonl", pairs)
    write(pair / "dev.jsonl", pairs)
    cls = tmp_path / "cls"  # sorted by label: the first rows hold one class only
    write(cls / "train.jsonl", [{"text": f"{t} {i}", "label": t} for t in topics for i in range(50)])
    write(cls / "dev.jsonl", [{"text": f"{t} x", "label": t} for t in topics])

    def embed(texts):
        # The topic word decides the direction: a perfect model for these tasks.
        out = torch.zeros(len(texts), 4, dtype=torch.float64)
        for i, t in enumerate(texts):
            out[i, topics.index(t.split()[0])] = 1.0
            out[i, 3] = 0.01 * (i % 5)
        return torch.nn.functional.normalize(out, dim=-1)

    tasks = [
        TaskConfig(name="clus", kind="clustering", path=clus),
        TaskConfig(name="pair", kind="pair_classification", path=pair),
        TaskConfig(name="cls", kind="classification", path=cls),
    ]
    ev = evaluate_tasks(tasks, embed, [4, 3], classifier_train_rows=12)
    assert ev.task_scores == {
        "clus": pytest.approx(1.0),
        "pair": pytest.approx(1.0),
        "cls": pytest.approx(1.0),
    }
    assert set(ev.task_metrics) == {
        f"{t}/{m}/d{d}"
        for t, m in (("clus", "v_measure"), ("pair", "ap"), ("cls", "accuracy"))
        for d in (4, 3)
    }
