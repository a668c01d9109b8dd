"""Third-party progress output kept off mixopt's console: :func:`no_weight_bars`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_weight_bars() -> Iterator[None]:
    """transformers' "Loading weights" bar off while models load (a soup loads one per ingredient,
    each a screenful of bars between mixopt's lines); the caller's setting is back afterwards.
    Where nothing has imported transformers (a trainer without it), nothing is imported here."""
    if "transformers" not in sys.modules:
        yield
        return
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bar:
            hf_logging.enable_progress_bar()
