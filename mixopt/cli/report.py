"""``mixopt report``: the interactive report of a sweep, finished or still running, as one HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mixopt.cli.common import fail, load


def report(
    experiment_file: Optional[Path] = typer.Argument(None, metavar="[EXPERIMENT.yaml]", help="Sweep YAML."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment name (no YAML)."),
    out: Path = typer.Option(Path("report.html"), "--out", help="The HTML file to write."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Sweep run id (default: the newest sweep)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="Default: the YAML's."),
) -> None:
    """Write the interactive report of a sweep (finished or still running): one self-contained HTML file."""
    # The report reads MLflow and draws with plotly: imported when the command runs, which
    # `mixopt --help` must not wait for.
    from mixopt.report import write_report
    from mixopt.tracking.store import resolve_uri

    exp = load(experiment_file) if experiment_file is not None else None
    uri = tracking_uri or (exp.tracking.resolved_uri() if exp else resolve_uri(None))
    name = exp.experiment_name if exp and experiment is None else experiment
    if name is None and run_id is None:
        fail("give the sweep: EXPERIMENT.yaml, --experiment NAME or --run RUN_ID")
    try:
        data = write_report(out, uri, name, run_id)
    except (LookupError, ValueError) as e:
        fail(str(e))
    done = sum(t.status == "FINISHED" for t in data.trials)
    typer.echo(
        f"[mixopt] {out}: sweep run {data.run_id} ({data.run_status}), {done}/{len(data.trials)} trials"
    )
