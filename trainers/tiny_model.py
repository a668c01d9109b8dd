"""A tiny random-init bidirectional Gemma3 encoder and a word-level tokenizer, built locally.

The embedding trainer's model for synthetic tasks and for tests: EmbeddingGemma's architecture
(:func:`tiny_gemma_config`, toy sizes by default, :data:`EMBEDDINGGEMMA_300M` for the real shape)
with random weights, and a tokenizer whose vocabulary is exactly the given words (no ``<unk>`` in
any text made of them), written by :func:`write_tiny_model` either as a bare transformers
checkpoint or in the sentence-transformers layout of ``google/embeddinggemma-300m``, which
:func:`trainers.model.load_encoder` loads like a hub checkpoint. No hub is reached.

:func:`write_synth_model` is the trainer's ``write_synth_model`` hook (:mod:`mixopt.trial`): the
model ``mixopt synth`` writes beside its tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import Gemma3TextConfig, Gemma3TextModel, PreTrainedTokenizerFast

from .model import Encoder, new_dense, save_sentence_transformer

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's ids: pad 0, eos 1, bos 2, unk 3

# google/embeddinggemma-300m's config.json (bench/trainer.py uses the same): 24 layers of width 768,
# 3 query heads / 1 KV head of 256, MLP 1152, a 262144-token vocabulary, sliding windows of 512 with
# every 6th layer global. With the Dense head (768->3072->768, no bias) that is 307,581,696
# parameters: ``write_tiny_model(..., dense=True, **EMBEDDINGGEMMA_300M)`` builds a random-init model
# of the real shape without a hub (bench/scale.py).
EMBEDDINGGEMMA_300M: dict[str, Any] = dict(
    vocab_size=262144,
    hidden_size=768,
    intermediate_size=1152,
    num_hidden_layers=24,
    num_attention_heads=3,
    num_key_value_heads=1,
    head_dim=256,
    query_pre_attn_scalar=256,
    sliding_window=512,
    max_position_embeddings=2048,
    rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0,
    layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(24)],
)


def build_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` (+ Gemma's special tokens), as a transformers fast tokenizer.

    Adds ``<bos>`` in front and ``<eos>`` at the end of every text, as Gemma's tokenizer does.
    """
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        pair="<bos> $A <eos> $B <eos>",
        special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="right",
        model_max_length=256,
    )


def tiny_gemma_config(vocab_size: int, **sizes: Any) -> Gemma3TextConfig:
    """A bidirectional Gemma3 text-encoder config: EmbeddingGemma's architecture at toy sizes, which
    ``sizes`` override (``tiny_gemma_config(**EMBEDDINGGEMMA_300M)`` is the real shape)."""
    kw: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        max_position_embeddings=512,
        sliding_window=512,
        layer_types=["sliding_attention", "full_attention"],
        use_bidirectional_attention=True,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    kw.update(sizes)
    if "num_hidden_layers" in sizes and "layer_types" not in sizes:
        n = kw["num_hidden_layers"]
        kw["layer_types"] = ["full_attention" if (i + 1) % 2 == 0 else "sliding_attention" for i in range(n)]
    return Gemma3TextConfig(**kw)


def write_tiny_model(
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    seed: int = 0,
    *,
    dense: bool = False,
    vocab_size: int | None = None,
    **sizes: Any,
) -> Path:
    """Write a random-init Gemma3 encoder and ``tokenizer`` to ``out_dir`` (safetensors).

    ``sizes`` override :func:`tiny_gemma_config`'s toy shape (``EMBEDDINGGEMMA_300M`` is the real
    one). ``vocab_size``: rows of the token-embedding table, at least the tokenizer's size (default:
    exactly it); rows past the tokenizer's are never looked up, as in a real model whose table is
    padded, but they are trained, saved and averaged like every other parameter.

    ``dense=False``: a bare transformers checkpoint (a trial adds new Dense layers from its seed).
    ``dense=True``: a sentence-transformers directory with EmbeddingGemma's Dense projections
    (d→4d→d) drawn from ``seed``, the layout ``google/embeddinggemma-300m`` ships in: every trial
    starts from the same projections, whatever its trainer seed, as on the real model.
    """
    out_dir = Path(out_dir)
    if vocab_size is not None and vocab_size < len(tokenizer):
        raise ValueError(
            f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens: "
            "its ids past the table would not embed; give vocab_size >= the tokenizer's size"
        )
    config = tiny_gemma_config(vocab_size or len(tokenizer), **sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3TextModel(config)
    if dense:
        encoder = Encoder(model, new_dense(config.hidden_size, seed))
        return save_sentence_transformer(
            encoder, tokenizer, out_dir, prompts={}, max_seq_length=config.max_position_embeddings
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def write_synth_model(out_dir: str | Path, words: Sequence[str], *, seed: int) -> Path:
    """The trainer's ``write_synth_model`` hook: the toy-sized encoder in the sentence-transformers
    layout (Dense projections drawn from ``seed``), its tokenizer over ``words``, written to ``out_dir``."""
    return write_tiny_model(out_dir, build_tokenizer(list(words)), seed=seed, dense=True)
