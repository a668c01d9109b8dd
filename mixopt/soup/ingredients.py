"""The soup's vocabulary: which runs to soup (``--runs``), the chosen ingredients, the selection.

Plain data, no MLflow: :mod:`mixopt.soup.selection` fills these from the store.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

METHODS = ("uniform", "greedy")


class SoupError(RuntimeError):
    """The soup cannot be made as asked; the message says why and what to do."""


@dataclass(frozen=True)
class RunsSpec:
    """Which trials to soup: the ``top`` K by the metric, ``all`` usable ones, or explicit run ``ids``."""

    kind: str  # "top" | "all" | "ids"
    k: int | None = None
    ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        return {"top": f"top{self.k}", "all": "all"}.get(self.kind, ",".join(self.ids))


def parse_runs(spec: str) -> RunsSpec:
    """Parse ``--runs``: ``top5`` / ``topK``, ``all``, or ``RUN_ID,RUN_ID,...``."""
    spec = spec.strip()
    if spec == "all":
        return RunsSpec("all")
    m = re.fullmatch(r"top(\d+)", spec)
    if m:
        k = int(m.group(1))
        if k < 1:
            raise SoupError(f"--runs {spec}: K must be at least 1 (e.g. top5)")
        return RunsSpec("top", k=k)
    ids = tuple(s.strip() for s in spec.split(","))
    if not spec or any(not re.fullmatch(r"[0-9a-fA-F]{8,64}", i) for i in ids):
        raise SoupError(
            f"--runs {spec!r}: expected topK (e.g. top5), all, or comma-separated MLflow run ids (hex)"
        )
    if len(set(ids)) != len(ids):
        raise SoupError(f"--runs {spec!r}: a run id is listed twice")
    return RunsSpec("ids", ids=ids)


@dataclass(frozen=True)
class Ingredient:
    """One trial run chosen for the soup.

    Attributes:
        run_id, trial_id: the MLflow run and the sweep's trial label.
        checkpoint: the trial's sentence-transformers directory.
        value: the ranking metric (``--metric``, default ``objective``) from MLflow; ingredients
            are sorted by it, highest first.
        mixture: task -> weight (params ``w.<task>``).
        task_scores: task -> primary dev score (metrics ``score.<task>``).
        metrics: every metric of the run.
        checksums_sha256: SHA-256 of the checkpoint's ``mixopt_checksums.json`` from the run's
            tag ``mixopt.checkpoint_checksums`` (None for runs that have none).
        stage: ``search`` (proposed by the optimizer) or ``verify`` (a verification run of the
            recommended mixture; the baseline arm's are never ingredients).
    """

    run_id: str
    trial_id: str
    checkpoint: Path
    value: float
    mixture: Mapping[str, float] = field(default_factory=dict)
    task_scores: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    parent_run_id: str | None = None
    checksums_sha256: str | None = None  # of its mixopt_checksums.json, as the sweep recorded it
    stage: str = "search"

    @property
    def label(self) -> str:
        return f"run {self.run_id} (trial {self.trial_id})"


@dataclass(frozen=True)
class Skipped:
    run_id: str
    trial_id: str
    reason: str


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_ingredients`: what was taken (best first) and what was not."""

    experiment_id: str
    experiment_name: str
    runs: RunsSpec
    metric: str
    chosen: tuple[Ingredient, ...]
    skipped: tuple[Skipped, ...]
    notes: tuple[str, ...] = ()
