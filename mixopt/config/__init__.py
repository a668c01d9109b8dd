"""Experiment configuration: YAML in, a frozen, validated pydantic model out.

- :mod:`.models`: the typed configuration, one frozen pydantic model per YAML section.
- :mod:`.trainer`: the ``trainer:`` section, and the trainer options the service reads, typed.
- :mod:`mixopt.parameters`: the search space's bounds and hyperparameter kinds (re-exported here).
- :mod:`.loading`: YAML with line numbers, paths made absolute, and the one-line-per-problem
  :class:`ConfigError`;
- :mod:`.checks`: the checks across sections (mixtures, bounds, the trainer's own options, a
  sweep with nothing to optimise).
"""

from mixopt.config.loading import (
    ConfigError,
    Problem,
    dump_experiment,
    experiment_from_dict,
    load_experiment,
    parse_yaml,
)
from mixopt.config.models import (
    STORAGE_URI_MESSAGE,
    SUM_TOLERANCE,
    EarlyStopping,
    Experiment,
    KeepConfig,
    ObjectiveConfig,
    OptimizerConfig,
    Prompt,
    ResourcesConfig,
    SearchConfig,
    SweepConfig,
    TaskConfig,
    TaskKind,
    TrackingConfig,
    VerifyConfig,
    WarmStartConfig,
)
from mixopt.config.trainer import TrainerConfig, TrainerKnobs
from mixopt.parameters import (
    CategoricalParam,
    FloatParam,
    Hyperparameter,
    IntParam,
    LogFloatParam,
    WeightBounds,
)

__all__ = [
    "STORAGE_URI_MESSAGE",
    "SUM_TOLERANCE",
    "CategoricalParam",
    "ConfigError",
    "EarlyStopping",
    "Experiment",
    "FloatParam",
    "Hyperparameter",
    "IntParam",
    "KeepConfig",
    "LogFloatParam",
    "ObjectiveConfig",
    "OptimizerConfig",
    "Problem",
    "Prompt",
    "ResourcesConfig",
    "SearchConfig",
    "SweepConfig",
    "TaskConfig",
    "TaskKind",
    "TrackingConfig",
    "TrainerConfig",
    "TrainerKnobs",
    "VerifyConfig",
    "WarmStartConfig",
    "WeightBounds",
    "dump_experiment",
    "experiment_from_dict",
    "load_experiment",
    "parse_yaml",
]
