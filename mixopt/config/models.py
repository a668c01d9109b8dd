"""The experiment's typed configuration: frozen pydantic models, one per YAML section.

Field validators check one value; the checks across sections, the YAML line numbers and the
error report live in :mod:`mixopt.config.loading`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal, Union

from pydantic import (
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from mixopt.config.trainer import TrainerConfig
from mixopt.optimizer import checks as optimizer_checks
from mixopt.optimizer import defaults as optimizer_defaults
from mixopt.optimizer.objective import check_objective, equal_weights, kind_weights
from mixopt.parameters import Hyperparameter, WeightBounds
from mixopt.task import NAME_RE, TaskConfig
from mixopt.task import Frozen as _Frozen

# Sums of weights are compared with this tolerance; the optimizer itself is exact to 1e-9.
SUM_TOLERANCE = 1e-6

# Characters an experiment name may not hold: path separators and quotes.
_UNSAFE_NAME_CHARS = set("/\\\"'`")


class SearchConfig(_Frozen):
    """What is searched: the mixture (with optional per-task bounds) and scalar hyperparameters."""

    bounds: dict[str, WeightBounds] = {}
    seed_mixtures: list[dict[str, float]] = []
    hyperparameters: dict[str, Hyperparameter] = {}


class WarmStartConfig(_Frozen):
    """Reuse an earlier sweep's observations (``MixtureOptimizer.warm_start``): the newest sweep of
    MLflow experiment ``experiment`` (same tracking store), or an optimizer ``state`` JSON file.
    Trials whose removed tasks held more than ``max_removed`` of the data are not reused."""

    experiment: str | None = None
    state: Path | None = None
    max_removed: float = Field(optimizer_defaults.WARM_MAX_REMOVED, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one_source(self) -> WarmStartConfig:
        if (self.experiment is None) == (self.state is None):
            raise ValueError("give exactly one of experiment (an MLflow experiment name) or state (a file)")
        return self


class OptimizerConfig(_Frozen):
    """``MixtureOptimizer``'s arguments (defaults from ``mixopt.optimizer.defaults``, the same
    check functions as the optimizer's for ``dirichlet_alpha`` and ``beta``)."""

    # Strict ints: YAML's `max_trials: true` is a mistake, not 1.
    n_seeds: StrictInt = Field(optimizer_defaults.N_SEEDS, ge=0)
    dirichlet_alpha: Union[float, dict[str, float]] = optimizer_defaults.DIRICHLET_ALPHA
    beta: float = optimizer_defaults.BETA
    max_trials: StrictInt = Field(30, ge=1)
    # None: as many as the cluster has GPUs (CPU slots when it has none).
    max_concurrent: StrictInt | None = Field(None, ge=1)
    random_state: StrictInt = optimizer_defaults.RANDOM_STATE
    # The seed-to-seed sd of a trial's objective, in objective units, when known (the verification
    # stage prints it): centres the GP's noise prior there (mixopt.optimizer.model.make_gp).
    noise_sd: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    warm_start: WarmStartConfig | None = None
    # Model partial results (intermediate reports, trials stopped early by ASHA) with a GP over
    # (mixture, fraction of the step budget); see mixopt/optimizer/ and bench/multifidelity.py.
    # None (the default): on exactly when sweep.early_stopping is enabled (Experiment.multi_fidelity).
    multi_fidelity: bool | None = None
    # With multi_fidelity: scale the GP's mixture effect by a fitted s^p
    # (mixopt.optimizer.model.FidelityScale), for learning curves that rank mixtures early as they
    # do at the end; on curves that cross it loses (bench/RESULTS.md, "Multi-fidelity").
    fidelity_scale: StrictBool = optimizer_defaults.FIDELITY_SCALE
    # The last this many of max_trials maximise the GP's posterior mean instead of UCB
    # (origin "exploit"); 0: every GP proposal is UCB. See mixopt/optimizer/policy.py.
    exploit_last: StrictInt = Field(optimizer_defaults.EXPLOIT_LAST, ge=0)

    @field_validator("dirichlet_alpha")
    @classmethod
    def _alpha(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        optimizer_checks.check_alpha(v)  # unknown tasks: reported per YAML path (_cross_problems)
        return v

    @field_validator("beta")
    @classmethod
    def _beta(cls, v: float) -> float:
        optimizer_checks.check_beta(v)
        return v


# The schemes of MLflow's tracking stores (its TrackingStoreRegistry; '' is a local folder); a
# plugin's scheme is found among the installed packages' "mlflow.tracking_store" entry points.
TRACKING_SCHEMES = frozenset(
    {
        "",
        "file",
        "databricks",
        "databricks-uc",
        "uc",
        "http",
        "https",
        "postgresql",
        "mysql",
        "sqlite",
        "mssql",
    }
)


def tracking_scheme_problem(uri: str) -> str | None:
    """Why MLflow has no tracking store for ``uri``'s scheme (one line), or None when it has one."""
    from importlib.metadata import entry_points
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.split("+")[0]  # postgresql+psycopg2: a database's driver
    if scheme in TRACKING_SCHEMES or (len(scheme) == 1 and os.name == "nt"):  # C:\ on Windows
        return None
    plugins = {e.name for e in entry_points(group="mlflow.tracking_store")}
    if scheme in plugins:
        return None
    known = sorted(s for s in TRACKING_SCHEMES | plugins if s)
    return (
        f"MLflow has no tracking store for the scheme {scheme!r} of {uri!r}; give a local path or a URI "
        f"with one of {known} (e.g. sqlite:///mlflow.db, http://host:5000)"
    )


class TrackingConfig(_Frozen):
    # None: $MLFLOW_TRACKING_URI if set, else a sqlite store in the working directory.
    uri: str | None = None
    experiment: str | None = None

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        problem = tracking_scheme_problem(v) if v is not None else None
        if problem is not None:
            raise ValueError(problem)
        return v

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, v: str | None) -> str | None:
        # The name is an MLflow experiment and the default soup folder (soups/<name>): a '/' would
        # nest folders, quotes break MLflow's search filters, control characters break both.
        if v is None:
            return v
        bad = sorted({c for c in v if c in _UNSAFE_NAME_CHARS or ord(c) < 32 or ord(c) == 127})
        if bad or not v.strip() or v != v.strip() or v in (".", ".."):
            shown = ", ".join(repr(c) for c in bad) if bad else "blank, '.'/'..' or padded with spaces"
            raise ValueError(
                f"experiment name {v!r} is not usable as an MLflow experiment and folder name ({shown}); "
                "use letters, digits, spaces and '_', '.', '-'"
            )
        return v

    def resolved_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


