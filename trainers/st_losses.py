"""Losses named in the YAML, resolved against :mod:`sentence_transformers.sentence_transformer.losses`.

A task's loss is ``{name: <loss class>, <argument>: <value>, ...}``; a wrapper (``MatryoshkaLoss``,
``Matryoshka2dLoss``, ``AdaptiveLayerLoss``) takes the loss it wraps under ``loss:`` (the task
kind's default when omitted)::

    losses:
      retrieval_0: {name: CachedMultipleNegativesRankingLoss, mini_batch_size: 32}
      sts: {name: CoSENTLoss, scale: 20.0}
      classification_2: {name: MatryoshkaLoss, matryoshka_dims: [64, 32], loss: {name: BatchAllTripletLoss}}

Checked when the config is loaded, each failure one line under its YAML path: the name is a loss
mixopt can feed (:data:`INPUTS`); every argument is one of the loss's ``__init__`` parameters; every
required one is given; each value validates against the parameter's annotation (pydantic); a
parameter that takes a Python object (a model, a module) cannot come from YAML and is refused.

What a loss reads decides how a task's rows become columns (:data:`INPUTS`):

- ``triplets``: ``(anchor, positive[, negative])``, paired as the built-in trainer pairs each kind
  (:mod:`trainers.batching`: retrieval rows and a drawn negative; STS rows above the median score
  with a low-score partner; same-label classification texts with an other-label one);
- ``scores``: STS rows as ``(sentence1, sentence2, score)``;
- ``labels``: classification / clustering rows as ``(sentence, label)``.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator

INPUTS = {
    "MultipleNegativesRankingLoss": "triplets",
    "CachedMultipleNegativesRankingLoss": "triplets",
    "TripletLoss": "triplets",
    "CoSENTLoss": "scores",
    "AnglELoss": "scores",
    "CosineSimilarityLoss": "scores",
    "BatchAllTripletLoss": "labels",
    "BatchHardTripletLoss": "labels",
    "BatchSemiHardTripletLoss": "labels",
    "BatchHardSoftMarginTripletLoss": "labels",
}
WRAPPERS = ("MatryoshkaLoss", "Matryoshka2dLoss", "AdaptiveLayerLoss")
# Inputs each input format can be built from: the training kind of the task (mixopt.data.TRAINING_KIND).
KINDS = {
    "triplets": ("retrieval", "sts", "classification"),
    "scores": ("sts",),
    "labels": ("classification",),
}
# A task kind's loss when the YAML names none: in-batch negatives for pairs (the built-in
# trainer's contrastive loss without its extra terms), CoSENT for graded similarity scores.
KIND_DEFAULT = {
    "retrieval": "MultipleNegativesRankingLoss",
    "sts": "CoSENTLoss",
    "classification": "MultipleNegativesRankingLoss",
    "clustering": "MultipleNegativesRankingLoss",
    "pair_classification": "MultipleNegativesRankingLoss",
}
# Parameters the trainer fills in, never the YAML.
_SUPPLIED = ("self", "model", "loss")


def loss_class(name: str) -> type:
    from sentence_transformers.sentence_transformer import losses

    return getattr(losses, name)


def _check_arguments(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` validated against ``name``'s ``__init__``; returns the validated values."""
    cls = loss_class(name)
    params = {
        k: p
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if k not in _SUPPLIED and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    unknown = sorted(set(arguments) - set(params))
    if unknown:
        raise ValueError(
            f"{name} has no argument {', '.join(map(repr, unknown))}; its arguments are {sorted(params)}"
        )
    missing = [k for k, p in params.items() if p.default is p.empty and k not in arguments]
    if missing:
        raise ValueError(f"{name} needs the argument(s) {missing}")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: leave the check to the constructor
        hints = {}
    out = {}
    for k, value in arguments.items():
        hint = hints.get(k)
        if hint is None:
            out[k] = value
            continue
        try:
            adapter = TypeAdapter(hint)
        except Exception:
            raise ValueError(
                f"{name}'s argument {k!r} takes a Python object ({getattr(hint, '__name__', hint)}), "
                "which a YAML cannot give; leave it at its default"
            ) from None
        try:
            out[k] = adapter.validate_python(value)
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            raise ValueError(f"{name}'s argument {k!r}: {first['msg']} (got {value!r})") from None
    return out


class LossSpec(BaseModel):
    """One task's loss: ``name``, the loss a wrapper wraps (``loss``), and the loss's own arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    loss: LossSpec | None = None

    @model_validator(mode="after")
    def _valid(self) -> LossSpec:
        known = sorted(INPUTS) + list(WRAPPERS)
        if self.name not in known:
            raise ValueError(f"unknown loss {self.name!r}; mixopt can feed {known}")
        if self.name not in WRAPPERS:
            if self.loss is not None:
                raise ValueError(f"{self.name} wraps no loss; 'loss:' is for {list(WRAPPERS)}")
        elif self.loss is not None and self.loss.name in WRAPPERS:
            raise ValueError(f"{self.name} wraps {self.loss.name}: wrap a loss of {sorted(INPUTS)} instead")
        _check_arguments(self.name, self.arguments)
        return self

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def inputs(self, kind: str) -> str:
        """The input format (``triplets``, ``scores``, ``labels``) of the loss itself or the one it wraps."""
        inner = self.loss.name if self.loss is not None else KIND_DEFAULT[kind]
        return INPUTS[inner if self.name in WRAPPERS else self.name]

    def build(self, model: Any, kind: str) -> Any:
        """The loss module for ``model`` (a wrapper's inner loss: ``loss``, else the kind's default)."""
        args = _check_arguments(self.name, self.arguments)
        if self.name in WRAPPERS:
            inner = self.loss or LossSpec(name=KIND_DEFAULT[kind])
            return loss_class(self.name)(model, inner.build(model, kind), **args)
        return loss_class(self.name)(model, **args)
