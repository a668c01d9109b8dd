"""Evaluate a sentence-transformers directory (a soup, a trial checkpoint) on MTEB with the ``mteb`` package.

``mixopt eval MODEL_DIR_OR_RUN_ID --mteb "MTEB(eng, v2)"`` (a benchmark) or ``--mteb-tasks A,B``
(task names): the model is loaded with ``SentenceTransformer(dir)``, wrapped in mteb's
``SentenceTransformerEncoderWrapper`` with the experiment's prompts (:func:`mteb_prompts`) and run
by ``mteb.evaluate`` (no result cache: every score is computed now). Each task's main score
(``TaskResult.get_score()``: the mean over its evaluation splits and subsets) becomes the MLflow
metric ``mteb.<task>`` on the model's run; the full results (every split, subset and score) are
written as ``mteb_results.json`` next to the model and logged as an artifact; a ``## MTEB`` table is
added to the model card (``README.md``).

Needs the optional extra ``mixopt[mteb]`` (``mteb>=2.2``): ``mteb`` and sentence-transformers are
imported where an evaluation runs, so the rest of mixopt works without them.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from mixopt import atomic
from mixopt.checksums import ChecksumError, verify_checksums
from mixopt.quiet import no_weight_bars
from mixopt.tracking import store
from mixopt.tracking.tags import CHECKPOINT, metric_key

# mixopt task kind -> MTEB task type (mteb's prompt keys are "<type>" or "<type>-query"/"-document").
MTEB_TYPE = {
    "retrieval": "Retrieval",
    "sts": "STS",
    "classification": "Classification",
    "clustering": "Clustering",
    "pair_classification": "PairClassification",
}
CARD_HEADING = "## MTEB"
RESULTS_FILE = "mteb_results.json"


class EvalError(RuntimeError):
    """A model, run, task or benchmark that cannot be evaluated; the message is one line."""


class ModelError(EvalError):
    """The model given does not load (a broken or corrupted file): the user's input to fix."""


@dataclass(frozen=True)
class MtebScore:
    task: str
    task_type: str
    main_metric: str
    score: float


def mteb_prompts(tasks: Sequence[Any], prompt_tasks: Sequence[str] = ()) -> dict[str, str]:
    """mteb prompt keys -> prompt text, from the experiment's tasks.

    Retrieval tasks give ``Retrieval-query`` / ``Retrieval-document`` (and the same for
    ``Reranking``); the others give ``<type>`` -> the task's query prompt (MTEB encodes both sides of
    STS / pair classification alike, as EmbeddingGemma's prompts do). mteb takes one prompt per task
    type, so when tasks of one kind carry different prompts, the one named in ``prompt_tasks``
    decides; with none named, EvalError lists them (one task's prompts must not silently stand for
    another's).
    """
    unknown = [n for n in prompt_tasks if n not in {t.name for t in tasks}]
    if unknown:
        raise EvalError(
            f"--prompt-task {', '.join(unknown)}: not a task of the experiment; "
            f"choose among {[t.name for t in tasks]}"
        )
    by_kind: dict[str, list[Any]] = {}
    for t in tasks:
        by_kind.setdefault(t.kind.value, []).append(t)
    out: dict[str, str] = {}
    for kind, group in by_kind.items():
        named = [t for t in group if t.name in prompt_tasks]
        if len(named) > 1:
            raise EvalError(
                f"--prompt-task names {len(named)} {kind} tasks ({', '.join(t.name for t in named)}); "
                f"mteb takes one prompt per task type: name one"
            )
        distinct = {(t.prompt.query, t.prompt.document) for t in group}
        if named:
            chosen = named[0]
        elif len(distinct) > 1:
            raise EvalError(
                f"the experiment's {kind} tasks {', '.join(t.name for t in group)} have different prompts "
                f"and mteb takes one prompt per task type: name the task whose prompts to use with "
                f"--prompt-task (one per kind, comma-separated)"
            )
        else:
            chosen = group[0]
        if kind == "retrieval":
            for mteb_type in ("Retrieval", "Reranking"):
                out[f"{mteb_type}-query"] = chosen.prompt.query
                out[f"{mteb_type}-document"] = chosen.prompt.document
        else:
            out[MTEB_TYPE[kind]] = chosen.prompt.query
    return {k: v for k, v in out.items() if v}


