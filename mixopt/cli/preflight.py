"""``mixopt preflight``: one worst-case trial measured on the sweep's device before the sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mixopt.cli.common import fail, load
from mixopt.preflight import PreflightError, run_preflight


def preflight(
    experiment: Path = typer.Argument(..., help="Experiment YAML."),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="Ray cluster to run on, with the trial's resources ('auto', ray://host:10001). "
        "Default: this process, on its device.",
    ),
    steps: int = typer.Option(3, "--steps", min=1, help="Timed steps (after one warm-up step)."),
    memory_limit_gb: Optional[float] = typer.Option(
        None, "--memory-limit-gb", help="Memory the trial may use, > 0 (default: the device's)."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", help="Use this model directory or hub id instead of trainer.model."
    ),
) -> None:
    """A few steps of one worst-case trial on the sweep's device: peak memory, tokens/s, MFU, the trial's
    load, evaluation and checkpoint write, and the sweep's projected device-hours. Exits 1, naming the
    fix (measured and projected in its turn), if the trial does not fit."""
    exp = load(experiment)
    try:
        result = run_preflight(
            exp,
            address=address,
            steps=steps,
            memory_limit_gb=memory_limit_gb,
            model=model,
            echo=typer.echo,
        )
    except (PreflightError, ValueError) as e:
        fail(f"{experiment}: {e}")
    if not result.fits:
        raise typer.Exit(1)
