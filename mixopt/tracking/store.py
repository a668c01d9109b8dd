"""Every read of the MLflow store: the one place that queries runs, experiments and artifacts.

Each call goes through :func:`retry`, so a locked sqlite file or a restarting tracking server
delays a read instead of failing it. Errors that no retry can mend (a run id that does not
exist, an invalid filter) are raised at once, so a user's typo does not wait for the backoff.

The sweep's writer (:class:`mixopt.tracking.writer.SweepTracker`), the soup, ``mixopt eval`` and
the warm start all read through these functions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlparse

from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from mixopt.checksums import digests, sha256_file
from mixopt.config import Experiment as ExperimentConfig
from mixopt.config import experiment_from_dict, parse_yaml
from mixopt.tracking.tags import (
    CONFIG,
    CONFIG_ARTIFACT,
    PARENT,
    ROLE,
    ROLE_SWEEP,
    ROLE_TRIAL,
    STATE_ARTIFACT,
    STATE_PATH,
    TRIAL_ID,
)

if TYPE_CHECKING:
    from mlflow.entities import Experiment, Run

log = logging.getLogger("mixopt.tracking")
T = TypeVar("T")

# The client type that the soup and ``mixopt eval`` receive and pass back to these functions.
Client = MlflowClient
DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow error codes that mean the request itself is wrong: asking again gives the same answer.
_PERMANENT = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
_PAGE = 1000  # MLflow's largest page of search_runs


def retry(
    fn: Callable[[], T],
    what: str,
    attempts: int = 8,
    base_delay: float = 0.2,
    permanent: Callable[[Exception], bool] | None = None,
) -> T:
    """Call ``fn``, retrying transient store errors (locked sqlite, a restarting server) with backoff.

    The delay before attempt ``i + 1`` is ``base_delay * 2**i`` seconds. An error for which
    ``permanent`` returns True is raised at once.
    """
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # MLflow wraps sqlite and HTTP errors in several exception types
            if i == attempts - 1 or (permanent is not None and permanent(e)):
                raise
            delay = base_delay * 2**i
            log.warning("MLflow %s failed (%s); retrying in %.1fs", what, e, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _is_permanent(e: Exception) -> bool:
    return getattr(e, "error_code", None) in _PERMANENT


def _read(fn: Callable[[], T], what: str) -> T:
    return retry(fn, what, permanent=_is_permanent)


# --------------------------------------------------------------------------- the store


def resolve_uri(tracking_uri: str | None) -> str:
    """The tracking URI given, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def store_exists(tracking_uri: str) -> bool:
    """False for a sqlite store whose file is missing (reading must not create an empty one)."""
    return not (
        tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).exists()
    )


def connect(tracking_uri: str) -> MlflowClient:
    """A client of the store at ``tracking_uri``."""
    return MlflowClient(tracking_uri=tracking_uri)


def experiment_by_name(client: MlflowClient, name: str) -> Experiment | None:
    return _read(lambda: client.get_experiment_by_name(name), "get experiment")


def experiment_ids(client: MlflowClient) -> list[str]:
    """The ids of every (active) experiment in the store."""
    return [e.experiment_id for e in _read(lambda: client.search_experiments(), "list experiments")]


def get_run(client: MlflowClient, run_id: str) -> Run:
    """The run ``run_id``; MLflow's ``RESOURCE_DOES_NOT_EXIST`` error when there is none."""
    return _read(lambda: client.get_run(run_id), "read run")


def experiment_name_of_run(client: MlflowClient, run_id: str) -> str:
    experiment_id = get_run(client, run_id).info.experiment_id
    return _read(lambda: client.get_experiment(experiment_id), "get experiment").name


# --------------------------------------------------------------------------- searches


