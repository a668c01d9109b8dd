from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from mixopt.data import iter_rows
from mixopt.sweep.checks import file_stats
from mixopt.synth import SynthSpec, synthesize

SMALL = SynthSpec(n_train=64, n_dev=16)


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("s") / "synthetic"
    synthesize(out, n_tasks=4, seed=3, spec=SMALL)
    return out


def test_same_seed_same_bytes_different_seed_differs(synth_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synthesize(again, n_tasks=4, seed=3, spec=SMALL)
    assert digest(again) == digest(synth_dir)
    other = tmp_path / "other"
    synthesize(other, n_tasks=4, seed=4, spec=SMALL, with_model=False)
    assert (other / "retrieval_0" / "train.jsonl").read_bytes() != (
        synth_dir / "retrieval_0" / "train.jsonl"
    ).read_bytes()


def test_every_file_reads_back_with_mixed_kinds(synth_dir: Path) -> None:
    kinds = {}
    for task in sorted(p for p in synth_dir.iterdir() if p.is_dir() and p.name != "model"):
        kind = task.name.rsplit("_", 1)[0]
        kinds[task.name] = kind
        assert file_stats(task / "train.jsonl", kind).rows == SMALL.n_train
        assert file_stats(task / "dev.jsonl", kind).rows == SMALL.n_dev
    assert sorted(set(kinds.values())) == ["classification", "retrieval", "sts"]
    assert len(kinds) == 4


def test_tiny_model_and_tokenizer_load_like_a_hub_checkpoint(synth_dir: Path) -> None:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(synth_dir / "model")
    config = AutoConfig.from_pretrained(synth_dir / "model")
    model = AutoModel.from_pretrained(synth_dir / "model")
    assert config.model_type == "gemma3_text" and config.use_bidirectional_attention
    assert type(model).__name__ == "Gemma3TextModel"
    # Every word of the data is in the vocabulary: no <unk> in any text.
    row = next(iter_rows(synth_dir / "retrieval_0" / "train.jsonl", "retrieval"))
    ids = tok(row.query)["input_ids"]
    assert tok.unk_token_id not in ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    with torch.no_grad():
        out = model(**tok([row.query], return_tensors="pt")).last_hidden_state
    assert out.shape == (1, len(ids), config.hidden_size) and torch.isfinite(out).all()


def test_tasks_differ_in_difficulty_and_share_vocabulary_partly(synth_dir: Path) -> None:
    def vocab(task: str) -> set[str]:
        words: set[str] = set()
        for row in iter_rows(synth_dir / task / "train.jsonl", task.rsplit("_", 1)[0]):
            for text in (
                getattr(row, f) for f in ("query", "positive", "text1", "text2", "text") if hasattr(row, f)
            ):
                words.update(text.split())
        return words

    names = sorted(p.name for p in synth_dir.iterdir() if p.is_dir() and p.name != "model")
    vocabs = {n: vocab(n) for n in names}
    sizes = {len(v) for v in vocabs.values()}
    assert len(sizes) > 1  # different difficulty
    for a in names:
        for b in names:
            if a < b:
                shared = len(vocabs[a] & vocabs[b])
                assert 0 < shared < min(len(vocabs[a]), len(vocabs[b]))  # partial transfer


def test_the_model_is_the_trainers_and_a_trainer_without_one_writes_nothing(tmp_path: Path) -> None:
    from mixopt.trial import TrainerError

    out = tmp_path / "synthetic"
    with pytest.raises(TrainerError, match="'trainers.analytic:train' has no model for synthetic tasks"):
        synthesize(out, n_tasks=2, seed=0, spec=SMALL, trainer="trainers.analytic:train")
    assert not out.exists() and not list(tmp_path.iterdir())
