"""Record a soup in MLflow: its own run in the sweep's experiment, and optionally a registry version.

The client comes from :func:`mixopt.tracking.store.connect`; these are the soup's only writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from mixopt.soup.ingredients import Selection
from mixopt.soup.result import SoupResult
from mixopt.tracking.tags import (
    CHECKPOINT,
    ROLE,
    ROLE_SOUP,
    RUN_NAME,
    SOUP_METHOD,
    SOUP_METRIC,
    SOUP_SWEEP_RUN,
    SOUP_WARNING,
    metric_key,
)

if TYPE_CHECKING:
    from mixopt.tracking.store import Client

# MLflow rejects param values longer than this; longer lists go only into ingredient.<i> params.
_MLFLOW_PARAM_LIMIT = 6000


def log_soup(
    client: Client,
    selection: Selection,
    result: SoupResult,
    register: str | None = None,
    runs_spec: str | None = None,
) -> SoupResult:
    """Record the soup as an MLflow run in the sweep's experiment; optionally register it.

    The run is tagged ``mixopt.role=soup``; params: method, metric, ingredients (run ids); metrics:
    ``objective``, ``score.<task>`` and every per-task dev metric of the soup's evaluation. The
    model card is logged as an artifact. With ``register``, the soup directory is logged under
    the artifact path ``model`` and registered as a new version of model ``register``.
    """
    parents = {i.parent_run_id for i in result.candidates}
    tags = {
        ROLE: ROLE_SOUP,
        SOUP_METHOD: result.method,
        SOUP_METRIC: result.metric,
        CHECKPOINT: str(result.out.resolve()),
        RUN_NAME: f"soup-{result.method}-{len(result.ingredients)}",
    }
    if len(parents) == 1 and None not in parents:
        tags[SOUP_SWEEP_RUN] = str(next(iter(parents)))
    run = client.create_run(selection.experiment_id, tags=tags)
    run_id = run.info.run_id
    try:
        ids = [i.run_id for i in result.ingredients]
        params = {
            "method": result.method,
            "metric": result.metric,
            "runs": runs_spec or str(selection.runs),
            "n_ingredients": str(len(ids)),
        }
        if len(",".join(ids)) <= _MLFLOW_PARAM_LIMIT:
            params["ingredients"] = ",".join(ids)
        params.update({f"ingredient.{n}": rid for n, rid in enumerate(ids)})
        if result.greedy is not None:
            cands = ",".join(i.run_id for i in result.candidates)
            if len(cands) <= _MLFLOW_PARAM_LIMIT:
                params["candidates"] = cands
        metrics: dict[str, float] = {}
        if result.evaluation is not None:
            ev = result.evaluation
            metrics["objective"] = float(ev.objective)
            metrics.update({f"score.{t}": float(v) for t, v in ev.task_scores.items()})
            # The sweep's key mapping, so the soup's metrics line up with its trials' in the UI.
            metrics.update({metric_key(k): float(v) for k, v in ev.task_metrics.items()})
        best = result.best_ingredient
        if best is not None:
            metrics["best_ingredient.score"] = best.best
            metrics["soup_minus_best_ingredient"] = best.soup - best.best
            params["best_ingredient"] = best.run_id
            if best.warning() is not None:
                client.set_tag(run_id, SOUP_WARNING, best.warning())
        now = int(run.info.start_time)
        metric_list = [Metric(k, v, now, 0) for k, v in metrics.items()]
        if result.greedy is not None:
            metric_list += [
                Metric("greedy.soup_score", s.soup_score, now, n) for n, s in enumerate(result.greedy.steps)
            ]
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()], metrics=metric_list)
        client.log_artifact(run_id, str(result.out / "README.md"))
        if register:
            client.log_artifacts(run_id, str(result.out), "model")
            try:
                client.create_registered_model(register, description="mixopt model soup")
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            version = client.create_model_version(
                register,
                source=f"{run.info.artifact_uri}/model",
                run_id=run_id,
                description=f"{result.method} soup of {len(ids)} trials: {', '.join(ids)}",
            )
            result.registered = (register, str(version.version))
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    result.run_id = run_id
    return result
