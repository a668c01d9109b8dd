"""What the sweep checks before any trial runs."""

from __future__ import annotations

from mixopt.config import Experiment
from mixopt.sweep.common import SweepError


def check_data(exp: Experiment, rows: int = 50) -> None:
    """Fail before anything starts if a task file is missing or its first rows are malformed."""
    from mixopt.data import DataError, iter_rows

    problems = []
    for t in exp.tasks:
        for f in (t.train_file, t.dev_file):
            n = 0
            try:
                for n, _ in enumerate(iter_rows(f, t.kind), start=1):
                    if n >= rows:
                        break
            except DataError as e:
                problems.append(f"task {t.name}: {e}")
                break  # a dataset's train and dev parts usually fail alike: one line per task
            if n == 0:
                problems.append(f"task {t.name}: {f}: has no rows")
                break
    if problems:
        raise SweepError("\n".join(problems))
