"""Row throughput and memory of dataset tasks vs the JSONL reader, on the same retrieval rows.

Writes N retrieval rows (sentence-transformers columns) as JSONL (mixopt's format, the peer), a
``save_to_disk`` directory and a parquet file; each reader runs in its own subprocess and streams
every row through :func:`mixopt.data.iter_rows`. Prints rows/s, the ratio to the JSONL reader, and
the growth of peak RSS while reading (a reader that loaded the split whole would grow with N).

    PYTHONPATH=$PWD .venv/bin/python bench/datasets_read.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import os, resource, sys, time
os.environ.setdefault("HF_DATASETS_CACHE", sys.argv[3])
from mixopt.data import iter_rows
from mixopt.datasets import DatasetSplit
kind, source = sys.argv[1], sys.argv[2]
src = source if kind == "jsonl" else DatasetSplit(source, "retrieval")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter(); n = 0
for _ in iter_rows(src, "retrieval"):
    n += 1
dt = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, dt, before / 2**20, after / 2**20)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args()
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cols = {
            "anchor": [f"query number {i} about a topic {i % 97}" for i in range(args.rows)],
            "positive": [f"a passage that answers query {i} with some words" for i in range(args.rows)],
            "negative": [f"an unrelated passage {i} with other words" for i in range(args.rows)],
        }
        with (root / "train.jsonl").open("w") as f:
            for a, p, n in zip(cols["anchor"], cols["positive"], cols["negative"]):
                f.write(json.dumps({"query": a, "positive": p, "negatives": [n]}) + "\n")
        ds = datasets.Dataset.from_dict(cols)
        ds.save_to_disk(str(root / "disk"))
        ds.to_parquet(str(root / "train.parquet"))
        del ds, cols
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        results = {}
        for name, source in (
            ("jsonl (peer)", str(root / "train.jsonl")),
            ("save_to_disk (Arrow, mmap)", str(root / "disk")),
            ("parquet (streamed)", str(root / "train.parquet")),
        ):
            kind = "jsonl" if name.startswith("jsonl") else "dataset"
            out = subprocess.run(
                [sys.executable, "-c", CHILD, kind, source, str(root / "cache")],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout.split()
            n, dt, rss0, rss1 = int(out[0]), float(out[1]), float(out[2]), float(out[3])
            results[name] = (n, n / dt, rss1 - rss0)
        peer = results["jsonl (peer)"][1]
        print(f"{args.rows} retrieval rows")
        print(f"{'reader':30s} {'rows':>8s} {'rows/s':>10s} {'vs jsonl':>9s} {'RSS growth MiB':>15s}")
        for name, (n, rate, grow) in results.items():
            print(f"{name:30s} {n:8d} {rate:10.0f} {rate / peer:8.2f}x {grow:15.1f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"(total {time.perf_counter() - t0:.0f} s)")
