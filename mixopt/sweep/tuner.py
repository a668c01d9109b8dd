"""Ray and Ray Tune for the sweep: joining the cluster, the trainable, one Tune run of trials.

Ray is imported inside the functions: ``mixopt validate`` imports the sweep's checks and should
start without it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mixopt.config import Experiment
from mixopt.sweep.checks import concurrency_warning, trial_slots
from mixopt.sweep.common import SweepError
from mixopt.sweep.progress import warn
from mixopt.sweep.worker import run_trial
from mixopt.trial import absolute_options

# How long `mixopt sweep --address HOST:PORT` waits for a Ray cluster to answer (seconds).
CONNECT_TIMEOUT = 30.0


def wait_for_ray(address: str | None, timeout: float = CONNECT_TIMEOUT) -> None:
    """Wait (at most ``timeout`` s) until something accepts connections at a Ray address; else SweepError.

    ``ray.init(address=...)`` retries an unreachable cluster for a long time; a TCP probe of the
    cluster's port first turns a wrong address into one line. ``auto`` and no address are left to
    Ray (it answers at once when there is no local cluster).
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address == "auto" or address.startswith("local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # not host:port: let Ray interpret it
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(2.0, max(timeout, 0.1))):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise SweepError(
                    f"no Ray cluster answers at {address} (waited {timeout:.0f}s: {e.strerror or e}); "
                    "start one (ray start --head), check the address, or leave out --address to run "
                    "on a local Ray"
                ) from None
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def ray_init(address: str | None, exp: Experiment) -> str | None:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local Ray; the folder of
    Ray's logs on this machine when this call joined or started it (None: Ray was up already).

    Trial workers' output stays in Ray's worker logs (``log_to_driver=False``) and Ray's own
    driver-side logging is left to the sweep's log file (:mod:`mixopt.sweep.logs`).
    """
    import ray

    # Trials use absolute paths; keep Tune from changing the worker's working directory.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Trainers report loss between evaluations without an objective; Tune's strict check (read by
    # the driver's controller) would otherwise end the whole sweep at the first such report.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    _quiet_tune_failures()
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    # Trial workers log through Tune; per-file progress bars of transformers would only add noise.
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for k, v in env.items():
        os.environ.setdefault(k, v)
    quiet = {"runtime_env": {"env_vars": env}, "log_to_driver": False, "configure_logging": False}
    # Ray's import gives its logger a console handler and no propagation; configure_logging=False
    # makes ray.init remove the handler, and its records go where the process's go (the sweep's log).
    logging.getLogger("ray").propagate = True
    if address:
        try:
            context = ray.init(address=address, **quiet)
        except ConnectionError as e:
            raise SweepError(f"cannot join the Ray cluster at {address}: {e}") from None
    else:
        context = ray.init(include_dashboard=False, **quiet)
    session = (getattr(context, "address_info", None) or {}).get("session_dir")
    return str(Path(session) / "logs") if session else None


def ray_connected() -> bool:
    """Whether this process is connected to Ray (Ray is not imported where nothing has)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def release_ray() -> None:
    """Disconnect this process from Ray (a local Ray it started stops)."""
    if ray_connected():
        import ray

        ray.shutdown()


class _DropTrialTracebacks(logging.Filter):
    """Tune logs each failed trial's whole Ray traceback (~50 lines); the sweep already prints the
    trainer's one-line reason and keeps the traceback in the trial's MLflow run (failure.txt)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (
            msg.startswith("Trial task failed for trial") or msg.startswith("Trials did not complete")
        )


def _quiet_tune_failures() -> None:
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTrialTracebacks) for f in logger.filters):
            logger.addFilter(_DropTrialTracebacks())


def max_concurrent(exp: Experiment) -> int:
    """The one concurrency limit (Tune's ``max_concurrent_trials``): the config's, else what fits."""
    import ray

    resources = ray.cluster_resources()
    if exp.optimizer.max_concurrent:
        w = concurrency_warning(exp, resources, "the Ray cluster")
        if w:
            warn(w)
        return exp.optimizer.max_concurrent
    return max(1, trial_slots(exp, resources))


def make_trainable(exp: Experiment, storage: Path) -> Any:
    """The Tune trainable of every trial (search and verification): ``run_trial`` with resources."""
    from ray import tune

    resources = {"cpu": exp.resources.cpus, "gpu": exp.resources.gpus, **exp.resources.custom}
    return tune.with_resources(
        tune.with_parameters(
            run_trial,
            experiment_json=exp.model_dump_json(),
            options=absolute_options(exp.trainer.options),
            storage_dir=str(storage),
        ),
        resources,
    )


def trial_name(trial: Any) -> str:
    return str(trial.config.get("trial_id", trial.trial_id))


def fit_tuner(
    exp: Experiment,
    trainable: Any,
    searcher: Any,
    num_samples: int,
    concurrent: int,
    callback: Any,
    storage: Path,
    name: str,
    scheduler: Any = None,
) -> None:
    """Run ``num_samples`` trials of ``searcher`` with Ray Tune (the search and the verification).

    One concurrency limit (Tune's ``max_concurrent_trials``), actors reused, trials named by their
    mixopt trial id, Tune's own output off (the sweep prints its own progress).
    """
    from ray import tune

    tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=concurrent,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=f"{name}-{int(time.time())}",
            storage_path=str(storage / "tune"),
            verbose=0,
            callbacks=[callback],
            failure_config=tune.FailureConfig(max_failures=exp.sweep.retries),
            progress_reporter=None,
        ),
    ).fit()
