"""Training throughput of the trial trainer vs sentence-transformers' own trainer: same model, loss, batches.

Both sides train the same randomly initialised EmbeddingGemma-shaped encoder (Gemma3 text model,
mean pooling, Dense d→4d→d, normalise; written once to a temporary sentence-transformers directory
that both load) on the same synthetic (query, positive, hard negative) triplets, every text exactly
``--seq`` tokens, with the same loss: NCE at temperature 0.05 with hardness weighting α = 5 (ST:
``MultipleNegativesRankingLoss(scale=20, hardness_mode="hard_negatives", hardness_strength=5)``; ST
also scores the other rows' hard negatives, a ``B × 2B`` instead of ``B × (B+1)`` similarity matrix,
negligible next to the encoder). Same optimiser (AdamW, fused on CUDA), schedule, clipping and
precision (bf16 autocast on CUDA, float32 on CPU). Each side runs in its own subprocess, so peak
memory is its own.

Reported per side: tokens/s (non-padding tokens through forward + backward + optimiser step,
tokenisation included, after warm-up steps), MFU and peak memory, then the ratio ours / ST.

MFU = achieved model FLOP/s ÷ peak FLOP/s. Model FLOPs per training token are
``6·N + 12·L·S·H·h`` (N: matmul parameters of the transformer — the embedding lookup does no
matmul —, L layers, S sequence length, H heads of size h; the attention term counts QKᵀ and AV,
forward ×3 for training) plus the Dense head per sequence. Peak: the bf16 dense spec of the GPU
(H100/H200 SXM 989 TFLOP/s, A100 312; ``--peak-tflops`` overrides), and on CPU the float32 matmul
throughput measured in the same process (so CPU MFU reads "fraction of what torch.mm achieves here").

Usage::

    python bench/trainer.py                       # CUDA: EmbeddingGemma-300m shapes, bf16, seq 256
    python bench/trainer.py --cpu-small           # reduced shapes (the default when there is no CUDA)
    python bench/trainer.py --batch 64 --steps 20 --repeats 3
    python bench/trainer.py --compile             # our trainer with the option compile: true
    python bench/trainer.py --batch 128 --seq 512 --mini-batch-size 32   # GradCache, both sides

Imports only torch, transformers, sentence-transformers (+ datasets/accelerate for its trainer) and
this repository's pydantic-free ``trainers.model`` / ``trainers.losses`` / ``trainers.training``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

TEMPERATURE = 0.05
HARDNESS_ALPHA = 5.0
LEARNING_RATE = 2e-5
WEIGHT_DECAY = 0.01
GRAD_CLIP = 1.0

# google/embeddinggemma-300m's config.json: 24 layers, d_M 768, 3 query heads / 1 KV head of 256,
# MLP 1152, vocabulary 262144, sliding window 512 (every 6th layer global), bidirectional.
EMBEDDINGGEMMA = dict(
    hidden_size=768,
    num_hidden_layers=24,
    num_attention_heads=3,
    num_key_value_heads=1,
    head_dim=256,
    intermediate_size=1152,
    vocab_size=262144,
    query_pre_attn_scalar=256,
    sliding_window=512,
    max_position_embeddings=2048,
    rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0,
)
# Reduced shapes that a 2-core CPU trains in about a second per step.
CPU_SMALL = dict(
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=64,
    intermediate_size=1024,
    vocab_size=16384,
    query_pre_attn_scalar=64,
    sliding_window=512,
    max_position_embeddings=512,
)
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}


def build_model(shapes: dict, out: Path) -> Path:
    """Write a random-init encoder (word-level tokenizer over the vocab) as a sentence-transformers dir."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import Gemma3TextConfig, Gemma3TextModel, PreTrainedTokenizerFast

    from trainers.model import load_encoder, save_sentence_transformer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    vocab.update({f"t{i}": i for i in range(4, shapes["vocab_size"])})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="right",
        model_max_length=2048,
    )
    config = Gemma3TextConfig(
        **shapes,
        use_bidirectional_attention=True,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(0)
    raw = out / "hf"
    Gemma3TextModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    loaded = load_encoder(raw, seed=0)
    return save_sentence_transformer(
        loaded.encoder, loaded.tokenizer, out / "st", prompts={}, max_seq_length=2048
    )


def make_triplets(n: int, seq: int, vocab: int, seed: int = 0) -> dict[str, list[str]]:
    """``n`` (anchor, positive, negative) rows; every text is ``seq`` tokens with <bos>/<eos>, all distinct."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (3, n, seq - 2), generator=g)
    cols = [[" ".join(f"t{i}" for i in row) for row in col.tolist()] for col in ids]
    return {"anchor": cols[0], "positive": cols[1], "negative": cols[2]}


def train_flops_per_step(config, dense_dims: list[tuple[int, int]], n_seqs: int, seq: int) -> float:
    d, layers = config.hidden_size, config.num_hidden_layers
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * config.intermediate_size
    window = min(seq, config.sliding_window or seq)  # keys a query sees (all of them for seq <= window)
    fwd_per_token = 2 * layers * per_layer + 4 * layers * window * q
    head = 2 * sum(i * o for i, o in dense_dims)
    return 3.0 * (fwd_per_token * seq * n_seqs + head * n_seqs)


def measured_cpu_peak(seconds: float = 1.0) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - t0)


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float | None, str]:
    if override_tflops:
        return override_tflops * 1e12, f"--peak-tflops {override_tflops}"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_BF16_TFLOPS.items():
            if key in name and "PCIe" not in name:
                return tflops * 1e12, f"{name} bf16 dense spec"
        return None, f"unknown peak for {name}; pass --peak-tflops"
    return measured_cpu_peak(), f"fp32 torch.mm measured on this CPU, {torch.get_num_threads()} threads"


def run_ours(model_dir: Path, rows: dict, args, device: torch.device) -> dict:
    from trainers.losses import false_negative_mask
    from trainers.model import check_bidirectional, load_encoder
    from trainers.training import Stepper, autocast_dtype, compile_encoder

    loaded = load_encoder(model_dir)
    encoder = loaded.encoder.to(device)
    check_bidirectional(encoder)
    if args.compile:
        compile_encoder(encoder)
    total = args.warmup + args.steps
    # The trainer's option names (trainers.training.StepOptions), at the values both sides share.
    options = SimpleNamespace(
        matryoshka_dims=(encoder.dim,),
        temperature=TEMPERATURE,
        hardness_alpha=HARDNESS_ALPHA,
        spread_out_weight=0.0,
        distill_weight=0.0,
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        lr_schedule="linear",
        grad_clip=GRAD_CLIP,
        max_seq_length=args.seq,
        mini_batch_size=args.mini_batch_size or None,
        gradient_checkpointing=args.checkpointing,
    )
    stepper = Stepper.from_options(
        encoder,
        loaded.tokenizer,
        options,
        warmup_steps=max(total // 10, 1),
        total_steps=total,
        device=device,
        amp=autocast_dtype(device, "auto"),
    )
    b = args.batch
    tokens, loss = 0, None
    t0 = 0.0
    for step in range(total):
        if step == args.warmup:
            _sync(device)
            t0, tokens = time.perf_counter(), 0
        sl = slice(step * b, (step + 1) * b)
        q, p, n = rows["anchor"][sl], rows["positive"][sl], rows["negative"][sl]
        out = stepper.step(q, p, n, false_negatives=false_negative_mask(q, p))
        tokens += out.n_tokens
        loss = out.loss
    _sync(device)
    return {"seconds": time.perf_counter() - t0, "tokens": tokens, "final_loss": float(loss)}


def run_st(model_dir: Path, rows: dict, args, device: torch.device) -> dict:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )
    from transformers import TrainerCallback

    model = SentenceTransformer(str(model_dir), device=str(device))
    if args.mini_batch_size:  # GradCache on both sides: ST's cached loss with the same chunk size
        loss = CachedMultipleNegativesRankingLoss(
            model,
            scale=1 / TEMPERATURE,
            mini_batch_size=args.mini_batch_size,
            hardness_mode="hard_negatives",
            hardness_strength=HARDNESS_ALPHA,
        )
    else:
        loss = MultipleNegativesRankingLoss(
            model, scale=1 / TEMPERATURE, hardness_mode="hard_negatives", hardness_strength=HARDNESS_ALPHA
        )
    total = args.warmup + args.steps
    timing: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_step_end(self, targs, state, control, **kw):
            if state.global_step == args.warmup:
                _sync(device)
                timing["t0"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        targs = SentenceTransformerTrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            max_steps=total,
            learning_rate=LEARNING_RATE,
            warmup_steps=max(total // 10, 1),
            lr_scheduler_type="linear",
            weight_decay=WEIGHT_DECAY,
            max_grad_norm=GRAD_CLIP,
            bf16=device.type == "cuda",
            logging_steps=10**9,
            save_strategy="no",
            report_to="none",
            dataloader_drop_last=True,
            seed=0,
            disable_tqdm=True,
            use_cpu=device.type != "cuda",
            torch_compile=args.compile_st,
            gradient_checkpointing=args.checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if args.checkpointing else None,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=targs, train_dataset=Dataset.from_dict(rows), loss=loss, callbacks=[Timer()]
        )
        result = trainer.train()
        _sync(device)
    seconds = time.perf_counter() - timing["t0"]
    # Every text is exactly --seq tokens, so the measured steps carried steps x batch x 3 x seq tokens.
    return {
        "seconds": seconds,
        "tokens": args.steps * args.batch * 3 * args.seq,
        "final_loss": result.training_loss,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def child(args) -> None:
    """One side, in its own process: print one JSON line."""
    from transformers import Gemma3TextConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    model_dir = Path(args.model_dir)
    rows = json.loads(Path(args.data).read_text())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = (run_ours if args.side == "ours" else run_st)(model_dir, rows, args, device)
    config = Gemma3TextConfig.from_pretrained(model_dir)
    d = config.hidden_size
    flops = train_flops_per_step(config, [(d, 4 * d), (4 * d, d)], 3 * args.batch, args.seq) * args.steps
    stats.update(
        side=args.side,
        tokens_per_s=stats["tokens"] / stats["seconds"],
        tflops=flops / stats["seconds"] / 1e12,
        peak_memory_gib=(
            torch.cuda.max_memory_allocated(device)
            if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        / 2**30,
        memory_kind="torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS of the process",
        device=torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads",
    )
    print("RESULT " + json.dumps(stats), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-small", action="store_true", help="reduced shapes (default without CUDA)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is available")
    parser.add_argument("--seq", type=int, default=None, help="tokens per text (default 256 GPU, 64 CPU)")
    parser.add_argument("--batch", type=int, default=None, help="triplets per step (default 64 GPU, 8 CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 GPU, 4 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 GPU, 2 CPU)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="alternate the sides this many times; best of each"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile our encoder (trainer option compile)"
    )
    parser.add_argument(
        "--compile-st", action="store_true", help="also compile ST's model (torch_compile=True)"
    )
    parser.add_argument(
        "--mini-batch-size",
        type=int,
        default=0,
        help="GradCache chunks of this many texts (ours: mini_batch_size; ST: CachedMultipleNegativesRankingLoss)",
    )
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on both sides")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s for MFU, in TFLOP/s")
    parser.add_argument("--side", choices=["ours", "st"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return

    gpu = torch.cuda.is_available() and not args.cpu
    small = args.cpu_small or not gpu
    shapes = CPU_SMALL if small else EMBEDDINGGEMMA
    args.seq = args.seq or (64 if small else 256)
    args.batch = args.batch or (8 if small else 64)
    args.steps = args.steps or (4 if small else 20)
    args.warmup = args.warmup if args.warmup is not None else (2 if small else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    # One denominator for both sides, fixed before either runs.
    peak, peak_source = peak_flops(torch.device("cuda" if gpu else "cpu"), args.peak_tflops)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model_dir = build_model(shapes, tmp_path)
        rows = make_triplets(args.batch * (args.warmup + args.steps), args.seq, shapes["vocab_size"])
        (tmp_path / "rows.json").write_text(json.dumps(rows))
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for side in ("ours", "st"):
                cmd = [
                    sys.executable,
                    __file__,
                    "--side",
                    side,
                    "--model-dir",
                    str(model_dir),
                    "--data",
                    str(tmp_path / "rows.json"),
                    "--seq",
                    str(args.seq),
                    "--batch",
                    str(args.batch),
                    "--steps",
                    str(args.steps),
                    "--warmup",
                    str(args.warmup),
                    "--threads",
                    str(args.threads),
                    "--mini-batch-size",
                    str(args.mini_batch_size),
                ]
                cmd += [
                    flag
                    for flag, on in (
                        ("--cpu", args.cpu),
                        ("--compile", args.compile),
                        ("--compile-st", args.compile_st),
                        ("--checkpointing", args.checkpointing),
                    )
                    if on
                ]
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
                )
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    sys.exit(f"the {side} side failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
                stats = json.loads(lines[-1][len("RESULT ") :])
                if side not in best or stats["tokens_per_s"] > best[side]["tokens_per_s"]:
                    best[side] = stats

    label = "CPU-small" if small else "EmbeddingGemma-300m"
    print(f"trainer benchmark: {label} shapes {json.dumps(shapes)}")
    print(
        f"device: {best['ours']['device']}; batch {args.batch} triplets x seq {args.seq}; "
        f"{args.warmup} warm-up + {args.steps} timed steps; best of {args.repeats}; "
        f"compiled: ours {args.compile}, ST {args.compile_st}; mini_batch_size {args.mini_batch_size or None}, "
        f"checkpointing {args.checkpointing}"
    )
    print(f"MFU peak: {peak / 1e12:.3f} TFLOP/s ({peak_source})" if peak else f"MFU peak: {peak_source}")
    print(f"{'side':<24}{'tokens/s':>12}{'TFLOP/s':>10}{'MFU':>8}{'peak mem GiB':>14}{'final loss':>12}")
    for side, name in (("ours", "trainers.embedding"), ("st", "SentenceTransformerTrainer")):
        s = best[side]
        mfu = f"{100 * s['tflops'] * 1e12 / peak:.1f}%" if peak else "n/a"
        print(
            f"{name:<24}{s['tokens_per_s']:>12.0f}{s['tflops']:>10.3f}{mfu:>8}{s['peak_memory_gib']:>14.2f}"
            f"{s['final_loss']:>12.4f}"
        )
    print(f"memory: {best['ours']['memory_kind']}")
    print(
        f"ratio ours / sentence-transformers tokens/s: {best['ours']['tokens_per_s'] / best['st']['tokens_per_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
