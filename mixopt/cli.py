"""The ``mixopt`` command line: thin commands that validate their input and call the library."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import typer

from mixopt.config import ConfigError, dump_experiment, load_experiment
from mixopt.recommend import command as recommend_command

app = typer.Typer(
    help="Find the best task mixture for finetuning a text-embedding model, then soup the best trials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _load(path: Path, check_data: bool = False):
    try:
        exp = load_experiment(path)
    except ConfigError as e:
        _fail(str(e))
    if check_data:
        from mixopt.sweep.checks import check_data as check_all_data
        from mixopt.sweep.common import SweepError
        from mixopt.sweep.progress import warn

        try:
            report = check_all_data(exp, mode="full", use_cache=False)
        except SweepError as e:
            _fail(str(e))
        for w in report.warnings:
            warn(w)
        typer.echo(f"[mixopt] {report.dev_rows_line()}", err=True)
        if report.unknown_line():
            typer.echo(f"[mixopt] {report.unknown_line()}", err=True)
    return exp


def _preflight_warnings(exp) -> None:
    """What validate can tell without starting Ray: a missing model path, too many concurrent trials."""
    from mixopt.sweep.checks import concurrency_warning, local_resources, model_problems
    from mixopt.sweep.progress import warn

    problems = model_problems(exp)
    if problems:
        _fail("\n".join(problems))
    if not os.environ.get("RAY_ADDRESS"):
        w = concurrency_warning(exp, local_resources(exp), "this machine (a local Ray)")
        if w:
            warn(w)


@app.command()
def validate(
    experiment: Path = typer.Argument(..., help="Experiment YAML."),
    data: bool = typer.Option(False, "--data", help="Also read and validate every row of every task file."),
) -> None:
    """Validate an experiment YAML: print the resolved config, or every problem with file:line."""
    exp = _load(experiment, check_data=data)
    _preflight_warnings(exp)
    typer.echo(dump_experiment(exp), nl=False)


@app.command()
def tasks(experiment: Path = typer.Argument(..., help="Experiment YAML.")) -> None:
    """List each task: its data source, row counts where known, and two example rows with the prompts applied."""
    from mixopt.data import DataError
    from mixopt.datasets import describe_task
    from mixopt.sweep.progress import warn
    from mixopt.tokens import SAMPLE_ROWS, share_warnings, task_unknown_shares

    exp = _load(experiment)
    shares = task_unknown_shares(exp)
    problems = []
    for t in exp.tasks:
        try:
            typer.echo("\n".join(describe_task(t)))
        except DataError as e:
            problems.append(f"task {t.name}: {e}")
            continue
        if t.name in shares:
            share, n = shares[t.name]
            typer.echo(
                f"  unknown tokens: {share:.1%} of {n} tokens in the first {SAMPLE_ROWS} train rows "
                "(the tokenizer's <unk>)"
            )
    for w in share_warnings(shares):
        warn(w)
    if problems:
        _fail("\n".join(problems))


@app.command()
def synth(
    out: Path = typer.Option(Path("data/synthetic"), "--out", help="Output folder (replaced if it exists)."),
    tasks: int = typer.Option(
        3, "--tasks", min=1, help="Number of tasks (kinds rotate retrieval, sts, classification)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes identical bytes."),
) -> None:
    """Write synthetic tasks in the real format, plus a tiny Gemma3 encoder and tokenizer (OUT/model)."""
    from mixopt.synth import synthesize

    meta = synthesize(out, n_tasks=tasks, seed=seed)
    for t in meta["tasks"]:
        typer.echo(
            f"{out / t['name']}: {t['kind']}, {t['private_words_per_concept']} private words/concept, "
            f"{t['noise_words_per_text']} noise words/text"
        )
    typer.echo(f"{out / 'model'}: tiny bidirectional Gemma3 encoder + tokenizer")


@app.command()
def sweep(
    experiment: Path = typer.Argument(..., help="Experiment YAML."),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="Ray cluster to join ('auto', or ray://host:10001). Default: $RAY_ADDRESS, "
        "else a local Ray started in this process.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the experiment's unfinished sweep (after a "
        "killed driver): recorded trials are not run again.",
    ),
    max_trials: Optional[int] = typer.Option(
        None, "--max-trials", min=1, help="Override optimizer.max_trials."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (warnings still show)."),
    connect_timeout: float = typer.Option(
        30.0,
        "--connect-timeout",
        min=0.0,
        help="Seconds to wait for the Ray cluster at --address to answer before giving up.",
    ),
    data_check: str = typer.Option(
        "full",
        "--data-check",
        help="Before any trial: 'full' validates every row of every task file (cached by file size and "
        "mtime), 'head' only the first 50 rows of each.",
    ),
    allow_config_change: bool = typer.Option(
        False,
        "--allow-config-change",
        help="With --resume: run the remaining trials under a YAML that differs from the sweep's "
        "recorded config (not in its tasks or search space); recorded as config-N.yaml.",
    ),
) -> None:
    """Run the mixture sweep: seed mixtures, then GP-UCB proposals, trials on Ray Tune, all logged to MLflow."""
    import shlex

    from mixopt.sweep import SweepError, run_sweep
    from mixopt.sweep.common import SweepFailed, SweepInterrupted, Terminated

    if data_check not in ("full", "head"):
        _fail(f"--data-check {data_check!r}: choose full or head")
    if allow_config_change and not resume:
        _fail("--allow-config-change applies to --resume only (a new sweep records the YAML as it is)")
    exp = _load(experiment)
    try:
        summary = run_sweep(
            exp,
            address=address,
            resume=resume,
            max_trials=max_trials,
            verbose=not quiet,
            data_check=data_check,
            connect_timeout=connect_timeout,
            allow_config_change=allow_config_change,
        )
    except SweepInterrupted as e:
        _fail(
            f"{experiment}: {e}; continue it with `mixopt sweep {shlex.quote(str(experiment))} --resume`",
            e.exit_code,
        )
    except SweepFailed as e:  # it ran, and has no answer to give (bad data in a trial)
        _fail(f"{experiment}: {e}", code=1)
    except KeyboardInterrupt as e:  # before the sweep's MLflow run existed: nothing to resume
        how = " (SIGTERM)" if isinstance(e, Terminated) else ""
        _fail(
            f"{experiment}: interrupted{how} before the sweep started; nothing was recorded",
            code=143 if isinstance(e, Terminated) else 130,
        )
    except SweepError as e:
        _fail(f"{experiment}: {e}")
    if summary.failed and not summary.finished:
        from mixopt.sweep.progress import failure_counts

        reasons = "; ".join(f"{n}x {r}" for r, n in failure_counts(summary.trials))
        _fail(f"{experiment}: every trial failed ({summary.failed}): {reasons}", code=1)


@app.command()
def preflight(
    experiment: Path = typer.Argument(..., help="Experiment YAML."),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="Ray cluster to run on, with the trial's resources ('auto', ray://host:10001). "
        "Default: this process, on its device.",
    ),
    steps: int = typer.Option(3, "--steps", min=1, help="Timed steps (after one warm-up step)."),
    memory_limit_gb: Optional[float] = typer.Option(
        None, "--memory-limit-gb", min=0, help="Memory the trial may use (default: the device's)."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", help="Use this model directory or hub id instead of trainer.model."
    ),
) -> None:
    """A few steps of one worst-case trial on the sweep's device: peak memory, tokens/s, MFU, the trial's
    load, evaluation and checkpoint write, and the sweep's projected device-hours. Exits 1, naming the
    fix (measured and projected in its turn), if the trial does not fit."""
    from mixopt.preflight import PreflightError, run_preflight

    exp = _load(experiment)
    try:
        result = run_preflight(
            exp,
            address=address,
            steps=steps,
            memory_limit_gb=memory_limit_gb,
            model=model,
            echo=typer.echo,
        )
    except (PreflightError, ValueError) as e:
        _fail(f"{experiment}: {e}")
    if not result.fits:
        raise typer.Exit(1)


@app.command()
def soup(
    experiment_file: Optional[Path] = typer.Argument(
        None,
        metavar="[EXPERIMENT.yaml]",
        help="The sweep's experiment YAML (its tasks and trainer evaluate the "
        "soup). Default: the config recorded by the newest sweep in the tracking store.",
    ),
    experiment: Optional[str] = typer.Option(
        None,
        "--experiment",
        help="MLflow experiment name of the sweep (default: the YAML's, else the newest sweep's).",
    ),
    runs: str = typer.Option(
        "top5", "--runs", help="Trials to soup: topK (e.g. top5), all, or RUN_ID,RUN_ID,..."
    ),
    method: str = typer.Option(
        "uniform", "--method", help="uniform (mean of all) or greedy (Wortsman et al. 2022)."
    ),
    metric: str = typer.Option(
        "objective", "--metric", help="MLflow metric that ranks the trials (higher is better)."
    ),
    rank: Optional[str] = typer.Option(
        None,
        "--rank",
        help="How candidates are ranked: posterior (noise-robust: the mean over a mixture's seeds "
        "where it has several, else the sweep's GP posterior mean at its mixture) or objective "
        "(each trial's own --metric; the default, see bench/RESULTS.md).",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output sentence-transformers directory (default: soups/<experiment name>)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace --out if it is an earlier soup (it holds .mixopt-soup.json)."
    ),
    register: Optional[str] = typer.Option(
        None, "--register", help="Also register the soup in the MLflow model registry under this name."
    ),
    tracking_uri: Optional[str] = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI (default: the YAML's, else $MLFLOW_TRACKING_URI, "
        "else sqlite:///mlflow.db).",
    ),
    mteb: Optional[str] = typer.Option(
        None,
        "--mteb",
        help='Then evaluate the soup on an MTEB benchmark, e.g. "MTEB(eng, v2)" (mixopt eval).',
    ),
    mteb_tasks: Optional[str] = typer.Option(
        None, "--mteb-tasks", help="Then evaluate the soup on these MTEB tasks (comma-separated)."
    ),
    prompt_task: Optional[str] = typer.Option(
        None,
        "--prompt-task",
        help="The task whose prompts become the soup's `query` / `document` prompts (encode_query, "
        "encode_document; default: the first retrieval task).",
    ),
) -> None:
    """Average the best trials of a sweep into a model soup, evaluate it, and log it to MLflow."""
    if mteb is not None and mteb_tasks is not None:
        _fail("give at most one of --mteb BENCHMARK or --mteb-tasks TASK,TASK,...")
    if mteb is not None or mteb_tasks is not None:
        from mixopt.mteb_eval import EvalError, load_tasks

        _cwd_importable()

        try:  # before the soup is made: a misspelt task should not cost a soup
            load_tasks(mteb, [n for n in (mteb_tasks or "").split(",") if n.strip()] or None)
        except EvalError as e:
            _fail(str(e))
    if method not in ("uniform", "greedy"):
        _fail(f"--method {method!r}: choose uniform or greedy")
    from mixopt.soup import (
        DEFAULT_RANK,
        RANKS,
        CheckpointError,
        SoupError,
        format_table,
        parse_runs,
        soup_from_sweep,
    )

    if rank is None:
        rank = DEFAULT_RANK if metric == "objective" else "objective"
    if rank not in RANKS:
        _fail(f"--rank {rank!r}: choose one of {', '.join(RANKS)}")

    try:
        parse_runs(runs)
        if out is not None:  # before the tracking store is read: a rejected --out writes nothing
            from mixopt.soup.outdir import check_replaceable

            check_replaceable(out, force)
    except SoupError as e:
        _fail(str(e))
    if experiment_file is not None:
        exp = _load(experiment_file)
    else:
        # No YAML: use the config the newest sweep recorded on its MLflow parent run.
        from mixopt.config import ConfigError
        from mixopt.tracking.store import recorded_experiment, resolve_uri

        uri = resolve_uri(tracking_uri)
        try:
            exp, sweep_run = recorded_experiment(uri, experiment)
            typer.echo(
                f"sweep run {sweep_run} (experiment {exp.experiment_name!r}): using its recorded config"
            )
            tracking_uri = uri
        except ConfigError as e:
            _fail(str(e))
        except LookupError as e:
            if experiment is None:
                _fail(f"{e}; give the sweep's EXPERIMENT.yaml or --experiment NAME (its MLflow experiment)")
            exp = None  # averaged and logged, but with no tasks to evaluate on
    if method == "greedy" and exp is None:
        _fail("--method greedy evaluates candidate soups with the trainer: give the EXPERIMENT.yaml")
    if exp is not None and (mteb is not None or mteb_tasks is not None):
        from mixopt.mteb_eval import EvalError, mteb_prompts
        from mixopt.soup.prompts import default_prompt_task

        try:  # before the soup is made: prompts mteb could not choose between
            mteb_prompts(exp.tasks, [n for n in (prompt_task or default_prompt_task(exp.tasks),) if n])
        except EvalError as e:
            _fail(str(e))
    try:
        _, result = soup_from_sweep(
            exp,
            runs=runs,
            method=method,
            metric=metric,
            rank=rank,
            out=out,
            force=force,
            register=register,
            experiment_name=experiment,
            tracking_uri=tracking_uri,
            echo=typer.echo,
            prompt_task=prompt_task,
        )
    except (SoupError, CheckpointError) as e:
        _fail(str(e), code=1)
    kept = [i.run_id for i in result.ingredients] if result.greedy is not None else None
    typer.echo(format_table(result.candidates, result.evaluation, metric, exp.tasks if exp else (), kept))
    size = result.stats.n_bytes / 2**20 if result.stats else 0.0
    typer.echo(
        f"wrote {result.out}: {result.method} soup of {len(result.ingredients)} checkpoint(s), "
        f"{size:.3g} MiB of weights; MLflow run {result.run_id}"
    )
    if result.registered:
        typer.echo(f"registered as MLflow model {result.registered[0]!r} version {result.registered[1]}")
    if mteb is not None or mteb_tasks is not None:
        uri = tracking_uri or (exp.tracking.resolved_uri() if exp is not None else None)
        _mteb_eval(
            str(result.out),
            mteb,
            mteb_tasks,
            exp,
            uri,
            32,
            None,
            run_id=result.run_id,
            prompt_tasks=[result.prompt_task] if result.prompt_task else [],
        )


@app.command()
def gc(
    experiment_file: Optional[Path] = typer.Argument(
        None, metavar="[EXPERIMENT.yaml]", help="Experiment YAML."
    ),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment name (no YAML)."),
    keep: Optional[int] = typer.Option(
        None, "--keep", min=1, help="Checkpoints kept per sweep by objective (default: storage_keep.top)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be deleted; delete nothing."),
    tracking_uri: Optional[str] = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI (default: the YAML's, else $MLFLOW_TRACKING_URI)."
    ),
) -> None:
    """Delete the checkpoints of an experiment's finished sweeps that storage_keep would not keep."""
    from mixopt.human import human_bytes
    from mixopt.sweep.retention import Keep, describe, gc_experiment
    from mixopt.tracking.store import connect, recorded_experiment, resolve_uri, store_exists

    if (experiment_file is None) == (experiment is None):
        _fail("give the experiment: EXPERIMENT.yaml or --experiment NAME (one of them)")
    if experiment_file is not None:
        exp = _load(experiment_file)
        uri, name, cfg = tracking_uri or exp.tracking.resolved_uri(), exp.experiment_name, exp.storage_keep
    else:
        uri, name, cfg = resolve_uri(tracking_uri), str(experiment), None
        if not store_exists(uri):
            _fail(f"no MLflow store at {uri}: pass --tracking-uri")
        try:  # the storage_keep (pins, verify) of the config the newest sweep recorded
            cfg = recorded_experiment(uri, name)[0].storage_keep
        except (LookupError, ConfigError) as e:
            if keep is None:
                _fail(f"--experiment {name}: {e}; give --keep N")
    if cfg is None and keep is None:
        _fail(f"experiment {name!r} sets no storage_keep: give --keep N (checkpoints kept per sweep)")
    try:
        sweeps = gc_experiment(connect(uri), name, Keep.from_config(cfg, keep), dry_run)
    except LookupError as e:
        _fail(str(e))
    verb = "would prune" if dry_run else "pruned"
    for s in sweeps:
        if s.outcome is None:
            typer.echo(f"[mixopt] sweep run {s.run_id}: skipped, {s.skipped}")
            continue
        typer.echo(f"[mixopt] sweep run {s.run_id} ({s.storage}): {len(s.outcome.kept)} checkpoints kept")
        for line in describe(s.outcome, verb):
            typer.echo(f"[mixopt]   {line}")
    freed = sum(s.outcome.freed for s in sweeps if s.outcome is not None)
    typer.echo(
        f"[mixopt] {'would free' if dry_run else 'freed'} {human_bytes(freed)} in {len(sweeps)} sweep(s)"
    )


