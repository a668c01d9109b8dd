"""Every MLflow write of a sweep: :class:`SweepTracker`.

The tracker lives in the sweep's driver process: trials report to Ray Tune, Tune hands the
results to the driver, and the driver logs them. With a single writer, a sqlite store never sees
concurrent writers ("database is locked"); each call is also retried with backoff, so a busy HTTP
tracking server drops nothing either. The records' layout is described in :mod:`mixopt.tracking`;
reads go through :mod:`mixopt.tracking.store`.
"""

from __future__ import annotations

import json
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag

from mixopt.checksums import digests, verify_checksums
from mixopt.tracking import store
from mixopt.tracking.store import retry
from mixopt.tracking.tags import (
    CHECKPOINT,
    CHECKPOINT_LOGGED,
    CHECKPOINT_UPLOAD_FAILURE,
    EXPERIMENT_KIND,
    EXPERIMENT_TAGS,
    FAILURE,
    FAILURE_KIND,
    PARENT,
    PROPOSAL,
    ROLE,
    ROLE_SWEEP,
    ROLE_TRIAL,
    STAGE,
    STATUS,
    TRIAL_ID,
    VIEW_TAG,
    metric_key,
    mixture_params,
)


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a sqlite store go next to its database file (``<db dir>/mlruns``).

    MLflow's default is ``./mlruns`` under the working directory of whichever process creates the
    experiment; for ``sqlite:///mlflow.db`` that is the same folder, and a store elsewhere keeps its
    artifacts with it instead of scattering them into the caller's working directory.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a tracking server chooses (its --artifacts-destination)
    return (Path(tracking_uri[len("sqlite:///") :]).resolve().parent / "mlruns").as_uri()


def _chunks(items: list, n: int) -> list[list]:
    return [items[i : i + n] for i in range(0, len(items), n)]


