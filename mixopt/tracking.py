"""MLflow records of a sweep: one experiment per sweep, a parent run, one nested run per trial.

Every write goes through :class:`SweepTracker`, which lives in the sweep's driver process: trials
report to Ray Tune, Tune hands the results to the driver, and the driver logs them. With a single
writer, a sqlite store never sees concurrent writers ("database is locked"); each call is also
retried with backoff, so a busy HTTP tracking server drops nothing either.

Conventions (the soup and the UI rely on them):

- parent run: tag ``mixopt.role=sweep``, the resolved config and seed mixtures as artifacts, the
  optimizer state and summary figures at the end.
- trial run: nested (``mlflow.parentRunId``), tags ``mixopt.role=trial``, ``mixopt.trial_id``,
  ``mixopt.status`` (RUNNING | FINISHED | FAILED), ``mixopt.proposal`` (exact JSON),
  ``mixopt.checkpoint``, ``ray.trial_id``, ``ray.node_id``, ``mixopt.failure``, ``mixopt.stage``
  (``search`` | ``verify``); params ``w.<task>``, ``hp.<name>``, ``origin``, ``seed`` (the trial's
  own trainer seed); metrics ``objective``, ``score.<task>``, per-task metrics.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

log = logging.getLogger("mixopt.tracking")
T = TypeVar("T")

ROLE = "mixopt.role"
STATUS = "mixopt.status"
PROPOSAL = "mixopt.proposal"
CHECKPOINT = "mixopt.checkpoint"
TRIAL_ID = "mixopt.trial_id"
FAILURE = "mixopt.failure"
STATE_PATH = "mixopt.state_path"
STAGE = "mixopt.stage"  # "search" (proposed by the optimizer) or "verify" (the verification stage)
WARM_START = "mixopt.warm_start"
PARENT = "mlflow.parentRunId"
# MLflow 3's UI opens an experiment without this tag on its GenAI "Overview / Traces" page; with it, on
# the runs table (the trials with their w.* params and objective).
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_TAGS = {EXPERIMENT_KIND: "custom_model_development"}
# A view of the runs table that MLflow's UI loads from an experiment tag when the page URL carries
# ``viewStateShareKey=mixopt``: the trials expanded under their sweep, with w.* and objective shown.
VIEW_KEY = "mixopt"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"


def ui_url(base: str, experiment_id: str) -> str:
    """The MLflow UI page of a sweep's experiment, opened on the runs table with mixopt's columns."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a sqlite store go next to its database file (``<db dir>/mlruns``).

    MLflow's default is ``./mlruns`` under the working directory of whichever process creates the
    experiment; for ``sqlite:///mlflow.db`` that is the same folder, and a store elsewhere keeps its
    artifacts with it instead of scattering them into the caller's working directory.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a tracking server chooses (its --artifacts-destination)
    return (Path(tracking_uri[len("sqlite:///") :]).resolve().parent / "mlruns").as_uri()


def retry(fn: Callable[[], T], what: str, attempts: int = 8, base_delay: float = 0.2) -> T:
    """Call ``fn``, retrying transient store errors (locked sqlite, a restarting server) with backoff."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # MLflow wraps sqlite and HTTP errors in several exception types
            if i == attempts - 1:
                raise
            delay = base_delay * 2**i
            log.warning("MLflow %s failed (%s); retrying in %.1fs", what, e, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _chunks(items: list, n: int) -> list[list]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def mixture_params(proposal: Mapping[str, Any], task_names: list[str]) -> dict[str, str]:
    """Flat MLflow params: ``w.<task>`` for every weight, ``hp.<name>`` for each hyperparameter."""
    out = {f"w.{t}": repr(float(proposal[t])) for t in task_names}
    for k, v in proposal.items():
        if k not in task_names:
            out[f"hp.{k}"] = repr(v) if isinstance(v, float) else str(v)
    return out


def metric_key(name: str) -> str:
    """MLflow accepts letters, digits, ``_ - . / `` and spaces; map anything else to ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name.replace("@", "_at_"))


