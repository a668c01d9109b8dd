"""Make the soup: verify and average the ingredients, evaluate, write the model card, rename into place.

Every ingredient's recorded checksums are verified before any averaging (a corrupted file is
refused, naming the run and the file). The averaging streams (:mod:`mixopt.soup.average`), and the
directory appears only once it is complete (:mod:`mixopt.soup.outdir`), so ``out`` is either the
finished soup or untouched; the soup records its own checksums and the marker that lets a later
``--force`` replace it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mixopt.checksums import write_checksums
from mixopt.soup.average import DEFAULT_CHUNK_BYTES, AverageStats, average_into, unverified_line
from mixopt.soup.card import model_card
from mixopt.soup.checkpoints import read_header, verify_checksums, weight_files
from mixopt.soup.compare import against_best
from mixopt.soup.evaluate import Evaluate, metric_of
from mixopt.soup.greedy import GreedyResult, greedy_select
from mixopt.soup.ingredients import METHODS, Ingredient, SoupError
from mixopt.soup.outdir import atomic_directory, check_replaceable, owned_prefix
from mixopt.soup.prompts import set_query_document
from mixopt.soup.result import SoupResult
from mixopt.trial import TrialResult

if TYPE_CHECKING:
    from mixopt.config import TaskConfig


def _check_out(out: Path, ingredients: Sequence[Ingredient], force: bool) -> None:
    out_r = out.resolve()
    for ing in ingredients:
        ck = ing.checkpoint.resolve()
        if out_r == ck or out_r in ck.parents or ck in out_r.parents:
            raise SoupError(
                f"--out {out} overlaps the checkpoint of {ing.label} ({ck}); choose another --out"
            )
    check_replaceable(out, force)


def make_soup(
    ingredients: Sequence[Ingredient],
    out: Path,
    *,
    method: str = "uniform",
    evaluate: Evaluate | None = None,
    metric: str = "objective",
    force: bool = False,
    tasks: Sequence[TaskConfig] = (),
    experiment_name: str = "",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    echo: Callable[[str], None] | None = None,
    report: Evaluate | None = None,
    split: str | None = None,
    prompt_task: str | None = None,
) -> SoupResult:
    """Average ``ingredients`` into a sentence-transformers directory ``out`` and evaluate it.

    ``uniform`` averages all of them; ``greedy`` keeps a subset (:func:`mixopt.soup.greedy.greedy_select`, which
    needs ``evaluate``). The soup is evaluated with ``evaluate`` (if given), or, greedy, with
    ``report`` when given (held-out dev rows; ``split`` says which, for the card). Its ``query`` /
    ``document`` prompts are set from ``prompt_task`` (:func:`mixopt.soup.prompts.set_query_document`),
    its model card is written as ``README.md``, and only then is the directory renamed into place,
    so ``out`` is either the complete soup or untouched.
    """
    if method not in METHODS:
        raise SoupError(f"unknown soup method {method!r}; choose one of {list(METHODS)}")
    if not ingredients:
        raise SoupError("no ingredients to soup")
    if method == "greedy" and evaluate is None:
        raise SoupError(
            "the greedy soup needs an evaluation: give the experiment YAML (its trainer evaluates)"
        )
    out = Path(out)
    _check_out(out, ingredients, force)
    ordered = tuple(sorted(ingredients, key=lambda i: -i.value))
    unverified = verify_checksums(
        [i.checkpoint for i in ordered], [i.label for i in ordered], [i.checksums_sha256 for i in ordered]
    )
    if unverified:
        (echo or warnings.warn)(unverified_line(unverified))
    info = {
        "experiment": experiment_name,
        "sweep_runs": sorted({i.parent_run_id for i in ordered if i.parent_run_id}),
        "ingredient_runs": [i.run_id for i in ordered],
        "method": method,
    }
    try:
        with atomic_directory(out, force=force, info=info, echo=echo) as tmp:
            greedy: GreedyResult | None = None
            evaluation: TrialResult | None = None
            if method == "greedy":
                assert evaluate is not None
                results: list[TrialResult] = []  # one per greedy step, in order

                def score(path: Path) -> float:
                    results.append(evaluate(path))
                    return metric_of(results[-1], metric)

                work = Path(tempfile.mkdtemp(prefix=owned_prefix(out, "soup-greedy"), dir=out.parent))
                try:
                    greedy = greedy_select(ordered, score, work, chunk_bytes, echo)
                    evaluation = results[greedy.final_step]
                    for child in greedy.soup_dir.iterdir():
                        os.replace(child, tmp / child.name)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                if report is not None:
                    if echo:
                        echo("evaluating the greedy soup on the dev rows it was not selected on")
                    evaluation = report(tmp)
                members = greedy.kept
                stats = _stats_of(tmp, len(members))
            else:
                members = ordered
                stats = average_into(
                    [m.checkpoint for m in members], tmp, [m.label for m in members], chunk_bytes
                )
                if evaluate is not None:
                    if echo:
                        echo(f"evaluating the soup of {len(members)} on the dev tasks")
                    evaluation = evaluate(tmp)
            prompts, prompt_task = set_query_document(tmp, prompt_task)
            score = None if evaluation is None else metric_of(evaluation, metric)
            best = against_best(method, metric, score, members, greedy, report)
            result = SoupResult(
                out,
                method,
                metric,
                tuple(members),
                ordered,
                stats,
                evaluation,
                greedy,
                split=split,
                prompts=prompts,
                prompt_task=prompt_task,
                best_ingredient=best,
            )
            (tmp / "README.md").write_text(model_card(result, tasks, experiment_name), encoding="utf-8")
            write_checksums(tmp)  # last: it covers every file above
    except FileExistsError as e:  # lost a race with another writer of ``out``
        raise SoupError(str(e)) from None
    return result


def _stats_of(directory: Path, n: int) -> AverageStats:
    headers = [read_header(directory / f) for f in weight_files(directory)]
    return AverageStats(
        n_ingredients=n,
        n_files=len(headers),
        n_tensors=sum(len(h.tensors) for h in headers),
        n_bytes=sum(t.nbytes for h in headers for t in h.tensors.values()),
        dtypes=tuple(sorted({t.dtype for h in headers for t in h.tensors.values()})),
    )