@app.command()
def report(
    experiment_file: Optional[Path] = typer.Argument(None, metavar="[EXPERIMENT.yaml]", help="Sweep YAML."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment name (no YAML)."),
    out: Path = typer.Option(Path("report.html"), "--out", help="The HTML file to write."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Sweep run id (default: the newest sweep)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="Default: the YAML's."),
) -> None:
    """Write the interactive report of a sweep (finished or still running): one self-contained HTML file."""
    from mixopt.report import write_report
    from mixopt.tracking.store import resolve_uri

    exp = _load(experiment_file) if experiment_file is not None else None
    uri = tracking_uri or (exp.tracking.resolved_uri() if exp else resolve_uri(None))
    name = exp.experiment_name if exp and experiment is None else experiment
    if name is None and run_id is None:
        _fail("give the sweep: EXPERIMENT.yaml, --experiment NAME or --run RUN_ID")
    try:
        data = write_report(out, uri, name, run_id)
    except (LookupError, ValueError) as e:
        _fail(str(e))
    done = sum(t.status == "FINISHED" for t in data.trials)
    typer.echo(
        f"[mixopt] {out}: sweep run {data.run_id} ({data.run_status}), {done}/{len(data.trials)} trials"
    )


def _cwd_importable() -> None:
    """Let ``--mteb-tasks my_tasks:Task`` import ``my_tasks.py`` from the working directory:
    ``python -m`` puts it on ``sys.path``, the ``mixopt`` console script does not."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def _mteb_eval(
    target: str,
    benchmark: Optional[str],
    task_list: Optional[str],
    exp,
    tracking_uri: Optional[str],
    batch_size: int,
    device: Optional[str],
    run_id: Optional[str] = None,
    prompt_tasks: Sequence[str] = (),
) -> None:
    """Run MTEB on a model, print the table; shared by ``eval`` and ``soup --mteb``."""
    from mixopt.mteb_eval import EvalError, evaluate_model, format_mteb_table, mteb_prompts

    names = [n.strip() for n in task_list.split(",") if n.strip()] if task_list else None
    try:
        model_dir, run_id, scores = evaluate_model(
            target,
            benchmark=benchmark,
            task_names=names,
            prompts=mteb_prompts(exp.tasks, prompt_tasks) if exp is not None else None,
            tracking_uri=tracking_uri,
            batch_size=batch_size,
            device=device,
            run_id=run_id,
        )
    except EvalError as e:
        _fail(str(e), code=1)
    typer.echo(format_mteb_table(scores))
    where = f"MLflow run {run_id}" if run_id else "no MLflow run (none records this directory)"
    typer.echo(
        f"mteb scores of {model_dir}: {model_dir / 'mteb_results.json'}, model card README.md; {where}"
    )


@app.command("eval")
def eval_(
    model: str = typer.Argument(
        ..., help="A sentence-transformers directory (soup, checkpoint) or an MLflow run id."
    ),
    mteb: Optional[str] = typer.Option(None, "--mteb", help='An MTEB benchmark, e.g. "MTEB(eng, v2)".'),
    mteb_tasks: Optional[str] = typer.Option(
        None,
        "--mteb-tasks",
        help="MTEB task names, comma-separated (e.g. Banking77Classification,STSBenchmark).",
    ),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        help="Experiment YAML whose task prompts the model is evaluated with "
        "(default: the config recorded by the model's sweep, if any).",
    ),
    tracking_uri: Optional[str] = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Encoding batch size."),
    device: Optional[str] = typer.Option(
        None, "--device", help="cpu, cuda, ... (default: sentence-transformers' choice)."
    ),
    prompt_task: Optional[str] = typer.Option(
        None,
        "--prompt-task",
        help="Where the experiment's tasks of one kind have different prompts: the task whose "
        "prompts to use (one per kind, comma-separated).",
    ),
) -> None:
    """Evaluate a model on MTEB tasks; log mteb.<task> scores to its MLflow run and add them to its model card."""
    if (mteb is None) == (mteb_tasks is None):
        _fail("give exactly one of --mteb BENCHMARK or --mteb-tasks TASK,TASK,...")
    _cwd_importable()
    exp = _load(config) if config is not None else _recorded_config(model, tracking_uri)
    chosen = [n.strip() for n in prompt_task.split(",") if n.strip()] if prompt_task else []
    _mteb_eval(model, mteb, mteb_tasks, exp, tracking_uri, batch_size, device, prompt_tasks=chosen)


def _recorded_config(model: str, tracking_uri: Optional[str]):
    """The experiment recorded by the sweep of the model's run, for its prompts; None if there is none."""
    from mixopt.config import ConfigError
    from mixopt.mteb_eval import EvalError, resolve_model
    from mixopt.tracking import store

    uri = store.resolve_uri(tracking_uri)
    try:
        _, run_id = resolve_model(model, uri)
    except EvalError as e:
        _fail(str(e), code=1)
    if run_id is None:
        return None
    name = store.experiment_name_of_run(store.connect(uri), run_id)
    try:
        return store.recorded_experiment(uri, name)[0]
    except (LookupError, ConfigError):
        return None


# `mixopt recommend`: its options and logic in mixopt/recommend.py.
app.command("recommend")(recommend_command)

if __name__ == "__main__":
    app()
