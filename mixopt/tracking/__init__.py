"""MLflow records of a sweep: one experiment per sweep, a parent run, one nested run per trial.

- :mod:`mixopt.tracking.tags`: the names of tags, params and metric keys.
- :mod:`mixopt.tracking.store`: every read of the store (paged searches, the newest sweep, trial
  runs, what a sweep recorded), each retried.
- :mod:`mixopt.tracking.writer`: :class:`SweepTracker`, every write of a sweep.

Conventions (the soup and the UI rely on them):

- parent run: tag ``mixopt.role=sweep``, the resolved config and seed mixtures as artifacts, the
  optimizer state and summary figures at the end.
- trial run: nested (``mlflow.parentRunId``), tags ``mixopt.role=trial``, ``mixopt.trial_id``,
  ``mixopt.status`` (RUNNING | FINISHED | FAILED), ``mixopt.proposal`` (exact JSON),
  ``mixopt.checkpoint``, ``ray.trial_id``, ``ray.node_id``, ``mixopt.failure``, ``mixopt.stage``
  (``search`` | ``verify``); params ``w.<task>``, ``hp.<name>``, ``origin``, ``seed`` (the trial's
  own trainer seed); metrics ``objective``, ``score.<task>``, per-task metrics.
- soup run: tag ``mixopt.role=soup`` (see :func:`mixopt.soup.registry.log_soup`).
"""

from __future__ import annotations

from mixopt.tracking.store import recorded_experiment, recorded_optimizer_state, retry
from mixopt.tracking.tags import (
    CHECKPOINT,
    EXPERIMENT_KIND,
    EXPERIMENT_TAGS,
    FAILURE,
    PARENT,
    PROPOSAL,
    ROLE,
    STAGE,
    STATE_PATH,
    STATUS,
    TRIAL_ID,
    VIEW_KEY,
    VIEW_TAG,
    WARM_START,
    metric_key,
    mixture_params,
    ui_url,
)
from mixopt.tracking.writer import SweepTracker, artifact_location, run_status_name

__all__ = [
    "CHECKPOINT",
    "EXPERIMENT_KIND",
    "EXPERIMENT_TAGS",
    "FAILURE",
    "PARENT",
    "PROPOSAL",
    "ROLE",
    "STAGE",
    "STATE_PATH",
    "STATUS",
    "TRIAL_ID",
    "VIEW_KEY",
    "VIEW_TAG",
    "WARM_START",
    "SweepTracker",
    "artifact_location",
    "metric_key",
    "mixture_params",
    "recorded_experiment",
    "recorded_optimizer_state",
    "retry",
    "run_status_name",
    "ui_url",
]
