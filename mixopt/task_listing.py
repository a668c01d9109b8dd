"""What ``mixopt tasks`` shows of a task: its source, its row counts, example rows as the model sees them.

Row counts only where they are cheap to know (Parquet metadata, JSON Lines lines, an Arrow
split's length; a streamed dataset's are not); the example rows are the first train rows with
the task's prompts applied, as in training and evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixopt.data import ClassificationRow, PairClassificationRow, RetrievalRow, Row, STSRow, iter_rows


def count_rows(source: Any) -> int | None:
    """Rows of a task source where cheap to know: Parquet metadata, JSONL lines, an Arrow split."""
    if hasattr(source, "num_rows"):
        return source.num_rows()
    path = Path(source)
    if not path.is_file():
        return None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # only for a Parquet file: `mixopt tasks` of JSONL tasks never needs it

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def _clip(text: str, width: int = 100) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def prompted_fields(row: Row, prompt_query: str, prompt_document: str) -> list[tuple[str, str]]:
    """A row's texts as the model sees them (prompts applied, as in training and evaluation)."""
    if isinstance(row, RetrievalRow):
        out = [("query", prompt_query + row.query), ("positive", prompt_document + row.positive)]
        out += [(f"negative {i + 1}", prompt_document + n) for i, n in enumerate(row.negatives)]
        return out
    if isinstance(row, STSRow):
        return [
            ("text1", prompt_query + row.text1),
            ("text2", prompt_document + row.text2),
            ("score", f"{row.score:g}"),
        ]
    if isinstance(row, PairClassificationRow):
        return [
            ("text1", prompt_query + row.text1),
            ("text2", prompt_document + row.text2),
            ("label", str(row.label)),
        ]
    assert isinstance(row, ClassificationRow)
    return [("text", prompt_query + row.text), ("label", row.label)]


def describe_task(task: Any, examples: int = 2) -> list[str]:
    """Lines describing one task: its source, row counts where known, and example rows with prompts.

    Raises :class:`mixopt.data.DataError` when the data cannot be read.
    """
    lines = [f"{task.name} ({task.kind.value}, metric {task.metric}): {task.source}"]
    for role, source in (("train", task.train_file), ("dev", task.dev_file)):
        n = count_rows(source)
        lines.append(f"  {role}: {source} — {'rows unknown (streamed)' if n is None else f'{n} rows'}")
    for i, row in enumerate(iter_rows(task.train_file, task.kind.value)):
        if i >= examples:
            break
        lines.append(f"  example {i + 1}:")
        lines += [
            f"    {k}: {_clip(v)}" for k, v in prompted_fields(row, task.prompt.query, task.prompt.document)
        ]
    return lines
