"""The real sweep at scale, measured on a CPU: checkpoint bytes, dev rows read, soup I/O, worker memory.

    python bench/scale.py --quick                 # the tiny model, 6 trials of 6 steps (1-3 min)
    python bench/scale.py --model-size 300m       # EmbeddingGemma-300m's shape, 6 trials of 2 steps (about 5 min)

The model is built locally in a temporary directory (:mod:`trainers.tiny_model`, the builder of
``mixopt synth``'s model; ``--model-size 300m`` gives it EmbeddingGemma-300m's shape, 307,581,696
random-init parameters, 1.23 GB per fp32 checkpoint), on synthetic tasks. One measurement per function:

- :func:`sweep_disk`: a real ``mixopt sweep`` of ``--trials`` trials (local Ray, sqlite MLflow, one
  trial at a time so one reused actor runs them all), and the bytes each trial leaves in storage;
  run once as configured today and once with checkpoint retention (``storage_keep.top`` =
  ``--keep``, :func:`retention_config`) when the config accepts it, else printed as "before";
- :func:`worker_rss_floor`: the resident memory of the Ray actor that runs the trials, sampled
  every 0.2 s during that sweep; a trial's floor is the least it held during the trial's window;
- :func:`dev_rows_read`: one trial of the embedding trainer in this process, counting the rows it
  reads from each task's dev source (every ``iter_rows`` of ``mixopt.data`` that a loaded module
  holds is wrapped) per evaluation, against the rows the dev files hold;
- :func:`soup_io`: ``mixopt soup --runs top5`` (uniform, then greedy) on the sweep without
  retention, counting tensor bytes read from each ingredient's weight files (every
  ``safetensors.safe_open`` a loaded module holds is wrapped) and the weight files written
  (``.safetensors`` opened for writing, or written by ``safetensors.torch.save_file``).

Figures: bench/RESULTS.md, "Scale".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MB = 1e6
GIB = 2**30
TASKS = ("retrieval_0", "sts_1", "classification_2")


def build_data(root: Path, size: str) -> Path:
    """Synthetic tasks and a random-init encoder of ``size`` (tiny or 300m) under ``root/data``."""
    from mixopt.synth import PROMPT_WORDS, SynthSpec, synthesize
    from trainers.tiny_model import EMBEDDINGGEMMA_300M, build_tokenizer, write_tiny_model

    data = root / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=128, n_dev=32), with_model=size == "tiny")
    if size == "300m":
        words = set()
        for f in data.glob("*/*.jsonl"):
            for line in f.read_text().splitlines():
                row = json.loads(line)
                for v in row.values():
                    for text in v if isinstance(v, list) else [v]:
                        if isinstance(text, str):
                            words.update(text.split())
        tokenizer = build_tokenizer(PROMPT_WORDS + sorted(words))
        write_tiny_model(data / "model", tokenizer, seed=0, dense=True, **EMBEDDINGGEMMA_300M)
    return data


def experiment(root: Path, data: Path, size: str, trials: int, name: str) -> dict[str, Any]:
    """The sweep's experiment: ``trials`` trials one at a time, two evaluations per trial."""
    steps = 6 if size == "tiny" else 2
    return {
        "name": name,
        "tasks": [{"name": n, "kind": n.rsplit("_", 1)[0], "path": str(data / n)} for n in TASKS],
        "optimizer": {"n_seeds": 3, "max_trials": trials, "max_concurrent": 1, "random_state": 0},
        "trainer": {
            "target": "trainers.embedding:train",
            "steps": steps,
            "seed": 0,
            "model": str(data / "model"),
            "matryoshka_dims": [64, 32] if size == "tiny" else [768, 256],
            "batch_size": 8 if size == "tiny" else 4,
            "max_seq_length": 32,
            "eval_every": steps // 2,
            "cpu_threads": 2,
            "learning_rate": 5e-4 if size == "tiny" else 2e-5,
        },
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db"},
        "resources": {"cpus": 1},
        "verify": {"seeds": 0},  # the search's trials only: what storage and the soup see
        "storage": str(root / f"runs-{name}"),
    }