class SweepTracker:
    """All MLflow writes of one sweep."""

    def __init__(self, tracking_uri: str, experiment_name: str):
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        exp = retry(lambda: self.client.get_experiment_by_name(experiment_name), "get experiment")
        if exp is None:
            self.experiment_id = retry(
                lambda: self.client.create_experiment(
                    experiment_name, artifact_location=artifact_location(tracking_uri), tags=EXPERIMENT_TAGS
                ),
                "create experiment",
            )
        elif exp.lifecycle_stage == "deleted":
            raise RuntimeError(
                f"MLflow experiment {experiment_name!r} is deleted in {tracking_uri}; restore it "
                f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or choose another "
                "tracking.experiment"
            )
        else:
            self.experiment_id = exp.experiment_id
            if exp.tags.get(EXPERIMENT_KIND) != EXPERIMENT_TAGS[EXPERIMENT_KIND]:
                # An experiment made before this tag existed (or by hand): open it on the runs too.
                for k, v in EXPERIMENT_TAGS.items():
                    retry(
                        lambda k=k, v=v: self.client.set_experiment_tag(self.experiment_id, k, v),
                        "tag experiment",
                    )
        self.experiment_name = experiment_name
        self.parent_id: str | None = None

    # ------------------------------------------------------------------ parent run

    def start_sweep(self, name: str, params: Mapping[str, Any], artifacts: Mapping[str, str]) -> str:
        run = retry(
            lambda: self.client.create_run(self.experiment_id, run_name=name, tags={ROLE: "sweep"}),
            "create sweep run",
        )
        self.parent_id = run.info.run_id
        self.log_params(self.parent_id, {k: str(v) for k, v in params.items()})
        for filename, text in artifacts.items():
            self.log_text(self.parent_id, text, filename)
        return self.parent_id

    def find_unfinished_sweep(self) -> str | None:
        """The newest sweep run that did not end (the driver was killed), for ``--resume``."""
        runs = retry(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{ROLE}` = 'sweep'",
                order_by=["attributes.start_time DESC"],
                max_results=20,
            ),
            "search sweeps",
        )
        for r in runs:
            if r.info.status in ("RUNNING", "SCHEDULED", "KILLED"):
                return r.info.run_id
        return None

    def show_in_ui(self, parent_id: str, task_names: list[str], hyperparameters: list[str]) -> None:
        """Store the runs-table view (:data:`VIEW_TAG`): this sweep's trials, best first, with their
        weights ``w.<task>``, hyperparameters ``hp.<name>``, origin and objective as columns."""
        columns = (
            ["metrics.`objective`"]
            + [f"params.`w.{t}`" for t in task_names]
            + [f"params.`hp.{h}`" for h in hyperparameters]
            + ["params.`origin`", f"tags.`{STATUS}`", "attributes.`Duration`"]
        )
        # MLflow leaves runsExpanded out of a shared view, and a nested trial is hidden under its
        # collapsed sweep row: the view filters to this sweep's trials instead, best first.
        view = {
            "selectedColumns": columns,
            "searchFilter": f"tags.`{PARENT}` = '{parent_id}'",
            "orderByKey": "metrics.`objective`",
            "orderByAsc": False,
        }
        retry(
            lambda: self.client.set_experiment_tag(self.experiment_id, VIEW_TAG, json.dumps(view)),
            "set the UI view",
        )

    def reopen_sweep(self, run_id: str) -> None:
        self.parent_id = run_id
        retry(lambda: self.client.update_run(run_id, status="RUNNING"), "reopen sweep")

    def end_sweep(self, status: str = "FINISHED") -> None:
        assert self.parent_id is not None
        retry(lambda: self.client.set_terminated(self.parent_id, status=status), "end sweep")

    # ------------------------------------------------------------------ trial runs

    def trial_runs(self, parent_id: str | None = None) -> list[Any]:
        parent_id = parent_id or self.parent_id
        runs: list[Any] = []
        token = None
        while True:
            page = retry(
                lambda t=token: self.client.search_runs(
                    [self.experiment_id],
                    filter_string=f"tags.`{PARENT}` = '{parent_id}' and tags.`{ROLE}` = 'trial'",
                    max_results=1000,
                    page_token=t,
                ),
                "search trials",
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def start_trial(
        self,
        trial_id: str,
        proposal: Mapping[str, Any],
        task_names: list[str],
        origin: str,
        seed: int,
        stage: str = "search",
        extra_tags: Mapping[str, str] | None = None,
    ) -> str:
        assert self.parent_id is not None
        tags = {
            **(extra_tags or {}),
            STAGE: stage,
            ROLE: "trial",
            PARENT: self.parent_id,
            TRIAL_ID: trial_id,
            STATUS: "RUNNING",
            PROPOSAL: json.dumps(dict(proposal), sort_keys=True),
        }

        def create() -> str:
            # Idempotent: a create whose reply was lost (timeout) may have made the run already.
            existing = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{PARENT}` = '{self.parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
                max_results=1,
            )
            if existing:
                return existing[0].info.run_id
            return self.client.create_run(self.experiment_id, run_name=trial_id, tags=tags).info.run_id

        run_id = retry(create, "create trial run")
        params = mixture_params(proposal, task_names) | {"origin": origin, "seed": str(seed)}
        self.log_params(run_id, params)
        return run_id

    def restart_trial(self, run_id: str, params: Mapping[str, Any] | None = None) -> None:
        """A trial interrupted by a killed driver runs again in its own MLflow run.

        ``params`` are the ones its first start logs: a driver killed between creating the run and
        logging them left some out, so the missing ones are logged now (MLflow params are write-once).
        """
        retry(lambda: self.client.update_run(run_id, status="RUNNING"), "restart trial")
        self.set_tags(run_id, {STATUS: "RUNNING", FAILURE: ""})
        if params:
            have = retry(lambda: self.client.get_run(run_id), "read trial run").data.params
            missing = {k: v for k, v in params.items() if k not in have}
            if missing:
                self.log_params(run_id, missing)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [
            Metric(metric_key(k), float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        for chunk in _chunks(batch, 900):  # MLflow caps a batch at 1000 metrics
            retry(lambda c=chunk: self.client.log_batch(run_id, metrics=c), "log metrics")

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for chunk in _chunks(items, 90):  # MLflow caps a batch at 100 params
            retry(lambda c=chunk: self.client.log_batch(run_id, params=c), "log params")

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        retry(
            lambda: self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]),
            "set tags",
        )

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        retry(lambda: self.client.log_text(run_id, text, artifact_file), f"log {artifact_file}")

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            retry(lambda: self.client.log_artifacts(run_id, str(path), artifact_path), f"log {path}")
        else:
            retry(lambda: self.client.log_artifact(run_id, str(path), artifact_path), f"log {path}")

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        retry(lambda: self.client.log_figure(run_id, figure, artifact_file), f"log {artifact_file}")

    def finish_trial(
        self, run_id: str, status: str, reason: str | None = None, tags: Mapping[str, str] | None = None
    ) -> None:
        """End a trial run: ``FINISHED`` or ``FAILED`` (with the reason as a tag)."""
        assert status in ("FINISHED", "FAILED", "KILLED")
        all_tags = dict(tags or {}) | {STATUS: status}
        if reason:
            all_tags[FAILURE] = reason[:4000]
        self.set_tags(run_id, all_tags)
        retry(lambda: self.client.set_terminated(run_id, status=status), "end trial")

    def close_recorded(self, run: Any) -> None:
        """Terminate a trial run whose status tag says it ended while MLflow still shows it running:
        :meth:`finish_trial` sets the tag, then the end, and a driver killed in between left it open."""
        status = run.data.tags.get(STATUS)
        if status in ("FINISHED", "FAILED") and run_status_name(run.info.status) == "RUNNING":
            retry(lambda: self.client.set_terminated(run.info.run_id, status=status), "end trial")


