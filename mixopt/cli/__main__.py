"""``python -m mixopt.cli``: the ``mixopt`` command line."""

from mixopt.cli import app

app()
