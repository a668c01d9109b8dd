"""The search space's typed parameters: a task weight's bounds and the four kinds of hyperparameter.

Frozen pydantic models: the experiment YAML's ``search.bounds`` and ``search.hyperparameters``
validate into them (:mod:`mixopt.config`), and the optimizer's search space reads them
(:mod:`mixopt.space`), also when a Python caller passes the equivalent plain dicts. A range is
checked once, here: finite, ``low < high``, and the default inside it.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeightBounds(_Frozen):
    min: float = Field(0.0, ge=0.0, le=1.0)
    max: float = Field(1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> WeightBounds:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class FloatParam(_Frozen):
    type: Literal["float"]
    low: float
    high: float
    default: float | None = None

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.default)
        return self


class LogFloatParam(_Frozen):
    type: Literal["log_float"]
    low: float = Field(gt=0.0)
    high: float = Field(gt=0.0)
    default: float | None = None

    @model_validator(mode="after")
    def _range(self) -> LogFloatParam:
        _check_range(self.low, self.high, self.default)
        return self


class IntParam(_Frozen):
    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    default: StrictInt | None = None

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.default)
        return self


class CategoricalParam(_Frozen):
    type: Literal["categorical"]
    choices: list[Union[bool, int, float, str]] = Field(min_length=1)
    default: Union[bool, int, float, str, None] = None

    @model_validator(mode="after")
    def _choices(self) -> CategoricalParam:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be distinct, got {self.choices}")
        if self.default is not None and self.default not in self.choices:
            raise ValueError(f"default {self.default!r} is not one of the choices {self.choices}")
        return self


def _check_range(low: float, high: float, default: float | None) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite")
    if low >= high:
        raise ValueError(f"low ({low}) must be less than high ({high})")
    if default is not None and not (low <= default <= high):
        raise ValueError(f"default {default} is outside [{low}, {high}]")


Hyperparameter = Annotated[
    Union[FloatParam, LogFloatParam, IntParam, CategoricalParam], Field(discriminator="type")
]
