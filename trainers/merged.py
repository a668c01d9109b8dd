"""The embedding trainer's ``merged_scorer``: merged-expert models scored with its own evaluation,
without writing them.

The proxy's score of a mixture must be the number a trained trial of that mixture would report,
so that the two sources differ only by what merging misses, not by how they are measured:
:func:`trainers.evaluation.evaluate_tasks` with the trainer's options (Matryoshka dims, sequence
length, classification probe size, objective), as :func:`trainers.embedding.evaluate_checkpoint`
scores a saved checkpoint. Here the architecture is loaded once from the base checkpoint and each
merged model (:class:`mixopt.proxy.merge.ExpertMerge`) is put into it with ``load_state_dict``;
the dev rows are read once and kept for every evaluation.

Sentence-transformers layout -> :class:`trainers.model.Encoder` parameters: the root
``model.safetensors`` holds the transformer's tensors under their own names
(``transformer.<name>``), ``<i>_Dense/model.safetensors`` the ``j``-th Dense layer's
``linear.weight`` and ``linear.bias`` (``dense.<j>.weight``, ``dense.<j>.bias``, in ``modules.json``
order). A base named by hub id is its local snapshot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mixopt.config import TaskConfig
from mixopt.proxy.merge import ExpertMerge, MergedWeights
from mixopt.trial import TrialResult

from .evaluation import DevRowCache, evaluate_tasks
from .model import ModelLoadError, check_bidirectional, embed, load_encoder, resolve_model_dir
from .options import Threads, resolve_options
from .training import autocast_dtype, resolve_device


def merged_scorer(
    experts: Sequence[Path], tasks: Sequence[TaskConfig], options: Mapping[str, Any]
) -> Callable[[Sequence[float]], TrialResult]:
    """Score task-arithmetic merges of ``experts`` (trials finetuned from ``options["model"]``)
    in memory, as a trial is scored (:mod:`mixopt.proxy`): the experts checked and the
    architecture loaded once; each call merges with its coefficients and evaluates."""
    base = resolve_model_dir(options["model"])
    merge = ExpertMerge(base, [Path(e) for e in experts])
    evaluator = MergedEvaluator(base, tasks, options)
    return lambda coefficients: evaluator.evaluate(merge.merge(coefficients))


class MergedEvaluator:
    """Evaluate merged weights on every task's dev split, in one architecture loaded from ``base``.

    Args:
        base: the sentence-transformers checkpoint the experts started from (its Dense layers
            included: see :mod:`mixopt.proxy.merge`).
        tasks: the experiment's tasks.
        options: the trainer's YAML options (``trainer:`` keys); ``model`` is ignored.
    """

    def __init__(self, base: Path, tasks: Sequence[TaskConfig], options: Mapping[str, Any]):
        self.opts = resolve_options(options)
        self.tasks = tuple(tasks)
        self.base = Path(base)
        loaded = load_encoder(self.base)
        if loaded.drawn_dense:
            raise ModelLoadError(
                f"{self.base}: a plain Gemma3 folder; the experts' Dense layers were drawn from each "
                "trial's seed, so they share no starting point to merge from"
            )
        self.encoder, self.tokenizer = loaded.encoder, loaded.tokenizer
        self.device = resolve_device(self.opts.device)
        self.amp = autocast_dtype(self.device, self.opts.dtype)
        self.encoder.to(self.device)
        check_bidirectional(self.encoder)
        self.dims = tuple(self.opts.matryoshka_dims)
        self.keys = _state_keys(self.base)
        self.dev_cache = DevRowCache()

    def state_dict(self, weights: MergedWeights) -> dict[str, torch.Tensor]:
        """The :class:`trainers.model.Encoder` state dict of merged safetensors weights."""
        state: dict[str, torch.Tensor] = {}
        for file, tensors in weights.items():
            if file not in self.keys:
                raise ValueError(f"merged weights hold {file}, which {self.base} does not have")
            prefix = self.keys[file]
            for name, t in tensors.items():
                key = prefix + name.removeprefix("linear.") if prefix.startswith("dense.") else prefix + name
                state[key] = t
        return state

    @torch.no_grad()
    def evaluate(self, weights: MergedWeights) -> TrialResult:
        """Load ``weights`` into the architecture (all of its parameters, strictly) and score it."""
        self.encoder.load_state_dict(self.state_dict(weights), strict=True)
        t0 = time.perf_counter()
        with Threads(self.opts.cpu_threads):
            result = evaluate_tasks(
                self.tasks,
                lambda texts: embed(
                    self.encoder,
                    self.tokenizer,
                    texts,
                    max_seq_length=self.opts.max_seq_length,
                    batch_size=self.opts.eval_batch_size,
                    autocast_dtype=self.amp,
                ),
                self.dims,
                objective=self.opts.objective,
                classifier_train_rows=self.opts.classifier_train_rows,
                dev_cache=self.dev_cache,
            )
        return TrialResult(
            objective=result.objective,
            task_metrics=result.task_metrics,
            task_scores=result.task_scores,
            checkpoint=None,
            extra={"eval_seconds": time.perf_counter() - t0},
        )


def _state_keys(checkpoint: Path) -> dict[str, str]:
    """Relative weight file -> prefix of its tensors' names in the Encoder's state dict."""
    keys = {"model.safetensors": "transformer."}
    if not (checkpoint / "modules.json").exists():  # a plain transformers folder: no Dense layers
        return keys
    modules = json.loads((checkpoint / "modules.json").read_text())
    dense = [m for m in modules if m.get("type", "").endswith("Dense")]
    for j, m in enumerate(dense):
        keys[f"{m['path']}/model.safetensors"] = f"dense.{j}."
    return keys
