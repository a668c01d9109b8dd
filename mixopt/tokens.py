"""How much of a task's text the experiment's tokenizer does not know.

A tokenizer that maps a word it does not know to its unknown token (``<unk>``) makes every such
word the same input: a model trained on text that is mostly ``<unk>`` learns and scores next to
nothing, silently. The share of unknown tokens in a sample of each task's train rows is printed by
``mixopt tasks`` and the sweep's data check, with a warning above :data:`WARN_SHARE`; above
:data:`ERROR_SHARE` the data check refuses the sweep, as it does a local model folder whose
tokenizer does not load.

Only a tokenizer already on this machine is used (a local model directory, or a hub id in the
local cache); none is downloaded. Byte-level tokenizers (no unknown token) are skipped: they know
every text.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mixopt.config import Experiment

from mixopt.data import ClassificationRow, DataError, RetrievalRow, iter_rows

# Rows read per task: enough for a share to within a few points, cheap next to the data check.
SAMPLE_ROWS = 200
# Above this share of unknown tokens a task's text is largely invisible to the model: a warning.
WARN_SHARE = 0.05
# Above this share most of a task's words are one and the same input (the unknown token): its trials
# would train and be scored on noise, so the sweep's data check refuses it (a model folder copied
# without its tokenizer's files, a tokenizer of another language or script).
ERROR_SHARE = 0.5


def row_texts(row: Any) -> list[str]:
    """The texts of a row the encoder sees (prompts aside: they are the user's own words)."""
    if isinstance(row, RetrievalRow):
        return [row.query, row.positive, *row.negatives]
    if isinstance(row, ClassificationRow):
        return [row.text]
    return [row.text1, row.text2]


def local_tokenizer(model: str) -> Any:
    """The tokenizer of ``model`` (a local directory or a cached hub id), or None if it is not here."""
    return _tokenizer(model)[0]


def tokenizer_problem(model: str | None) -> str | None:
    """Why the tokenizer of a local model directory does not load (one line); None for a model that
    is not a local directory (a hub id, read where the trials run) or whose tokenizer loads."""
    if model is None or not Path(model).expanduser().is_dir():
        return None
    error = _tokenizer(model)[1]
    if error is None:
        return None
    return (
        f"trainer.model: {model}: its tokenizer does not load ({error}); every trial would fail on it, "
        "or train on unknown tokens: copy the tokenizer's files (tokenizer.json, tokenizer_config.json...) "
        "into the model folder"
    )


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str) -> tuple[Any, str | None]:
    """``(tokenizer or None, why it did not load or None)`` of a local directory or a cached hub id."""
    try:  # transformers is imported here, where a tokenizer is needed: it takes seconds to load
        from transformers import AutoTokenizer
    except ImportError:
        return None, None
    path = Path(model).expanduser()
    if (path / "modules.json").is_file():  # sentence-transformers: the tokenizer sits with the transformer
        try:
            path = path / json.loads((path / "modules.json").read_text())[0].get("path", "")
        except (OSError, ValueError, IndexError, AttributeError, TypeError) as e:
            return None, f"{path / 'modules.json'} is unreadable: {type(e).__name__}"
    try:
        return AutoTokenizer.from_pretrained(
            str(path) if path.is_dir() else model, local_files_only=True
        ), None
    except Exception as e:  # not on this machine, or no tokenizer
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return None, f"{type(e).__name__}: {first}".rstrip(": ")


def unknown_share(tokenizer: Any, texts: Iterable[str]) -> tuple[float, int] | None:
    """``(unknown tokens / tokens, tokens)`` of ``texts``, special tokens excluded; None if not measurable."""
    unk = getattr(tokenizer, "unk_token_id", None)
    texts = list(texts)
    if unk is None or not texts:
        return None
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    total = sum(len(x) for x in ids)
    if total == 0:
        return None
    return sum(t == unk for x in ids for t in x) / total, total


def task_unknown_shares(exp: Experiment) -> dict[str, tuple[float, int]]:
    """Task name -> (unknown-token share, tokens) over its first :data:`SAMPLE_ROWS` train rows.

    Empty when the experiment's ``trainer.model`` has no local tokenizer with an unknown token.
    Tasks whose rows cannot be read are left out (the data check reports them).
    """
    model = exp.trainer.knobs.model
    tokenizer = local_tokenizer(model) if model is not None else None
    if tokenizer is None or getattr(tokenizer, "unk_token_id", None) is None:
        return {}
    out: dict[str, tuple[float, int]] = {}
    for t in exp.tasks:
        texts: list[str] = []
        try:
            for i, row in enumerate(iter_rows(t.train_file, t.kind.value)):
                if i >= SAMPLE_ROWS:
                    break
                texts += row_texts(row)
        except DataError:
            continue
        share = unknown_share(tokenizer, texts)
        if share is not None:
            out[t.name] = share
    return out


def shares_line(shares: Mapping[str, tuple[float, int]]) -> str:
    return "unknown tokens (the tokenizer's <unk>): " + ", ".join(
        f"{t} {s:.1%} of {n} tokens" for t, (s, n) in shares.items()
    )


def share_warnings(shares: Mapping[str, tuple[float, int]]) -> list[str]:
    """Tasks above :data:`WARN_SHARE` unknown tokens and at most :data:`ERROR_SHARE`."""
    return [
        f"task {t}: {s:.0%} of the tokens of its first {SAMPLE_ROWS} train rows are the tokenizer's "
        f"unknown token; the model cannot tell those words apart: use a tokenizer (trainer.model) that "
        "knows this text's language and script"
        for t, (s, _) in shares.items()
        if WARN_SHARE < s <= ERROR_SHARE
    ]


def share_problems(shares: Mapping[str, tuple[float, int]]) -> list[str]:
    """Tasks above :data:`ERROR_SHARE` unknown tokens: the data check refuses the sweep."""
    return [
        f"task {t}: {s:.0%} of the tokens of its first {SAMPLE_ROWS} train rows are the tokenizer's "
        f"unknown token (more than {ERROR_SHARE:.0%}): its trials would train and be scored on noise; "
        "give trainer.model its own tokenizer's files, or use one that knows this text's language and script"
        for t, (s, _) in shares.items()
        if s > ERROR_SHARE
    ]
