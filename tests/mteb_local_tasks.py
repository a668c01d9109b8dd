"""Custom MTEB tasks on local data (``load_data`` overridden): no Hub access in the tests.

Importable as ``mteb_local_tasks:LocalSTS`` (pytest puts tests/ on sys.path), which is how
``mixopt eval --mteb-tasks`` names a custom task.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset, DatasetDict
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

WORDS = ["red", "blue", "green", "cat", "dog", "bird", "runs", "sleeps", "sings", "task", ":", "|", "query"]
META = {
    "description": "mixopt test task on local data",
    "reference": "https://example.org",
    "dataset": {"path": "local/none", "revision": "none"},
    "category": "t2t",
    "eval_splits": ["test"],
    "eval_langs": ["eng-Latn"],
    "date": ("2026-01-01", "2026-01-02"),
    "dialect": [],
    "domains": [],
    "task_subtypes": [],
    "license": "cc-by-4.0",
    "annotations_creators": "derived",
    "modalities": ["text"],
    "sample_creation": "found",
    "bibtex_citation": "",
}
rng = np.random.default_rng(0)
S1 = [f"{rng.choice(WORDS[:3])} {rng.choice(WORDS[3:6])} {rng.choice(WORDS[6:9])}" for _ in range(24)]
S2 = [f"{rng.choice(WORDS[:3])} {rng.choice(WORDS[3:6])} {rng.choice(WORDS[6:9])}" for _ in range(24)]
GOLD = [float(sum(a == b for a, b in zip(x.split(), y.split()))) for x, y in zip(S1, S2)]


class LocalSTS(AbsTaskSTS):
    metadata = TaskMetadata(name="MixoptLocalSTS", type="STS", main_score="cosine_spearman", **META)
    min_score = 0
    max_score = 3

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        self.dataset = DatasetDict(
            {"test": Dataset.from_dict({"sentence1": S1, "sentence2": S2, "score": GOLD})}
        )
        self.data_loaded = True


class LocalClassification(AbsTaskClassification):
    metadata = TaskMetadata(
        name="MixoptLocalClassification", type="Classification", main_score="accuracy", **META
    )

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        texts = [f"{c} {a} {v}" for c in WORDS[:3] for a in WORDS[3:6] for v in WORDS[6:9]]
        labels = [t.split()[0] for t in texts]
        rows = Dataset.from_dict({"text": texts * 2, "label": labels * 2})
        self.dataset = DatasetDict({"train": rows, "test": rows.select(range(27))})
        self.data_loaded = True
