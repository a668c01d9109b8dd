"""Losses named in the YAML, resolved against :mod:`sentence_transformers.sentence_transformer.losses`.

A task's loss is ``{name: <loss class>, <argument>: <value>, ...}``, keyed by task name or task
kind; a wrapper (``MatryoshkaLoss``, ``Matryoshka2dLoss``, ``AdaptiveLayerLoss``) takes the loss it
wraps under ``loss:`` (the task kind's default when omitted)::

    losses:
      retrieval_0: {name: CachedMultipleNegativesRankingLoss, mini_batch_size: 32}
      sts: {name: CoSENTLoss, scale: 20.0}
      pair_classification: {name: OnlineContrastiveLoss, margin: 0.5}
      classification_2: {name: MatryoshkaLoss, matryoshka_dims: [64, 32], loss: {name: BatchAllTripletLoss}}

What a loss reads is one of the inputs of sentence-transformers' loss table (each loss's docstring,
"Inputs"), and what a task of each kind can give decides which losses fit it (:data:`FORMATS`):

- ``pairs``: ``(anchor, positive)``; ``triplets``: ``(anchor, positive, negative)``. Any kind gives
  them, paired as the built-in trainer pairs each kind (:mod:`trainers.batching`: retrieval rows
  and a drawn negative; STS rows above the median score with a low-score partner; same-label
  classification texts with an other-label one; label-1 pair-classification rows, which carry no
  negative, so no ``triplets``);
- ``scores``: ``(sentence1, sentence2, score)``, STS rows;
- ``labelled_pairs``: ``(sentence1, sentence2, label)`` with label 1 for a matching pair, 0 for
  not, pair-classification rows (both labels);
- ``labels``: ``(sentence, label)``, classification and clustering rows.

:data:`LOSSES` lists every loss of the package that reads one of these and takes no Python
object the YAML cannot give; left out: ``GISTEmbedLoss`` and ``CachedGISTEmbedLoss`` (a guide
model), ``MSELoss``, ``MarginMSELoss``, ``DistillKLDivLoss``, ``EmbedDistillLoss`` (teacher scores
or embeddings as labels), ``DenoisingAutoEncoderLoss``, ``ContrastiveTensionLoss``,
``ContrastiveTensionLossInBatchNegatives`` (unlabelled single texts: they learn nothing of a
task's labels), ``GlobalOrthogonalRegularizationLoss`` (a regulariser, not a training loss).

Checked when the config is loaded, each failure one line under its YAML path: the name is a loss
mixopt can feed; every argument is one of the loss's ``__init__`` parameters; every required one is
given; each value validates against the parameter's annotation (pydantic); a parameter that takes
a Python object (a model, a module) cannot come from YAML and is refused. Given the experiment's
tasks (the validation context ``{"tasks": {name: kind}}``), each key names a task or a kind and
its loss fits that task's kind (:func:`check_keys`).
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

KINDS = ("retrieval", "sts", "classification", "clustering", "pair_classification")


@dataclass(frozen=True)
class Format:
    """An input of sentence-transformers' loss table: the dataset columns and the kinds that give them."""

    columns: tuple[str, ...]
    kinds: tuple[str, ...]

    def __str__(self) -> str:
        return f"({', '.join(self.columns)})"


FORMATS = {
    "pairs": Format(("anchor", "positive"), KINDS),
    "triplets": Format(("anchor", "positive", "negative"), KINDS[:4]),
    "scores": Format(("sentence1", "sentence2", "score"), ("sts",)),
    "labelled_pairs": Format(("sentence1", "sentence2", "label"), ("pair_classification",)),
    "labels": Format(("sentence", "label"), ("classification", "clustering")),
}
# Loss -> the inputs of its docstring's table that mixopt can build, in the table's order: a task
# gets the first one its kind gives. A loss that takes pairs and triplets gets a triplet's negative
# column where every example of the task has one.
LOSSES: dict[str, tuple[str, ...]] = {
    "MultipleNegativesRankingLoss": ("pairs", "triplets"),
    "CachedMultipleNegativesRankingLoss": ("pairs", "triplets"),
    "MultipleNegativesSymmetricRankingLoss": ("pairs",),
    "CachedMultipleNegativesSymmetricRankingLoss": ("pairs",),
    "MegaBatchMarginLoss": ("pairs",),
    "TripletLoss": ("triplets",),
    "CoSENTLoss": ("scores",),
    "AnglELoss": ("scores", "triplets"),
    "CosineSimilarityLoss": ("scores",),
    "ContrastiveLoss": ("labelled_pairs",),
    "OnlineContrastiveLoss": ("labelled_pairs",),
    "SoftmaxLoss": ("labelled_pairs",),
    "BatchAllTripletLoss": ("labels",),
    "BatchHardTripletLoss": ("labels",),
    "BatchSemiHardTripletLoss": ("labels",),
    "BatchHardSoftMarginTripletLoss": ("labels",),
}
WRAPPERS = ("MatryoshkaLoss", "Matryoshka2dLoss", "AdaptiveLayerLoss")
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


