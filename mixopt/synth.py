"""Synthetic embedding tasks in the real task format, built so that the mixture matters.

``synthesize(out, n_tasks, seed)`` writes ``out/<task>/{train,dev}.jsonl`` for ``n_tasks`` tasks
of mixed kinds (retrieval, STS, classification, in turn), ``out/model/`` (the model the trainer's
``write_synth_model`` hook writes with a tokenizer over every word of the tasks and prompts; the
embedding trainer's is a tiny random-init bidirectional Gemma3 encoder with its word-level tokenizer
and Dense projections, in the sentence-transformers layout of ``google/embeddinggemma-300m``,
:mod:`trainers.tiny_model`), ``out/synth.json`` (what was generated and why) and the marker
``out/.mixopt-synth.json``: synth replaces only a folder that holds it (:mod:`mixopt.owned`).

The mechanism
-------------
There are ``C`` latent *concepts*, in ``G`` groups (concept ``c`` is in group ``c mod G``). Each
concept owns ``shared_words`` pseudo-words that every task uses, and each task owns, per concept,
its own **private** words that no other task uses. A text "about" a concept is a bag of words drawn
from that task's words for the concept (shared + private), plus a few task noise words. An encoder
trained from random initialisation learns which words go together only from batches that contain
them, so:

- training on task *k* teaches *k*'s private words, which no other task can teach, and the
  shared words, which every task teaches: every task needs some of the budget, none needs it all;
- the tasks differ in how much they need, by kind (``SynthSpec.private_words``):

  ============== ============= ======================================================================
  kind           private words what a row asks
  ============== ============= ======================================================================
  retrieval      6 per concept a 2-word query about ``c``, a 4-word positive about ``c``, a hard
                               negative about another concept **of c's group** with one word of
                               ``c``: the largest vocabulary, it keeps gaining from more steps
  sts            2             two 2-concept texts graded by their concept overlap (0, 1.67 or 5)
  classification 1             a 4-word text about ``c``, labelled with ``c``'s group: few words,
                               it saturates on a small share of the steps
  ============== ============= ======================================================================

- the tasks conflict: classification pulls the concepts of a group together, retrieval's hard
  negatives push them apart, so a mixture heavy in classification costs retrieval.

With the tiny experiment's step budget the best mixture for the mean dev score is therefore far
from uniform (about half the steps to retrieval, a fifth to classification) yet interior; the
landscape and its seed noise are measured by ``bench/landscape.py`` (bench/RESULTS.md). Evaluation
noise is kept low: ``n_dev`` rows per task, and each retrieval dev query is its concept's one
canonical query, so every dev positive about the concept is relevant to it (the evaluation pools
the positives of equal queries) and nDCG@10 has no ties of chance among same-concept documents.
The analytic trainer (``trainers.analytic``) turns the same vocabularies into a closed-form score,
for fast orchestration tests.

Everything is a deterministic function of ``seed``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixopt import atomic, owned
from mixopt.trial import load_trainer

MARKER = ".mixopt-synth.json"
_KEY = "mixopt_synth"


class SynthError(ValueError):
    """``out`` is not synth's to replace; nothing was written."""


KINDS = ("retrieval", "sts", "classification")
# The trainer whose write_synth_model writes out/model by default (loaded by name, as a trainer
# target always is).
MODEL_TRAINER = "trainers.embedding:train"
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


def _default_private() -> dict[str, int]:
    return {"retrieval": 6, "sts": 2, "classification": 1}


def _default_noise() -> dict[str, int]:
    return {"retrieval": 1, "sts": 0, "classification": 1}


@dataclass(frozen=True)
class SynthSpec:
    """Sizes of the synthetic world. Defaults keep a 1-thread CPU trial of the tiny experiment short."""

    n_concepts: int = 24
    n_groups: int = 4  # classification labels (concept c is in group c mod n_groups)
    shared_words: int = 2  # words per concept that every task uses
    # Private words per concept, by task kind: how much a task has to learn that no other task teaches.
    private_words: dict[str, int] = field(default_factory=_default_private)
    noise_words: dict[str, int] = field(default_factory=_default_noise)  # noise words per text, by kind
    n_noise_words: int = 48
    n_train: int = 512
    n_dev: int = 256


def _pseudo_words(n: int, rng: np.random.Generator) -> list[str]:
    words: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        w = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
        if w not in words:
            words.add(w)
            out.append(w)
    return out


def _task_plan(n_tasks: int, spec: SynthSpec) -> list[dict[str, Any]]:
    plans = []
    for k in range(n_tasks):
        kind = KINDS[k % len(KINDS)]
        plans.append(
            {
                "name": f"{kind}_{k}",
                "kind": kind,
                "private_words_per_concept": spec.private_words[kind],
                "noise_words_per_text": spec.noise_words[kind],
            }
        )
    return plans


