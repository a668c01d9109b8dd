"""Greedy soup (Wortsman et al., 2022, arXiv:2203.05482, Algorithm 1), in O(K) checkpoint reads.

Sort the ingredients by their rank score, start from the best one, and add each next one only
if the soup's dev score with it does not drop: ``S <- S + {k}  iff  f(mean(S + {k})) >= f(mean(S))``.

Cost. Re-averaging ``S + {k}`` from its members for every candidate reads O(K^2) checkpoints.
Instead :class:`RunningSum` holds ``sum_{j in S} theta_j`` in float64, so the candidate is

    theta_cand[p] = cast_{dtype(p)}( (sum_S[p] + theta_k[p]) / (|S| + 1) )

written by reading ``theta_k`` once; a kept ``k`` is read once more to add it to the sum. Every
ingredient is therefore read at most twice, and nothing is re-averaged. The trainer's
``evaluate_checkpoint`` takes a directory, so each candidate is written into one reusable
directory; the final soup is ``sum_S / |S|`` (no read at all), or that directory itself when the
last candidate was kept.

The sum lives in memory: 8 bytes per float parameter (2.5 GB for a 308M-parameter encoder),
small next to the host memory of a machine that trains it, and it spares a re-read of an on-disk
sum per candidate. The uniform soup (:mod:`mixopt.soup.average`) still streams in a few chunks.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mixopt.soup.average import (
    DEFAULT_CHUNK_BYTES,
    _all_finite,
    _describe_rows,
    _header_bytes,
    _read_chunk,
    _row_chunks,
    copy_other_files,
)
from mixopt.soup.checkpoints import DTYPES, FLOAT_CODES, CheckpointError, WeightFile, check_compatible
from mixopt.soup.ingredients import Ingredient, SoupError


@dataclass(frozen=True)
class GreedyStep:
    """One candidate of the greedy soup: the soup's score with it, and whether it was kept."""

    run_id: str
    trial_id: str
    ingredient_value: float
    soup_score: float
    kept: bool


@dataclass(frozen=True)
class GreedyResult:
    """Greedy selection: the kept ingredients (in order), every step, and the final soup."""

    kept: tuple[Ingredient, ...]
    steps: tuple[GreedyStep, ...]
    score: float
    soup_dir: Path  # the averaged soup of ``kept`` inside ``workdir``
    final_step: int  # the step whose evaluation scored ``soup_dir`` (the last one kept)


