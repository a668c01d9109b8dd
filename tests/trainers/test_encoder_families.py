"""Encoders beyond Gemma3: a BERT loaded through AutoModel, every sentence-transformers pooling mode,
Dense layers with bias and activation, and a round trip whose reference is sentence-transformers itself.

sentence-transformers builds and encodes each model here from its own modules (Transformer,
Pooling, Dense, Normalize): the independent reference for :func:`trainers.model.embed`, before
and after :func:`trainers.model.save_sentence_transformer`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.dense import Dense
from sentence_transformers.base.modules.normalize import Normalize
from sentence_transformers.base.modules.transformer import Transformer
from sentence_transformers.sentence_transformer.modules.pooling import Pooling as STPooling

from trainers.losses import LossWeights, false_negative_mask
from trainers.model import ModelLoadError, check_bidirectional, embed, load_encoder, save_sentence_transformer
from trainers.training import Stepper, prepare_inputs

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10 w11", "w12 w13 : w14", "w1 w1 w2 w40 | w41 w42"]
PROMPT = "task : query | "


def st_model(bert_dir: Path, out: Path, modes, *, dense: bool, normalize: bool) -> Path:
    """A sentence-transformers folder built by sentence-transformers from ``bert_dir``."""
    transformer = Transformer(str(bert_dir), max_seq_length=64)
    modules = [transformer, STPooling(32, pooling_mode=modes)]
    width = 32 * (1 if isinstance(modes, str) else len(modes))
    if dense:
        torch.manual_seed(11)
        modules += [
            Dense(width, 24, bias=True, activation_function=torch.nn.Tanh()),
            Dense(24, 16, bias=False, activation_function=torch.nn.Identity()),
        ]
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device="cpu")
    model.save(str(out))
    return out


def encode(path: Path, texts, **kw) -> torch.Tensor:
    return SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_tensor=True, **kw).cpu()


def test_a_plain_bert_folder_is_mean_pooled_without_dense_layers(tiny_bert_dir):
    loaded = load_encoder(tiny_bert_dir, seed=0)
    enc = loaded.encoder
    assert type(enc.transformer).__name__ == "BertModel" and not loaded.drawn_dense
    assert enc.pooling.modes == ("mean",) and len(enc.dense) == 0 and enc.dim == 32
    assert check_bidirectional(enc) > 1e-4
    # sentence-transformers wraps a plain folder as Transformer + mean Pooling (no Normalize).
    theirs = F.normalize(encode(tiny_bert_dir, TEXTS), dim=-1)
    ours = embed(enc, loaded.tokenizer, TEXTS, max_seq_length=64, batch_size=2)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "modes, dense, normalize",
    [
        ("mean", False, True),
        ("cls", True, True),
        ("max", True, False),
        ("lasttoken", False, True),
        ("weightedmean", False, True),
        ("mean_sqrt_len_tokens", True, True),
        (("cls", "mean"), True, True),
    ],
)
def test_a_sentence_transformers_folder_embeds_and_saves_as_sentence_transformers_does(
    tiny_bert_dir, tmp_path, modes, dense, normalize
):
    source = st_model(tiny_bert_dir, tmp_path / "src", modes, dense=dense, normalize=normalize)
    loaded = load_encoder(source, seed=0)
    enc, tok = loaded.encoder, loaded.tokenizer
    assert enc.pooling.modes == ((modes,) if isinstance(modes, str) else modes)
    assert [type(a).__name__ for a in enc.activations] == (["Tanh", "Identity"] if dense else [])
    assert enc.dim == (16 if dense else 32 * len(enc.pooling.modes))
    theirs = encode(source, TEXTS)
    if not normalize:  # the trainer always normalises (its losses are on cosines)
        theirs = F.normalize(theirs, dim=-1)
    torch.testing.assert_close(
        embed(enc, tok, TEXTS, max_seq_length=64, batch_size=2), theirs, rtol=0, atol=1e-5
    )

    with torch.no_grad():  # move off the source's weights so that a save of stale ones would show
        for p in enc.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ours = embed(enc, tok, [PROMPT + t for t in TEXTS], max_seq_length=64)
    out = save_sentence_transformer(enc, tok, tmp_path / "ckpt", prompts={"q": PROMPT}, max_seq_length=64)
    kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    assert kinds == ["Transformer", "Pooling"] + ["Dense"] * (2 if dense else 0) + ["Normalize"]
    torch.testing.assert_close(encode(out, TEXTS, prompt_name="q"), ours, rtol=0, atol=1e-5)
    again = load_encoder(out)
    torch.testing.assert_close(
        embed(again.encoder, again.tokenizer, [PROMPT + t for t in TEXTS], max_seq_length=64),
        ours,
        rtol=0,
        atol=0,
    )


def test_pooling_without_the_prompt_and_foreign_modules_are_refused_in_one_line(tiny_bert_dir, tmp_path):
    source = st_model(tiny_bert_dir, tmp_path / "src", "mean", dense=False, normalize=True)
    pooling = source / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "include_prompt": False}))
    with pytest.raises(
        ModelLoadError, match=r"1_Pooling: include_prompt false .* trainers.sentence_transformers"
    ):
        load_encoder(source)
    modules = json.loads((source / "modules.json").read_text())
    modules.insert(2, {"idx": 9, "name": "9", "path": "", "type": "sentence_transformers.models.LayerNorm"})
    (source / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(
        ModelLoadError, match=r"modules.json: modules \['Transformer', 'Pooling', 'LayerNorm'"
    ):
        load_encoder(source)


@pytest.mark.parametrize("option", ["mini_batch_size", "gradient_checkpointing"])
def test_bert_gradients_with_gradcache_or_checkpointing_equal_the_full_batch(
    tiny_bert_no_dropout_dir, option
):
    """Dropout off so that the reference (one full-batch graph) draws no masks the chunks could not."""
    bert = tiny_bert_no_dropout_dir
    queries, positives, negatives = TEXTS, TEXTS[1:] + TEXTS[:1], [TEXTS[2], None, TEXTS[0], None, TEXTS[3]]
    grads = []
    for kw in ({}, {option: 2 if option == "mini_batch_size" else True}):
        loaded = load_encoder(bert)
        stepper = Stepper(
            loaded.encoder.train(),
            loaded.tokenizer,
            LossWeights(dims=(32, 16), temperature=0.05, hardness_alpha=5.0, spread_out=1.0, distill=0.0),
            lr=1e-3,
            weight_decay=0.0,
            warmup_steps=1,
            total_steps=2,
            max_seq_length=16,
            device=torch.device("cpu"),
            amp=None,
            **kw,
        )
        inputs = prepare_inputs(
            loaded.tokenizer,
            queries,
            positives,
            negatives,
            max_seq_length=16,
            false_negatives=false_negative_mask(queries, positives),
        )
        loss, _ = stepper.backward(inputs)
        grads.append(
            (
                float(loss.detach()),
                {n: p.grad.clone() for n, p in loaded.encoder.named_parameters() if p.grad is not None},
            )
        )
    (loss_full, full), (loss_opt, other) = grads
    assert loss_opt == pytest.approx(loss_full, rel=1e-6)
    assert set(full) == set(other) and len(full) > 10
    for name, g in full.items():
        torch.testing.assert_close(other[name], g, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(
    not (REPO / "data" / "real" / "model" / "modules.json").exists(),
    reason="all-MiniLM-L6-v2 is written by `make real-data` (data/real/model)",
)
def test_the_real_minilm_embeds_as_sentence_transformers_encodes_it():
    model = REPO / "data" / "real" / "model"
    texts = [
        "A man is playing a guitar.",
        "Stocks fell sharply after the central bank raised interest rates.",
        "A funny, warm and surprisingly moving film.",
        "query: what did the minister say about the budget?",
    ]
    loaded = load_encoder(model)
    assert type(loaded.encoder.transformer).__name__ == "BertModel" and loaded.encoder.dim == 384
    ours = embed(loaded.encoder, loaded.tokenizer, texts, max_seq_length=256)
    torch.testing.assert_close(ours, encode(model, texts), rtol=0, atol=1e-5)


def test_a_bert_hub_name_goes_through_the_same_loader(tiny_bert_dir, tmp_path, monkeypatch):
    """A repo id resolves to a hub-cache snapshot of the sentence-transformers folder (offline)."""
    import shutil

    from huggingface_hub import constants

    source = st_model(tiny_bert_dir, tmp_path / "src", "cls", dense=True, normalize=True)
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "cache" / "models--mixopt-test--tiny-bert"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    from_hub = load_encoder("mixopt-test/tiny-bert")
    assert from_hub.source == repo / "snapshots" / commit
    torch.testing.assert_close(
        embed(from_hub.encoder, from_hub.tokenizer, TEXTS, max_seq_length=64),
        encode(source, TEXTS),
        rtol=0,
        atol=1e-5,
    )
