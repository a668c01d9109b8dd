"""What the soup reports: the selection, the per-task table, and the model card (``README.md``).

The card is a sentence-transformers model card: the method and its formula (Wortsman et al.,
2022, arXiv:2203.05482), each ingredient's run id, mixture and dev scores, the greedy steps, and
the soup's own dev scores beside the best and the mean ingredient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mixopt.soup.evaluate import metric_of
from mixopt.soup.ingredients import Ingredient, Selection
from mixopt.soup.result import SoupResult
from mixopt.trial import TrialResult

if TYPE_CHECKING:
    from mixopt.config import TaskConfig


def _task_names(
    result_or_ings: Sequence[Ingredient], evaluation: TrialResult | None, tasks: Sequence[TaskConfig]
) -> list[str]:
    if tasks:
        return [t.name for t in tasks]
    names: set[str] = set()
    for ing in result_or_ings:
        names |= set(ing.task_scores)
    if evaluation is not None:
        names |= set(evaluation.task_scores)
    return sorted(names)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def format_table(
    ingredients: Sequence[Ingredient],
    evaluation: TrialResult | None,
    metric: str = "objective",
    tasks: Sequence[TaskConfig] = (),
    kept: Sequence[str] | None = None,
) -> str:
    """Per-task dev scores of each ingredient (MLflow ``score.<task>``) and of the soup, as a text table.

    ``kept`` (greedy): run ids that made it into the soup; the others are marked ``dropped``.
    """
    names = _task_names(ingredients, evaluation, tasks)
    header = ["", "run", metric, *names]
    rows = []
    for ing in ingredients:
        mark = "" if kept is None or ing.run_id in kept else " (dropped)"
        rows.append(
            [
                f"trial {ing.trial_id}{mark}",
                ing.run_id[:8],
                _fmt(ing.value),
                *(_fmt(ing.task_scores.get(t)) for t in names),
            ]
        )
    if evaluation is not None:
        rows.append(
            [
                "soup",
                "",
                _fmt(metric_of(evaluation, metric)),
                *(_fmt(evaluation.task_scores.get(t)) for t in names),
            ]
        )
    else:
        rows.append(["soup", "", "not evaluated", *("-" for _ in names)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_STAGE_NOTE = {"verify": ", a verification run of the recommended mixture"}


def format_selection(selection: Selection) -> str:
    """Which runs were taken and why others were skipped, one per line."""
    lines = [
        f"MLflow experiment {selection.experiment_name!r}: {len(selection.chosen)} ingredient(s), "
        f"--runs {selection.runs}, ranked by {selection.metric}"
    ]
    lines.append(
        "  (candidates: the search trials and the recommended mixture's verification runs; "
        "the baseline arm's verification runs are never ingredients)"
    )
    for ing in selection.chosen:
        lines.append(
            f"  took    {ing.label}{_STAGE_NOTE.get(ing.stage, '')}: {selection.metric} {ing.value:.4f}, "
            f"checkpoint {ing.checkpoint}"
        )
    for s in selection.skipped:
        lines.append(f"  skipped run {s.run_id} (trial {s.trial_id}): {s.reason}")
    lines.extend(f"  note: {n}" for n in selection.notes)
    return "\n".join(lines)


def model_card(result: SoupResult, tasks: Sequence[TaskConfig] = (), experiment_name: str = "") -> str:
    """The soup's README.md: method, ingredients (run ids, mixtures, scores), the soup's scores."""
    names = _task_names(result.candidates, result.evaluation, tasks)
    metric_names = {t.name: t.metric for t in tasks}
    dtypes = ", ".join(result.stats.dtypes) if result.stats else "the checkpoints' dtypes"
    k = len(result.ingredients)
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, model-soup, mixopt]",
        "---",
        "",
        f"# Model soup{f' of {experiment_name}' if experiment_name else ''}: {result.method}, {k} ingredient(s)",
        "",
        "A model soup (Wortsman et al., 2022, arXiv:2203.05482) of finetuned checkpoints from one sweep,",
        "made by `mixopt soup`. Every parameter is the unweighted mean of the ingredients' parameters,",
        "",
        "    theta_soup = (1/K) * sum_k theta_k,",
        "",
        f"accumulated in float32 and cast back to the checkpoints' dtype ({dtypes}).",
    ]
    if result.method == "greedy":
        lines += [
            "",
            f"Ingredients were chosen greedily: sorted by dev {result.metric}, each candidate kept only if the",
            f"soup's dev {result.metric} with it did not drop. Dev rows: {result.split or 'all of them'}.",
        ]
    lines += [
        "",
        "## Ingredients",
        "",
        "The candidates are the sweep's search trials and the verification runs of its recommended",
        "mixture (stage `verify`); the baseline arm's verification runs, which train the mixture the",
        "recommendation was tested against, are never ingredients.",
        "",
    ]
    mix_names = sorted(
        {t for i in result.candidates for t in i.mixture},
        key=lambda t: (names.index(t) if t in names else len(names), t),
    )
    head = [
        "run id",
        "trial",
        "stage",
        result.metric,
        *(f"w.{t}" for t in mix_names),
        *(f"score.{t}" for t in names),
    ]
    if result.greedy is not None:
        head.append("in soup")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    kept = {i.run_id for i in result.ingredients}
    for ing in result.candidates:
        row = [
            f"`{ing.run_id}`",
            ing.trial_id,
            ing.stage,
            f"{ing.value:.4f}",
            *(f"{ing.mixture[t]:.3f}" if t in ing.mixture else "-" for t in mix_names),
            *(_fmt(ing.task_scores.get(t)) for t in names),
        ]
        if result.greedy is not None:
            row.append("yes" if ing.run_id in kept else "no")
        lines.append("| " + " | ".join(row) + " |")
    if result.greedy is not None:
        lines += [
            "",
            "## Greedy steps",
            "",
            f"| step | run id | trial | soup {result.metric} with it | kept |",
            "|---|---|---|---|---|",
        ]
        for n, s in enumerate(result.greedy.steps):
            lines.append(
                f"| {n} | `{s.run_id}` | {s.trial_id} | {s.soup_score:.4f} | {'yes' if s.kept else 'no'} |"
            )
    lines += ["", "## Dev scores of the soup", ""]
    if result.split and result.evaluation is not None:
        lines += [f"Measured on held-out rows: {result.split}.", ""]
    if result.evaluation is None:
        lines.append("Not evaluated (no experiment YAML was given, so the dev tasks were unknown).")
    else:
        ev = result.evaluation
        lines += ["| task | metric | soup | best ingredient | mean of ingredients |", "|---|---|---|---|---|"]
        for t in names:
            vals = [i.task_scores[t] for i in result.ingredients if t in i.task_scores]
            lines.append(
                f"| {t} | {metric_names.get(t) or '-'} | {_fmt(ev.task_scores.get(t))} | "
                f"{_fmt(max(vals) if vals else None)} | {_fmt(sum(vals) / len(vals) if vals else None)} |"
            )
        lines.append(f"| **objective** | | {ev.objective:.4f} | | |")
        lines += _best_ingredient_lines(result)
        if ev.task_metrics:
            lines += ["", "All dev metrics of the soup:", ""]
            lines += [f"- `{key}`: {val:.4f}" for key, val in sorted(ev.task_metrics.items())]
    lines += _prompt_lines(result)
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{result.out}")',
        'query_embeddings = model.encode_query(["..."])  # the prompt named "query"',
        'document_embeddings = model.encode_document(["..."])  # the prompt named "document"',
    ]
    other = next((k for k in result.prompts if "/" in k), None)
    if other is not None:
        lines.append(f'embeddings = model.encode(["..."], prompt_name="{other}")  # any prompt, by name')
    lines += ["```", ""]
    return "\n".join(lines)


def _best_ingredient_lines(result: SoupResult) -> list[str]:
    """The card's comparison of the soup with its best ingredient on the same rows, and the
    warning when the soup is behind (:mod:`mixopt.soup.compare`)."""
    b = result.best_ingredient
    if b is None:
        return []
    lines = [
        "",
        f"Against its best ingredient on {b.rows}: soup {b.metric} {b.soup:.4f}, best ingredient "
        f"(trial {b.trial_id}, run `{b.run_id}`) {b.best:.4f}, difference {b.soup - b.best:+.4f}.",
    ]
    warning = b.warning()
    if warning is not None:
        lines += ["", f"**Warning: {warning}.**"]
    return lines


def _prompt_lines(result: SoupResult) -> list[str]:
    """The card's ``## Prompts``: every prompt name and its text, and where query/document come from."""
    if not result.prompts:
        return []
    where = f"task `{result.prompt_task}`'s prompts" if result.prompt_task else "the checkpoints' own prompts"
    lines = [
        "",
        "## Prompts",
        "",
        f"`encode_query` and `encode_document` prepend the prompts named `query` and `document`: {where}",
        "(`mixopt soup --prompt-task TASK` chooses the task). Each task's own prompts are kept as",
        "`<task>/query` and `<task>/document`, for `encode(..., prompt_name=...)`.",
        "",
        "| prompt name | text |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | `{v}` |" if v else f"| `{k}` | (none) |" for k, v in result.prompts.items()]
    return lines