class _Writer:
    """Generates texts for one task from its words for each concept."""

    def __init__(
        self,
        plan: dict[str, Any],
        vocab: list[list[str]],
        noise: list[str],
        spec: SynthSpec,
        rng: np.random.Generator,
    ):
        self.plan, self.vocab, self.spec, self.rng = plan, vocab, spec, rng
        self.task_noise = [noise[i] for i in rng.choice(len(noise), size=8, replace=False)]
        self.dev_queries: dict[int, str] = {}

    def words(self, c: int, n: int) -> list[str]:
        """``n`` words about concept ``c`` (drawn with replacement from the task's words for ``c``)."""
        return [str(w) for w in self.rng.choice(self.vocab[c], size=n)]

    def text(self, parts: list[list[str]]) -> str:
        words = [w for part in parts for w in part]
        words += [str(w) for w in self.rng.choice(self.task_noise, size=self.plan["noise_words_per_text"])]
        self.rng.shuffle(words)
        return " ".join(words)

    def concept(self) -> int:
        return int(self.rng.integers(self.spec.n_concepts))

    def other(self, *cs: int) -> int:
        while True:
            o = self.concept()
            if o not in cs:
                return o

    def same_group(self, c: int, *avoid: int) -> int:
        """Another concept of ``c``'s group (any other concept if the group has no other)."""
        members = [o for o in range(c % self.spec.n_groups, self.spec.n_concepts, self.spec.n_groups)]
        members = [o for o in members if o not in (c, *avoid)]
        return int(self.rng.choice(members)) if members else self.other(c, *avoid)

    def pair(self) -> tuple[int, int]:
        """Two different concepts."""
        a = self.concept()
        return a, self.other(a)

    def row(self, split: str) -> dict[str, Any]:
        kind = self.plan["kind"]
        if kind == "retrieval":
            c = self.concept()
            # A dev query is its concept's one canonical query: every dev positive about the concept
            # is relevant to it (the evaluation pools the positives of equal queries), so nDCG@10
            # measures "the top 10 are about the query's concept" without ties of chance.
            if split == "dev":
                q = self.dev_queries.setdefault(c, self.text([self.words(c, 2)]))
            else:
                q = self.text([self.words(c, 2)])
            p = self.text([self.words(c, 4)])
            while p == q:
                p = self.text([self.words(c, 4)])
            # The hard negative is about another concept of c's group, with one word of c's.
            neg = self.text([self.words(self.same_group(c), 3), self.words(c, 1)])
            return {"query": q, "positive": p, "negatives": [neg]}
        if kind == "sts":
            a, b = self.pair()
            shared = int(self.rng.integers(0, 3))  # concepts the two texts share: 0, 1 or 2
            x, y = self.other(a, b), self.other(a, b)
            c2 = (
                [a, b]
                if shared == 2
                else [a, x]
                if shared == 1
                else [x, y if y != x else self.other(a, b, x)]
            )
            overlap = len({a, b} & set(c2)) / len({a, b} | set(c2))
            score = round(5.0 * overlap, 3)
            return {
                "text1": self.text([self.words(a, 2), self.words(b, 2)]),
                "text2": self.text([self.words(c, 2) for c in c2]),
                "score": score,
            }
        c = self.concept()
        return {"text": self.text([self.words(c, 4)]), "label": f"group{c % self.spec.n_groups}"}


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
    trainer: str = MODEL_TRAINER,
) -> dict[str, Any]:
    """Write ``n_tasks`` synthetic tasks (and, ``with_model``, the ``trainer``'s model for them) to
    ``out_dir``; return the metadata.

    ``trainer`` is a trainer target (``"package.module:function"``) whose module provides
    ``write_synth_model`` (:mod:`mixopt.trial`); :class:`mixopt.trial.TrainerError` if it does not.
    The directory is written atomically: built in a temporary sibling, then renamed into place,
    so an interrupted run leaves no half-written task folder. An existing ``out_dir`` is replaced
    only when synth wrote it (it holds :data:`MARKER`) or it is empty; anything else raises
    :class:`SynthError` before any work, leaving it as it was.
    """
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    why = owned.refusal(out_dir, MARKER, _KEY, empty_ok=True)
    if why == "not marked":
        raise SynthError(
            f"--out {out_dir} is a folder synth did not write (no {MARKER} in it); synth replaces only "
            "its own output: choose a new or empty folder, or delete this one yourself"
        )
    if why is not None:
        raise SynthError(f"--out {out_dir} is {why}; choose a new or empty folder for the synthetic tasks")
    write_model = (
        load_trainer(trainer).require("write_synth_model", "mixopt synth writes the tasks' model with it")
        if with_model
        else None
    )
    spec = spec or SynthSpec()
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    plans = _task_plan(n_tasks, spec)
    per_concept = spec.shared_words + sum(p["private_words_per_concept"] for p in plans)
    all_words = _pseudo_words(spec.n_concepts * per_concept + spec.n_noise_words, rng)
    noise = all_words[spec.n_concepts * per_concept :]
    # Per concept: its shared words, then each task's private block, in task order.
    vocabs: list[list[list[str]]] = [[] for _ in plans]
    for c in range(spec.n_concepts):
        pool = all_words[c * per_concept : (c + 1) * per_concept]
        start = spec.shared_words
        for k, plan in enumerate(plans):
            end = start + plan["private_words_per_concept"]
            vocabs[k].append(pool[: spec.shared_words] + pool[start:end])
            start = end

    with atomic.directory(out_dir, tmp_prefix=f".{out_dir.name}.") as tmp:
        for k, plan in enumerate(plans):
            writer = _Writer(plan, vocabs[k], noise, spec, np.random.default_rng([seed, 1, k]))
            for split, n in (("train", spec.n_train), ("dev", spec.n_dev)):
                _write_jsonl(tmp / plan["name"] / f"{split}.jsonl", [writer.row(split) for _ in range(n)])
        if write_model is not None:
            write_model(tmp / "model", PROMPT_WORDS + all_words, seed=seed)
        meta = {
            "seed": seed,
            "spec": {k: v for k, v in spec.__dict__.items()},
            "tasks": plans,
            "mechanism": "see mixopt.synth docstring: shared and task-private concept words, "
            "tasks that differ in how much training they need, classification against retrieval",
        }
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        owned.write_marker(tmp, MARKER, _KEY, {"seed": seed, "tasks": n_tasks})
    return meta