def fitting(kind: str) -> list[str]:
    """The losses (not wrappers) whose inputs a task of ``kind`` gives, in :data:`LOSSES`' order."""
    return [name for name, formats in LOSSES.items() if any(kind in FORMATS[f].kinds for f in formats)]


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
        known = list(LOSSES) + list(WRAPPERS)
        if self.name not in known:
            raise ValueError(f"unknown loss {self.name!r}; mixopt can feed {known}")
        if self.name not in WRAPPERS:
            if self.loss is not None:
                raise ValueError(f"{self.name} wraps no loss; 'loss:' is for {list(WRAPPERS)}")
        elif self.loss is not None and self.loss.name in WRAPPERS:
            raise ValueError(f"{self.name} wraps {self.loss.name}: wrap a loss of {list(LOSSES)} instead")
        _check_arguments(self.name, self.arguments)
        return self

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def reader(self, kind: str) -> str:
        """The loss that reads the data: the loss itself, or the one a wrapper wraps."""
        if self.name not in WRAPPERS:
            return self.name
        return self.loss.name if self.loss is not None else KIND_DEFAULT[kind]

    def inputs(self, kind: str) -> tuple[str, ...]:
        """The inputs (keys of :data:`FORMATS`) a task of ``kind`` gives this loss, in the loss's
        order (the first is what it reads); empty: the loss does not fit the kind."""
        return tuple(f for f in LOSSES[self.reader(kind)] if kind in FORMATS[f].kinds)

    def misfit(self, who: str, kind: str) -> str | None:
        """Why this loss does not fit ``who`` (``"task pair_4"``, ``"a sts task"``) of ``kind``, in one
        line; None when it fits."""
        if self.inputs(kind):
            return None
        reader = self.reader(kind)
        reads = " or ".join(str(FORMATS[f]) for f in LOSSES[reader])
        inside = f"{self.name} wraps {reader}, which" if reader != self.name else reader
        return (
            f"{inside} reads {reads}, which {who} ({kind}) cannot give; losses that fit {kind}: "
            f"{', '.join(fitting(kind))} (or one of these in {', '.join(WRAPPERS)})"
        )

    def build(self, model: Any, kind: str) -> Any:
        """The loss module for ``model`` (a wrapper's inner loss: ``loss``, else the kind's default)."""
        args = _check_arguments(self.name, self.arguments)
        if self.name in WRAPPERS:
            inner = self.loss or LossSpec(name=KIND_DEFAULT[kind])
            return loss_class(self.name)(model, inner.build(model, kind), **args)
        return loss_class(self.name)(model, **args)


def check_keys(losses: Mapping[str, LossSpec], tasks: Mapping[str, str] | None) -> None:
    """Every key of ``losses`` a task (of ``tasks``: name -> kind) or a kind, and its loss one that
    fits each task it applies to; else a pydantic ValidationError with one error per bad key, at the
    key. Without ``tasks`` (options validated alone) only keys that are kinds are checked."""
    errors = []
    for key, spec in losses.items():
        if tasks is not None and key in tasks:
            why = spec.misfit(f"task {key}", tasks[key])
        elif key in KINDS:
            named = sorted(t for t, k in (tasks or {}).items() if k == key)
            who = f"task {named[0]}" if named else f"a {key} task"
            why = spec.misfit(who, key)
        elif tasks is not None:
            close = difflib.get_close_matches(key, [*tasks, *KINDS], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            why = (
                f"{key!r} is neither a task nor a task kind{hint}; tasks: {list(tasks)}, kinds: {list(KINDS)}"
            )
        else:
            why = None
        if why is not None:
            errors.append((key, why))
    if errors:
        raise ValidationError.from_exception_data(
            "losses",
            [
                InitErrorDetails(
                    type=PydanticCustomError("loss_fit", "{why}", {"why": why}), loc=(key,), input=losses[key]
                )
                for key, why in errors
            ],
        )