class SweepTracker:
    """All MLflow writes of one sweep."""

    def __init__(self, tracking_uri: str, experiment_name: str):
        self.uri = tracking_uri
        self.client = store.connect(tracking_uri)
        exp = store.experiment_by_name(self.client, experiment_name)
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
        # Tags every trial run gets when it starts or restarts (the config it runs under).
        self.trial_tags: dict[str, str] = {}
        # sweep.log_checkpoints: started on the first upload (see CheckpointUploader).
        self.uploader: CheckpointUploader | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the searcher, and the tracker with it; a thread does not pickle, and a copy
        # restored elsewhere starts its own uploader when it needs one.
        return {**self.__dict__, "uploader": None}

    # ------------------------------------------------------------------ parent run

    def start_sweep(
        self, name: str, params: Mapping[str, Any], artifacts: Mapping[str, str], role: str = ROLE_SWEEP
    ) -> str:
        run = retry(
            lambda: self.client.create_run(self.experiment_id, run_name=name, tags={ROLE: role}),
            "create sweep run",
        )
        self.parent_id = run.info.run_id
        self.log_params(self.parent_id, {k: str(v) for k, v in params.items()})
        for filename, text in artifacts.items():
            self.log_text(self.parent_id, text, filename)
        return self.parent_id

    def find_unfinished_sweep(self) -> str | None:
        """The newest sweep run that did not end (the driver was killed), for ``--resume``."""
        runs = store.newest_sweeps(self.client, [self.experiment_id], 20)
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
        """The sweep run ``run_id`` RUNNING again (``--resume``), the reason it stopped cleared."""
        self.parent_id = run_id
        retry(lambda: self.client.update_run(run_id, status="RUNNING"), "reopen sweep")
        self.set_tags(run_id, {FAILURE: ""})

    def end_sweep(self, status: str = "FINISHED") -> None:
        assert self.parent_id is not None
        retry(lambda: self.client.set_terminated(self.parent_id, status=status), "end sweep")

    # ------------------------------------------------------------------ trial runs

    def trial_runs(self, parent_id: str | None = None) -> list[Any]:
        parent_id = parent_id or self.parent_id
        assert parent_id is not None
        return store.trial_runs(self.client, self.experiment_id, parent_id)

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
            **self.trial_tags,
            STAGE: stage,
            ROLE: ROLE_TRIAL,
            PARENT: self.parent_id,
            TRIAL_ID: trial_id,
            STATUS: "RUNNING",
            PROPOSAL: json.dumps(dict(proposal), sort_keys=True),
        }

        def create() -> str:
            # Idempotent: a create whose reply was lost (timeout) may have made the run already.
            existing = store.trial_run(self.client, self.experiment_id, self.parent_id, trial_id)
            if existing is not None:
                return existing.info.run_id
            return self.client.create_run(self.experiment_id, run_name=trial_id, tags=tags).info.run_id

        run_id = retry(create, "create trial run")
        params = mixture_params(proposal, task_names) | {"origin": origin, "seed": str(seed)}
        self.log_params(run_id, params)
        return run_id

    def restart_trial(self, run_id: str, params: Mapping[str, Any] | None = None) -> None:
        """A trial interrupted by a killed driver (or failed by the infrastructure) runs again in its
        own MLflow run; the earlier attempt's failure and its kind are cleared.

        ``params`` are the ones its first start logs: a driver killed between creating the run and
        logging them left some out, so the missing ones are logged now (MLflow params are write-once).
        """
        retry(lambda: self.client.update_run(run_id, status="RUNNING"), "restart trial")
        self.set_tags(run_id, {**self.trial_tags, STATUS: "RUNNING", FAILURE: "", FAILURE_KIND: ""})
        if params:
            have = store.get_run(self.client, run_id).data.params
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

    def upload_checkpoint(self, run_id: str, path: str | Path) -> None:
        """Queue ``path`` for the artifact ``checkpoint`` of ``run_id``; returns without copying it."""
        if self.uploader is None:
            self.uploader = CheckpointUploader(self)
        self.uploader.put(run_id, Path(path))

    def upload_missing_checkpoints(self, parent_id: str | None = None) -> int:
        """Queue every finished trial's checkpoint that is on disk but not complete in MLflow (no
        :data:`CHECKPOINT_LOGGED` tag: the driver was killed before its upload ended, or it failed);
        the number queued. For ``--resume`` with ``sweep.log_checkpoints``."""
        n = 0
        for run in self.trial_runs(parent_id):
            tags = run.data.tags
            path = tags.get(CHECKPOINT)
            if tags.get(STATUS) == "FINISHED" and path and tags.get(CHECKPOINT_LOGGED) != "true":
                if Path(path).is_dir():
                    self.upload_checkpoint(run.info.run_id, path)
                    n += 1
        return n

    def wait_for_uploads(self, drain: bool = True, timeout: float | None = None) -> int:
        """Stop the uploader: with ``drain``, after every queued upload; without, after the one in
        progress (the queued ones are left to ``--resume``). The number left undone."""
        if self.uploader is None:
            return 0
        left = self.uploader.close(drain, timeout)
        self.uploader = None
        return left

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


def _warn(message: str) -> None:
    print(f"[mixopt] warning: {message}", file=sys.stderr, flush=True)


class IncompleteUpload(RuntimeError):
    """MLflow's copy of a checkpoint lacks a file, or holds one whose SHA-256 is not the disk's."""


