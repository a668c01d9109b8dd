"""Fixtures for the trainer tests: synthetic tasks and tiny Gemma3 encoders, built locally (never the hub)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mixopt.config import TaskConfig
from mixopt.synth import synthesize
from trainers.tiny_model import build_tokenizer, write_tiny_model

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
