"""Model soup: average the best trials of a sweep into the final model.

A *model soup* (Wortsman et al., 2022, "Model soups: averaging weights of multiple fine-tuned
models improves accuracy without increasing inference time", arXiv:2203.05482) averages the
weights of models finetuned from one initialisation. EmbeddingGemma's released model is such a
soup of checkpoints trained on different task mixtures. Two recipes:

- **uniform**: ``theta_soup = (1/K) sum_k theta_k`` over the K selected trials.
- **greedy** (the paper's Algorithm 1): sort the ingredients by their rank score, start from the
  best one, and add each next one only if the soup's dev score with it does not drop:
  ``S <- S + {k}  iff  f(mean(S + {k})) >= f(mean(S))``.

**Ranking** (``--rank``). A trial's dev score is one draw of its mixture's seed noise, so ranking
by it (``objective``) picks the luckiest trials. ``posterior`` ranks by a noise-robust score: the
mean over a mixture's seeds where it was trained with several (the verification stage), else the
sweep's GP posterior mean at the trial's mixture (the optimizer rebuilt from the sweep's state),
which pools the neighbouring trials. See bench/RESULTS.md for which gave the better soup.

The flow: :func:`select_ingredients` reads the sweep's trial runs from MLflow (finished, with a
checkpoint on disk, ranked as above); :func:`make_soup` averages them with
:mod:`mixopt.checkpoint_average` (streaming, checked), evaluates the soup with the trainer's
``evaluate_checkpoint``, writes a model card and renames the directory into place;
:func:`log_soup` records it as an MLflow run (and optionally registers it);
:func:`soup_from_sweep` chains them for ``mixopt soup``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixopt.checkpoint_average import (
    DEFAULT_CHUNK_BYTES,
    AverageStats,
    CheckpointError,
    atomic_directory,
    average_into,
)
from mixopt.tracking import CHECKPOINT, PARENT, PROPOSAL, ROLE, STATE_PATH, STATUS, TRIAL_ID
from mixopt.trial import TrainerError, TrialResult, load_trainer

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mixopt.config import Experiment, TaskConfig

__all__ = [
    "CheckpointError",
    "GreedyResult",
    "GreedyStep",
    "Ingredient",
    "RunsSpec",
    "Selection",
    "Skipped",
    "SoupError",
    "SoupResult",
    "format_selection",
    "format_table",
    "greedy_select",
    "log_soup",
    "make_soup",
    "metric_of",
    "model_card",
    "parse_runs",
    "select_ingredients",
    "soup_from_sweep",
    "trainer_evaluator",
]

METHODS = ("uniform", "greedy")
RANKS = ("objective", "posterior")
# Measured on three tiny sweeps (bench/soup_rank.py, bench/RESULTS.md): ranking by the posterior
# picked the same top 5 in two and a soup 0.009 lower in the third, so the default stays objective.
DEFAULT_RANK = "objective"
# MLflow rejects param values longer than this; longer lists go only into ingredient.<i> params.
_MLFLOW_PARAM_LIMIT = 6000


class SoupError(RuntimeError):
    """The soup cannot be made as asked; the message says why and what to do."""


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class RunsSpec:
    """Which trials to soup: the ``top`` K by the metric, ``all`` usable ones, or explicit run ``ids``."""

    kind: str  # "top" | "all" | "ids"
    k: int | None = None
    ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        return {"top": f"top{self.k}", "all": "all"}.get(self.kind, ",".join(self.ids))


def parse_runs(spec: str) -> RunsSpec:
    """Parse ``--runs``: ``top5`` / ``topK``, ``all``, or ``RUN_ID,RUN_ID,...``."""
    spec = spec.strip()
    if spec == "all":
        return RunsSpec("all")
    m = re.fullmatch(r"top(\d+)", spec)
    if m:
        k = int(m.group(1))
        if k < 1:
            raise SoupError(f"--runs {spec}: K must be at least 1 (e.g. top5)")
        return RunsSpec("top", k=k)
    ids = tuple(s.strip() for s in spec.split(","))
    if not spec or any(not re.fullmatch(r"[0-9a-fA-F]{8,64}", i) for i in ids):
        raise SoupError(
            f"--runs {spec!r}: expected topK (e.g. top5), all, or comma-separated MLflow run ids (hex)"
        )
    if len(set(ids)) != len(ids):
        raise SoupError(f"--runs {spec!r}: a run id is listed twice")
    return RunsSpec("ids", ids=ids)


@dataclass(frozen=True)
class Ingredient:
    """One trial run chosen for the soup.

    Attributes:
        run_id, trial_id: the MLflow run and the sweep's trial label.
        checkpoint: the trial's sentence-transformers directory.
        value: the ranking metric (``--metric``, default ``objective``) from MLflow.
        mixture: task -> weight (params ``w.<task>``).
        task_scores: task -> primary dev score (metrics ``score.<task>``).
        metrics: every metric of the run.
        score: the rank score (``--rank posterior``: seed mean or GP posterior mean), None when
            ranked by ``value`` itself.
    """

    run_id: str
    trial_id: str
    checkpoint: Path
    value: float
    mixture: Mapping[str, float] = field(default_factory=dict)
    task_scores: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    parent_run_id: str | None = None
    score: float | None = None
    proposal: Mapping[str, Any] | None = None

    @property
    def rank_value(self) -> float:
        """What ingredients are sorted by: the rank score if there is one, else ``value``."""
        return self.value if self.score is None else self.score

    @property
    def label(self) -> str:
        return f"run {self.run_id} (trial {self.trial_id})"


@dataclass(frozen=True)
class Skipped:
    run_id: str
    trial_id: str
    reason: str


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_ingredients`: what was taken (best first) and what was not."""

    experiment_id: str
    experiment_name: str
    runs: RunsSpec
    metric: str
    chosen: tuple[Ingredient, ...]
    skipped: tuple[Skipped, ...]
    notes: tuple[str, ...] = ()
    rank: str = "objective"