class CheckpointUploader:
    """Copies trial checkpoints into MLflow's artifact store on a background thread.

    A checkpoint is gigabytes: copied in Tune's callback, it would hold up every result and
    proposal of the sweep meanwhile. The callback queues ``(run id, directory)`` instead; the
    queue is bounded (``maxsize``), so a store slower than the trials makes the callback wait
    rather than leave an ever longer backlog for the end of the sweep.

    An upload counts once it is confirmed whole: the checkpoint on disk is first checked against
    its ``mixopt_checksums.json``, then every one of its files must be in MLflow's copy with the
    same SHA-256 (:func:`mixopt.tracking.store.artifact_digests`). Each upload is tried
    ``attempts`` times, waiting ``base_delay * 2**i`` seconds after attempt ``i``. Only a confirmed
    upload tags the run :data:`CHECKPOINT_LOGGED` ``true`` (what ``--resume`` looks for, and what
    ``storage_keep`` waits for before it deletes the disk's copy); a last failure tags it
    :data:`CHECKPOINT_UPLOAD_FAILURE` with the error and prints one warning line, and the sweep
    goes on (the checkpoint stays on disk, never pruned).

    ``upload(run_id, directory)`` does the copy (default: the tracker's client, artifact path
    ``checkpoint``).
    """

    ARTIFACT_PATH = "checkpoint"

    def __init__(
        self,
        tracker: SweepTracker,
        upload: Callable[[str, Path], None] | None = None,
        maxsize: int = 16,
        attempts: int = 4,
        base_delay: float = 1.0,
        warn: Callable[[str], None] = _warn,
    ) -> None:
        self.tracker, self.attempts, self.base_delay, self.warn = tracker, attempts, base_delay, warn
        self.upload = upload or self._copy
        self.queue: queue.Queue[tuple[str, Path] | None] = queue.Queue(maxsize)
        self.stopping = threading.Event()
        self.done: list[str] = []  # run ids whose checkpoint is complete in MLflow
        self.failed: dict[str, str] = {}  # run id -> the last error
        self.thread = threading.Thread(target=self._work, name="mixopt-checkpoint-uploader", daemon=True)
        self.thread.start()

    def _copy(self, run_id: str, path: Path) -> None:
        self.tracker.client.log_artifacts(run_id, str(path), self.ARTIFACT_PATH)

    def confirm(self, run_id: str, path: Path) -> None:
        """Raise unless MLflow's copy of ``path`` holds every file of it with the disk's SHA-256
        (:class:`mixopt.checksums.ChecksumError` when the disk's copy itself is not as written)."""
        verify_checksums(path, f"run {run_id}")
        want = digests(path)
        if not want:
            raise IncompleteUpload(f"{path} holds no file to copy")
        got = store.artifact_digests(self.tracker.client, run_id, self.ARTIFACT_PATH)
        missing = [f for f in want if f not in got]
        if missing:
            raise IncompleteUpload(
                f"MLflow's copy lacks {len(missing)} of the {len(want)} files (first: {missing[0]})"
            )
        differ = [f for f in want if got[f] != want[f]]
        if differ:
            raise IncompleteUpload(f"MLflow's copy of {differ[0]} differs from the disk's (SHA-256)")

    def put(self, run_id: str, path: Path) -> None:
        self.queue.put((run_id, Path(path)))

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if not self.stopping.is_set():  # stopping: left to --resume
                self._upload(*item)

    def _upload(self, run_id: str, path: Path) -> None:
        error = ""
        for i in range(self.attempts):
            try:
                self.upload(run_id, path)
                self.confirm(run_id, path)
                error = ""
                break
            except Exception as e:  # an unreachable store, a full disk, a file gone: never the sweep's end
                error = f"{type(e).__name__}: {e}"
                if i + 1 < self.attempts and not self.stopping.is_set():
                    time.sleep(self.base_delay * 2**i)
        try:
            if error:
                self.failed[run_id] = error
                self.tracker.set_tags(run_id, {CHECKPOINT_UPLOAD_FAILURE: error[:4000]})
                self.warn(
                    f"run {run_id}: checkpoint {path} was not copied whole into MLflow after {self.attempts} "
                    f"attempts ({error.splitlines()[0] if error else ''}); it stays on disk, never pruned, "
                    "and `mixopt sweep --resume` of an unfinished sweep tries again"
                )
            else:
                self.tracker.set_tags(run_id, {CHECKPOINT_LOGGED: "true", CHECKPOINT_UPLOAD_FAILURE: ""})
                self.done.append(run_id)
        except Exception as e:
            self.warn(
                f"run {run_id}: could not record the checkpoint upload's outcome: {type(e).__name__}: {e}"
            )

    def close(self, drain: bool = True, timeout: float | None = None) -> int:
        """End the thread (see :meth:`SweepTracker.wait_for_uploads`); the uploads left undone."""
        if not drain:
            self.stopping.set()
        left = self.queue.qsize()
        self.queue.put(None)
        self.thread.join(timeout)
        return left if not drain else 0
