"""A task of the experiment: its kind, its data and how it is scored (one YAML ``tasks:`` entry).

Its own module, below :mod:`mixopt.config` and :mod:`mixopt.trial`: the trainer protocol names
tasks and the experiment holds them, and neither imports the other for it.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mixopt.data import MappedFile
from mixopt.datasets import FIELDS, DatasetSplit

# Task, experiment and hyperparameter names: what MLflow params, folder names and YAML keys all accept.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Frozen(BaseModel):
    """A configuration section: unknown keys refused, immutable once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskKind(str, Enum):
    retrieval = "retrieval"
    sts = "sts"
    classification = "classification"
    clustering = "clustering"
    pair_classification = "pair_classification"


# The metric each kind supports; the first is the default.
METRICS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.retrieval: ("ndcg@10", "mrr@10"),
    TaskKind.sts: ("spearman",),
    TaskKind.classification: ("accuracy",),
    TaskKind.clustering: ("v_measure",),
    TaskKind.pair_classification: ("ap",),
}


class Prompt(Frozen):
    """Task prompts prepended to each side, e.g. EmbeddingGemma's ``task: search result | query: ``."""

    query: str = ""
    document: str = ""


class TaskConfig(Frozen):
    """One task's data, given one of three ways:

    - ``path``: a folder with ``train.jsonl``/``dev.jsonl`` (or ``.parquet``) in mixopt's row format;
    - ``train`` and ``dev``: two such files;
    - ``dataset``: a Hugging Face dataset (a hub id, a ``save_to_disk`` directory, or data files
      — a path or a glob) in sentence-transformers' column conventions (:mod:`mixopt.datasets`),
      with ``subset`` (the dataset's config name), ``split`` (default ``train``), and the dev rows
      as another split (``dev_split``) or a seeded hold-out of the train split (``dev_fraction``).

    Validation never touches the hub or reads data; ``mixopt validate --data`` does.
    """

    name: str
    kind: TaskKind
    path: Path | None = None
    train: Path | None = None
    dev: Path | None = None
    dataset: str | None = None
    subset: str | None = None
    split: str = "train"
    dev_split: str | None = None
    dev_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    dev_max_rows: int | None = Field(None, ge=2)
    columns: dict[str, Union[str, list[str]]] = {}
    score_scale: float | None = Field(None, gt=0.0)
    streaming: bool = True
    prompt: Prompt = Prompt()
    metric: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                f"task name {v!r} must start with a letter or digit and contain only "
                "letters, digits, '_', '.', '-' (it becomes an MLflow param 'w.<name>')"
            )
        return v

    @model_validator(mode="after")
    def _files_and_metric(self) -> TaskConfig:
        ways = sum(
            (self.path is not None, self.train is not None or self.dev is not None, bool(self.dataset))
        )
        if ways != 1:
            raise ValueError(
                "give either 'path' (a task folder), or both 'train' and 'dev' files, "
                "or 'dataset' (a Hugging Face dataset): exactly one of the three"
            )
        if self.path is None and not self.dataset and (self.train is None or self.dev is None):
            raise ValueError("give both 'train' and 'dev' files (or 'path', or 'dataset')")
        dataset_keys = ("subset", "dev_split", "dev_fraction", "dev_max_rows", "score_scale")
        fields = FIELDS[self.kind.value]
        for field, cols in self.columns.items():
            if field not in fields:
                raise ValueError(
                    f"columns: {field!r} is not a field of a {self.kind.value} row; fields are {list(fields)}"
                )
            if isinstance(cols, list) and field != "negatives":
                raise ValueError(f"columns: {field!r} takes one column name, got a list")
        if not self.dataset:
            given = [k for k in dataset_keys if getattr(self, k) is not None]
            given += ["split"] * (self.split != "train")
            if given:
                raise ValueError(f"{given} apply only to a task with 'dataset'")
        else:
            if (self.dev_split is None) == (self.dev_fraction is None):
                raise ValueError(
                    "a dataset task needs its dev rows as exactly one of 'dev_split' (another split) "
                    "or 'dev_fraction' (a seeded hold-out of the train split, e.g. 0.01)"
                )
            if self.dev_split is not None and self.dev_split == self.split:
                raise ValueError(
                    f"dev_split {self.dev_split!r} is the train split; use dev_fraction to hold out rows"
                )
            if self.score_scale is not None and self.kind != TaskKind.sts:
                raise ValueError("score_scale applies only to sts tasks")
        allowed = METRICS[self.kind]
        if self.metric is None:
            object.__setattr__(self, "metric", allowed[0])
        elif self.metric not in allowed:
            raise ValueError(
                f"metric {self.metric!r} is not defined for {self.kind.value} tasks; "
                f"choose one of {list(allowed)}"
            )
        return self

    @property
    def _columns(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """``columns:`` as sorted (field, column names) pairs."""
        return tuple(sorted((f, tuple(c) if isinstance(c, list) else (c,)) for f, c in self.columns.items()))

    def _find(self, split: str) -> Any:
        """The split's file; a :class:`mixopt.data.MappedFile` when ``columns:`` maps its columns."""
        path = self.train if split == "train" else self.dev
        if path is None:
            assert self.path is not None
            found = [self.path / f"{split}{ext}" for ext in (".jsonl", ".parquet")]
            path = next((p for p in found if p.exists()), found[0])
        return MappedFile(path, self._columns) if self.columns else path

    def _dataset_split(self, role: str) -> Any:
        assert self.dataset is not None
        columns = self._columns
        common = dict(
            dataset=self.dataset,
            kind=self.kind.value,
            subset=self.subset,
            columns=columns,
            score_scale=self.score_scale,
            streaming=self.streaming,
        )
        if role == "train":
            if self.dev_fraction is not None:
                return DatasetSplit(split=self.split, part="train", dev_fraction=self.dev_fraction, **common)
            return DatasetSplit(split=self.split, **common)
        if self.dev_fraction is not None:
            return DatasetSplit(
                split=self.split,
                part="dev",
                dev_fraction=self.dev_fraction,
                max_rows=self.dev_max_rows,
                **common,
            )
        assert self.dev_split is not None
        return DatasetSplit(split=self.dev_split, max_rows=self.dev_max_rows, **common)

    @property
    def train_file(self) -> Any:
        """Where the train rows come from: a file path, or a :class:`mixopt.datasets.DatasetSplit`.

        Either one goes to :func:`mixopt.data.iter_rows`.
        """
        return self._dataset_split("train") if self.dataset else self._find("train")

    @property
    def dev_file(self) -> Any:
        """Where the dev rows come from (see :attr:`train_file`)."""
        return self._dataset_split("dev") if self.dataset else self._find("dev")

    @property
    def source(self) -> str:
        """The task's data in words (for listings)."""
        if self.dataset:
            return f"dataset {self.dataset}" + (f" (subset {self.subset})" if self.subset else "")
        return str(self.path) if self.path is not None else f"{self.train}, {self.dev}"
