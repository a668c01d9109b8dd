"""mixopt: find the best task mixture for finetuning a text-embedding model, then soup the best trials.

The library parts are usable alone: ``MixtureOptimizer`` (ask/tell, no Ray, no MLflow),
``load_experiment`` (validated config), the trainers in ``trainers/`` and ``mixopt.soup``.
Imports are lazy so that ``mixopt.config`` and the CLI start without loading torch and botorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["MixtureOptimizer", "load_experiment", "ConfigError"]

if TYPE_CHECKING:
    from mixopt.config import ConfigError, load_experiment
    from mixopt.optimizer import MixtureOptimizer


def __getattr__(name: str) -> Any:
    if name == "MixtureOptimizer":
        from mixopt.optimizer import MixtureOptimizer

        return MixtureOptimizer
    if name in ("load_experiment", "ConfigError"):
        from mixopt import config

        return getattr(config, name)
    raise AttributeError(f"module 'mixopt' has no attribute {name!r}")
