"""The YAML's ``trainer:`` section: the trial function, its step budget and seed, the trainer's own
options, and the few of those options the service itself reads, typed.

The trainer's options are the trainer's (its pydantic ``Options`` validates them, see
:mod:`mixopt.config.loading`); the service reads only :class:`TrainerKnobs` of them, never a raw key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

_TARGET_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class TrainerKnobs(BaseModel):
    """The trainer options the service reads: each the option's value when it has the type the service
    reads, else the default (a trainer whose option has another type, or no such option, means
    nothing to the service by it; its own ``Options`` reports a wrong value)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # The encoder: a local directory (resolved against the YAML, checked to exist, its tokenizer and
    # embedding dimension read before any trial) or a hub id. None: the trainer's default.
    model: str | None = None
    # The trainer's own objective when the YAML gives no objective.weights: "mean_task" (equal per
    # task) or "mean_kind" (equal per kind).
    objective: str = "mean_task"
    # The Matryoshka dims; the first must be a local model's embedding dimension. None: the trainer's.
    matryoshka_dims: Sequence[int] | None = None

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> TrainerKnobs:
        """The knobs of ``options`` (the trainer's YAML options)."""
        given = {k: options[k] for k in cls.model_fields if k in options}
        try:
            return cls.model_validate(given)
        except ValidationError as e:
            wrong = {err["loc"][0] for err in e.errors()}
            return cls.model_validate({k: v for k, v in given.items() if k not in wrong})


class TrainerConfig(BaseModel):
    """``target`` names the trial function; the remaining keys are the trainer's own options.

    The target's module provides the trainer contract (:mod:`mixopt.trial`), whose pydantic
    ``Options`` model validates the options here, so a misspelt trainer option is caught before
    anything runs.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    target: str
    steps: StrictInt = Field(100, ge=1)
    seed: StrictInt = 0

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not _TARGET_RE.match(v):
            raise ValueError(f"target must look like 'package.module:function', got {v!r}")
        return v

    @property
    def options(self) -> dict[str, Any]:
        """The trainer's own options, as the YAML gives them (passed to the trainer whole)."""
        return dict(self.model_extra or {})

    @property
    def knobs(self) -> TrainerKnobs:
        """The options the service reads, typed (:class:`TrainerKnobs`)."""
        return TrainerKnobs.of(self.model_extra or {})