def resolve_model(target: str, tracking_uri: str) -> tuple[Path, str | None]:
    """``(model directory, MLflow run id or None)`` for a directory or a run id.

    A run id resolves to its checkpoint through the ``mixopt.checkpoint`` tag (trials and soups
    both carry it); a directory finds its run by the same tag, if the store has one.
    """
    path = Path(target)
    if path.is_dir():
        if not (path / "modules.json").exists():
            raise EvalError(f"{path}: not a sentence-transformers directory (no modules.json)")
        if not store.store_exists(tracking_uri):
            return path, None
        client = store.connect(tracking_uri)
        ids = store.experiment_ids(client)
        for p in {str(path.resolve()), str(path)}:
            run = store.newest_run_tagged(client, ids, CHECKPOINT, p)
            if run is not None:
                return path, run.info.run_id
        return path, None
    if not store.store_exists(tracking_uri):
        raise EvalError(
            f"{target}: no such directory, and no MLflow store at {tracking_uri} to look it up as a run id"
        )
    client = store.connect(tracking_uri)
    try:
        run = store.get_run(client, target)
    except MlflowException:
        raise EvalError(f"{target}: neither a directory nor a run id in {tracking_uri}") from None
    ckpt = run.data.tags.get(CHECKPOINT)
    if not ckpt:
        raise EvalError(f"run {target} has no {CHECKPOINT} tag: it recorded no checkpoint")
    ckpt_path = Path(ckpt[len("file://") :] if ckpt.startswith("file://") else ckpt)
    if not (ckpt_path / "modules.json").exists():
        raise EvalError(
            f"run {target}: its checkpoint {ckpt} is not on this machine (or not a model directory)"
        )
    return ckpt_path, target


def load_tasks(benchmark: str | None, names: Sequence[str] | None) -> list[Any]:
    """MTEB task objects of a benchmark (``"MTEB(eng, v2)"``) or of task names.

    A name ``package.module:TaskClass`` imports a custom task (offline data, private sets).
    """
    try:
        import mteb
    except ImportError:
        raise EvalError("MTEB evaluation needs the mteb package: pip install 'mixopt[mteb]'") from None
    if (benchmark is None) == (not names):
        raise EvalError("give exactly one of --mteb BENCHMARK or --mteb-tasks TASK,TASK,...")
    try:
        if benchmark is not None:
            return list(mteb.get_benchmark(benchmark).tasks)
        custom = [_custom_task(n) for n in names or () if ":" in n]
        known = [n for n in names or () if ":" not in n]
        return (list(mteb.get_tasks(tasks=known)) if known else []) + custom
    except (KeyError, ValueError) as e:
        raise EvalError(f"mteb: {str(e).splitlines()[0]}") from None


