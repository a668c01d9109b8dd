"""Training-step memory at EmbeddingGemma-300m's shape on CPU: activation bytes per token, and peak
memory against batch size with ``mini_batch_size`` (GradCache) fixed.

The model is ``Gemma3TextModel`` with google/embeddinggemma-300m's config (24 layers, hidden 768,
MLP 1152, 3 query heads / 1 KV head of 256, vocabulary 262144, bidirectional, SDPA attention),
random init, float32, plus EmbeddingGemma's Dense head (768→3072→768); ``--model DIR``: a model
folder as the trainer loads it (all-MiniLM-L6-v2: BERT, dropout on). Each configuration runs
in its own subprocess: build the model, take the resident set size (RSS) as the baseline, run one
forward + backward of the trial trainer's step (:meth:`trainers.training.Stepper.backward`: the
full loss with NCE, spread-out and four Matryoshka dims; no optimiser step, whose AdamW state is
``8 N`` bytes whatever the batch), and report the peak RSS above the baseline, sampled every
millisecond by a thread reading ``/proc/self/statm`` (and checked against ``ru_maxrss``). The
children run with glibc's mmap threshold fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``), so freed
tensors leave the RSS at once and its peak follows the live tensors (``--glibc-default`` to compare).

That peak is ``gradients (4 N bytes) + activations``. Activation bytes per token are the slope of
the peak between two token counts (the gradients cancel), for: no option, gradient checkpointing,
``mini_batch_size``. Every text is exactly ``--seq`` tokens (queries, positives, hard negatives:
``3 × batch × seq`` tokens a step).

Usage::

    python bench/memory.py                 # all figures (about 30 minutes on 2 shared cores)
    python bench/memory.py --only sweep    # just peak vs batch size at mini_batch_size 8
    python bench/memory.py --only per-token --model data/real/model --seq 128 --per-token-batches 4,16

Imports only torch, transformers and this repository's pydantic-free ``trainers`` modules.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from trainer import EMBEDDINGGEMMA  # noqa: E402  (bench/trainer.py: google/embeddinggemma-300m's shape)

PAGE = os.sysconf("SC_PAGE_SIZE")
FIXED_MMAP = True  # --glibc-default turns it off (see measure())
MODEL = None  # --model: a model folder instead of EmbeddingGemma-300m's shape


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakSampler(threading.Thread):
    """Samples this process's RSS every ``interval`` s; ``peak`` is the largest value seen."""

    def __init__(self, interval: float = 0.001):
        super().__init__(daemon=True)
        self.interval, self.peak, self.running = interval, rss(), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(self.interval)

    def stop(self) -> int:
        self.running = False
        self.join()
        self.peak = max(self.peak, rss())
        return self.peak


def _encoder(model: str | None):
    """EmbeddingGemma-300m's shape at random init, or the model folder ``model`` as the trainer loads it."""
    from trainers.model import Encoder, load_encoder, new_dense

    if model:
        return load_encoder(model).encoder.float().train()
    from transformers import Gemma3TextConfig, Gemma3TextModel

    config = Gemma3TextConfig(
        **EMBEDDINGGEMMA, use_bidirectional_attention=True, use_cache=False, pad_token_id=0
    )
    torch.manual_seed(0)
    transformer = Gemma3TextModel._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return Encoder(transformer, new_dense(config.hidden_size, 0)).float().train()