def retention_config(raw: dict[str, Any], keep_top: int) -> dict[str, Any]:
    """``raw`` with checkpoint retention keeping the best ``keep_top`` trials (``storage_keep``)."""
    return raw | {"storage_keep": {"top": keep_top, "verify": True}}


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


class _ActorRSS(threading.Thread):
    """Samples the resident memory of every Ray worker process (``ray::`` in its title) every 0.2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: dict[int, list[tuple[float, int]]] = defaultdict(list)
        self.running = True

    def run(self) -> None:
        import psutil

        while self.running:
            now = time.time()
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = p.info["cmdline"] or []
                if cmd and cmd[0].startswith("ray::") and p.info["memory_info"] is not None:
                    self.samples[p.pid].append((now, p.info["memory_info"].rss))
            time.sleep(0.2)

    def stop(self) -> dict[int, list[tuple[float, int]]]:
        self.running = False
        self.join()
        return self.samples


def sweep_disk(raw: dict[str, Any]) -> tuple[Any, dict[str, int], dict[int, list[tuple[float, int]]]]:
    """Run the sweep of ``raw``; return its summary, the bytes left in storage by each trial, and
    the Ray workers' RSS samples."""
    from mixopt.config import experiment_from_dict
    from mixopt.sweep import run_sweep

    exp = experiment_from_dict(raw)
    sampler = _ActorRSS()
    sampler.start()
    try:
        summary = run_sweep(exp, verbose=False)
    finally:
        samples = sampler.stop()
    storage = Path(summary.storage_dir)
    per_trial = {t["trial_id"]: _tree_bytes(storage / t["trial_id"]) for t in summary.trials}
    return summary, per_trial, samples


def worker_rss_floor(summary: Any, samples: dict[int, list[tuple[float, int]]]) -> list[int]:
    """Per trial, in order, the least RSS of the actor that ran it (the worker with the largest RSS
    within the trial's MLflow run window; Tune may start a new actor) within that window."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary.tracking_uri)
    windows = sorted(
        (run.info.start_time / 1e3, (run.info.end_time or 0) / 1e3)
        for run in (client.get_run(t["run_id"]) for t in summary.trials)
    )
    floors = []
    for start, end in windows:
        inside = {pid: [r for t, r in rows if start <= t <= end] for pid, rows in samples.items()}
        inside = {pid: rows for pid, rows in inside.items() if rows}
        if inside:
            actor = max(inside, key=lambda pid: max(inside[pid]))
            floors.append(min(inside[actor]))
    return floors


def dev_rows_read(raw: dict[str, Any], root: Path) -> dict[str, Any]:
    """One trial here: rows read from each dev source, and the trial's evaluations."""
    import mixopt.data
    from mixopt.config import experiment_from_dict
    from mixopt.trial import Trial
    from trainers.embedding import train

    exp = experiment_from_dict(raw)
    dev_files = {Path(t.dev_file).resolve(): t.name for t in exp.tasks}
    read: Counter[str] = Counter()
    original = mixopt.data.iter_rows

    def counting(path: Any, *args: Any, **kwargs: Any):
        name = dev_files.get(Path(str(path)).resolve())
        for row in original(path, *args, **kwargs):
            if name:
                read[name] += 1
            yield row

    patched = _patch_everywhere(original, counting)
    evaluations = []
    try:
        trial = Trial(
            mixture={n: 1 / len(TASKS) for n in TASKS},
            hyperparameters={},
            seed=0,
            steps=exp.trainer.steps,
            output_dir=root / "dev-rows-trial",
            tasks=tuple(exp.tasks),
            options=exp.trainer.options,
            trial_id="dev-rows",
        )
        train(trial, lambda step, m: evaluations.append(step) if "objective" in m else None)
    finally:
        _unpatch(patched)
    in_files = {name: sum(1 for line in path.open() if line.strip()) for path, name in dev_files.items()}
    return {"read": dict(read), "in_files": in_files, "evaluations": len(evaluations)}


