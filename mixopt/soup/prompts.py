"""The soup's prompts: which task's prompts ``encode_query`` / ``encode_document`` use.

A checkpoint keeps every task's prompts as ``<task>/query`` and ``<task>/document`` in
``config_sentence_transformers.json``. sentence-transformers' ``encode_query`` and
``encode_document`` look up the prompts named ``query`` and ``document`` (and fill in empty ones
when a model has none), so the soup sets those two from one task: the one named with
``--prompt-task``, else the experiment's first retrieval task, else the ones the checkpoints carry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mixopt import atomic
from mixopt.soup.ingredients import SoupError

if TYPE_CHECKING:
    from mixopt.config import TaskConfig

CONFIG_FILE = "config_sentence_transformers.json"


def default_prompt_task(tasks: Sequence[TaskConfig]) -> str | None:
    """The experiment's first retrieval task, else its first task; None without tasks."""
    first = next((t for t in tasks if t.kind.value == "retrieval"), tasks[0] if tasks else None)
    return None if first is None else first.name


def check_prompt_task(name: str, tasks: Sequence[TaskConfig]) -> None:
    """SoupError unless ``name`` is one of ``tasks`` (when the experiment is known)."""
    names = [t.name for t in tasks]
    if tasks and name not in names:
        raise SoupError(f"--prompt-task {name!r}: not a task of the experiment; choose one of {names}")


def set_query_document(directory: Path, task: str | None) -> tuple[dict[str, str], str | None]:
    """Set ``query`` / ``document`` in ``directory``'s prompts to ``<task>/query`` / ``<task>/document``.

    ``task`` None keeps the checkpoints' own ``query`` / ``document`` if they have them, else takes
    the first task whose prompts they hold (the experiment's first, as the trainer saves them). Written
    atomically. Returns every prompt (name -> text) and the task they were taken from (None when
    kept as they were). SoupError when the checkpoints hold no prompts of ``task``.
    """
    path = Path(directory) / CONFIG_FILE
    config = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    prompts = {str(k): str(v) for k, v in (config.get("prompts") or {}).items() if v is not None}
    if task is None and ("query" not in prompts or "document" not in prompts):
        task = next((k[: -len("/query")] for k in prompts if k.endswith("/query")), None)
    if task is not None:
        if f"{task}/query" not in prompts or f"{task}/document" not in prompts:
            have = sorted({k.rsplit("/", 1)[0] for k in prompts if "/" in k})
            raise SoupError(
                f"--prompt-task {task!r}: the checkpoints hold no prompts of that task "
                f"(they hold prompts of {have or 'no task'}); name one of those"
            )
        prompts["query"], prompts["document"] = prompts[f"{task}/query"], prompts[f"{task}/document"]
        config["prompts"] = prompts
        atomic.write_text(path, json.dumps(config, indent=2) + "\n", fsync=False)
    return prompts, task
