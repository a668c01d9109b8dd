"""The encoder: loading (both layouts), bidirectionality, pooling, and the sentence-transformers round trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from transformers import Gemma3TextConfig, Gemma3TextModel

from trainers.model import (
    Encoder,
    ModelLoadError,
    check_bidirectional,
    embed,
    load_encoder,
    save_sentence_transformer,
    tokenize,
)
from trainers.tiny_model import build_tokenizer, write_tiny_model

WORDS = [f"w{i}" for i in range(60)]
TEXTS = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10 w11", "w12 w13", "w1 w1 w2 w40 w41 w42"]
PROMPT = "task: search result | query: "


def test_loader_forces_bidirectional_attention_and_the_check_sees_it(tmp_path):
    # A checkpoint saved as causal is loaded bidirectional...
    model_dir = write_tiny_model(
        tmp_path / "causal",
        build_tokenizer(WORDS),
        seed=0,
        hidden_size=32,
        intermediate_size=64,
        head_dim=16,
        use_bidirectional_attention=False,
    )
    assert json.loads((model_dir / "config.json").read_text())["use_bidirectional_attention"] is False
    loaded = load_encoder(model_dir, seed=0)
    cfg = loaded.encoder.transformer.config
    assert cfg.use_bidirectional_attention is True and cfg.use_cache is False
    assert cfg._attn_implementation == "sdpa"
    assert check_bidirectional(loaded.encoder) > 1e-4

    # ...while the same weights under a causal mask fail the check (so the check can fail).
    causal = Gemma3TextModel.from_pretrained(model_dir, attn_implementation="sdpa")
    assert causal.config.use_bidirectional_attention is False
    with pytest.raises(RuntimeError, match="causal"):
        check_bidirectional(Encoder(causal, []))


def test_first_token_sees_the_last_token(tiny_model_dir):
    enc = load_encoder(tiny_model_dir).encoder
    mask = torch.ones(1, 6, dtype=torch.long)
    a = enc.token_states(torch.tensor([[2, 10, 11, 12, 13, 1]]), mask)
    b = enc.token_states(torch.tensor([[2, 10, 11, 12, 14, 1]]), mask)
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-4


def test_forward_is_mean_pooling_then_dense_then_normalise(tiny_model_dir):
    loaded = load_encoder(tiny_model_dir, seed=5)
    enc, tok = loaded.encoder, loaded.tokenizer
    assert [(d.in_features, d.out_features, d.bias) for d in enc.dense] == [(32, 128, None), (128, 32, None)]
    batch = tokenize(tok, TEXTS, 64)
    with torch.no_grad():
        got = enc(**batch)
        hidden = enc.token_states(**batch)
    for i in range(len(TEXTS)):
        n = int(batch["attention_mask"][i].sum())
        pooled = hidden[i, :n].mean(dim=0)  # padding is on the right
        v = enc.dense[1].weight @ (enc.dense[0].weight @ pooled)
        torch.testing.assert_close(got[i], v / v.norm(), rtol=1e-5, atol=1e-6)


def test_embedding_does_not_depend_on_batch_company(tiny_model_dir):
    loaded = load_encoder(tiny_model_dir)
    together = embed(loaded.encoder, loaded.tokenizer, TEXTS, max_seq_length=64, batch_size=8)
    for i, text in enumerate(TEXTS):
        alone = embed(loaded.encoder, loaded.tokenizer, [text], max_seq_length=64)
        torch.testing.assert_close(alone[0], together[i], rtol=0, atol=1e-5)


def test_new_dense_layers_come_from_the_seed(tiny_model_dir):
    a = load_encoder(tiny_model_dir, seed=1).encoder.dense[0].weight
    b = load_encoder(tiny_model_dir, seed=1).encoder.dense[0].weight
    c = load_encoder(tiny_model_dir, seed=2).encoder.dense[0].weight
    assert torch.equal(a, b) and not torch.equal(a, c)
    bound = 1 / 32**0.5
    assert a.abs().max() <= bound and a.abs().max() > 0.9 * bound


def test_sentence_transformers_round_trip(tiny_model_dir, tmp_path):
    loaded = load_encoder(tiny_model_dir, seed=4)
    with torch.no_grad():  # move away from the initial weights so a save of stale weights would show
        for p in loaded.encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ours = embed(loaded.encoder, loaded.tokenizer, [PROMPT + t for t in TEXTS], max_seq_length=16)
    prompts = {"retrieval_0/query": PROMPT, "retrieval_0/document": "title: none | text: "}
    out = save_sentence_transformer(
        loaded.encoder, loaded.tokenizer, tmp_path / "ckpt" / "model", prompts=prompts, max_seq_length=16
    )

    names = sorted(os.listdir(out))
    assert {
        "modules.json",
        "config.json",
        "model.safetensors",
        "1_Pooling",
        "2_Dense",
        "3_Dense",
        "4_Normalize",
        "config_sentence_transformers.json",
    } <= set(names)
    assert not [p for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".pth")]
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["model"]  # no temp dirs left behind

    st = SentenceTransformer(str(out), device="cpu")
    assert st.prompts["retrieval_0/query"] == PROMPT
    theirs = st.encode(TEXTS, prompt_name="retrieval_0/query", convert_to_tensor=True, batch_size=2)
    torch.testing.assert_close(theirs.cpu(), ours, rtol=0, atol=1e-5)
    # Dense weights on disk are the trained ones.
    torch.testing.assert_close(
        load_file(out / "2_Dense" / "model.safetensors")["linear.weight"],
        loaded.encoder.dense[0].weight.detach(),
    )


def test_sentence_transformers_layout_reuses_its_dense_layers(tiny_model_dir, tmp_path):
    first = load_encoder(tiny_model_dir, seed=7)
    out = save_sentence_transformer(
        first.encoder, first.tokenizer, tmp_path / "st", prompts={"q": "x: "}, max_seq_length=32
    )
    again = load_encoder(out, seed=99)  # a different seed: reused layers must not be re-drawn
    assert not again.drawn_dense and again.prompts == {"q": "x: "}
    saved = load_file(out / "3_Dense" / "model.safetensors")["linear.weight"]
    torch.testing.assert_close(again.encoder.dense[1].weight.detach(), saved)
    a = embed(first.encoder, first.tokenizer, TEXTS, max_seq_length=32)
    b = embed(again.encoder, again.tokenizer, TEXTS, max_seq_length=32)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_a_failed_save_leaves_the_previous_checkpoint(tiny_model_dir, tmp_path):
    loaded = load_encoder(tiny_model_dir)
    target = tmp_path / "model"
    save_sentence_transformer(loaded.encoder, loaded.tokenizer, target, prompts={}, max_seq_length=32)
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(TypeError):  # prompts that are not JSON fail in the last file written
        save_sentence_transformer(
            loaded.encoder, loaded.tokenizer, target, prompts={"x": object()}, max_seq_length=32
        )
    assert sorted(p.name for p in target.iterdir()) == before
    assert sorted(os.listdir(tmp_path)) == ["model"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o027, 0o750)])
def test_a_saved_checkpoint_has_the_umask_permissions_not_mkdtemps_0700(
    tiny_model_dir, tmp_path, umask, mode
):
    loaded = load_encoder(tiny_model_dir)
    before = os.umask(umask)
    try:
        out = save_sentence_transformer(
            loaded.encoder, loaded.tokenizer, tmp_path / "model", prompts={}, max_seq_length=32
        )
    finally:
        os.umask(before)
    assert oct(out.stat().st_mode & 0o777) == oct(mode)
    assert oct((out / "2_Dense").stat().st_mode & 0o777) == oct(mode)  # sub-folders: plain mkdir


def test_a_failed_final_rename_restores_the_previous_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    loaded = load_encoder(tiny_model_dir)
    target = tmp_path / "model"
    save_sentence_transformer(loaded.encoder, loaded.tokenizer, target, prompts={"v": "1"}, max_seq_length=32)
    before = sorted(p.name for p in target.iterdir())
    real_replace = os.replace

    def replace_failing_for_the_new_dir(src, dst):
        if Path(src).name.startswith(".model.tmp-"):  # the new checkpoint's rename into place
            raise OSError("simulated: rename failed (e.g. the filesystem went read-only)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_failing_for_the_new_dir)
    with pytest.raises(OSError, match="simulated"):
        save_sentence_transformer(
            loaded.encoder, loaded.tokenizer, target, prompts={"v": "2"}, max_seq_length=32
        )
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no temp or old dirs left behind
    assert sorted(p.name for p in target.iterdir()) == before
    assert json.loads((target / "config_sentence_transformers.json").read_text())["prompts"] == {"v": "1"}


def test_loader_errors_say_what_to_do(tmp_path, tiny_model_dir):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_encoder(tmp_path / "nope")
    for model_type, why in [
        ("gpt2", "'gpt2' is a decoder-only causal language model"),
        ("t5", "'t5' is an encoder-decoder"),
        ("vit", "'vit' is not a text encoder"),
        ("bart", "'bart' is an encoder-decoder"),
        ("my_remote_model", "'my_remote_model' is not one transformers"),
    ]:
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        with pytest.raises(ModelLoadError) as e:
            load_encoder(folder)
        assert str(e.value).startswith(f"{folder / 'config.json'}: model_type {why}")
        assert "trainers.embedding takes a Gemma3 text model" in str(e.value) and "\n" not in str(e.value)
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_encoder(no_weights)


def test_encoder_output_is_unit_norm_under_any_input(tiny_model_dir):
    enc = load_encoder(tiny_model_dir).encoder
    ids = torch.randint(4, 60, (3, 9))
    out = enc(ids, torch.ones_like(ids))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, F.normalize(out, dim=-1))


def test_config_roundtrip_keeps_sliding_window(tiny_model_dir, tmp_path):
    # The bidirectional sliding-window conversion must happen once, not once per save/load cycle.
    loaded = load_encoder(tiny_model_dir)
    window = loaded.encoder.transformer.config.sliding_window
    out = save_sentence_transformer(
        loaded.encoder, loaded.tokenizer, tmp_path / "m", prompts={}, max_seq_length=32
    )
    assert load_encoder(out).encoder.transformer.config.sliding_window == window
    assert Gemma3TextConfig.from_pretrained(out).sliding_window == window


def test_a_hub_name_goes_through_the_same_loader(tiny_model_dir, tmp_path, monkeypatch):
    """A repo id resolves to a hub-cache snapshot, then loads like a local directory (offline: no network)."""
    import shutil

    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--mixopt-test--tiny-gemma"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))

    from_hub = load_encoder("mixopt-test/tiny-gemma", seed=3)
    assert from_hub.source == repo / "snapshots" / commit
    local = load_encoder(tiny_model_dir, seed=3)
    torch.testing.assert_close(
        embed(from_hub.encoder, from_hub.tokenizer, TEXTS, max_seq_length=32),
        embed(local.encoder, local.tokenizer, TEXTS, max_seq_length=32),
        rtol=0,
        atol=0,
    )
    with pytest.raises(ModelLoadError, match="cannot fetch hub model 'mixopt-test/absent'"):
        load_encoder("mixopt-test/absent")


def test_bench_facing_modules_import_no_pydantic_and_no_mixopt():
    """bench/trainer.py runs on a GPU image without pydantic/ray/mlflow: these modules must not need them."""
    import subprocess
    import sys

    code = (
        "import sys, trainers.model, trainers.losses, trainers.training; "
        "bad = [m for m in ('pydantic', 'mixopt', 'ray', 'mlflow') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("window", [3, 512])
def test_precomputed_masks_match_the_ones_transformers_builds(tmp_path, window):
    """Encoder.token_states passes its own 4-D masks; transformers' mask path is the reference."""
    model_dir = write_tiny_model(
        tmp_path / "m",
        build_tokenizer(WORDS),
        seed=0,
        hidden_size=32,
        intermediate_size=64,
        head_dim=16,
        sliding_window=window,
        num_hidden_layers=4,
    )
    enc = load_encoder(model_dir, seed=0).encoder.train()  # dropout is 0 in Gemma3: train == eval
    torch.manual_seed(0)
    ids = torch.randint(5, 60, (4, 9))
    for mask in (
        torch.ones(4, 9, dtype=torch.long),
        torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7, [1] * 8 + [0]]),
    ):
        masks = enc.attention_masks(mask)
        assert isinstance(masks, dict) and set(masks) == {"full_attention", "sliding_attention"}
        ours = enc.token_states(ids, mask)
        ours.pow(2).sum().backward()
        grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
        enc.zero_grad()
        ref = enc.transformer(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        ref.pow(2).sum().backward()
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
        for n, p in enc.named_parameters():
            if p.grad is not None:
                torch.testing.assert_close(grads[n], p.grad, rtol=1e-5, atol=1e-6)
        enc.zero_grad()