def _patch_everywhere(original: Any, replacement: Any) -> list[tuple[Any, str, Any]]:
    """Point every loaded module attribute that is ``original`` at ``replacement``."""
    done = []
    for module in list(sys.modules.values()):
        for attr, value in list(getattr(module, "__dict__", {}).items()):
            if value is original:
                setattr(module, attr, replacement)
                done.append((module, attr, original))
    return done


def _unpatch(done: list[tuple[Any, str, Any]]) -> None:
    for module, attr, original in done:
        setattr(module, attr, original)


def soup_io(raw: dict[str, Any], root: Path, ingredients_root: Path, k: int = 5) -> dict[str, dict[str, Any]]:
    """``mixopt soup --runs top{k}``, uniform then greedy: per method, the read passes over each
    ingredient's weights (tensor bytes read / its weight bytes) and the weight files written."""
    import transformers  # noqa: F401  (load what the soup loads, so its safe_open is wrapped too)
    import yaml

    import mixopt.soup.average  # noqa: F401

    config = root / f"{raw['name']}.yaml"
    config.write_text(yaml.safe_dump(raw))
    # Per trial directory, its weight files (the transformer's and each Dense layer's) and their bytes.
    weights: dict[str, dict[Path, int]] = defaultdict(dict)
    for f in ingredients_root.glob("*/**/*.safetensors"):
        weights[f.relative_to(ingredients_root).parts[0]][f.resolve()] = f.stat().st_size
    files_per_checkpoint = len(next(iter(weights.values())))
    results = {}
    for method in ("uniform", "greedy"):
        read, written = _soup_once(config, raw["name"], method, root / f"soup-{method}", k)
        passes = {
            trial: sum(read.get(f, 0) for f in files) / sum(files.values())
            for trial, files in weights.items()
            if any(f in read for f in files)
        }
        results[method] = {"passes": passes, "soups_written": len(set(written)) / files_per_checkpoint}
    return results


def _soup_once(config: Path, name: str, method: str, out: Path, k: int) -> tuple[Counter[Path], list[str]]:
    """One ``mixopt soup`` here: tensor bytes read per weight file, and the weight files written."""
    import safetensors
    import safetensors.torch

    from mixopt.cli import app

    read: Counter[Path] = Counter()
    written: list[str] = []
    open_orig, save_orig = safetensors.safe_open, safetensors.torch.save_file

    def counting_open(filename: Any, *args: Any, **kwargs: Any):
        return _Counted(open_orig(filename, *args, **kwargs), Path(str(filename)).resolve(), read)

    def counting_save(tensors: Any, filename: Any, *args: Any, **kwargs: Any):
        written.append(str(filename))
        return save_orig(tensors, filename, *args, **kwargs)

    def audit(event: str, args: tuple) -> None:
        if event == "open" and str(args[0]).endswith(".safetensors"):
            mode, flags = args[1], args[2] or 0
            if (mode and any(c in mode for c in "wax+")) or (flags & 0o3):
                written.append(str(args[0]))

    patched = _patch_everywhere(open_orig, counting_open) + _patch_everywhere(save_orig, counting_save)
    hook = _AuditSwitch.install(audit)
    try:
        args = ["soup", str(config), "--runs", f"top{k}", "--method", method, "--out", str(out)]
        app([*args, "--experiment", name], standalone_mode=False)
    finally:
        hook.active = False
        _unpatch(patched)
    return read, written


class _Counted:
    """A ``safe_open`` handle that adds the bytes of every tensor (or slice) it returns to ``read``."""

    def __init__(self, handle: Any, path: Path, read: Counter[Path]) -> None:
        self._h, self._path, self._read = handle, path, read

    def __enter__(self) -> _Counted:
        self._h.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._h.__exit__(*exc)

    def _count(self, t: Any) -> Any:
        self._read[self._path] += t.numel() * t.element_size()
        return t

    def get_tensor(self, name: str) -> Any:
        return self._count(self._h.get_tensor(name))

    def get_slice(self, name: str) -> Any:
        handle = self

        class _Slice:
            def __init__(self, s: Any) -> None:
                self._s = s

            def __getitem__(self, index: Any) -> Any:
                return handle._count(self._s[index])

            def __getattr__(self, attr: str) -> Any:
                return getattr(self._s, attr)

        return _Slice(self._h.get_slice(name))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._h, attr)


