"""Attention masks: the encoder's precomputed 4-D SDPA masks vs transformers building them per forward.

transformers' Gemma3TextModel builds its full and sliding-window masks on every forward (``vmap``
over mask functions) unless it is handed a dict of ready masks; ``Encoder.attention_masks`` builds
them with three tensor ops. The cost is a per-forward constant, so it matters most where a step runs
many small forwards: GradCache (``mini_batch_size``) runs two per chunk. This bench times one
GradCache-shaped step — for each chunk a no-grad forward, then a forward + backward — with the
encoder's masks and with transformers' (the same encoder, its 2-D mask passed through), interleaved,
and prints the medians and their ratio. Outputs are equal (tests/trainers/test_encoder_model.py).

    python bench/masks.py                       # tiny model (the CI experiment's) and a 768-wide one
    python bench/masks.py --batch 48 --chunk 4 --seq 32 --repeats 7

Imports only torch, transformers and this repository.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from trainers.model import Encoder, load_encoder  # noqa: E402
from trainers.tiny_model import build_tokenizer, write_tiny_model  # noqa: E402

SHAPES = {
    "tiny (CI experiment: 2 layers, hidden 64)": {},
    "768-wide (4 layers, hidden 768, MLP 1152, 3 heads of 256)": dict(
        hidden_size=768,
        intermediate_size=1152,
        num_hidden_layers=4,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
    ),
}


def step(enc: Encoder, ids: torch.Tensor, mask: torch.Tensor, chunk: int, ours: bool) -> float:
    def forward(i: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        masks = enc.attention_masks(m) if ours else m
        return enc.transformer(input_ids=i, attention_mask=masks, use_cache=False).last_hidden_state

    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(ids), chunk):
            forward(ids[s : s + chunk], mask[s : s + chunk])
    for s in range(0, len(ids), chunk):
        forward(ids[s : s + chunk], mask[s : s + chunk]).float().pow(2).mean().backward()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=48, help="texts per step (16 x 3 sides)")
    parser.add_argument("--chunk", type=int, default=4, help="mini_batch_size")
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    words = [f"w{i}" for i in range(200)]
    print(
        f"batch {args.batch} texts x {args.seq} tokens, chunks of {args.chunk} "
        f"({2 * -(-args.batch // args.chunk)} forwards a step), {args.threads} thread(s), "
        f"median of {args.repeats} interleaved repeats, torch {torch.__version__}"
    )
    for label, sizes in SHAPES.items():
        with tempfile.TemporaryDirectory() as tmp:
            enc = load_encoder(
                write_tiny_model(Path(tmp) / "m", build_tokenizer(words), seed=0, **sizes)
            ).encoder
        enc.train()
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(5, len(words), (args.batch, args.seq), generator=g)
        mask = torch.ones_like(ids)
        lengths = torch.randint(args.seq // 4, args.seq + 1, (args.batch,), generator=g)
        mask[torch.arange(args.seq)[None, :] >= lengths[:, None]] = 0  # padded, as real batches are
        for ours in (True, False):  # warm-up
            step(enc, ids, mask, args.chunk, ours)
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for ours in (True, False):
                times[ours].append(step(enc, ids, mask, args.chunk, ours))
                enc.zero_grad(set_to_none=True)
        a, b = statistics.median(times[True]), statistics.median(times[False])
        print(
            f"{label}: precomputed masks {1000 * a:.1f} ms/step, transformers' masks {1000 * b:.1f} ms/step, "
            f"ratio {a / b:.2f}x (speed-up {b / a:.2f}x)"
        )


if __name__ == "__main__":
    main()
