"""Names in a sweep's MLflow records: tags, their values, param names and metric keys.

The sweep writes them, the soup and the UI read them; each name is written here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ROLE = "mixopt.role"
# Values of ROLE: the parent run of a sweep, one nested run per trial, a soup's run, and the run
# of a `mixopt recommend --verify` (its verification trials nested under it).
ROLE_SWEEP = "sweep"
ROLE_TRIAL = "trial"
ROLE_SOUP = "soup"
ROLE_RECOMMEND = "recommend"
STATUS = "mixopt.status"
PROPOSAL = "mixopt.proposal"
CHECKPOINT = "mixopt.checkpoint"
# SHA-256 of the checkpoint's mixopt_checksums.json, so the soup can tell a rewritten manifest.
CHECKPOINT_CHECKSUMS = "mixopt.checkpoint_checksums"
# With sweep.log_checkpoints: "true" once the checkpoint is complete in the artifact store (what
# --resume looks for), or why its upload failed after every retry.
CHECKPOINT_LOGGED = "mixopt.checkpoint_logged"
CHECKPOINT_UPLOAD_FAILURE = "mixopt.checkpoint_upload_failure"
# "true" on a trial whose checkpoint storage_keep deleted; the run and its metrics stay.
CHECKPOINT_PRUNED = "mixopt.checkpoint_pruned"
TRIAL_ID = "mixopt.trial_id"
FAILURE = "mixopt.failure"
# Why a FAILED trial failed: "trial" (its mixture or hyperparameters), "data" (a bad row: the sweep
# stops), "infrastructure" (disk full, worker or node lost: --resume runs it again).
FAILURE_KIND = "mixopt.failure_kind"
INFRASTRUCTURE = "infrastructure"
STATE_PATH = "mixopt.state_path"
# "search" (proposed by the optimizer) or "verify" (the verification stage)
STAGE = "mixopt.stage"
WARM_START = "mixopt.warm_start"
STOPPED_EARLY = "mixopt.stopped_early"  # "true" on a trial the scheduler stopped (no checkpoint)
VERIFY_ARM = "mixopt.verify_arm"
# A soup's run: how it was made, and the sweep its ingredients came from (when there is one).
SOUP_METHOD = "mixopt.method"
SOUP_METRIC = "mixopt.metric"
SOUP_SWEEP_RUN = "mixopt.sweep_run"
SOUP_WARNING = "mixopt.soup_warning"  # set when the soup scores below its best ingredient
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
# MLflow 3's UI opens an experiment without this tag on its GenAI "Overview / Traces" page; with it, on
# the runs table (the trials with their w.* params and objective).
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_TAGS = {EXPERIMENT_KIND: "custom_model_development"}
# A view of the runs table that MLflow's UI loads from an experiment tag when the page URL carries
# ``viewStateShareKey=mixopt``: the trials expanded under their sweep, with w.* and objective shown.
VIEW_KEY = "mixopt"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
# Artifacts of the sweep run that later commands read back.
CONFIG_ARTIFACT = "config.yaml"
# The config artifact in force (config.yaml, or config-N.yaml after a resume that changed it with
# --allow-config-change): on the sweep run, and on each trial run, the config it ran under.
CONFIG = "mixopt.config"
STATE_ARTIFACT = "optimizer_state.json"


def ui_url(base: str, experiment_id: str) -> str:
    """The MLflow UI page of a sweep's experiment, opened on the runs table with mixopt's columns."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"


# Decimals of a weight in the ``w.<task>`` params. MLflow's runs table cuts a param to about ten
# characters, so a full-precision ``1.3790403873629585e-18`` read as 1.38; the exact weights stay
# in the trial's PROPOSAL tag (JSON), which is what the sweep and the soup read back.
WEIGHT_DECIMALS = 4


def weight_param(w: float) -> str:
    """A weight as shown in the runs table: ``0`` for an exact zero, else 4 decimals (``0.0000``: < 5e-5)."""
    w = float(w)
    return "0" if w == 0 else f"{w:.{WEIGHT_DECIMALS}f}"


def mixture_params(proposal: Mapping[str, Any], task_names: list[str]) -> dict[str, str]:
    """Flat MLflow params: ``w.<task>`` for every weight (:func:`weight_param`), ``hp.<name>`` for each
    hyperparameter."""
    out = {f"w.{t}": weight_param(proposal[t]) for t in task_names}
    for k, v in proposal.items():
        if k not in task_names:
            out[f"hp.{k}"] = repr(v) if isinstance(v, float) else str(v)
    return out


def metric_key(name: str) -> str:
    """MLflow accepts letters, digits, ``_ - . / `` and spaces; map anything else to ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name.replace("@", "_at_"))