class ResourcesConfig(_Frozen):
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    custom: dict[str, float] = {}


class EarlyStopping(_Frozen):
    """Early stopping on the dev objective reported at intermediate steps.

    ``method: asha`` is Tune's ASHA scheduler (``grace_period`` steps, then rungs thinned by
    ``reduction_factor``). ``method: gp`` is model-based: from ``grace_period`` steps on, after each
    report the multi-fidelity GP predicts the trial's final value and stops it when even its upper
    confidence bound is below the best finished trial's (``MixtureOptimizer.should_stop``); it
    needs the multi-fidelity GP (on by default with early stopping; ``optimizer.multi_fidelity:
    false`` turns it off).
    """

    enabled: bool = False
    method: Literal["asha", "gp"] = "asha"
    # None: half of trainer.steps. Mixtures' learning curves cross: on the tiny experiment's real
    # trainer the ranking at 1/8-1/4 of the steps is reversed, and reliable from about 5/8 on
    # (bench/landscape.py, bench/RESULTS.md "Learning curves of the real trainer").
    grace_period: StrictInt | None = Field(None, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)

    def grace(self, steps: int) -> int:
        """The grace period in steps: ``grace_period``, else half the trial's ``steps``."""
        return self.grace_period if self.grace_period is not None else max(1, steps // 2)


class SweepConfig(_Frozen):
    retries: StrictInt = Field(0, ge=0)
    early_stopping: EarlyStopping = EarlyStopping()
    # Log each checkpoint into MLflow's artifact store as well as keeping it in storage.
    log_checkpoints: bool = False
    # Run `mixopt preflight` (one worst-case trial, a few steps, on a trial's resources) before the
    # first trial; a trial that does not fit stops the sweep with the fix.
    preflight: bool = False


class VerifyConfig(_Frozen):
    """The verification stage after the search: the recommended mixture and a baseline, each
    trained with the same ``seeds`` fresh trainer seeds (paired), compared with a 95% interval.

    ``seeds: 0`` turns it off. ``baseline`` (task -> weight, summing to 1; tasks not named get 0)
    defaults to the first of ``search.seed_mixtures``, else the uniform mixture.
    """

    seeds: int = Field(4, ge=0)
    baseline: dict[str, float] | None = None


class KeepConfig(_Frozen):
    """Checkpoint retention (``storage_keep``): after each trial, keep the checkpoints a soup or
    the verification can still use and delete the rest (:mod:`mixopt.sweep.retention`).

    ``top``: the N best trials in the soup's ranking (by ``objective``, among the soup's
    candidates), so ``mixopt soup --runs topK`` with K <= N picks what it would pick with every
    checkpoint kept. ``verify``: also keep every verification run of the recommended mixture
    (the soup's other candidates). ``pin``: trial ids
    (``trial-003``, ``verify-r00``) or MLflow run ids whose checkpoints are never deleted.
    """

    top: StrictInt = Field(ge=1)
    verify: StrictBool = True
    pin: list[str] = []

    @field_validator("pin")
    @classmethod
    def _pin(cls, v: list[str]) -> list[str]:
        blank = [i for i, p in enumerate(v) if not p.strip()]
        if blank:
            raise ValueError(f"pin[{blank[0]}] is empty: give a trial id (trial-003) or an MLflow run id")
        return v


class ObjectiveConfig(_Frozen):
    """What the sweep maximises: the weighted mean of named dev scores, ``Σ w_k s_k / Σ w_k``.

    ``weights``: score name (a task of the experiment) -> weight >= 0, not all zero, normalised
    to sum 1 (:attr:`Experiment.objective_weights`). The optimizer keeps each trial's scores, so
    ``mixopt recommend --objective`` can re-weigh them after the sweep from the same trials.
    """

    weights: dict[str, float] = Field(min_length=1)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        if max(v.values()) <= 0:
            raise ValueError(f"the weights sum to 0 ({v}): give at least one score a positive weight")
        return v


STORAGE_URI_MESSAGE = (
    "storage {storage!r}: mixopt writes trial checkpoints to a filesystem path that every "
    "node mounts (NFS, Lustre, a FUSE-mounted bucket); give that path"
)


class Experiment(_Frozen):
    name: str
    tasks: list[TaskConfig] = Field(min_length=1)
    search: SearchConfig = SearchConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    trainer: TrainerConfig
    tracking: TrackingConfig = TrackingConfig()
    resources: ResourcesConfig = ResourcesConfig()
    storage: str = "./runs"
    # Checkpoint retention; None keeps every checkpoint.
    storage_keep: KeepConfig | None = None
    sweep: SweepConfig = SweepConfig()
    verify: VerifyConfig = VerifyConfig()
    # None: the trainer's own objective (option `objective`; mean_task when it has none).
    objective: ObjectiveConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"name {v!r} may contain only letters, digits, '_', '.', '-'")
        return v

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("storage is empty: give the folder for trial checkpoints (default ./runs)")
        if "://" in v:
            raise ValueError(STORAGE_URI_MESSAGE.format(storage=v))
        return v

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def multi_fidelity(self) -> bool:
        """Whether the optimizer models partial results: ``optimizer.multi_fidelity`` when set,
        else whether ``sweep.early_stopping`` is enabled. A trial stopped early is then a partial
        result at the fraction it reached rather than a finished trial with its last value, which
        would tell the GP an early, lower value as if it were final (bench/RESULTS.md,
        "Multi-fidelity", compares the two)."""
        if self.optimizer.multi_fidelity is not None:
            return self.optimizer.multi_fidelity
        return self.sweep.early_stopping.enabled

    @property
    def objective_weights(self) -> dict[str, float]:
        """Score name -> weight of the objective: ``objective.weights``, else the trainer's option
        ``objective`` as weights (``mean_task``: equal per task; ``mean_kind``: each kind's share
        split evenly among its tasks), normalised to sum 1."""
        if self.objective is not None:
            return check_objective(self.objective.weights, "objective.weights")
        if self.trainer.knobs.objective == "mean_kind":
            return kind_weights({t.name: t.kind.value for t in self.tasks})
        return equal_weights(self.task_names)

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def task(self, name: str) -> TaskConfig:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)
