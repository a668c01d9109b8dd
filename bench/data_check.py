"""What the full data check before a sweep costs (issue 14): ``mixopt.sweep.checks.check_data``
against its floor, a bare ``json.loads`` of every line of the same file, measured in the same run.

    python bench/data_check.py [--rows 200000] [--repeats 3]

Writes a synthetic retrieval task (query of 8 words, positive and one negative of 40 words each)
under a temporary directory, then times: the peer (``json.loads`` per line), ``check_data`` in
``head`` and ``full`` mode (cache off), and a second ``full`` check answered from the cache.
Prints the median of ``--repeats`` runs and the ratio full / peer.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from mixopt.config import experiment_from_dict
from mixopt.sweep.checks import check_data


def write_task(folder: Path, rows: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    folder.mkdir(parents=True)
    with open(folder / "train.jsonl", "w") as f:
        for _ in range(rows):
            f.write(json.dumps({"query": text(8), "positive": text(40), "negatives": [text(40)]}) + "\n")
    with open(folder / "dev.jsonl", "w") as f:
        for _ in range(1000):
            f.write(json.dumps({"query": text(8), "positive": text(40)}) + "\n")
    return folder


def peer(folder: Path) -> None:
    for name in ("train.jsonl", "dev.jsonl"):
        with open(folder / name, encoding="utf-8") as f:
            for line in f:
                json.loads(line)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_task(Path(tmp) / "task", args.rows)
        exp = experiment_from_dict(
            {
                "name": "bench",
                "tasks": [{"name": "task", "kind": "retrieval", "path": str(folder)}],
                "trainer": {"target": "trainers.analytic:train"},
                "storage": str(Path(tmp) / "runs"),
            },
            check_trainer=False,
        )
        mib = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        t_peer = median_seconds(lambda: peer(folder), args.repeats)
        t_head = median_seconds(lambda: check_data(exp, mode="head", use_cache=False), args.repeats)
        t_full = median_seconds(lambda: check_data(exp, mode="full", use_cache=False), args.repeats)
        check_data(exp, mode="full").save_cache()
        t_cached = median_seconds(lambda: check_data(exp, mode="full"), args.repeats)
    print(f"{args.rows} train rows + 1000 dev rows, {mib:.0f} MiB; median of {args.repeats}")
    print(f"{'json.loads per line (peer)':<32} {t_peer:8.2f} s  {mib / t_peer:6.1f} MiB/s")
    print(
        f"{'check_data full':<32} {t_full:8.2f} s  {mib / t_full:6.1f} MiB/s  ratio {t_full / t_peer:.2f}x peer"
    )
    print(f"{'check_data head':<32} {t_head:8.3f} s")
    print(f"{'check_data full, cached':<32} {t_cached:8.4f} s")


if __name__ == "__main__":
    main()