def search_all(
    client: MlflowClient,
    experiment_ids: Sequence[str],
    filter_string: str = "",
    order_by: Sequence[str] | None = None,
    what: str = "search runs",
) -> list[Run]:
    """Every active run matching ``filter_string``, page by page (MLflow returns at most 1000 a call)."""
    runs: list[Run] = []
    token = None
    while True:
        page = _read(
            lambda t=token: client.search_runs(
                list(experiment_ids),
                filter_string=filter_string,
                max_results=_PAGE,
                order_by=list(order_by) if order_by else None,
                page_token=t,
            ),
            what,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _first(
    client: MlflowClient, experiment_ids: Sequence[str], filter_string: str, n: int, what: str
) -> list[Run]:
    """The ``n`` most recently started runs matching ``filter_string``."""
    if not experiment_ids:
        return []
    return _read(
        lambda: client.search_runs(
            list(experiment_ids),
            filter_string=filter_string,
            order_by=["attributes.start_time DESC"],
            max_results=n,
        ),
        what,
    )


def newest_sweeps(client: MlflowClient, experiment_ids: Sequence[str], n: int) -> list[Run]:
    """The ``n`` most recently started sweep runs (``mixopt.role=sweep``), newest first."""
    return _first(client, experiment_ids, f"tags.`{ROLE}` = '{ROLE_SWEEP}'", n, "search sweeps")


def newest_sweep(client: MlflowClient, experiment_ids: Sequence[str]) -> Run | None:
    """The most recently started sweep run of the experiments, if any."""
    runs = newest_sweeps(client, experiment_ids, 1)
    return runs[0] if runs else None


def newest_run_tagged(
    client: MlflowClient, experiment_ids: Sequence[str], key: str, value: str
) -> Run | None:
    """The most recently started run whose tag ``key`` is ``value``, if any."""
    runs = _first(client, experiment_ids, f"tags.`{key}` = '{value}'", 1, "search runs")
    return runs[0] if runs else None


def trial_runs(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str | None = None,
    order_by: Sequence[str] | None = None,
) -> list[Run]:
    """The trial runs (``mixopt.role=trial``) of an experiment, or of one sweep run ``parent_id``."""
    where = f"tags.`{ROLE}` = '{ROLE_TRIAL}'"
    if parent_id is not None:
        where = f"tags.`{PARENT}` = '{parent_id}' and {where}"
    return search_all(client, [experiment_id], where, order_by, "search trials")


def trial_run(client: MlflowClient, experiment_id: str, parent_id: str, trial_id: str) -> Run | None:
    """The run of trial ``trial_id`` under sweep run ``parent_id``, if one was created.

    Not retried here: the writer calls it inside its own retried create (see
    :meth:`SweepTracker.start_trial`), which retries the lookup with the create.
    """
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT}` = '{parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
        max_results=1,
    )
    return runs[0] if runs else None


def metric_history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """Every logged value of metric ``key`` of run ``run_id``, by step (the last value of a step)."""
    history = _read(lambda: client.get_metric_history(run_id, key), "get metric history")
    return {int(m.step): float(m.value) for m in sorted(history, key=lambda m: (m.step, m.timestamp))}


def runs_with_prefix(client: MlflowClient, experiment_id: str, prefix: str) -> list[Run]:
    """Every run of the experiment whose id starts with ``prefix`` (lower-case hex)."""
    return [r for r in search_all(client, [experiment_id]) if r.info.run_id.startswith(prefix)]


# --------------------------------------------------------------------------- what a sweep recorded


def artifact_text(client: MlflowClient, run_id: str, name: str) -> str | None:
    """The text of the run's top-level artifact ``name``; None when the run has no such artifact."""
    names = {a.path for a in _read(lambda: client.list_artifacts(run_id), "list artifacts")}
    if name not in names:
        return None
    with _no_progress_bar(), tempfile.TemporaryDirectory() as tmp:
        path = _read(lambda: client.download_artifacts(run_id, name, tmp), f"download {name}")
        return Path(path).read_text()


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar on stderr for every download: noise between one-line messages."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _local_root(artifact_uri: str) -> Path | None:
    """The folder of a local artifact store (``file:`` URI or plain path); None for any other."""
    scheme = urlparse(artifact_uri).scheme
    if scheme == "file":
        return Path(local_file_uri_to_path(artifact_uri))
    return Path(artifact_uri) if scheme == "" else None


def artifact_digests(client: MlflowClient, run_id: str, path: str) -> dict[str, str]:
    """SHA-256 of every file the run's artifact folder ``path`` holds, by path relative to it
    ({} when it holds nothing).

    A local artifact store is read in place; any other (a tracking server's, a bucket) is listed
    and each file downloaded into a temporary folder, hashed and deleted, one at a time.
    """
    root = _local_root(get_run(client, run_id).info.artifact_uri)
    if root is not None:
        return digests(root / path) if (root / path).is_dir() else {}

    def files(folder: str) -> list[str]:
        out = []
        for info in _read(lambda: client.list_artifacts(run_id, folder), "list artifacts"):
            out += files(info.path) if info.is_dir else [info.path]
        return out

    found = {}
    with _no_progress_bar(), tempfile.TemporaryDirectory() as tmp:
        for name in files(path):
            got = Path(_read(lambda n=name: client.download_artifacts(run_id, n, tmp), f"download {name}"))
            found[name[len(path) :].lstrip("/")] = sha256_file(got)
            got.unlink()
    return found


def recorded_config(client: MlflowClient, run: Run) -> tuple[str, str | None]:
    """The config in force on sweep run ``run``: (artifact name, its text; None if not logged).

    ``config.yaml`` as the sweep started, or the ``config-N.yaml`` a resume with
    ``--allow-config-change`` recorded (the run's tag ``mixopt.config`` names it).
    """
    name = run.data.tags.get(CONFIG) or CONFIG_ARTIFACT
    return name, artifact_text(client, run.info.run_id, name)


def recorded_state(client: MlflowClient, run: Run) -> dict | None:
    """The optimizer state of sweep run ``run``: its state file (tag ``mixopt.state_path``) while it
    is still there, else the ``optimizer_state.json`` artifact a finished sweep logs; None if neither."""
    path = run.data.tags.get(STATE_PATH)
    if path and Path(path).is_file():
        return json.loads(Path(path).read_text())
    text = artifact_text(client, run.info.run_id, STATE_ARTIFACT)
    return None if text is None else json.loads(text)


def newest_sweep_run(tracking_uri: str, experiment_name: str | None = None) -> Run:
    """The newest sweep run of ``experiment_name`` (of any experiment when None).

    Raises LookupError, one line naming what is missing: the store (a missing sqlite file is not
    created), the experiment, or a sweep in it.
    """
    if not store_exists(tracking_uri):
        raise LookupError(f"no MLflow store at {tracking_uri}")  # and do not create an empty one
    client = connect(tracking_uri)
    if experiment_name is not None:
        exp = experiment_by_name(client, experiment_name)
        if exp is None:
            raise LookupError(f"no MLflow experiment {experiment_name!r} in {tracking_uri}")
        ids = [exp.experiment_id]
    else:
        ids = experiment_ids(client)
    run = newest_sweep(client, ids)
    if run is None:
        where = f"experiment {experiment_name!r}" if experiment_name else "any experiment"
        raise LookupError(f"no sweep recorded in {where} of {tracking_uri}; run `mixopt sweep` first")
    return run


def recorded_experiment(
    tracking_uri: str, experiment_name: str | None = None
) -> tuple[ExperimentConfig, str]:
    """The experiment config recorded by the newest sweep (of ``experiment_name``, or of any experiment).

    Every sweep logs its resolved config (absolute paths) as ``config.yaml`` on its parent run, so
    ``mixopt soup --runs top5`` can find the tasks and the trainer without the YAML at hand.
    Returns ``(Experiment, parent run id)``; raises LookupError when the store has no sweep
    (:func:`newest_sweep_run`) and ConfigError when the recorded config does not validate.
    """
    run = newest_sweep_run(tracking_uri, experiment_name)
    run_id = run.info.run_id
    name, text = recorded_config(connect(tracking_uri), run)
    if text is None:
        raise LookupError(f"sweep run {run_id} in {tracking_uri} recorded no {name}")
    data, lines = parse_yaml(text, f"{name} of sweep run {run_id}")
    return experiment_from_dict(data, source=f"{name} of sweep run {run_id}", lines=lines), run_id


def recorded_optimizer_state(tracking_uri: str, experiment_name: str) -> tuple[dict, str]:
    """The optimizer state of the newest sweep of ``experiment_name``, for a warm start.

    Read by :func:`recorded_state`. Returns ``(state, run id)``; raises LookupError when there is
    no such sweep or state.
    """
    client = connect(tracking_uri)
    exp = experiment_by_name(client, experiment_name)
    if exp is None:
        raise LookupError(f"optimizer.warm_start: no MLflow experiment {experiment_name!r} in {tracking_uri}")
    run = newest_sweep(client, [exp.experiment_id])
    if run is None:
        raise LookupError(
            f"optimizer.warm_start: experiment {experiment_name!r} has no sweep in {tracking_uri}"
        )
    state = recorded_state(client, run)
    if state is None:
        raise LookupError(
            f"optimizer.warm_start: sweep run {run.info.run_id} of {experiment_name!r} has neither its state "
            f"file ({run.data.tags.get(STATE_PATH)}) nor an optimizer_state.json artifact"
        )
    return state, run.info.run_id
