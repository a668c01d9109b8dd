"""Fixtures for the trainer tests: synthetic tasks, tiny Gemma3 encoders and a tiny BERT, built locally
(never the hub)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mixopt.config import TaskConfig
from mixopt.synth import synthesize
from trainers.tiny_model import build_tokenizer, write_tiny_model

BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

PROMPTS = {
    "retrieval": {"query": "task: search result | query: ", "document": "title: none | text: "},
    "sts": {
        "query": "task: sentence similarity | query: ",
        "document": "task: sentence similarity | query: ",
    },
    "classification": {
        "query": "task: classification | query: ",
        "document": "task: classification | query: ",
    },
}
WORDS = [f"w{i}" for i in range(60)] + ["task", "query", "title", "text", ":", "|"]


@pytest.fixture(autouse=True)
def _one_thread():
    # The CI box has 2 cores shared by parallel jobs; one intra-op thread avoids OpenMP spin contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A plain Hugging Face Gemma3 text-model directory (layout a), hidden size 32."""
    out = tmp_path_factory.mktemp("tiny") / "model"
    return write_tiny_model(
        out,
        build_tokenizer(WORDS),
        seed=3,
        hidden_size=32,
        intermediate_size=64,
        head_dim=16,
        query_pre_attn_scalar=16,
    )


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """Three synthetic tasks (retrieval, STS, classification) and their tiny model (hidden size 64)."""
    root = tmp_path_factory.mktemp("synth") / "data"
    synthesize(root, n_tasks=3, seed=0)
    return root


@pytest.fixture(scope="session")
def synth_tasks(synth_root) -> tuple[TaskConfig, ...]:
    kinds = ("retrieval", "sts", "classification")
    return tuple(
        TaskConfig(name=f"{kind}_{i}", kind=kind, path=synth_root / f"{kind}_{i}", prompt=PROMPTS[kind])
        for i, kind in enumerate(kinds)
    )


def write_tiny_bert(out: Path, words: list[str], seed: int = 0, **sizes) -> Path:
    """A random-init BERT (``BertConfig``, toy sizes) and a WordPiece tokenizer whose vocabulary is
    BERT's special tokens plus ``words``, written as a plain Hugging Face folder (safetensors)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    vocab = list(dict.fromkeys(BERT_SPECIAL + words))
    tokenizer = BertTokenizerFast(
        vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False, model_max_length=128
    )
    ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    assert len(tokenizer) == len(vocab) and tokenizer.unk_token_id not in ids, "the tokenizer lacks words"
    config = BertConfig(
        vocab_size=len(vocab),
        **{
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
            **sizes,
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A plain Hugging Face BERT folder (hidden size 32, dropout 0.1 as BERT's default) whose
    tokenizer knows :data:`WORDS`."""
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "model", WORDS, seed=1)


@pytest.fixture(scope="session")
def tiny_bert_no_dropout_dir(tmp_path_factory) -> Path:
    """:func:`tiny_bert_dir`'s BERT with dropout off (for gradients compared with a reference graph)."""
    return write_tiny_bert(
        tmp_path_factory.mktemp("bert0") / "model",
        WORDS,
        seed=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


@pytest.fixture(scope="session")
def synth_bert_dir(synth_root, tmp_path_factory) -> Path:
    """A tiny BERT (hidden size 64, as the synthetic Gemma3) whose WordPiece vocabulary holds every
    word of the synthetic tasks and their prompts: a plain Hugging Face folder."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(synth_root / "model").get_vocab()
    words = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if not w.startswith("<")]
    words += [w for p in PROMPTS.values() for text in p.values() for w in text.split()]
    return write_tiny_bert(
        tmp_path_factory.mktemp("synth-bert") / "model",
        words,
        seed=0,
        hidden_size=64,
        intermediate_size=128,
    )