def child(args: argparse.Namespace) -> None:
    from trainers.training import Stepper, Tokenized, prepare_inputs

    torch.set_num_threads(args.threads)
    encoder = _encoder(args.model)
    config = encoder.transformer.config
    n_params = sum(p.numel() for p in encoder.parameters())
    dim = encoder.dim
    # The trainer's option names (trainers.training.StepOptions): the recipe's loss at four dims.
    options = SimpleNamespace(
        matryoshka_dims=(dim, dim * 2 // 3, dim // 3, dim // 6),
        temperature=0.05,
        hardness_alpha=5.0,
        spread_out_weight=1.0,
        distill_weight=1.0,
        learning_rate=1e-5,
        weight_decay=0.0,
        lr_schedule="linear",
        grad_clip=1.0,
        max_seq_length=args.seq,
        mini_batch_size=args.mini_batch or None,
        gradient_checkpointing=args.checkpointing,
    )
    stepper = Stepper.from_options(
        encoder,
        SimpleNamespace(pad_token_id=0),  # the step reads only the pad id; tokens are given below
        options,
        warmup_steps=1,
        total_steps=2,
        device=torch.device("cpu"),
        amp=None,
    )
    g = torch.Generator().manual_seed(1)
    sides = []
    for _ in range(3):
        ids = torch.randint(4, config.vocab_size, (args.batch, args.seq), generator=g)
        sides.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    tokens = Tokenized(sides, n_tokens=3 * args.batch * args.seq, joint=False)
    texts = [f"t{i}" for i in range(args.batch)]
    inputs = prepare_inputs(None, texts, texts, texts, max_seq_length=args.seq, tokens=tokens)
    gc.collect()
    baseline, maxrss_before = rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler = PeakSampler()
    sampler.start()
    t0 = time.perf_counter()
    loss, _ = stepper.backward(inputs)
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # ru_maxrss is exact but includes model construction; when the step set it, it bounds the sampler.
    if maxrss > maxrss_before:
        peak = max(peak, maxrss)
    print(
        "RESULT "
        + json.dumps(
            dict(
                batch=args.batch,
                seq=args.seq,
                mini_batch=args.mini_batch,
                checkpointing=args.checkpointing,
                tokens=tokens.n_tokens,
                params=n_params,
                baseline_bytes=baseline,
                peak_bytes=peak,
                delta_bytes=peak - baseline,
                seconds=seconds,
                loss=float(loss.detach()),
            )
        ),
        flush=True,
    )


def measure(batch: int, seq: int, mini_batch: int = 0, checkpointing: bool = False, threads: int = 2) -> dict:
    cmd = [sys.executable, __file__, "--child", "--batch", str(batch), "--seq", str(seq)]
    cmd += ["--mini-batch", str(mini_batch), "--threads", str(threads)]
    cmd += ["--checkpointing"] if checkpointing else []
    cmd += ["--model", MODEL] if MODEL else []
    env = dict(os.environ)
    if FIXED_MMAP:
        # glibc raises its mmap threshold after freeing a large block (up to 32 MiB), so later
        # tensors come from the heap and freed memory stays in RSS: the peak RSS then counts
        # memory no tensor holds (1.5 MiB/token for "none" at seq 256 with it, 0.56 without).
        # A fixed threshold maps every tensor >= 128 KiB on its own and unmaps it when freed, so
        # the peak RSS follows the live tensors, which is what a GPU's max_memory_allocated counts.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
        env.setdefault("MALLOC_TRIM_THRESHOLD_", "131072")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    print(
        f"  batch {batch:>3} seq {seq:>3} mini_batch {mini_batch or '-':>3} checkpointing "
        f"{str(checkpointing):<5}: {result['tokens']:>6} tokens, peak +{result['delta_bytes'] / 2**30:.2f} GiB "
        f"over the model (total {result['peak_bytes'] / 2**30:.2f} GiB), {result['seconds']:.0f} s",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=32, help="tokens per text for the per-token figures")
    parser.add_argument(
        "--per-token-batches", default="1,2", help="the two batch sizes of the per-token slope"
    )
    parser.add_argument("--sweep-seq", type=int, default=8, help="tokens per text for the batch sweep")
    parser.add_argument("--sweep-batches", default="8,16,32,64", help="batch sizes of the sweep")
    parser.add_argument(
        "--sweep-full", action="store_true", help="also the largest batch without mini_batch_size"
    )
    parser.add_argument("--mini-batch", type=int, default=0)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["per-token", "sweep"], default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write every result here")
    parser.add_argument(
        "--model",
        default=None,
        help="a model folder the trainer loads (default: EmbeddingGemma-300m's shape)",
    )
    parser.add_argument(
        "--glibc-default",
        action="store_true",
        help="leave glibc's dynamic mmap threshold on (peak RSS then includes freed heap memory)",
    )
    args = parser.parse_args()
    global FIXED_MMAP, MODEL
    FIXED_MMAP = not args.glibc_default
    MODEL = args.model
    if args.child:
        child(args)
        return

    results: dict[str, list[dict]] = {}
    shape = args.model or "EmbeddingGemma-300m shape"
    print(f"memory benchmark: {shape}, fp32, CPU, {args.threads} threads")
    if args.only in (None, "per-token"):
        print(
            f"activation bytes per token (slope between batch {args.per_token_batches.replace(',', ' and ')}, "
            f"seq {args.seq}, 3 sides):"
        )
        rows = {}
        for name, kw in (
            ("none", {}),
            ("gradient_checkpointing", {"checkpointing": True}),
            ("mini_batch_size 1", {"mini_batch": 1}),
        ):
            small, large = (int(x) for x in args.per_token_batches.split(","))
            a = measure(small, args.seq, threads=args.threads, **kw)
            b = measure(large, args.seq, threads=args.threads, **kw)
            rows[name] = (b["delta_bytes"] - a["delta_bytes"]) / (b["tokens"] - a["tokens"])
            results.setdefault("per_token", []).extend([a, b])
        none = rows["none"]
        for name, per_token in rows.items():
            print(f"  {name:<24}{per_token / 2**20:8.3f} MiB/token  ({per_token / none:.2f}x none)")
    if args.only in (None, "sweep"):
        seq = args.sweep_seq
        print(f"peak memory against batch size, mini_batch_size 8, seq {seq}, 3 sides:")
        batches = [int(b) for b in args.sweep_batches.split(",")]
        sweep = [measure(b, seq, mini_batch=8, threads=args.threads) for b in batches]
        results["sweep"] = sweep
        base = sweep[0]
        for r in sweep:
            print(
                f"  batch {r['batch']:>3}: +{r['delta_bytes'] / 2**30:.2f} GiB over the model "
                f"({r['delta_bytes'] / base['delta_bytes']:.2f}x batch 8), total "
                f"{r['peak_bytes'] / 2**30:.2f} GiB ({r['peak_bytes'] / base['peak_bytes']:.2f}x)"
            )
        if args.sweep_full:
            full = measure(batches[-1], seq, threads=args.threads)
            results["sweep_full_batch"] = [full]
            print(
                f"  batch {batches[-1]:>3} without mini_batch_size: +{full['delta_bytes'] / 2**30:.2f} GiB "
                f"({full['delta_bytes'] / sweep[-1]['delta_bytes']:.2f}x the mini-batched step)"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