class RunningSum:
    """``sum_k theta_k`` over the ingredients added so far, per tensor of the weight files ``headers``.

    Float tensors are summed in float64; a non-float tensor holds the first ingredient's value
    (it cannot be averaged, so every later ingredient must equal it).
    """

    def __init__(self, headers: Mapping[str, WeightFile], chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.headers, self.chunk_bytes = headers, chunk_bytes
        self.n = 0
        self.first_label = ""
        self.sums = {
            (rel, name): torch.zeros(
                info.shape, dtype=torch.float64 if info.dtype in FLOAT_CODES else DTYPES[info.dtype]
            )
            for rel, header in headers.items()
            for name, info in header.tensors.items()
        }

    def _chunks(self, rel: str) -> list[tuple[str, tuple[int, int] | None]]:
        tensors = self.headers[rel].tensors
        return [(n, rows) for n, info in tensors.items() for rows in _row_chunks(info, self.chunk_bytes)]

    def _view(self, rel: str, name: str, rows: tuple[int, int] | None) -> torch.Tensor:
        t = self.sums[(rel, name)]
        return t if rows is None else t[rows[0] : rows[1]]

    def _check_equal(self, rel: str, name: str, rows, chunk: torch.Tensor, label: str) -> None:
        if not torch.equal(self._view(rel, name, rows), chunk):
            raise CheckpointError(
                f"{label}: non-float tensor {name!r} ({self.headers[rel].tensors[name]}) in {rel} differs "
                f"from {self.first_label}'s; integer buffers cannot be averaged and must be equal in every ingredient"
            )

    def add(self, checkpoint: Path, label: str) -> None:
        """``sum += theta`` of ``checkpoint`` (one read of its weights)."""
        for rel in self.headers:
            for name, rows in self._chunks(rel):
                chunk = _read_chunk(checkpoint / rel, name, rows)
                if self.headers[rel].tensors[name].dtype in FLOAT_CODES:
                    self._view(rel, name, rows).add_(chunk)
                elif self.n == 0:
                    self._view(rel, name, rows).copy_(chunk)
                else:
                    self._check_equal(rel, name, rows, chunk, label)
        if self.n == 0:
            self.first_label = label
        self.n += 1

    def write(self, dest: Path, checkpoint: Path | None = None, label: str = "") -> None:
        """Write ``(sum + theta)/(n + 1)`` of ``checkpoint`` (read once), or ``sum/n`` without one,
        as every weight file into directory ``dest``; CheckpointError on NaN/inf."""
        k = self.n + (checkpoint is not None)
        if k == 0:
            raise ValueError("RunningSum.write: nothing to average")
        for rel, header in self.headers.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            with (dest / rel).open("wb") as out:
                out.write(_header_bytes(header))
                for name, rows in self._chunks(rel):
                    result = self._mean_chunk(rel, name, rows, k, checkpoint, label).reshape(-1)
                    out.write(result.view(torch.uint8).numpy().data)

    def _mean_chunk(
        self, rel: str, name: str, rows, k: int, checkpoint: Path | None, label: str
    ) -> torch.Tensor:
        info = self.headers[rel].tensors[name]
        total = self._view(rel, name, rows)
        chunk = _read_chunk(checkpoint / rel, name, rows) if checkpoint is not None else None
        if info.dtype not in FLOAT_CODES:
            if chunk is None or self.n == 0:
                return (total if chunk is None else chunk).contiguous()
            self._check_equal(rel, name, rows, chunk, label)
            return total.contiguous()
        mean = (total if chunk is None else total + chunk.to(torch.float64)) / k
        out = mean.to(DTYPES[info.dtype])
        if not _all_finite(out):
            if chunk is not None and not _all_finite(chunk):
                bad = int((~torch.isfinite(chunk.to(torch.float64))).sum())
                raise CheckpointError(
                    f"{label}: tensor {name!r} in {rel} has {bad} NaN/inf values{_describe_rows(info, rows)}; "
                    "a diverged checkpoint cannot be an ingredient — drop this run"
                )
            raise CheckpointError(
                f"the average of tensor {name!r} in {rel} overflows the cast back to {info.dtype}"
                f"{_describe_rows(info, rows)} although every ingredient is finite; "
                "the ingredients' values are too large to average"
            )
        return out


def greedy_select(
    ingredients: Sequence[Ingredient],
    evaluate: Callable[[Path], float],
    workdir: Path,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    echo: Callable[[str], None] | None = None,
) -> GreedyResult:
    """Greedy soup (Wortsman et al., 2022, arXiv:2203.05482, Algorithm 1).

    Ingredients are sorted by ``value`` (highest first). The soup starts as the best one
    alone, scored by ``evaluate`` like every later candidate (so all comparisons use one
    evaluation). Each next ingredient ``k`` is tried: the uniform average of ``S + {k}`` is
    written into the one candidate directory ``workdir/candidate`` and scored; ``k`` is kept iff
    ``score(S + {k}) >= score(S)`` (a NaN score is a drop). The final soup is ``workdir/soup``;
    the candidate directory is gone on return. Every ingredient's weights are read at most twice
    (see the module docstring).
    """
    if not ingredients:
        raise SoupError("greedy soup: no ingredients")
    order = sorted(ingredients, key=lambda i: -i.value)
    workdir = Path(workdir)
    headers = check_compatible([i.checkpoint for i in order], [i.label for i in order])
    total = RunningSum(headers, chunk_bytes)
    candidate, soup_dir = workdir / "candidate", workdir / "soup"
    candidate.mkdir(parents=True)
    copy_other_files(order[0].checkpoint, candidate, headers)

    steps: list[GreedyStep] = []
    kept: list[Ingredient] = []
    score = -math.inf
    final_step = 0
    for n, cand in enumerate(order):
        total.write(candidate, cand.checkpoint, cand.label)
        s = float(evaluate(candidate))
        keep = n == 0 or (math.isfinite(s) and s >= score)
        steps.append(GreedyStep(cand.run_id, cand.trial_id, cand.value, s, keep))
        if echo:
            if n == 0:
                echo(f"greedy: start with {cand.label}: soup score {s:.4f}")
            else:
                verdict = "kept" if keep else "dropped"
                echo(f"greedy: + {cand.label}: soup score {s:.4f} vs {score:.4f} -> {verdict}")
        if keep:
            total.add(cand.checkpoint, cand.label)
            kept.append(cand)
            score, final_step = s, n
    if steps[-1].kept:  # the candidate directory already holds the final soup
        os.replace(candidate, soup_dir)
    else:
        shutil.rmtree(candidate)
        soup_dir.mkdir()
        copy_other_files(order[0].checkpoint, soup_dir, headers)
        total.write(soup_dir)
    return GreedyResult(tuple(kept), tuple(steps), score, soup_dir, final_step)
