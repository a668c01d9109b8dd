"""Dev rows are read from their source once per trial, and score exactly as rows read afresh.

Reads are counted with Python's own ``open`` audit event (``sys.addaudithook``): every reader, the
JSONL reader and the ``datasets`` library behind a ``dataset:`` task alike, opens its file through
it, so the count is the real readers' and nothing in the code under test is replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from mixopt.config import TaskConfig
from mixopt.data import iter_rows
from mixopt.trial import Trial
from trainers.embedding import evaluate_checkpoint, train
from trainers.evaluation import DevRowCache, evaluate_tasks

_OPENED: list[list[str]] = []  # the open recorders now active (innermost last)


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _OPENED and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED[-1].append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # a hook cannot be removed; it records only inside opened_files()


@contextmanager
def opened_files() -> Iterator[list[str]]:
    """The paths opened (by any code, in this thread or another) while the block runs."""
    seen: list[str] = []
    _OPENED.append(seen)
    try:
        yield seen
    finally:
        _OPENED.remove(seen)


def opens_of(paths: list[str], file: Path) -> int:
    return sum(Path(p).resolve() == file.resolve() for p in paths)


def word_embed(dim: int = 16):
    """A deterministic bag-of-words embedding (each word a fixed hashed vector), unit-normalised."""

    def vector(word: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        return torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def embed(texts):
        x = torch.stack(
            [sum((vector(w) for w in t.split()), torch.zeros(dim, dtype=torch.float64)) for t in texts]
        )
        return torch.nn.functional.normalize(x.float(), dim=-1)

    return embed


def test_a_trial_reads_each_tasks_dev_file_once_over_all_its_evaluations(synth_root, synth_tasks, tmp_path):
    reports: list[int] = []
    options = {
        "model": str(synth_root / "model"),
        "matryoshka_dims": [64, 32],
        "batch_size": 16,
        "max_seq_length": 32,
        "eval_batch_size": 64,
        "cpu_threads": 1,
        "eval_every": 2,
        "log_every": 2,
    }
    mixture = {t.name: 1 / 3 for t in synth_tasks}
    trial = Trial(mixture, {}, seed=0, steps=6, output_dir=tmp_path / "t", tasks=synth_tasks, options=options)
    with opened_files() as seen:
        result = train(trial, lambda step, m: reports.append(step) if "objective" in m else None)
    assert reports == [2, 4, 6]  # three evaluations, the final one included
    for task in synth_tasks:
        assert opens_of(seen, task.dev_file) == 1, (task.name, [p for p in seen if "dev" in p])

    # The final scores are those of the checkpoint's fresh evaluation, which reads the files anew.
    with opened_files() as again:
        fresh = evaluate_checkpoint(result.checkpoint, synth_tasks, trial.options)
    assert all(opens_of(again, t.dev_file) == 1 for t in synth_tasks)
    assert dict(fresh.task_metrics) == dict(result.task_metrics)


def _sts_dataset(root: Path, n: int = 600) -> Path:
    """A local JSON Lines file in sentence-transformers' STS columns, read through ``datasets``."""
    words = [f"w{i}" for i in range(60)]
    path = root / "sts.jsonl"
    with path.open("w") as f:
        for i in range(n):
            a = " ".join(words[(i * 7 + j) % 60] for j in range(4))
            b = " ".join(words[(i * 7 + j + i % 3) % 60] for j in range(4))
            f.write(json.dumps({"sentence1": a, "sentence2": b, "score": (i % 6) / 5}) + "\n")
    return path


def test_a_dev_fraction_hold_out_is_scanned_once_and_scores_as_a_fresh_read(synth_tasks, tmp_path):
    """The issue's case: a ``dataset:`` task whose dev rows are a ``dev_fraction`` hold-out."""
    data = _sts_dataset(tmp_path)
    held_out = TaskConfig(name="sts_ds", kind="sts", dataset=str(data), dev_fraction=0.1, dev_max_rows=40)
    tasks = (*synth_tasks, held_out)
    embed = word_embed()
    list(iter_rows(held_out.dev_file, "sts"))  # datasets inspects a file more on its first read
    with opened_files() as seen:
        list(iter_rows(held_out.dev_file, "sts"))
    per_read = opens_of(seen, data)  # what one read of the hold-out opens
    assert per_read >= 1

    cache = DevRowCache()
    with opened_files() as seen:
        cached = [
            evaluate_tasks(tasks, embed, (16, 8), dev_cache=cache, classifier_train_rows=48) for _ in range(3)
        ]
    assert opens_of(seen, data) == per_read
    assert all(opens_of(seen, t.dev_file) == 1 for t in synth_tasks)
    expected_rows = sum(len(list(iter_rows(t.dev_file, t.kind.value))) for t in tasks)
    assert cache.rows_read == expected_rows

    fresh = evaluate_tasks(tasks, embed, (16, 8), classifier_train_rows=48)
    assert all(c == fresh for c in cached)

    # A subset of positions (the greedy soup's halves) picks the same rows from the cache.
    halves = {t.name: range(0, 10, 2) for t in tasks if t.kind.value != "classification"}
    assert evaluate_tasks(
        tasks, embed, (16, 8), dev_rows=halves, dev_cache=cache, classifier_train_rows=48
    ) == (evaluate_tasks(tasks, embed, (16, 8), dev_rows=halves, classifier_train_rows=48))


def test_cached_rows_are_the_readers_rows_in_order_without_teacher_vectors(tmp_path):
    rows = [
        {"text1": f"a{i}", "text2": f"b{i}", "score": i / 10, "teacher": {"text1": [0.1 * i, 1.0]}}
        for i in range(5)
    ]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = TaskConfig(name="s", kind="sts", path=tmp_path)
    cached = DevRowCache().rows(task, "sts")
    read = list(iter_rows(task.dev_file, "sts"))
    assert [(r.text1, r.text2, r.score) for r in cached] == [(r.text1, r.text2, r.score) for r in read]
    assert all(r.teacher is None for r in cached) and all(r.teacher is not None for r in read)