def run_status_name(status: Any) -> str:
    return status if isinstance(status, str) else RunStatus.to_string(status)


def recorded_experiment(tracking_uri: str, experiment_name: str | None = None):
    """The experiment config recorded by the newest sweep (of ``experiment_name``, or of any experiment).

    Every sweep logs its resolved config (absolute paths) as ``config.yaml`` on its parent run, so
    ``mixopt soup --runs top5`` can find the tasks and the trainer without the YAML at hand.
    Returns ``(Experiment, parent run id)``; raises LookupError when the store has no sweep.
    """
    import tempfile

    from mixopt.config import experiment_from_dict, parse_yaml

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).exists():
        raise LookupError(f"no MLflow store at {tracking_uri}")  # and do not create an empty one
    client = MlflowClient(tracking_uri=tracking_uri)
    if experiment_name is not None:
        exp = retry(lambda: client.get_experiment_by_name(experiment_name), "get experiment")
        if exp is None:
            raise LookupError(f"no MLflow experiment {experiment_name!r} in {tracking_uri}")
        ids = [exp.experiment_id]
    else:
        ids = [e.experiment_id for e in retry(lambda: client.search_experiments(), "list experiments")]
    runs = (
        retry(
            lambda: client.search_runs(
                ids,
                filter_string=f"tags.`{ROLE}` = 'sweep'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            ),
            "search sweeps",
        )
        if ids
        else []
    )
    if not runs:
        where = f"experiment {experiment_name!r}" if experiment_name else "any experiment"
        raise LookupError(f"no sweep recorded in {where} of {tracking_uri}; run `mixopt sweep` first")
    run_id = runs[0].info.run_id
    if "config.yaml" not in {a.path for a in retry(lambda: client.list_artifacts(run_id), "list artifacts")}:
        raise LookupError(f"sweep run {run_id} in {tracking_uri} recorded no config.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        path = retry(lambda: client.download_artifacts(run_id, "config.yaml", tmp), "download config.yaml")
        text = Path(path).read_text()
    data, lines = parse_yaml(text, f"config.yaml of sweep run {run_id}")
    return experiment_from_dict(data, source=f"config.yaml of sweep run {run_id}", lines=lines), run_id


def recorded_optimizer_state(tracking_uri: str, experiment_name: str) -> tuple[dict, str]:
    """The optimizer state of the newest sweep of ``experiment_name``, for a warm start.

    Read from the sweep's state file (tag ``mixopt.state_path``) when it is still there, else from
    the ``optimizer_state.json`` artifact a finished sweep logs. Returns ``(state, run id)``;
    raises LookupError when there is no such sweep or state.
    """
    import json
    import tempfile

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = retry(lambda: client.get_experiment_by_name(experiment_name), "get experiment")
    if exp is None:
        raise LookupError(f"optimizer.warm_start: no MLflow experiment {experiment_name!r} in {tracking_uri}")
    runs = retry(
        lambda: client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{ROLE}` = 'sweep'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        ),
        "search sweeps",
    )
    if not runs:
        raise LookupError(
            f"optimizer.warm_start: experiment {experiment_name!r} has no sweep in {tracking_uri}"
        )
    run = runs[0]
    path = run.data.tags.get(STATE_PATH)
    if path and Path(path).is_file():
        return json.loads(Path(path).read_text()), run.info.run_id
    names = {a.path for a in retry(lambda: client.list_artifacts(run.info.run_id), "list artifacts")}
    if "optimizer_state.json" not in names:
        raise LookupError(
            f"optimizer.warm_start: sweep run {run.info.run_id} of {experiment_name!r} has neither its state "
            f"file ({path}) nor an optimizer_state.json artifact"
        )
    with tempfile.TemporaryDirectory() as tmp:
        local = retry(
            lambda: client.download_artifacts(run.info.run_id, "optimizer_state.json", tmp), "download state"
        )
        return json.loads(Path(local).read_text()), run.info.run_id
