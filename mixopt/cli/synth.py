"""``mixopt synth``: synthetic tasks in the real format, and a tiny Gemma3 encoder to train on them."""

from __future__ import annotations

from pathlib import Path

import typer

from mixopt.cli.common import fail
from mixopt.synth import MODEL_TRAINER, SynthError, synthesize
from mixopt.trial import TrainerError


def synth(
    out: Path = typer.Option(
        Path("data/synthetic"),
        "--out",
        help="Output folder (an earlier synth output there is replaced; any other folder is refused).",
    ),
    tasks: int = typer.Option(
        3, "--tasks", min=1, help="Number of tasks (kinds rotate retrieval, sts, classification)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes identical bytes."),
    trainer: str = typer.Option(
        MODEL_TRAINER, "--trainer", help="The trainer target whose write_synth_model hook writes OUT/model."
    ),
) -> None:
    """Write synthetic tasks in the real format, plus a tiny Gemma3 encoder and tokenizer (OUT/model)."""
    try:
        meta = synthesize(out, n_tasks=tasks, seed=seed, trainer=trainer)
    except TrainerError as e:
        fail(f"--trainer: {e}")
    except SynthError as e:
        fail(str(e))
    for t in meta["tasks"]:
        typer.echo(
            f"{out / t['name']}: {t['kind']}, {t['private_words_per_concept']} private words/concept, "
            f"{t['noise_words_per_text']} noise words/text"
        )
    typer.echo(f"{out / 'model'}: tiny bidirectional Gemma3 encoder + tokenizer")
