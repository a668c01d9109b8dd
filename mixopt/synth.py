"""Synthetic embedding tasks in the real task format, built so that the mixture matters.

``synthesize(out, n_tasks, seed)`` writes ``out/<task>/{train,dev}.jsonl`` for ``n_tasks`` tasks
of mixed kinds (retrieval, STS, classification, in turn), ``out/model/`` (a tiny random-init
bidirectional Gemma3 encoder with its word-level tokenizer, loadable by transformers exactly like a
hub checkpoint) and ``out/synth.json`` (what was generated and why).

The mechanism
-------------
There are ``C`` latent *concepts*. Each concept owns a pool of ``P`` pseudo-words. A text "about"
a concept is a short bag of words drawn from that concept's pool, plus task-specific noise words.
Every task sees the concepts through its own **view**: the first ``P_shared`` words of each pool
are common to all tasks, and each task additionally owns a random subset of the remaining words
(its private dialect; views of two tasks overlap partly, by chance). An encoder trained from
random initialisation can only learn that two words mean the same concept from batches that
contain them, so:

- training on task *k* teaches the words of *k*'s view — it helps *k* most;
- it also teaches the shared words and whatever private words *k* shares with task *j* — it helps
  *j* partly, in proportion to the overlap of the two views;
- tasks differ in difficulty: a larger private vocabulary needs more steps, more noise words per
  text lower the attainable score, and the kinds differ (retrieval with hard negatives from
  another concept; STS graded by concept overlap; classification of concept groups).

With a fixed step budget, the best mixture for the mean dev score therefore spends more steps on
the tasks with large, little-shared vocabularies and fewer on tasks that others already cover: it
is neither uniform nor a single task. The analytic trainer (``trainers.analytic``) turns the same
vocabulary overlaps into a closed-form score, for fast orchestration tests.

Everything is a deterministic function of ``seed``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("retrieval", "sts", "classification")
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's ids: pad 0, eos 1, bos 2, unk 3
# Words of the tiny experiment's prompts, so prompts tokenise to real ids rather than <unk>.
PROMPT_WORDS = [
    "task",
    "search",
    "result",
    "query",
    "title",
    "none",
    "text",
    "sentence",
    "similarity",
    "classification",
    "retrieval",
    ":",
    "|",
]

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


@dataclass(frozen=True)
class SynthSpec:
    """Sizes of the synthetic world. Defaults keep a 2-core CPU trial under a minute."""

    n_concepts: int = 24
    pool_size: int = 8  # words per concept
    shared_words: int = 2  # words of every pool that all tasks see
    n_noise_words: int = 48
    n_train: int = 384
    n_dev: int = 96
    n_groups: int = 4  # classification labels (groups of concepts)


def _pseudo_words(n: int, rng: np.random.Generator) -> list[str]:
    words: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        w = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
        if w not in words:
            words.add(w)
            out.append(w)
    return out


def _task_plan(n_tasks: int, spec: SynthSpec, rng: np.random.Generator) -> list[dict[str, Any]]:
    private = spec.pool_size - spec.shared_words
    plans = []
    for k in range(n_tasks):
        kind = KINDS[k % len(KINDS)]
        # Difficulty knobs, drawn per task so tasks differ: how many private words per concept the
        # task's view holds (more = more to learn), and how many noise words each text carries.
        n_private = int(rng.integers(1, private + 1))
        views = [
            sorted(rng.choice(private, size=n_private, replace=False).tolist())
            for _ in range(spec.n_concepts)
        ]
        plans.append(
            {
                "name": f"{kind}_{k}",
                "kind": kind,
                "private_words_per_concept": n_private,
                "noise_words_per_text": int(rng.integers(0, 3)),
                "view": views,  # per concept: indices into that concept's private words
            }
        )
    return plans


class _Writer:
    """Generates texts for one task from its view of the concept pools."""

    def __init__(
        self,
        plan: dict[str, Any],
        pools: list[list[str]],
        noise: list[str],
        spec: SynthSpec,
        rng: np.random.Generator,
    ):
        self.plan, self.pools, self.noise, self.spec, self.rng = plan, pools, noise, spec, rng
        self.vocab = [
            pools[c][: spec.shared_words] + [pools[c][spec.shared_words + i] for i in plan["view"][c]]
            for c in range(spec.n_concepts)
        ]
        self.task_noise = [noise[i] for i in rng.choice(len(noise), size=8, replace=False)]

    def text(self, concepts: list[int], words_per_concept: int = 3) -> str:
        words: list[str] = []
        for c in concepts:
            words += list(self.rng.choice(self.vocab[c], size=words_per_concept))
        words += list(self.rng.choice(self.task_noise, size=self.plan["noise_words_per_text"]))
        self.rng.shuffle(words)
        return " ".join(words)

    def concept(self) -> int:
        return int(self.rng.integers(self.spec.n_concepts))

    def other(self, c: int) -> int:
        o = int(self.rng.integers(self.spec.n_concepts - 1))
        return o + (o >= c)

    def row(self) -> dict[str, Any]:
        kind = self.plan["kind"]
        if kind == "retrieval":
            c = self.concept()
            q = self.text([c], 2)
            p = self.text([c], 4)
            while p == q:
                p = self.text([c], 4)
            # The hard negative shares the query's noise words and one of its concept's words.
            neg = self.text([self.other(c)], 3) + " " + str(self.rng.choice(self.vocab[c]))
            return {"query": q, "positive": p, "negatives": [neg]}
        if kind == "sts":
            a, b = self.concept(), self.other(self.concept())
            shared = int(self.rng.integers(0, 3))  # concepts the two texts share: 0, 1 or 2
            x, y = self.other(a), self.other(b)
            c1 = [a, b]
            c2 = [a, b] if shared == 2 else [a, x if x != b else y] if shared == 1 else [x, y]
            overlap = len(set(c1) & set(c2)) / len(set(c1) | set(c2))
            score = round(5.0 * overlap, 3)
            return {"text1": self.text(c1, 2), "text2": self.text(c2, 2), "score": score}
        c = self.concept()
        return {"text": self.text([c], 3), "label": f"group{c % self.spec.n_groups}"}


def build_tokenizer(words: list[str]):
    """A word-level tokenizer over ``words`` (+ Gemma's special tokens), as a transformers fast tokenizer.

    Adds ``<bos>`` in front and ``<eos>`` at the end of every text, as Gemma's tokenizer does.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

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


def tiny_gemma_config(vocab_size: int, **sizes: Any):
    """A tiny bidirectional Gemma3 text-encoder config (same architecture as EmbeddingGemma, toy sizes)."""
    from transformers import Gemma3TextConfig

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


def write_tiny_model(out_dir: str | Path, tokenizer, seed: int = 0, **sizes: Any) -> Path:
    """Write a random-init tiny Gemma3 encoder and ``tokenizer`` to ``out_dir`` (safetensors)."""
    import torch
    from transformers import Gemma3TextModel

    out_dir = Path(out_dir)
    config = tiny_gemma_config(len(tokenizer), **sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3TextModel(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def synthesize(
    out_dir: str | Path,
    n_tasks: int = 3,
    seed: int = 0,
    spec: SynthSpec | None = None,
    with_model: bool = True,
) -> dict[str, Any]:
    """Write ``n_tasks`` synthetic tasks (and the tiny model) to ``out_dir``; return the metadata.

    The directory is written atomically: built in a temporary sibling, then renamed into place,
    so an interrupted run leaves no half-written task folder. An existing ``out_dir`` is replaced.
    """
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    spec = spec or SynthSpec()
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    all_words = _pseudo_words(spec.n_concepts * spec.pool_size + spec.n_noise_words, rng)
    pools = [all_words[c * spec.pool_size : (c + 1) * spec.pool_size] for c in range(spec.n_concepts)]
    noise = all_words[spec.n_concepts * spec.pool_size :]
    plans = _task_plan(n_tasks, spec, rng)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for plan in plans:
            writer = _Writer(
                plan, pools, noise, spec, np.random.default_rng([seed, len(plan["name"]), plans.index(plan)])
            )
            for split, n in (("train", spec.n_train), ("dev", spec.n_dev)):
                _write_jsonl(tmp / plan["name"] / f"{split}.jsonl", [writer.row() for _ in range(n)])
        if with_model:
            write_tiny_model(tmp / "model", build_tokenizer(PROMPT_WORDS + all_words), seed=seed)
        meta = {
            "seed": seed,
            "spec": spec.__dict__,
            "tasks": [{k: v for k, v in p.items() if k != "view"} for p in plans],
            "mechanism": "see mixopt.synth docstring: tasks view shared concept vocabularies with partial overlap",
        }
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