def _custom_task(path: str) -> Any:
    """``package.module:TaskClass``: a user's own mteb task (an ``AbsTask`` subclass, e.g. overriding ``load_data``)."""
    from mteb.abstasks import AbsTask

    module_name, _, cls_name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise EvalError(f"mteb task {path!r}: cannot import it: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, AbsTask)):
        raise EvalError(f"mteb task {path!r} is not an mteb AbsTask subclass")
    return cls()


def load_model(model_dir: Path, device: str | None = None) -> Any:
    """The model directory as a ``SentenceTransformer``, its files verified first against the
    checksums its writer recorded (:mod:`mixopt.checksums`); EvalError, one line, when a file is
    corrupted or the directory does not load (a broken ``modules.json``, a cut-off weight file):
    :class:`ModelError`."""
    from sentence_transformers import SentenceTransformer

    try:
        verify_checksums(model_dir, str(model_dir))
    except ChecksumError as e:
        # The soup's advice ("drop this run") ends the message; here the model is the one asked for.
        raise ModelError(
            str(e).split(" — ")[0] + "; restore the file from where the model came from"
        ) from None
    try:
        with no_weight_bars():
            return SentenceTransformer(str(model_dir), device=device)
    except Exception as e:  # json, safetensors and transformers each raise their own types
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(
            f"{model_dir}: does not load as a sentence-transformers model ({type(e).__name__}: {first}); "
            "check its modules.json and weight files"
        ) from None


def run_mteb(
    model: Any,
    tasks: Sequence[Any],
    prompts: dict[str, str] | None = None,
    batch_size: int = 32,
    model_dir: Path | None = None,
) -> tuple[list[MtebScore], list[dict[str, Any]]]:
    """Run ``mteb.evaluate`` on a loaded ``SentenceTransformer`` (:func:`load_model`, from
    ``model_dir``); return each task's main score and the full results (JSON-able)."""
    import mteb
    from mteb.models import SentenceTransformerEncoderWrapper

    st = model
    # mixopt's checkpoints keep each task's prompts as "<task>/query": not keys mteb can match.
    st.prompts = {k: v for k, v in (st.prompts or {}).items() if "/" not in k}
    model = SentenceTransformerEncoderWrapper(st, model_prompts=prompts or None)
    try:
        result = mteb.evaluate(
            model,
            list(tasks),
            cache=None,  # no ~/.cache/mteb: every score is computed from this model now
            encode_kwargs={"batch_size": batch_size},
            show_progress_bar=False,
        )
    except Exception as e:  # mteb wraps data and model errors in many types
        raise EvalError(
            f"mteb.evaluate failed on {model_dir}: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from e
    by_name = {t.metadata.name: t for t in tasks}
    scores = [
        MtebScore(
            r.task_name,
            str(by_name[r.task_name].metadata.type) if r.task_name in by_name else "",
            by_name[r.task_name].metadata.main_score if r.task_name in by_name else "main_score",
            float(r.get_score()),
        )
        for r in result.task_results
    ]
    return scores, [r.to_dict() for r in result.task_results]


def format_mteb_table(scores: Sequence[MtebScore]) -> str:
    """A Markdown table: task, type, main metric, score (and the mean)."""
    lines = ["| task | type | metric | score |", "|---|---|---|---|"]
    lines += [f"| {s.task} | {s.task_type} | {s.main_metric} | {s.score:.4f} |" for s in scores]
    if len(scores) > 1:
        mean = sum(s.score for s in scores) / len(scores)
        lines.append(f"| mean ({len(scores)} tasks) | | | {mean:.4f} |")
    return "\n".join(lines)


def add_to_card(model_dir: Path, scores: Sequence[MtebScore], label: str) -> Path:
    """Add (or replace) the ``## MTEB`` section of the model card ``README.md``."""
    card = model_dir / "README.md"
    text = card.read_text(encoding="utf-8") if card.exists() else f"# {model_dir.name}\n"
    if CARD_HEADING in text:
        head, _, rest = text.partition(CARD_HEADING)
        nxt = rest.find("\n## ")
        text = head.rstrip("\n") + ("\n" + rest[nxt + 1 :] if nxt >= 0 else "\n")
    section = (
        f"\n{CARD_HEADING}\n\nEvaluated by `mixopt eval` with mteb ({label}); each score is the task's main "
        "metric, averaged over its evaluation splits (full results: `mteb_results.json`).\n\n"
        + format_mteb_table(scores)
        + "\n"
    )
    atomic.write_text(card, text.rstrip("\n") + "\n" + section, fsync=False)
    return card


def log_to_run(
    tracking_uri: str, run_id: str, scores: Sequence[MtebScore], results_file: Path, card: Path
) -> None:
    """``mteb.<task>`` metrics, the results JSON (artifact ``mteb/``) and the updated card, on ``run_id``."""
    client = store.connect(tracking_uri)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(metric_key(f"mteb.{s.task}"), s.score, now, 0) for s in scores])
    client.log_artifact(run_id, str(results_file), "mteb")
    client.log_artifact(run_id, str(card))


def evaluate_model(
    target: str,
    *,
    benchmark: str | None = None,
    task_names: Sequence[str] | None = None,
    tasks: Sequence[Any] | None = None,
    prompts: dict[str, str] | None = None,
    tracking_uri: str | None = None,
    batch_size: int = 32,
    device: str | None = None,
    run_id: str | None = None,
) -> tuple[Path, str | None, list[MtebScore]]:
    """``mixopt eval``: resolve the model, run MTEB, write results + card, log to the model's MLflow run.

    ``tasks`` (mteb task objects) overrides ``benchmark`` / ``task_names`` (custom tasks);
    ``run_id`` names the model's run when the caller knows it (``mixopt soup --mteb``).
    Returns ``(model directory, run id or None, scores)``.
    """
    uri = store.resolve_uri(tracking_uri)
    if run_id is not None:
        model_dir = Path(target)
    else:
        model_dir, run_id = resolve_model(target, uri)
    model = load_model(model_dir, device)  # before the tasks: a broken model costs no download
    if tasks is None:
        tasks = load_tasks(benchmark, task_names)
    label = benchmark or ", ".join(t.metadata.name for t in tasks)
    scores, results = run_mteb(model, tasks, prompts, batch_size, model_dir)
    results_file = model_dir / RESULTS_FILE
    results_text = json.dumps({"label": label, "results": results}, indent=2, default=str)
    atomic.write_text(results_file, results_text, fsync=False)
    card = add_to_card(model_dir, scores, label)
    if run_id is not None:
        log_to_run(uri, run_id, scores, results_file, card)
    return model_dir, run_id, scores
