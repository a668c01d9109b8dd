"""The tiny-model builder behind ``mixopt synth`` (:mod:`trainers.tiny_model`) at EmbeddingGemma-300m's
shape and with a given vocabulary."""

from __future__ import annotations

import pytest
import torch

from trainers.tiny_model import EMBEDDINGGEMMA_300M, build_tokenizer, tiny_gemma_config, write_tiny_model

# google/embeddinggemma-300m: 307,581,696 parameters (the model card's 308M; sentence-transformers'
# count of the hub model, Dense head included).
EMBEDDINGGEMMA_PARAMS = 307_581_696


def test_the_300m_shape_has_embeddinggemmas_parameter_count():
    from transformers import Gemma3TextModel

    from trainers.model import DENSE_EXPANSION

    with torch.device("meta"):  # the shape only: no 1.2 GB of random weights
        model = Gemma3TextModel(tiny_gemma_config(**EMBEDDINGGEMMA_300M))
    dense = 2 * 768 * DENSE_EXPANSION * 768  # d -> 4d -> d, no bias
    assert sum(p.numel() for p in model.parameters()) + dense == EMBEDDINGGEMMA_PARAMS
    assert model.config.layer_types.count("full_attention") == 4  # every 6th of 24 layers is global


def test_vocab_size_sets_the_embedding_table_and_must_hold_the_tokenizer(tmp_path):
    from trainers.model import load_encoder

    tokenizer = build_tokenizer(["alpha", "beta", "gamma"])
    out = write_tiny_model(tmp_path / "m", tokenizer, dense=True, vocab_size=1000)
    encoder = load_encoder(out).encoder
    assert encoder.transformer.get_input_embeddings().weight.shape == (1000, 64)
    with pytest.raises(ValueError, match=r"vocab_size 5 is smaller than the tokenizer's 7 tokens"):
        write_tiny_model(tmp_path / "small", tokenizer, vocab_size=5)
    assert not (tmp_path / "small").exists()


@pytest.mark.slow
def test_the_300m_model_is_written_and_loads_with_its_parameter_count(tmp_path):
    """Built locally, no hub: 1.23 GB of float32 safetensors that the trainer's loader loads."""
    from trainers.model import load_encoder

    tokenizer = build_tokenizer([f"w{i}" for i in range(100)])
    out = write_tiny_model(tmp_path / "gemma300m", tokenizer, dense=True, **EMBEDDINGGEMMA_300M)
    encoder = load_encoder(out).encoder
    assert sum(p.numel() for p in encoder.parameters()) == EMBEDDINGGEMMA_PARAMS