class _AuditSwitch:
    """An audit hook (which cannot be removed) that calls ``fn`` while ``active``."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.active = fn, True

    @classmethod
    def install(cls, fn: Any) -> _AuditSwitch:
        switch = cls(fn)
        sys.addaudithook(lambda event, args: switch.fn(event, args) if switch.active else None)
        return switch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-size", choices=("tiny", "300m"), default="300m")
    ap.add_argument("--quick", action="store_true", help="the tiny model (same as --model-size tiny)")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--keep", type=int, default=2, help="storage_keep.top of the retention sweep")
    args = ap.parse_args()
    size = "tiny" if args.quick else args.model_size

    import ray

    from mixopt.config import experiment_from_dict

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mixopt-scale-") as tmp:
        root = Path(tmp)
        data = build_data(root, size)
        model_bytes = _tree_bytes(data / "model")
        print(
            f"model: {size}, {model_bytes / MB:.1f} MB on disk; {args.trials} trials; {time.monotonic() - t0:.0f} s"
        )

        raw = experiment(root, data, size, args.trials, "scale_all")
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            summary, kept_all, samples = sweep_disk(raw)
            floors = worker_rss_floor(summary, samples)
            with_keep = retention_config(experiment(root, data, size, args.trials, "scale_keep"), args.keep)
            try:
                experiment_from_dict(with_keep)
            except Exception as e:  # this build has no storage.keep: today's behaviour is the "before"
                kept_top, why = None, f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
            else:
                _, kept_top, _ = sweep_disk(with_keep)
        finally:
            ray.shutdown()
        print(f"sweeps done; {time.monotonic() - t0:.0f} s")
        dev = dev_rows_read(raw, root)
        soups = soup_io(raw, root, Path(summary.storage_dir))

    n = len(kept_all)
    every = sum(kept_all.values())
    print(f"\n== bytes in storage after a {n}-trial sweep (checkpoint {model_bytes / MB:.1f} MB)")
    print(
        f"  before (every checkpoint kept): {every / MB:.1f} MB, {every / n / MB:.1f} MB per trial, "
        f"{every / model_bytes:.1f} checkpoints"
    )
    if kept_top is None:
        print(f"  storage_keep.top {args.keep}: not in this build ({why})")
    else:
        total = sum(kept_top.values())
        print(
            f"  storage_keep.top {args.keep}: {total / MB:.1f} MB, {total / len(kept_top) / MB:.1f} MB per trial, "
            f"{total / model_bytes:.1f} checkpoints"
        )
    per_eval = {t: dev["read"].get(t, 0) / max(dev["evaluations"], 1) for t in TASKS}
    print(
        f"\n== dev rows read from the source in one trial of {dev['evaluations']} evaluations (per sweep: x trials)"
    )
    for t in TASKS:
        print(
            f"  {t:<18} {dev['read'].get(t, 0):>5} rows read, {per_eval[t]:.1f} per evaluation; "
            f"{dev['in_files'][t]} rows in the dev file"
        )
    print(
        "\n== soup at K = 5: read passes over each ingredient's weights (bytes read / its bytes), soups written"
    )
    for method, r in soups.items():
        passes = sorted(r["passes"].values())
        print(
            f"  {method:<8} passes per ingredient {', '.join(f'{p:.2f}' for p in passes)} "
            f"(max {max(passes, default=0):.2f}); soups written {r['soups_written']:g}"
        )
    print(f"\n== trial actor RSS floor across trials (GiB): {', '.join(f'{f / GIB:.2f}' for f in floors)}")
    if len(floors) >= 3:  # the first trial's floor is the actor before the trainer was imported
        print(f"  last / second: {floors[-1] / floors[1]:.2f}")
    print(f"\ntotal {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
