"""The real-data experiment end to end, and its test-set table: does the claim hold on real data?

``experiments/real_minilm.yaml`` finetunes all-MiniLM-L6-v2 on a mixture of three public tasks
(bench/real_data.py writes them, each with a test split). Two commands:

    python bench/real.py run      # what `make real` runs after `make real-data`
    python bench/real.py table    # run, then the single-task experts, the soups' seed replicates
                                  # and every model on the test splits: bench/RESULTS.md, "Real data"

``run``: the sweep (``mixopt sweep``, its verification included), the soups of its top 5 trials
(``mixopt soup --runs top5``: uniform into ``soups/real_minilm``, greedy into
``soups/real_minilm-greedy``), then the final evaluation on the test splits of the base model, the
verification's two arms (the uniform baseline and the recommended mixture, the same seeds) and
the soups; prints the headline. A finished sweep of the experiment is reused (``--new-sweep``
runs another), an interrupted one resumed.

``table`` adds, trained here outside the sweep (bench/real_jobs.py, as many at a time as the
sweep's ``max_concurrent``): one expert per task (its one-hot mixture) for ``--seeds`` trainer
seeds; and ``--seeds - 1`` replicates of the top-5 soup, each the same five mixtures retrained
with fresh seeds and souped uniform and greedy as the sweep's own. These trials also evaluate on
dev halfway (``eval_every = steps / 2``), a learning-curve point for the multi-fidelity replay
(bench/real_options.py). The test splits come after each stage (the sweep's models, the experts,
the replicates): a run cut short keeps what it finished in the cache. Then the table
(bench/real_table.py).

**The test splits are read by the final evaluation only.** Every process of the run (this one,
the sweep's driver and Ray workers, the pool workers) starts with ``bench/read_audit`` on
``PYTHONPATH``, whose audit hook logs each open of a ``{train,dev,test}.jsonl`` to
``WORK/reads.jsonl``; this script writes a phase marker there before each stage and checks, at
the end, that every open of a ``test.jsonl`` lies in a ``test`` phase (or in ``--quick``'s ``data``
phase, which writes the splits and reads each back to count its rows), and that the hook reached
the workers (``dev.jsonl`` opened by processes other than the driver's). A violation ends the run
with exit 1.

Options: ``--trainer st`` (``trainers.sentence_transformers``, the YAML as shipped) or
``embedding`` (the built-in trainer on the same experiment, :data:`TARGETS`); ``--quick`` (small
data in ``WORK/data``, 4-step trials, 4 search trials, 2 seeds, top-3 soups: the slow test's form);
``--work DIR`` (default ``runs/real-<trainer>``). With ``--quick``, ``--trainer embedding`` or
``--work``, the YAML is rewritten into ``WORK/`` with its store, storage and soups under ``WORK``.

**The cache** (``WORK/trials.json``, ``--cache``; a run reuses what it holds): the per-trial table,
for replays (bench/real_options.py) and interval coverage, a JSON object::

    format, version          "mixopt.real_trials", 1
    experiment, trainer      the experiment name and trainer.target
    config, config_path      the experiment YAML as run (a mapping), and its file
    tasks                    [{"name", "kind", "metric"}]: the dev and test scores' meaning
    test_columns             ["stsb/spearman", "news/ndcg@10", "news/recall@1", "reviews/accuracy"]
    steps, max_concurrent    the trials' step budget; trials run at a time
    soup_k                   K of the soups' top-K (5; --quick 3)
    sweep_run                the sweep's MLflow run id
    verification             the sweep's recommended.json: the recommendation, the verification's
                             pairs {seed, recommended, baseline}, diff, ci95, seed_sd
    base                     {"checkpoint", "dev": {task: score} | null, "objective", "test"}
    trials                   one record per trained trial (below)
    soups                    name -> {"replicate", "method", "ingredients": [trial ids, best
                             first], "kept": [ids], "dev": {task: score}, "objective",
                             "dev_rows": "all" | "report half" (greedy: scored on the dev rows it
                             was not selected on), "checkpoint", "best_ingredient": id, "test"};
                             an older cache's soup may hold "rank": "objective", or "posterior"
                             (the soup "top<K>-posterior", ranked by the GP posterior, an option
                             no longer in mixopt); bench/real_table.py reads both
    timing                   {"<stage>_s": wall seconds, "load": [[stage, 1-min load]...]}
    reads                    the audit's summary: opens of each split file, by phase

    a trial record:
    id                       "sweep:trial-003", "sweep:verify-...", "expert:<task>:s<seed>",
                             "rep<r>:<ingredient id>"
    stage                    search | verify-recommended | verify-baseline | expert | replicate
    mixture, seed, steps     task -> weight; the trainer seed; the step budget
    dev, objective           task -> dev score (its metric at full dim); their mean
    curve                    [[step, objective, {task: score}]...] at intermediate evaluations
    test                     {"stsb/spearman", ..., "mean"} on the test splits, or null (not evaluated)
    wall_s, train_s, eval_s  seconds: the whole trial (in the sweep: its MLflow run), training, final eval
    checkpoint, run_id       where its model is (may be gone), its MLflow run (sweep trials)

    python bench/real.py table --quick --work /tmp/rq     # the slow test's quick form
    python bench/real.py table --trainer embedding        # the built-in trainer's rows
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from mixopt import atomic
from mixopt.checksums import sha256_file
from mixopt.config import load_experiment
from mixopt.soup.evaluate import split_dev_rows, trainer_evaluator
from mixopt.soup.ingredients import Ingredient
from mixopt.soup.make import make_soup
from mixopt.soup.pipeline import soup_from_sweep

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))
SHIPPED = REPO / "experiments" / "real_minilm.yaml"
AUDIT_DIR = BENCH / "read_audit"

import real_data  # noqa: E402  (bench/real_data.py: the data, for --quick)
import real_table  # noqa: E402  (bench/real_table.py: the table and the headline)
from real_jobs import run_jobs  # noqa: E402
from real_records import sweep_runs, trial_records, verification  # noqa: E402
from real_testsplit import metric_names  # noqa: E402

# --trainer: the trainer target, and the options that differ from the shipped YAML's.
TARGETS: dict[str, tuple[str, dict[str, Any]]] = {
    "st": ("trainers.sentence_transformers:train", {}),
    # The EmbeddingGemma recipe's loss with Matryoshka dims of MiniLM's 384; the stratified task
    # schedule gives each task its share of the steps as the ST sampler does.
    "embedding": (
        "trainers.embedding:train",
        {"matryoshka_dims": [384, 256, 128], "task_sampling": "stratified"},
    ),
}
# Seeds of the trials trained here, clear of the sweep's (search trial N: trainer.seed + N; the
# verification's follow them).
EXPERT_SEED, REPLICATE_SEED = 1000, 2000
FORMAT, VERSION = "mixopt.real_trials", 1
# The soups average the sweep's top K trials (`mixopt soup --runs top5`); --quick: K = 3 and small
# data, so that the slow test's whole table takes minutes (the greedy soup evaluates K + 1 times).
SOUP_K, QUICK_SOUP_K = 5, 3
QUICK_CAPS = {"train": 400, "dev": 60, "test": 80}


class ReadViolation(RuntimeError):
    """A test split opened outside the final evaluation, or an audit that saw no worker."""


# --------------------------------------------------------------------------- the run's setting


class Run:
    """Where one run of the benchmark reads and writes, and its cache."""

    def __init__(self, args: argparse.Namespace) -> None:

        self.args = args
        self.trainer = args.trainer
        derived = args.quick or args.trainer != "st" or args.work is not None
        self.work = (args.work or REPO / "runs" / f"real-{args.trainer}").resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.config = self._derive() if derived else SHIPPED
        self.exp = load_experiment(self.config)
        suffix = "" if args.trainer == "st" else f"-{args.trainer}"
        self.soups = (self.work / "soups") if args.quick or args.work else REPO / "soups"
        self.soup_name = f"real_minilm{suffix}"
        self.cache_path = (args.cache or self.work / "trials.json").resolve()
        self.reads = self.work / "reads.jsonl"
        self.cache: dict[str, Any] = (
            json.loads(self.cache_path.read_text()) if self.cache_path.is_file() else {}
        )
        self.workers = self.exp.optimizer.max_concurrent or 2
        self.k = QUICK_SOUP_K if args.quick else SOUP_K
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(AUDIT_DIR), str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        )
        os.environ["MIXOPT_READ_LOG"] = str(self.reads)
        # Ray starts its workers at niceness 15: on a shared box the sweep's trials would wait behind
        # every other job while this benchmark's own pool workers (niceness 0) did not.
        os.environ.setdefault("RAY_worker_niceness", "0")
        _install_audit(self.reads)

    def _derive(self) -> Path:
        """The shipped YAML with this run's trainer, data, store and storage (module docstring)."""

        data = yaml.safe_load(SHIPPED.read_text())
        target, options = TARGETS[self.trainer]
        data_dir = self.work / "data" if self.args.quick else REPO / "data" / "real"
        for t in data["tasks"]:
            t["path"] = str(data_dir / t["name"])
        data["trainer"].update(options, target=target, model=str(data_dir / "model"))
        data["tracking"] = {"uri": f"sqlite:///{self.work}/mlflow.db"}
        data["storage"] = str(self.work / "runs")
        if self.args.quick:
            data["trainer"].update(steps=4, classifier_train_rows=200)
            data["optimizer"].update(max_trials=4, n_seeds=2)
            data["verify"] = {"seeds": 2}
        if self.trainer != "st":
            data["name"] = f"real_minilm-{self.trainer}"
        path = self.work / f"{data['name']}.yaml"

        atomic.write_text(path, yaml.safe_dump(data, sort_keys=False), fsync=False)
        return path

    def save(self) -> None:

        atomic.write_text(self.cache_path, json.dumps(self.cache, indent=1) + "\n", fsync=False)

    def phase(self, name: str) -> None:
        """A marker in the read log: the opens after it belong to stage ``name``."""
        line = json.dumps({"phase": name, "time": time.time(), "load": os.getloadavg()[0]})
        with open(self.reads, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        self.cache.setdefault("timing", {}).setdefault("load", []).append(
            [name, round(os.getloadavg()[0], 2)]
        )
        print(f"[real] {name} (load {os.getloadavg()[0]:.1f})", flush=True)


def _install_audit(log: Path) -> None:
    """The audit hook of bench/read_audit in this process too (children get it from PYTHONPATH)."""
    spec = importlib.util.spec_from_file_location("read_audit", AUDIT_DIR / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install(str(log))


# --------------------------------------------------------------------------- the stages


def stage_data(r: Run) -> None:
    """The task folders; ``--quick`` writes its small ones (the pinned packages must be installed)."""
    if r.args.quick and not (r.work / "data" / "manifest.json").is_file():
        # Writing the splits reads each one back (its row count): the "data" phase, which
        # check_reads allows to open test files, as it selects nothing.
        r.phase("data")
        real_data.prepare(r.work / "data", seed=0, caps=QUICK_CAPS)
        r.phase("start")
    missing = [t.name for t in r.exp.tasks if not Path(t.train_file).with_name("test.jsonl").is_file()]
    if missing:
        raise SystemExit(
            f"real: no test split for {missing} under {r.exp.tasks[0].train_file.parents[1]}; run make real-data"
        )


def stage_sweep(r: Run) -> Any:
    """The sweep (and its verification): reuse a finished one, resume an interrupted one."""

    uri, name = r.exp.tracking.resolved_uri(), r.exp.experiment_name
    runs = sweep_runs(uri, name)
    cmd = [sys.executable, "-m", "mixopt.cli", "sweep", str(r.config)]
    if runs and not r.args.new_sweep:
        status = runs[0].info.status
        if status == "FINISHED":
            print(f"[real] reusing the finished sweep run {runs[0].info.run_id} (--new-sweep runs another)")
            return runs[0]
        if status == "FAILED":
            raise SystemExit(f"real: the sweep run {runs[0].info.run_id} FAILED; see its log, or --new-sweep")
        cmd.append("--resume")
    r.phase("sweep")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    r.cache.setdefault("timing", {})["sweep_s"] = time.perf_counter() - t0
    return sweep_runs(uri, name)[0]


def record_sweep(r: Run, sweep: Any) -> None:
    """The cache's header and the sweep's trials and verification (dev only), from MLflow."""

    sweep_id = sweep.info.run_id
    if r.cache.get("sweep_run") not in (None, sweep_id):
        print(f"[real] the cache {r.cache_path} is of another sweep: starting it afresh")
        r.cache = {}
    uri = r.exp.tracking.resolved_uri()
    kept = {t["id"]: t for t in r.cache.get("trials", [])}
    trials = []
    for rec in trial_records(uri, sweep, list(r.exp.tasks)):
        rec["steps"] = r.exp.trainer.steps
        rec["test"] = kept.get(rec["id"], {}).get("test")
        trials.append(rec)
    trials += [t for t in kept.values() if not t["id"].startswith("sweep:")]

    r.cache.update(
        format=FORMAT,
        version=VERSION,
        experiment=r.exp.experiment_name,
        trainer=r.exp.trainer.target,
        config=yaml.safe_load(Path(r.config).read_text()),
        config_path=str(Path(r.config).resolve()),
        tasks=[{"name": t.name, "kind": t.kind.value, "metric": t.metric} for t in r.exp.tasks],
        test_columns=[f"{t}/{m}" for t, m in metric_names(r.exp.tasks)],
        steps=r.exp.trainer.steps,
        max_concurrent=r.workers,
        soup_k=r.k,
        sweep_run=sweep_id,
        sweep_wall_s=(sweep.info.end_time - sweep.info.start_time) / 1000.0 if sweep.info.end_time else None,
        verification=verification(uri, sweep),
        trials=trials,
    )
    r.cache.setdefault("soups", {})
    r.cache.setdefault("base", {"checkpoint": str(Path(r.exp.trainer.options["model"]).resolve())})
    r.save()


def stage_sweep_soups(r: Run) -> None:
    """The sweep's top-K soups, uniform and greedy."""
    k = r.k
    wanted = [(f"top{k}-uniform", "uniform", r.soups / r.soup_name)]
    wanted.append((f"top{k}-greedy", "greedy", r.soups / f"{r.soup_name}-greedy"))
    todo = [w for w in wanted if not _soup_done(r, w[0], w[2])]
    if not todo:
        return
    r.phase("soup")
    t0 = time.perf_counter()
    by_run = {t.get("run_id"): t["id"] for t in r.cache["trials"]}
    for name, method, out in todo:
        sel, res = soup_from_sweep(r.exp, runs=f"top{k}", method=method, out=out, force=True, echo=print)
        chosen = [by_run[i.run_id] for i in sel.chosen]
        r.cache["soups"][name] = _soup_record(
            r, res, 0, method, chosen, [by_run[i.run_id] for i in res.ingredients]
        )
        r.save()
    r.cache["timing"]["soups_s"] = r.cache["timing"].get("soups_s", 0.0) + time.perf_counter() - t0


def _soup_done(r: Run, name: str, out: Path) -> bool:
    rec = r.cache.get("soups", {}).get(name)
    return rec is not None and Path(rec["checkpoint"]).is_dir() and Path(rec["checkpoint"]) == out.resolve()


def _soup_record(r: Run, res: Any, replicate: int, method: str, chosen: list[str], kept: list[str]) -> dict:
    ev = res.evaluation
    return {
        "replicate": replicate,
        "method": method,
        "ingredients": chosen,
        "kept": kept,
        "dev": dict(ev.task_scores) if ev else None,
        "objective": ev.objective if ev else None,
        "dev_rows": "report half" if method == "greedy" else "all",
        "checkpoint": str(Path(res.out).resolve()),
        "best_ingredient": chosen[0],
        "test": None,
    }


def stage_extra(r: Run, seeds: int, stage: str) -> None:
    """The experts (``stage="expert"``) or the soups' replicates (``"replicate"``), trained here
    (table only)."""

    done = {t["id"] for t in r.cache["trials"] if t.get("checkpoint") and Path(t["checkpoint"]).is_dir()}
    names = r.exp.task_names
    half = max(1, r.exp.trainer.steps // 2)
    jobs = []
    for task in names:
        for s in range(seeds):
            key = f"expert:{task}:s{EXPERT_SEED + s}"
            mixture = {n: float(n == task) for n in names}
            jobs.append(
                {"kind": "train", "key": key, "mixture": mixture, "seed": EXPERT_SEED + s, "stage": "expert"}
            )
    top = r.cache["soups"][f"top{r.k}-uniform"]["ingredients"]
    trials = {t["id"]: t for t in r.cache["trials"]}
    for rep in range(1, seeds):
        for j, tid in enumerate(top):
            key = f"rep{rep}:{tid.split(':', 1)[1]}"
            seed = REPLICATE_SEED + 10 * rep + j
            jobs.append(
                {
                    "kind": "train",
                    "key": key,
                    "mixture": trials[tid]["mixture"],
                    "seed": seed,
                    "stage": "replicate",
                }
            )
    jobs = [
        dict(j, out=str(r.work / "trials" / j["key"].replace(":", "-")), eval_every=half)
        for j in jobs
        if j["key"] not in done and j["stage"] == stage
    ]
    if not jobs:
        return
    r.phase("train")
    t0 = time.perf_counter()
    stages = {j["key"]: j for j in jobs}

    def done_one(res: dict[str, Any]) -> None:
        job = stages[res["key"]]
        rec = {
            "id": res["key"],
            "stage": job["stage"],
            "mixture": job["mixture"],
            "seed": job["seed"],
            "steps": r.exp.trainer.steps,
            **{k: res[k] for k in ("dev", "objective", "curve", "wall_s", "train_s", "eval_s", "checkpoint")},
            "test": None,
            "run_id": None,
        }
        r.cache["trials"] = [t for t in r.cache["trials"] if t["id"] != rec["id"]] + [rec]
        r.save()
        print(
            f"[real] {rec['id']}: dev objective {rec['objective']:.4f} ({rec['wall_s']:.0f} s, load {res['load'][0]:.1f})",
            flush=True,
        )

    run_jobs(r.config, jobs, r.workers, done_one)
    r.cache["timing"]["train_s"] = r.cache["timing"].get("train_s", 0.0) + time.perf_counter() - t0


def stage_replicate_soups(r: Run, seeds: int) -> None:
    """Uniform and greedy soups of each replicate's five retrained ingredients (table only)."""

    trials = {t["id"]: t for t in r.cache["trials"]}
    evaluate = trainer_evaluator(r.exp)
    halves = split_dev_rows(r.exp.tasks)
    top = r.cache["soups"][f"top{r.k}-uniform"]["ingredients"]
    started = False
    for rep in range(1, seeds):
        ids = [f"rep{rep}:{tid.split(':', 1)[1]}" for tid in top]
        ingredients = sorted(
            (
                Ingredient(
                    run_id=i,
                    trial_id=i,
                    checkpoint=Path(trials[i]["checkpoint"]),
                    value=trials[i]["objective"],
                    mixture=trials[i]["mixture"],
                    task_scores=trials[i]["dev"],
                )
                for i in ids
            ),
            key=lambda g: -g.value,
        )
        for method in ("uniform", "greedy"):
            name = f"rep{rep}-{method}"
            out = r.work / "soups" / name
            if _soup_done(r, name, out):
                continue
            if not started:
                r.phase("soup")
                started = True
            t0 = time.perf_counter()
            res = make_soup(
                ingredients,
                out,
                method=method,
                force=True,
                tasks=r.exp.tasks,
                experiment_name=r.exp.experiment_name,
                evaluate=evaluate if method == "uniform" else evaluate.on(halves.select),
                report=evaluate.on(halves.report) if method == "greedy" else None,
                echo=print,
            )
            chosen = [g.run_id for g in ingredients]
            kept = [g.run_id for g in res.ingredients]
            r.cache["soups"][name] = _soup_record(r, res, rep, method, chosen, kept)
            r.cache["timing"]["soups_s"] = r.cache["timing"].get("soups_s", 0.0) + time.perf_counter() - t0
            r.save()


def stage_base_dev(r: Run) -> None:
    """The base model on the dev splits (table only), for the cache's replays."""

    if r.cache["base"].get("dev"):
        return
    r.phase("base-dev")

    def done(res: dict[str, Any]) -> None:
        r.cache["base"].update(dev=res["dev"], objective=res["objective"])
        r.save()

    run_jobs(r.config, [{"kind": "dev", "key": "base", "checkpoint": r.cache["base"]["checkpoint"]}], 1, done)


def stage_test(r: Run, table: bool) -> None:
    """The final evaluation: each model of the headline (and of the table) on the test splits."""

    models: dict[str, str] = {"base": r.cache["base"]["checkpoint"]}  # label -> checkpoint
    trials = {t["id"]: t for t in r.cache["trials"]}
    for t in trials.values():
        if t["stage"].startswith("verify-") or (table and t["stage"] == "expert"):
            models[t["id"]] = t["checkpoint"]
    for name, soup in r.cache["soups"].items():
        if table or soup["replicate"] == 0:
            models[f"soup:{name}"] = soup["checkpoint"]
            models[soup["best_ingredient"]] = trials[soup["best_ingredient"]]["checkpoint"]
    results = r.cache.setdefault("test_results", {})
    digest = {label: sha256_file(Path(ck) / "model.safetensors") for label, ck in models.items()}
    todo = {}
    for label, d in digest.items():
        if d not in results and d not in todo:
            todo[d] = label
    if todo:
        r.phase("test")
        t0 = time.perf_counter()

        def done(res: dict[str, Any]) -> None:
            results[res["key"]] = res["test"]
            r.save()
            print(
                f"[real] test of {todo[res['key']]}: mean {res['test']['scores']['mean']:.4f} ({res['wall_s']:.0f} s)",
                flush=True,
            )

        jobs = [{"kind": "test", "key": d, "checkpoint": models[label]} for d, label in todo.items()]
        run_jobs(r.config, jobs, r.workers, done)
        r.cache["timing"]["test_s"] = r.cache["timing"].get("test_s", 0.0) + time.perf_counter() - t0
    for label, d in digest.items():
        scores = results[d]["scores"]
        if label == "base":
            r.cache["base"]["test"] = scores
        elif label.startswith("soup:"):
            r.cache["soups"][label[5:]]["test"] = scores
        else:
            trials[label]["test"] = scores
    r.save()


# --------------------------------------------------------------------------- the read audit


def check_reads(r: Run) -> dict[str, Any]:
    """The audit's verdict (module docstring); ReadViolation on a test split read outside ``test`` (and ``data``)."""
    phase, driver = "start", os.getpid()
    counts: dict[str, dict[str, int]] = {}
    pids: set[int] = set()
    bad = []
    for line in r.reads.read_text().splitlines():
        rec = json.loads(line)
        if "phase" in rec:
            phase = rec["phase"]
            continue
        split = Path(rec["path"]).name.split(".")[0]
        counts.setdefault(phase, {}).setdefault(split, 0)
        counts[phase][split] += 1
        if split == "test" and phase not in ("test", "data"):
            bad.append(f"{rec['path']} by pid {rec['pid']} ({' '.join(rec['argv'])}) during {phase}")
        if split == "dev" and rec["pid"] != driver:
            pids.add(rec["pid"])
    summary = {"opens_by_phase": counts, "processes_reading_dev": len(pids)}
    r.cache["reads"] = summary
    r.save()
    if bad:
        raise ReadViolation(
            f"a test split was read outside the final evaluation: {bad[0]} ({len(bad)} in all)"
        )
    if not pids:
        raise ReadViolation(
            f"the read audit saw no process but this one ({r.reads}): it did not reach the workers"
        )
    return summary


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("run", "table"))
    ap.add_argument("--trainer", choices=sorted(TARGETS), default="st")
    ap.add_argument("--quick", action="store_true", help="small data, 4-step trials, 2 seeds (the slow test)")
    ap.add_argument("--work", type=Path, default=None, help="output folder (default runs/real-<trainer>)")
    ap.add_argument("--cache", type=Path, default=None, help="the per-trial table (default WORK/trials.json)")
    ap.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="trainer seeds of the experts and soups (default 3; --quick 2)",
    )
    ap.add_argument("--new-sweep", action="store_true", help="run a new sweep even if one finished")
    ap.add_argument("--md", type=Path, default=None, help="write the table here too (default WORK/table.md)")
    args = ap.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 3)
    if args.work is None and args.quick:
        ap.error("--quick needs --work DIR")
    t0 = time.perf_counter()
    r = Run(args)
    stage_data(r)
    record_sweep(r, stage_sweep(r))
    table = args.mode == "table"
    stage_sweep_soups(r)
    stage_test(r, table)  # the headline's models first (module docstring)
    if table:
        stage_base_dev(r)
        stage_extra(r, seeds, "expert")
        stage_test(r, table)
        stage_extra(r, seeds, "replicate")
        stage_replicate_soups(r, seeds)
        stage_test(r, table)
    r.phase("done")
    try:
        reads = check_reads(r)
    except ReadViolation as e:
        print(f"real: {e}", file=sys.stderr)
        return 1
    r.cache["timing"][f"{args.mode}_s"] = time.perf_counter() - t0
    r.save()
    text = real_table.render(r.cache, full=table)
    print(text)
    print(real_table.reads_line(reads))
    md = args.md or r.work / "table.md"

    atomic.write_text(md, text + "\n" + real_table.reads_line(reads) + "\n", fsync=False)
    print(f"[real] wrote {md} and {r.cache_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
