"""What the commands do first: fail in one line, read the YAML, find the sweep a command is about.

The commands that work on a recorded sweep (``soup``, ``gc``, ``recommend``) take the sweep's
experiment YAML, or ``--experiment NAME``, or nothing: then the config the newest sweep recorded
on its MLflow parent run (every sweep logs its resolved config) stands in for the YAML
(:func:`find_sweep`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Optional

import typer

from mixopt.config import ConfigError, Experiment, load_experiment

TRACKING_URI_HELP = (
    "MLflow tracking URI (default: the YAML's, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code`` (2: the command was given something wrong)."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


def load(path: Path, check_data: bool = False, sweep: bool = False) -> Experiment:
    """The validated experiment of a YAML, or exit naming every problem with its file:line.

    ``check_data``: also read and validate every row of every task file (``mixopt validate --data``);
    ``sweep``: also refuse a sweep with nothing to optimise (``validate``, ``sweep``).
    """
    try:
        exp = load_experiment(path, sweep=sweep)
    except ConfigError as e:
        fail(str(e))
    if check_data:
        # The sweep's data checks are imported here: the sweep package loads Ray and MLflow, which
        # `mixopt --help` and every other command must not wait for.
        from mixopt.sweep.checks import check_data as check_all_data
        from mixopt.sweep.common import SweepError
        from mixopt.sweep.progress import warn

        try:
            report = check_all_data(exp, mode="full", use_cache=False)
        except SweepError as e:
            fail(str(e))
        for w in report.warnings:
            warn(w)
        typer.echo(f"[mixopt] {report.dev_rows_line()}", err=True)
        if report.unknown_line():
            typer.echo(f"[mixopt] {report.unknown_line()}", err=True)
    return exp


def experiment_file_argument(help: str = "The sweep's experiment YAML.") -> Optional[Path]:
    return typer.Argument(
        None,
        metavar="[EXPERIMENT.yaml]",
        help=f"{help} Default: the config the newest sweep recorded in the tracking store.",
    )


def experiment_option() -> Optional[str]:
    return typer.Option(
        None,
        "--experiment",
        help="MLflow experiment name of the sweep (default: the YAML's, else the newest sweep's).",
    )


def tracking_uri_option(help: str = TRACKING_URI_HELP) -> Optional[str]:
    return typer.Option(None, "--tracking-uri", help=help)


@dataclass(frozen=True)
class SweepTarget:
    """The sweep a command works on, as :func:`find_sweep` found it.

    ``exp``: the YAML's experiment, else the config the sweep recorded (None: neither could be read,
    ``error`` says why); ``uri``: its tracking store; ``name``: its MLflow experiment (None: not
    known); ``run_id``: the sweep run whose recorded config ``exp`` is (None for a YAML).
    """

    exp: Experiment | None
    uri: str
    name: str | None
    run_id: str | None = None
    error: LookupError | ConfigError | None = None

    def missing(self) -> str:
        """The one line for a command that needs the config and found none."""
        return f"{self.error}; give the sweep's EXPERIMENT.yaml or --experiment NAME (its MLflow experiment)"


def find_sweep(experiment_file: Path | None, experiment: str | None, tracking_uri: str | None) -> SweepTarget:
    """The YAML (``experiment`` overriding its experiment name), else the config recorded by the
    newest sweep of ``experiment`` (of any experiment when None) in the store at ``tracking_uri``
    (default: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``).

    A YAML that does not validate exits here; a store without such a sweep, or whose recorded
    config no longer validates, gives a target without ``exp`` and with the ``error``: the command
    decides whether it can go on.
    """
    if experiment_file is not None:
        exp = load(experiment_file)
        return SweepTarget(
            exp, tracking_uri or exp.tracking.resolved_uri(), experiment or exp.experiment_name
        )
    # The tracking store is imported here: MLflow takes seconds to load, which `mixopt --help` must
    # not wait for.
    from mixopt.tracking.store import recorded_experiment, resolve_uri

    uri = resolve_uri(tracking_uri)
    try:
        exp, run_id = recorded_experiment(uri, experiment)
    except (LookupError, ConfigError) as e:
        return SweepTarget(None, uri, experiment, error=e)
    return SweepTarget(exp, uri, exp.experiment_name, run_id)
