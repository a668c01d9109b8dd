"""``mixopt gc``: delete the checkpoints of finished sweeps that ``storage_keep`` would not keep."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mixopt.cli.common import (
    experiment_file_argument,
    experiment_option,
    fail,
    find_sweep,
    tracking_uri_option,
)
from mixopt.human import human_bytes


def gc(
    experiment_file: Optional[Path] = experiment_file_argument(
        "The sweep's experiment YAML (its storage_keep)."
    ),
    experiment: Optional[str] = experiment_option(),
    keep: Optional[int] = typer.Option(
        None, "--keep", min=1, help="Checkpoints kept per sweep by objective (default: storage_keep.top)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be deleted; delete nothing."),
    tracking_uri: Optional[str] = tracking_uri_option(),
) -> None:
    """Delete the checkpoints of an experiment's finished sweeps that storage_keep would not keep.

    The experiment and its storage_keep (pins, verification runs) come from the YAML, else from the
    config the newest sweep (of --experiment) recorded; --keep N overrides storage_keep.top.
    """
    # The retention pass and the tracking store are imported when the command runs: MLflow takes
    # seconds to load, which `mixopt --help` must not wait for.
    from mixopt.sweep.retention import Keep, describe, gc_experiment
    from mixopt.tracking.store import connect, store_exists

    target = find_sweep(experiment_file, experiment, tracking_uri)
    if experiment_file is None and not store_exists(target.uri):
        fail(f"no MLflow store at {target.uri}: pass --tracking-uri")
    if target.exp is None:
        if experiment is None:
            fail(target.missing())
        if keep is None:
            fail(f"--experiment {experiment}: {target.error}; give --keep N")
    elif target.run_id is not None:
        typer.echo(
            f"[mixopt] sweep run {target.run_id} (experiment {target.name!r}): using its recorded config"
        )
    name = str(target.name)
    cfg = target.exp.storage_keep if target.exp is not None else None
    if cfg is None and keep is None:
        fail(f"experiment {name!r} sets no storage_keep: give --keep N (checkpoints kept per sweep)")
    # With sweep.log_checkpoints, a checkpoint goes only once MLflow holds it whole.
    logged_first = target.exp is not None and target.exp.sweep.log_checkpoints
    try:
        sweeps = gc_experiment(connect(target.uri), name, Keep.from_config(cfg, keep, logged_first), dry_run)
    except LookupError as e:
        fail(str(e))
    verb = "would prune" if dry_run else "pruned"
    for s in sweeps:
        if s.outcome is None:
            typer.echo(f"[mixopt] sweep run {s.run_id}: skipped, {s.skipped}")
            continue
        typer.echo(f"[mixopt] sweep run {s.run_id} ({s.storage}): {len(s.outcome.kept)} checkpoints kept")
        for line in describe(s.outcome, verb):
            typer.echo(f"[mixopt]   {line}")
    freed = sum(s.outcome.freed for s in sweeps if s.outcome is not None)
    typer.echo(
        f"[mixopt] {'would free' if dry_run else 'freed'} {human_bytes(freed)} in {len(sweeps)} sweep(s)"
    )
