"""``mixopt sweep``: seed mixtures, then GP-UCB proposals, trials on Ray Tune, all logged to MLflow."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from mixopt.cli.common import fail, load


def sweep(
    experiment: Path = typer.Argument(..., help="Experiment YAML."),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="Ray cluster to join ('auto', or ray://host:10001). Default: $RAY_ADDRESS, "
        "else a local Ray started in this process.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the experiment's unfinished sweep (after a "
        "killed driver): recorded trials are not run again.",
    ),
    max_trials: Optional[int] = typer.Option(
        None, "--max-trials", min=1, help="Override optimizer.max_trials."
    ),
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="No line per trial event; warnings and the end (the trials' table, the recommendation, "
        "the verification line, the report and the MLflow link) still show.",
    ),
    connect_timeout: float = typer.Option(
        30.0,
        "--connect-timeout",
        min=0.0,
        help="Seconds to wait for the Ray cluster at --address to answer before giving up.",
    ),
    data_check: str = typer.Option(
        "full",
        "--data-check",
        help="Before any trial: 'full' validates every row of every task file (cached by file size and "
        "mtime), 'head' only the first 50 rows of each.",
    ),
    allow_config_change: bool = typer.Option(
        False,
        "--allow-config-change",
        help="With --resume: run the remaining trials under a YAML that differs from the sweep's "
        "recorded config (not in its tasks or search space); recorded as config-N.yaml.",
    ),
) -> None:
    """Run the mixture sweep: seed mixtures, then GP-UCB proposals, trials on Ray Tune, all logged to MLflow."""
    # The sweep is imported when it runs: it loads torch, Ray and MLflow, which `mixopt --help`
    # must not wait for.
    from mixopt.sweep import SweepError, run_sweep
    from mixopt.sweep.common import StorageFull, SweepFailed, SweepInterrupted, Terminated
    from mixopt.sweep.progress import cause_line

    if data_check not in ("full", "head"):
        fail(f"--data-check {data_check!r}: choose full or head")
    if allow_config_change and not resume:
        fail("--allow-config-change applies to --resume only (a new sweep records the YAML as it is)")
    exp = load(experiment, sweep=True)
    try:
        summary = run_sweep(
            exp,
            address=address,
            resume=resume,
            max_trials=max_trials,
            verbose=not quiet,
            data_check=data_check,
            connect_timeout=connect_timeout,
            allow_config_change=allow_config_change,
        )
    except SweepInterrupted as e:
        fail(
            f"{experiment}: {e}; continue it with `mixopt sweep {shlex.quote(str(experiment))} --resume`",
            e.exit_code,
        )
    except (SweepFailed, StorageFull) as e:  # no answer to give (bad data, a failed start), or no space
        fail(f"{experiment}: {e}", code=1)
    except KeyboardInterrupt as e:  # before the first trial: nothing ran
        how = " (SIGTERM)" if isinstance(e, Terminated) else ""
        fail(
            f"{experiment}: interrupted{how} before any trial ran; run the command again",
            code=143 if isinstance(e, Terminated) else 130,
        )
    except SweepError as e:
        fail(f"{experiment}: {e}")
    if summary.failed and not summary.finished:
        fail(f"{experiment}: every trial failed ({summary.failed}): {cause_line(summary.trials)}", code=1)