def _local_checkpoint(uri: str) -> Path | None:
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif "://" in uri:
        return None
    return Path(uri)


def _ingredient_or_reason(run: Any, metric: str) -> tuple[Ingredient | None, str | None]:
    """An :class:`Ingredient` from an MLflow run, or why the run cannot be one."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    status = tags.get(STATUS)
    if status != "FINISHED":
        if status is None:
            return None, f"no mixopt.status tag (MLflow status {run.info.status}): still running or killed"
        return None, f"trial status {status}"
    ckpt = tags.get(CHECKPOINT)
    if not ckpt:
        if tags.get("mixopt.stopped_early") == "true":
            return None, "stopped early by the scheduler, so it wrote no checkpoint"
        return None, "no checkpoint (tag mixopt.checkpoint is missing)"
    path = _local_checkpoint(ckpt)
    if path is None:
        return None, f"checkpoint {ckpt} is not on a local filesystem; copy it locally and pass the run ids"
    if not path.is_dir():
        return None, f"checkpoint directory {path} is missing"
    value = metrics.get(metric)
    if value is None:
        return None, f"no metric {metric!r}"
    if not math.isfinite(value):
        return None, f"metric {metric!r} is {value}"
    mixture = {k[2:]: float(v) for k, v in params.items() if k.startswith("w.")}
    scores = {k[len("score.") :]: v for k, v in metrics.items() if k.startswith("score.")}
    try:
        proposal = json.loads(tags[PROPOSAL]) if PROPOSAL in tags else None
    except ValueError:
        proposal = None
    return Ingredient(
        run_id=run.info.run_id,
        trial_id=tags.get(TRIAL_ID, run.info.run_name or "?"),
        checkpoint=path,
        value=float(value),
        mixture=mixture,
        task_scores=scores,
        metrics=dict(metrics),
        parent_run_id=tags.get(PARENT),
        proposal=proposal,
    ), None


def _trial_runs(client: MlflowClient, experiment_id: str) -> list[Any]:
    from mlflow.entities import ViewType

    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string="tags.`mixopt.role` = 'trial'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def resolve_run_id(client: MlflowClient, experiment_id: str, given: str, experiment_name: str) -> str:
    """A full MLflow run id from a unique prefix of one (as git resolves commits), in the experiment.

    A full 32-character id is returned as is. Raises SoupError when no run, or more than one,
    of the experiment starts with ``given``.
    """
    if len(given) >= 32:
        return given
    given = given.lower()
    matches: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        matches += [r for r in page if r.info.run_id.startswith(given)]
        token = page.token
        if not token:
            break
    if not matches:
        raise SoupError(
            f"--runs: no MLflow run id starting with {given} in experiment {experiment_name!r} "
            f"at {_redact(client.tracking_uri)}"
        )
    if len(matches) > 1:
        listed = ", ".join(
            f"{r.info.run_id} ({r.data.tags.get(TRIAL_ID) or r.data.tags.get(ROLE) or 'run'})"
            for r in sorted(matches, key=lambda r: r.info.run_id)
        )
        raise SoupError(f"--runs: run id prefix {given} is ambiguous: {listed}; give more characters")
    return matches[0].info.run_id


def _latest_sweep(client: MlflowClient, experiment_id: str) -> str | None:
    """The run id of the most recently started sweep (``mixopt.role=sweep``) run, if any."""
    runs = client.search_runs(
        [experiment_id],
        filter_string="tags.`mixopt.role` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _sweep_optimizer(client: MlflowClient, sweep_run_id: str) -> Any:
    """The sweep's MixtureOptimizer, rebuilt from its state file (tag ``mixopt.state_path``) or,
    when that is gone, from the ``optimizer_state.json`` artifact the sweep logged at its end."""
    from mixopt.optimizer import MixtureOptimizer

    run = client.get_run(sweep_run_id)
    path = run.data.tags.get(STATE_PATH)
    if path and Path(path).is_file():
        text = Path(path).read_text()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            text = Path(client.download_artifacts(sweep_run_id, "optimizer_state.json", tmp)).read_text()
    return MixtureOptimizer.from_state_dict(json.loads(text))


def rank_scores(
    client: MlflowClient, ingredients: Sequence[Ingredient]
) -> tuple[list[Ingredient], list[str]]:
    """``--rank posterior``: each ingredient with its noise-robust score, and notes.

    A mixture (the exact proposal) trained with several seeds scores the mean of its runs'
    values; a mixture with one run scores the GP posterior mean of its sweep's optimizer there.
    An ingredient whose sweep state cannot be read, or whose proposal lies outside the
    optimizer's search space (e.g. a baseline outside the bounds), keeps its own value.
    """
    groups: dict[str, list[Ingredient]] = {}
    for ing in ingredients:
        key = json.dumps(ing.proposal, sort_keys=True) if ing.proposal is not None else ing.run_id
        groups.setdefault(key, []).append(ing)
    optimizers: dict[str, Any] = {}
    notes: list[str] = []
    out: list[Ingredient] = []
    for members in groups.values():
        if len(members) > 1:
            mean = math.fsum(m.value for m in members) / len(members)
            out += [dataclasses.replace(m, score=mean) for m in members]
            continue
        ing = members[0]
        score = ing.value
        parent = ing.parent_run_id
        if parent is not None and ing.proposal is not None:
            if parent not in optimizers:
                try:
                    optimizers[parent] = _sweep_optimizer(client, parent)
                except Exception as e:  # no state, unreadable state: rank this sweep by value
                    optimizers[parent] = None
                    notes.append(f"sweep run {parent}: no optimizer state to rank by ({e}); ranked by value")
            opt = optimizers[parent]
            if opt is not None:
                try:
                    mean, _ = opt.predict([ing.proposal])
                    score = float(mean[0])
                except (ValueError, RuntimeError) as e:
                    notes.append(f"{ing.label}: no posterior mean ({e}); ranked by its value")
        out.append(dataclasses.replace(ing, score=score))
    order = {ing.run_id: i for i, ing in enumerate(ingredients)}
    out.sort(key=lambda i: order[i.run_id])
    return out, notes


def select_ingredients(
    client: MlflowClient,
    experiment_name: str,
    runs: RunsSpec | str,
    metric: str = "objective",
    rank: str = "objective",
) -> Selection:
    """Choose the soup's ingredients among the trial runs of MLflow experiment ``experiment_name``.

    Candidates are the trial runs of the experiment's latest sweep run (all trial runs if it has
    no sweep run). Usable trials are those with ``mixopt.status`` FINISHED, a
    ``mixopt.checkpoint`` directory that exists, and a finite ``metric``; they are ranked by
    ``metric``, highest first (ties by start time). ``top K`` takes the K best (all of them, with
    a note, if fewer are usable), ``all`` takes every usable one; explicit run ids may come from
    any sweep of the experiment but must all be usable trials.

    ``rank="posterior"`` sorts by :func:`rank_scores` instead of the metric (``objective`` only).
    """
    from mlflow.exceptions import MlflowException

    if rank not in RANKS:
        raise SoupError(f"--rank {rank!r}: choose one of {list(RANKS)}")
    if rank == "posterior" and metric != "objective":
        raise SoupError(
            f"--rank posterior ranks by the sweep's model of the objective; with --metric {metric} "
            "use --rank objective"
        )

    spec = parse_runs(runs) if isinstance(runs, str) else runs
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise SoupError(
            f"no MLflow experiment named {experiment_name!r} at tracking URI {_redact(client.tracking_uri)}; "
            "run the sweep first, or pass --tracking-uri / --experiment"
        )
    eid = experiment.experiment_id
    chosen: list[Ingredient] = []
    skipped: list[Skipped] = []
    notes: list[str] = []
    if spec.kind == "ids":
        for given in spec.ids:
            run_id = resolve_run_id(client, eid, given, experiment_name)
            try:
                run = client.get_run(run_id)
            except MlflowException:
                raise SoupError(f"--runs: no MLflow run {run_id} at {_redact(client.tracking_uri)}") from None
            if run.info.experiment_id != eid:
                raise SoupError(
                    f"--runs: run {run_id} belongs to MLflow experiment id {run.info.experiment_id}, "
                    f"not {experiment_name!r} (id {eid})"
                )
            role = run.data.tags.get(ROLE)
            if role != "trial":
                raise SoupError(f"--runs: run {run_id} is not a trial run (mixopt.role={role!r})")
            ing, reason = _ingredient_or_reason(run, metric)
            if ing is None:
                raise SoupError(f"--runs: run {run_id} cannot be an ingredient: {reason}")
            chosen.append(ing)
        if rank == "posterior":
            chosen, rank_notes = rank_scores(client, chosen)
            notes += rank_notes
        chosen.sort(key=lambda i: -i.rank_value)
    else:
        usable: list[Ingredient] = []
        trial_runs = _trial_runs(client, eid)
        sweep = _latest_sweep(client, eid)
        if sweep is not None:
            # Trials of earlier sweeps in the same experiment may come from another config; they
            # join only when named by run id.
            older = [r for r in trial_runs if r.data.tags.get(PARENT) != sweep]
            trial_runs = [r for r in trial_runs if r.data.tags.get(PARENT) == sweep]
            if older:
                notes.append(
                    f"ignored {len(older)} trial run(s) of earlier sweeps; the latest sweep is run {sweep} "
                    "(name other runs with --runs RUN_ID,...)"
                )
        for run in trial_runs:
            ing, reason = _ingredient_or_reason(run, metric)
            if ing is None:
                skipped.append(Skipped(run.info.run_id, run.data.tags.get(TRIAL_ID, "?"), str(reason)))
            else:
                usable.append(ing)
        if rank == "posterior":
            usable, rank_notes = rank_scores(client, usable)
            notes += rank_notes
        usable.sort(key=lambda i: -i.rank_value)  # stable: equal values keep start-time order
        if not usable:
            why = (
                "; ".join(f"{s.run_id} (trial {s.trial_id}): {s.reason}" for s in skipped) or "there are none"
            )
            raise SoupError(f"no usable trial runs in MLflow experiment {experiment_name!r}: {why}")
        if spec.kind == "top":
            assert spec.k is not None
            if len(usable) < spec.k:
                notes.append(f"only {len(usable)} usable trial runs for top{spec.k}; souping all of them")
            for ing in usable[spec.k :]:
                by = metric if rank == "objective" else "posterior rank"
                skipped.append(Skipped(ing.run_id, ing.trial_id, f"not in the top {spec.k} by {by}"))
            usable = usable[: spec.k]
        chosen = usable
    return Selection(eid, experiment_name, spec, metric, tuple(chosen), tuple(skipped), tuple(notes), rank)


def _redact(uri: str) -> str:
    """A tracking URI without credentials (``http://user:pass@host`` -> ``http://***@host``)."""
    return re.sub(r"//[^/@]+@", "//***@", uri)


# --------------------------------------------------------------------------- evaluation


Evaluate = Callable[[Path], TrialResult]


def trainer_evaluator(exp: Experiment) -> Evaluate:
    """The experiment trainer's ``evaluate_checkpoint(checkpoint, tasks, options)``, bound to ``exp``.

    Imported lazily from the module of ``trainer.target``, so the soup evaluates exactly as the
    trials were evaluated.
    """
    try:
        fn = load_trainer(exp.trainer.target).require(
            "evaluate_checkpoint",
            "the soup cannot be evaluated with it (does this trainer write checkpoints?)",
        )
    except TrainerError as e:
        raise SoupError(str(e)) from e
    tasks, options = tuple(exp.tasks), exp.trainer.options

    def evaluate(checkpoint: Path) -> TrialResult:
        return fn(checkpoint, tasks, options)

    return evaluate


def metric_of(result: TrialResult, metric: str) -> float:
    """The value of MLflow metric name ``metric`` in a :class:`TrialResult`.

    ``objective`` -> ``result.objective``; ``score.<task>`` -> ``result.task_scores[task]``;
    anything else -> ``result.task_metrics[metric]``.
    """
    if metric == "objective":
        return float(result.objective)
    if metric.startswith("score.") and metric[len("score.") :] in result.task_scores:
        return float(result.task_scores[metric[len("score.") :]])
    if metric in result.task_metrics:
        return float(result.task_metrics[metric])
    raise SoupError(
        f"the evaluation has no metric {metric!r}; it has objective, "
        f"{', '.join('score.' + t for t in result.task_scores)} and {', '.join(result.task_metrics)}"
    )


# --------------------------------------------------------------------------- greedy


@dataclass(frozen=True)
class GreedyStep:
    """One candidate of the greedy soup: the soup's score with it, and whether it was kept."""

    run_id: str
    trial_id: str
    ingredient_value: float
    soup_score: float
    kept: bool


@dataclass(frozen=True)
class GreedyResult:
    """Greedy selection: the kept ingredients (in order), every step, and the final soup."""

    kept: tuple[Ingredient, ...]
    steps: tuple[GreedyStep, ...]
    score: float
    soup_dir: Path  # the averaged soup of ``kept`` inside ``workdir``


def greedy_select(
    ingredients: Sequence[Ingredient],
    evaluate: Callable[[Path], float],
    workdir: Path,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    echo: Callable[[str], None] | None = None,
) -> GreedyResult:
    """Greedy soup (Wortsman et al., 2022, arXiv:2203.05482, Algorithm 1).

    Ingredients are sorted by ``value`` (highest first). The soup starts as the best one alone,
    scored by ``evaluate`` like every later candidate (so all comparisons use one evaluation).
    Each next ingredient ``k`` is tried: the uniform average of ``S + {k}`` is written to
    ``workdir`` and scored; ``k`` is kept iff ``score(S + {k}) >= score(S)`` (a NaN score is a
    drop). At most two soups are on disk at any time.
    """
    if not ingredients:
        raise SoupError("greedy soup: no ingredients")
    order = sorted(ingredients, key=lambda i: -i.rank_value)
    workdir = Path(workdir)

    def build(members: Sequence[Ingredient], name: str) -> Path:
        d = workdir / name
        d.mkdir(parents=True)
        average_into([m.checkpoint for m in members], d, [m.label for m in members], chunk_bytes)
        return d

    first = order[0]
    soup_dir = build([first], "soup-0")
    score = float(evaluate(soup_dir))
    steps = [GreedyStep(first.run_id, first.trial_id, first.value, score, True)]
    if echo:
        echo(f"greedy: start with {first.label}: soup score {score:.4f}")
    kept = [first]
    for n, cand in enumerate(order[1:], start=1):
        trial_dir = build([*kept, cand], f"soup-{n}")
        s = float(evaluate(trial_dir))
        keep = math.isfinite(s) and s >= score
        steps.append(GreedyStep(cand.run_id, cand.trial_id, cand.value, s, keep))
        if echo:
            echo(
                f"greedy: + {cand.label}: soup score {s:.4f} vs {score:.4f} -> {'kept' if keep else 'dropped'}"
            )
        if keep:
            shutil.rmtree(soup_dir)
            kept.append(cand)
            soup_dir, score = trial_dir, s
        else:
            shutil.rmtree(trial_dir)
    return GreedyResult(tuple(kept), tuple(steps), score, soup_dir)


# --------------------------------------------------------------------------- making the soup


@dataclass
class SoupResult:
    """What :func:`make_soup` wrote (and, once logged, where it went in MLflow)."""

    out: Path
    method: str
    metric: str
    ingredients: tuple[Ingredient, ...]  # the averaged ones
    candidates: tuple[Ingredient, ...]  # every selected trial (= ingredients for uniform)
    stats: AverageStats | None
    evaluation: TrialResult | None
    greedy: GreedyResult | None = None
    run_id: str | None = None
    registered: tuple[str, str] | None = None  # (name, version)

    @property
    def score(self) -> float | None:
        return None if self.evaluation is None else metric_of(self.evaluation, self.metric)


def _check_out(out: Path, ingredients: Sequence[Ingredient], force: bool) -> None:
    out_r = out.resolve()
    for ing in ingredients:
        ck = ing.checkpoint.resolve()
        if out_r == ck or out_r in ck.parents or ck in out_r.parents:
            raise SoupError(
                f"--out {out} overlaps the checkpoint of {ing.label} ({ck}); choose another --out"
            )
    if out.exists() and not force:
        raise SoupError(f"{out} already exists; pass --force to replace it, or choose another --out")


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
) -> SoupResult:
    """Average ``ingredients`` into a sentence-transformers directory ``out`` and evaluate it.

    ``uniform`` averages all of them; ``greedy`` keeps a subset (:func:`greedy_select`, which
    needs ``evaluate``). The soup is evaluated with ``evaluate`` (if given), its model card is
    written as ``README.md``, and only then is the directory renamed into place, so ``out`` is
    either the complete soup or untouched.
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
    ordered = tuple(sorted(ingredients, key=lambda i: -i.rank_value))
    try:
        with atomic_directory(out, force=force) as tmp:
            greedy: GreedyResult | None = None
            evaluation: TrialResult | None = None
            if method == "greedy":
                assert evaluate is not None
                results: dict[Path, TrialResult] = {}

                def score(path: Path) -> float:
                    results[path] = evaluate(path)
                    return metric_of(results[path], metric)

                work = Path(tempfile.mkdtemp(prefix=f".{out.name}.greedy-", dir=out.parent))
                try:
                    greedy = greedy_select(ordered, score, work, chunk_bytes, echo)
                    evaluation = results[greedy.soup_dir]
                    for child in greedy.soup_dir.iterdir():
                        os.replace(child, tmp / child.name)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
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
            result = SoupResult(out, method, metric, tuple(members), ordered, stats, evaluation, greedy)
            (tmp / "README.md").write_text(model_card(result, tasks, experiment_name), encoding="utf-8")
    except FileExistsError as e:  # lost a race with another writer of ``out``
        raise SoupError(str(e)) from None
    return result


def _stats_of(directory: Path, n: int) -> AverageStats:
    from mixopt.checkpoint_average import read_header, weight_files

    headers = [read_header(directory / f) for f in weight_files(directory)]
    return AverageStats(
        n_ingredients=n,
        n_files=len(headers),
        n_tensors=sum(len(h.tensors) for h in headers),
        n_bytes=sum(t.nbytes for h in headers for t in h.tensors.values()),
        dtypes=tuple(sorted({t.dtype for h in headers for t in h.tensors.values()})),
    )


# --------------------------------------------------------------------------- reporting


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


def format_selection(selection: Selection) -> str:
    """Which runs were taken and why others were skipped, one per line."""
    lines = [
        f"MLflow experiment {selection.experiment_name!r}: {len(selection.chosen)} ingredient(s), "
        f"--runs {selection.runs}, ranked by "
        + (
            selection.metric
            if selection.rank == "objective"
            else "posterior (seed mean or GP posterior mean)"
        )
    ]
    for ing in selection.chosen:
        rank = f", rank score {ing.score:.4f}" if ing.score is not None else ""
        lines.append(
            f"  took    {ing.label}: {selection.metric} {ing.value:.4f}{rank}, checkpoint {ing.checkpoint}"
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
            f"soup's dev {result.metric} with it did not drop.",
        ]
    lines += ["", "## Ingredients", ""]
    mix_names = sorted(
        {t for i in result.candidates for t in i.mixture},
        key=lambda t: (names.index(t) if t in names else len(names), t),
    )
    head = ["run id", "trial", result.metric, *(f"w.{t}" for t in mix_names), *(f"score.{t}" for t in names)]
    if result.greedy is not None:
        head.append("in soup")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    kept = {i.run_id for i in result.ingredients}
    for ing in result.candidates:
        row = [
            f"`{ing.run_id}`",
            ing.trial_id,
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
        if ev.task_metrics:
            lines += ["", "All dev metrics of the soup:", ""]
            lines += [f"- `{key}`: {val:.4f}" for key, val in sorted(ev.task_metrics.items())]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{result.out}")',
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- MLflow


def log_soup(
    client: MlflowClient,
    selection: Selection,
    result: SoupResult,
    register: str | None = None,
    runs_spec: str | None = None,
) -> SoupResult:
    """Record the soup as an MLflow run in the sweep's experiment; optionally register it.

    The run is tagged ``mixopt.role=soup``; params: method, metric, ingredients (run ids); metrics:
    ``objective``, ``score.<task>`` and every per-task dev metric of the soup's evaluation. The
    model card is logged as an artifact. With ``register``, the soup directory is logged under
    the artifact path ``model`` and registered as a new version of model ``register``.
    """
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    from mixopt.tracking import metric_key

    parents = {i.parent_run_id for i in result.candidates}
    tags = {
        ROLE: "soup",
        "mixopt.method": result.method,
        "mixopt.metric": result.metric,
        "mixopt.rank": selection.rank,
        CHECKPOINT: str(result.out.resolve()),
        "mlflow.runName": f"soup-{result.method}-{len(result.ingredients)}",
    }
    if len(parents) == 1 and None not in parents:
        tags["mixopt.sweep_run"] = str(next(iter(parents)))
    run = client.create_run(selection.experiment_id, tags=tags)
    run_id = run.info.run_id
    try:
        ids = [i.run_id for i in result.ingredients]
        params = {
            "method": result.method,
            "metric": result.metric,
            "runs": runs_spec or str(selection.runs),
            "n_ingredients": str(len(ids)),
        }
        if len(",".join(ids)) <= _MLFLOW_PARAM_LIMIT:
            params["ingredients"] = ",".join(ids)
        params.update({f"ingredient.{n}": rid for n, rid in enumerate(ids)})
        if result.greedy is not None:
            cands = ",".join(i.run_id for i in result.candidates)
            if len(cands) <= _MLFLOW_PARAM_LIMIT:
                params["candidates"] = cands
        metrics: dict[str, float] = {}
        if result.evaluation is not None:
            ev = result.evaluation
            metrics["objective"] = float(ev.objective)
            metrics.update({f"score.{t}": float(v) for t, v in ev.task_scores.items()})
            # The sweep's key mapping, so the soup's metrics line up with its trials' in the UI.
            metrics.update({metric_key(k): float(v) for k, v in ev.task_metrics.items()})
        now = int(run.info.start_time)
        metric_list = [Metric(k, v, now, 0) for k, v in metrics.items()]
        if result.greedy is not None:
            metric_list += [
                Metric("greedy.soup_score", s.soup_score, now, n) for n, s in enumerate(result.greedy.steps)
            ]
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()], metrics=metric_list)
        client.log_artifact(run_id, str(result.out / "README.md"))
        if register:
            client.log_artifacts(run_id, str(result.out), "model")
            try:
                client.create_registered_model(register, description="mixopt model soup")
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            version = client.create_model_version(
                register,
                source=f"{run.info.artifact_uri}/model",
                run_id=run_id,
                description=f"{result.method} soup of {len(ids)} trials: {', '.join(ids)}",
            )
            result.registered = (register, str(version.version))
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    result.run_id = run_id
    return result


def soup_from_sweep(
    exp: Experiment | None,
    *,
    runs: str = "top5",
    method: str = "uniform",
    metric: str = "objective",
    rank: str = DEFAULT_RANK,
    out: Path | None = None,
    force: bool = False,
    register: str | None = None,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    evaluate: Evaluate | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    echo: Callable[[str], None] | None = print,
) -> tuple[Selection, SoupResult]:
    """``mixopt soup``: select trials from the sweep's MLflow experiment, soup, evaluate, log.

    ``exp`` (the experiment YAML) gives the MLflow experiment, the tracking URI, the tasks and the
    trainer whose ``evaluate_checkpoint`` scores the soup. Without it, ``experiment_name`` must be
    given and the soup is not evaluated (uniform only). ``evaluate`` overrides the trainer's.
    """
    from mlflow import MlflowClient

    name = experiment_name or (exp.experiment_name if exp is not None else None)
    if not name:
        raise SoupError("give the experiment YAML or --experiment NAME (the sweep's MLflow experiment)")
    uri = (
        tracking_uri
        or (exp.tracking.resolved_uri() if exp is not None else None)
        or os.environ.get("MLFLOW_TRACKING_URI")
        or "sqlite:///mlflow.db"
    )
    if method not in METHODS:
        raise SoupError(f"unknown soup method {method!r}; choose one of {list(METHODS)}")
    spec = parse_runs(runs)
    if evaluate is None and exp is not None:
        evaluate = trainer_evaluator(exp)
    if method == "greedy" and evaluate is None:
        raise SoupError(
            "--method greedy evaluates candidate soups: give the experiment YAML, not only --experiment"
        )
    out = Path(out) if out is not None else Path("soups") / name
    if out.exists() and not force:  # before any work: a soup of a large model takes minutes
        raise SoupError(f"{out} already exists; pass --force to replace it, or choose another --out")
    client = MlflowClient(tracking_uri=uri)
    selection = select_ingredients(client, name, spec, metric, rank)
    if echo:
        echo(format_selection(selection))
    result = make_soup(
        selection.chosen,
        out,
        method=method,
        evaluate=evaluate,
        metric=metric,
        force=force,
        tasks=tuple(exp.tasks) if exp is not None else (),
        experiment_name=name,
        chunk_bytes=chunk_bytes,
        echo=echo,
    )
    log_soup(client, selection, result, register, str(spec))
    return selection, result
