"""The ``mixopt`` command line: thin commands that validate their input and call the library.

One module per command; :mod:`.common` holds what they all do first (fail in one line, read the
YAML, find the sweep a command is about). ``mixopt = "mixopt.cli:app"`` is the console script and
``python -m mixopt.cli`` runs the same app.
"""

from __future__ import annotations

import typer

from mixopt.cli import eval as eval_command
from mixopt.cli import gc, preflight, recommend, report, soup, sweep, synth, tasks, validate

app = typer.Typer(
    help="Find the best task mixture for finetuning a text-embedding model, then soup the best trials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# In the order `mixopt --help` lists them: from a config to a sweep, then what a sweep leaves.
app.command("validate")(validate.validate)
app.command("tasks")(tasks.tasks)
app.command("synth")(synth.synth)
app.command("sweep")(sweep.sweep)
app.command("preflight")(preflight.preflight)
app.command("soup")(soup.soup)
app.command("gc")(gc.gc)
app.command("report")(report.report)
app.command("eval")(eval_command.eval_)
app.command("recommend")(recommend.recommend)

__all__ = ["app"]
