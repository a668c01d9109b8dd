"""The text encoder the built-in trainer finetunes, and its sentence-transformers form.

Architecture (EmbeddingGemma, arXiv 2509.20354, Section 2; Gemini Embedding, arXiv 2503.07891),
the same for every transformer the trainer takes (:mod:`trainers.model_support`):

    tokens ──► transformer (bidirectional attention)           hidden [B, L, d_M]
           ──► pooling over non-padding tokens (mean by default)   [B, d_P]   (:mod:`trainers.pooling`)
           ──► Dense layers, if any (EmbeddingGemma: d→4d→d, no bias)  [B, d]
           ──► L2 normalisation                                 [B, d]

One loader serves a local directory and a hub name (a hub name is first resolved to a local
snapshot, then the same code runs), and two families of transformer:

- **Gemma3 text** (``model_type: gemma3_text``): ``use_bidirectional_attention=True`` is forced,
  attention is SDPA, the KV cache is off, and :func:`check_bidirectional` proves after loading that
  attention really is bidirectional;
- **an encoder** transformers' ``AutoModel`` loads (BERT, RoBERTa, XLM-R, MPNet, ModernBERT, ...),
  loaded as it is;

in one of two layouts:

(a) a plain Hugging Face directory (``config.json``, ``*.safetensors``, a tokenizer): mean pooling;
    a Gemma3 gets EmbeddingGemma's two Dense layers, new and drawn from the seed (what
    :func:`trainers.tiny_model.write_tiny_model` writes without ``dense``); an encoder gets none,
    so it embeds in its hidden size, as sentence-transformers embeds a plain encoder;
(b) a sentence-transformers directory or repo (``modules.json``: Transformer, Pooling, Dense...,
    Normalize), e.g. ``google/embeddinggemma-300m`` or ``sentence-transformers/all-MiniLM-L6-v2``:
    its pooling mode(s), its Dense layers (weights, bias, activation) and its prompts are reused.

The output is always L2-normalised (the losses are on cosines): a sentence-transformers model
without Normalize is saved with one, which changes its embeddings' lengths, not their cosines.

:func:`save_sentence_transformer` writes the checkpoint as a sentence-transformers directory
(safetensors only, atomically: :mod:`mixopt.atomic`) with the encoder's own modules, so
``SentenceTransformer(path).encode(texts)`` reproduces :func:`embed`; its last step records every
file's SHA-256 (:mod:`mixopt.checksums`), which the soup verifies. Both are stdlib only, imported
when a checkpoint is saved. This module imports only torch, transformers and safetensors (no
pydantic), so ``bench/trainer.py`` can use it on a bare GPU image.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .model_support import GEMMA3, ModelLoadError, architecture, read_json, st_modules
from .pooling import Pooling, PoolingError

DEFAULT_MODEL = "google/embeddinggemma-300m"
# EmbeddingGemma's up-projection is 4x the model dimension (768 -> 3072 -> 768).
DENSE_EXPANSION = 4
# sentence-transformers' Dense applies Tanh when its config names no activation.
_ST_DEFAULT_ACTIVATION = "torch.nn.modules.activation.Tanh"
# Files fetched for a hub model: configs, tokenizer, safetensors weights of every module folder.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*/*.json", "*/*.safetensors"]


class Encoder(nn.Module):
    """Transformer + pooling + Dense layers + L2 normalisation.

    Args:
        transformer: a transformers base model (``last_hidden_state``); a Gemma3 configured with
            bidirectional attention.
        dense: the projection layers applied after pooling, in order (EmbeddingGemma: d→4d, 4d→d).
        pooling: the pooling (:class:`trainers.pooling.Pooling`); mean by default.
        activations: one activation module per Dense layer (sentence-transformers' Dense applies
            one after its linear map); Identity by default.
    """

    def __init__(
        self,
        transformer: nn.Module,
        dense: Sequence[nn.Linear],
        pooling: Pooling | None = None,
        activations: Sequence[nn.Module] | None = None,
    ):
        super().__init__()
        self.transformer = transformer
        self.pooling = pooling or Pooling()
        self.dense = nn.ModuleList(dense)
        acts = list(activations) if activations is not None else [nn.Identity() for _ in dense]
        if len(acts) != len(self.dense):
            raise ValueError(f"{len(acts)} activations for {len(self.dense)} Dense layers")
        self.activations = nn.ModuleList(acts)

    @property
    def hidden_size(self) -> int:
        return int(self.transformer.config.hidden_size)

    @property
    def dim(self) -> int:
        """The output (full Matryoshka) dimension."""
        return self.dense[-1].out_features if len(self.dense) else self.pooling.output_dim(self.hidden_size)

    @property
    def is_gemma3(self) -> bool:
        return getattr(self.transformer.config, "model_type", None) == GEMMA3

    def attention_masks(self, attention_mask: Tensor) -> Tensor | dict[str, Tensor | None]:
        """The per-layer-type 4-D masks of a bidirectional Gemma3 under SDPA, from the ``[B, L]`` mask.

        transformers builds them itself on every forward through ``vmap`` over mask functions: on a
        CPU that is a constant of several ms per mask type per forward, which GradCache pays twice per
        chunk (bench/RESULTS.md, "Trainer memory"). For SDPA they are plain boolean tensors (True = attend):

        - ``full_attention``: key ``j`` is not padding, ``[B, 1, L, L]``; None when nothing is padded
          (checked only for a CPU tensor, to add no device sync), as transformers does, which lets
          SDPA take its mask-free kernels;
        - ``sliding_attention``: that and ``|i - j| < sliding_window`` (Gemma3's bidirectional window).

        Other attention implementations (eager wants additive float masks) and other transformers
        than Gemma3 get the 2-D mask back, and transformers builds theirs.
        """
        cfg = self.transformer.config
        if (
            not self.is_gemma3
            or getattr(cfg, "_attn_implementation", None) != "sdpa"
            or not cfg.use_bidirectional_attention
        ):
            return attention_mask
        keep = attention_mask.bool()
        b, length = keep.shape
        full = keep[:, None, None, :].expand(b, 1, length, length)
        masks: dict[str, Tensor | None] = {}
        if "sliding_attention" in cfg.layer_types:
            i = torch.arange(length, device=keep.device)
            band = (i[:, None] - i[None, :]).abs() < cfg.sliding_window
            masks["sliding_attention"] = full & band
        unpadded = keep.device.type == "cpu" and bool(keep.all())
        masks["full_attention"] = None if unpadded else full.contiguous()
        return masks

    def token_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Last hidden states ``[B, L, d_M]``."""
        if not self.is_gemma3:
            return self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        out = self.transformer(
            input_ids=input_ids, attention_mask=self.attention_masks(attention_mask), use_cache=False
        )
        return out.last_hidden_state

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Unit-norm embeddings ``[B, d]`` (float32) for token ids ``[B, L]`` and their mask ``[B, L]``."""
        hidden = self.token_states(input_ids, attention_mask)
        # Pooled in float32: under bf16 autocast a sum over hundreds of tokens loses digits.
        pooled = self.pooling(hidden, attention_mask)
        for layer, activation in zip(self.dense, self.activations):
            pooled = activation(layer(pooled))
        return F.normalize(pooled.float(), p=2, dim=-1)


@dataclass
class LoadedEncoder:
    """What :func:`load_encoder` returns.

    Attributes:
        encoder: the :class:`Encoder` (float32, eval mode, on CPU).
        tokenizer: its fast tokenizer, padding on the right.
        prompts: the prompts the source model shipped (sentence-transformers layout), else empty.
        source: the local directory it was read from.
        drawn_dense: True if the Dense layers were drawn from the seed (a plain Gemma3 folder): the
            encoder then differs from seed to seed before any training.
    """

    encoder: Encoder
    tokenizer: Any
    prompts: dict[str, str] = field(default_factory=dict)
    source: Path | None = None
    drawn_dense: bool = False


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """A local directory for ``name_or_path``: the path itself, or a hub snapshot of that repo id."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"model {text!r} is a file; give a model directory or a hub repo id")
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ModelLoadError(
            f"model directory {text!r} does not exist; check the trainer option 'model' "
            "(for the synthetic experiment run `mixopt synth` first)"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=text, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # the hub client raises many types: offline, gated, not found
        raise ModelLoadError(
            f"cannot fetch hub model {text!r} ({type(e).__name__}: {e}). Use a local directory, "
            "or log in (`hf auth login`) and accept the model's licence if it is gated"
        ) from None


def _load_transformer(directory: Path) -> nn.Module:
    family = architecture(directory)  # ModelLoadError naming config.json and what is taken
    if not any(directory.glob("*.safetensors")):
        raise ModelLoadError(
            f"{directory}: no *.safetensors weights (weights are loaded only from safetensors)"
        )
    if family == "encoder":
        from transformers import AutoModel

        return AutoModel.from_pretrained(directory, use_safetensors=True, dtype=torch.float32)
    from transformers import Gemma3TextConfig, Gemma3TextModel

    # from_dict runs the config's post-init with the flag set, so the sliding window is converted
    # to the bidirectional convention exactly once (the saved value is the causal one).
    config = Gemma3TextConfig.from_dict(
        {**read_json(directory / "config.json"), "use_bidirectional_attention": True, "use_cache": False}
    )
    model = Gemma3TextModel.from_pretrained(
        directory, config=config, attn_implementation="sdpa", use_safetensors=True, dtype=torch.float32
    )
    model.config.use_cache = False
    return model


def _load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    if tokenizer.pad_token_id is None:
        raise ModelLoadError(f"{directory}: the tokenizer has no padding token")
    # Right padding keeps every real token at positions 0..n-1 whatever the batch, so an embedding
    # does not depend on what it was batched with (and matches sentence-transformers' encode).
    tokenizer.padding_side = "right"
    return tokenizer


def new_dense(hidden: int, seed: int) -> list[nn.Linear]:
    """EmbeddingGemma's randomly initialised projections g: d→4d and f: 4d→d, from ``seed``.

    Weights ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the scale of ``nn.Linear``'s default, drawn from a
    generator of their own so the result does not depend on the global RNG state.
    """
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for fan_in, fan_out in ((hidden, DENSE_EXPANSION * hidden), (DENSE_EXPANSION * hidden, hidden)):
        layer = nn.Linear(fan_in, fan_out, bias=False)
        with torch.no_grad():
            layer.weight.copy_((torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) / fan_in**0.5)
        layers.append(layer)
    return layers


def _activation(name: str, folder: Path) -> nn.Module:
    """A Dense layer's activation from its import path: a ``torch.nn`` module built without arguments."""
    module_name, _, class_name = name.rpartition(".")
    if module_name.startswith("torch.nn.modules."):
        import importlib

        cls = getattr(importlib.import_module(module_name), class_name, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            try:
                return cls()
            except TypeError:
                pass
    raise ModelLoadError(
        f"{folder / 'config.json'}: Dense activation {name!r} is not supported "
        "(a torch.nn activation module without arguments, e.g. torch.nn.modules.activation.Tanh)"
    )


def _load_dense(folder: Path) -> tuple[nn.Linear, nn.Module]:
    """One sentence-transformers Dense module: its linear map (weights from safetensors) and activation."""
    cfg = read_json(folder / "config.json")
    if cfg.get("use_residual"):
        raise ModelLoadError(f"{folder / 'config.json'}: a Dense layer with use_residual is not supported")
    activation = _activation(str(cfg.get("activation_function") or _ST_DEFAULT_ACTIVATION), folder)
    weights_file = folder / "model.safetensors"
    if not weights_file.exists():
        raise ModelLoadError(f"{folder}: no model.safetensors (weights are loaded only from safetensors)")
    state = load_file(weights_file)
    layer = nn.Linear(int(cfg["in_features"]), int(cfg["out_features"]), bias=bool(cfg.get("bias", True)))
    try:
        layer.load_state_dict({k.removeprefix("linear."): v.float() for k, v in state.items()})
    except RuntimeError as e:
        raise ModelLoadError(f"{weights_file}: weights do not match {cfg}: {e}") from None
    return layer, activation


def load_encoder(name_or_path: str | os.PathLike[str], *, seed: int = 0) -> LoadedEncoder:
    """Load the encoder from a local directory or a hub repo id (layouts (a) and (b) above).

    Args:
        name_or_path: local directory or hub repo id.
        seed: draws the Dense layers of a plain Gemma3 folder (layout a).

    Returns:
        a :class:`LoadedEncoder` (float32, eval mode, CPU). Call :func:`check_bidirectional` on it.
    """
    directory = resolve_model_dir(name_or_path)
    st_layout = (directory / "modules.json").exists()
    prompts: dict[str, str] = {}
    pooling = Pooling()
    dense: list[nn.Linear] = []
    activations: list[nn.Module] = []
    transformer_dir = directory
    if st_layout:
        modules = st_modules(directory)
        try:
            pooling = Pooling.from_config(read_json(modules.pooling_dir / "config.json"), modules.pooling_dir)
        except PoolingError as e:
            raise ModelLoadError(str(e)) from None
        for folder in modules.dense_dirs:
            layer, activation = _load_dense(folder)
            dense.append(layer)
            activations.append(activation)
        st_config = directory / "config_sentence_transformers.json"
        prompts = dict(read_json(st_config).get("prompts") or {}) if st_config.exists() else {}
        transformer_dir = modules.transformer_dir
    transformer = _load_transformer(transformer_dir)
    drawn = not st_layout and getattr(transformer.config, "model_type", None) == GEMMA3
    if drawn:
        dense = new_dense(int(transformer.config.hidden_size), seed)
        activations = [nn.Identity() for _ in dense]
    encoder = Encoder(transformer, dense, pooling, activations)
    widths = [encoder.pooling.output_dim(encoder.hidden_size)] + [d.out_features for d in dense]
    for layer, width in zip(dense, widths):
        if layer.in_features != width:
            raise ModelLoadError(
                f"{directory}: a Dense layer expects {layer.in_features} inputs and is given {width} "
                f"(pooling {list(pooling.modes)} of the transformer's {encoder.hidden_size})"
            )
    return LoadedEncoder(encoder.float().eval(), _load_tokenizer(transformer_dir), prompts, directory, drawn)


@torch.no_grad()
def check_bidirectional(encoder: Encoder, *, vocab_size: int | None = None) -> float:
    """Prove attention is bidirectional: change the last token, the first token's state must change.

    Under a causal mask position 0 sees only itself, so its output would be identical. Returns the
    largest change of the first token's hidden state; raises RuntimeError if it is (numerically) 0.
    """
    vocab = vocab_size or int(encoder.transformer.config.vocab_size)
    pad = getattr(encoder.transformer.config, "pad_token_id", None)
    ids = [i for i in range(min(vocab, 16)) if i != pad][:5]
    if len(ids) < 5:
        raise ModelLoadError(f"the vocabulary ({vocab} tokens) is too small to check attention")
    device = next(encoder.parameters()).device
    a = torch.tensor([ids[:4]], device=device)
    b = torch.tensor([ids[:3] + [ids[4]]], device=device)
    mask = torch.ones_like(a)
    was_training = encoder.training
    encoder.eval()
    try:
        first_a = encoder.token_states(a, mask)[0, 0].float()
        first_b = encoder.token_states(b, mask)[0, 0].float()
    finally:
        encoder.train(was_training)
    change = float((first_a - first_b).abs().max())
    if not change > 1e-6:
        raise RuntimeError(
            "attention is causal: changing the last token left the first token's output unchanged. "
            "The installed transformers ignores use_bidirectional_attention for Gemma3; upgrade transformers"
        )
    return change


def set_gradient_checkpointing(encoder: Encoder, enabled: bool) -> None:
    """Switch the transformer's own activation checkpointing on or off.

    On: each decoder layer keeps only its input for backward and is recomputed there (one more
    forward of the transformer per step). Non-reentrant checkpointing (``use_reentrant=False``) works
    with inputs that do not require grad (token ids), with ``torch.no_grad`` passes and with
    ``torch.compile``, and replays the RNG state so dropout matches.
    """
    transformer = encoder.transformer
    # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_* (same function).
    if hasattr(transformer, "activation_checkpointing_enable"):
        if enabled:
            transformer.activation_checkpointing_enable({"use_reentrant": False})
        elif transformer.is_activation_checkpointing:
            transformer.activation_checkpointing_disable()
    elif enabled:
        transformer.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        transformer.gradient_checkpointing_disable()


def tokenize(
    tokenizer: Any, texts: Sequence[str], max_seq_length: int, pad_to_multiple_of: int | None = None
) -> dict[str, Tensor]:
    """Token ids and attention mask ``[N, L]`` (right-padded to the longest text, truncated).

    ``pad_to_multiple_of`` rounds ``L`` up (e.g. 8 for tensor-core tiles); ``L`` may then exceed
    ``max_seq_length`` by padding only.
    """
    enc = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_seq_length, return_tensors="pt"
    )
    if pad_to_multiple_of and enc["input_ids"].shape[1] % pad_to_multiple_of:
        # Padded here, not by the tokenizer: it refuses a max_length that is not a multiple.
        extra = pad_to_multiple_of - enc["input_ids"].shape[1] % pad_to_multiple_of
        return {
            "input_ids": F.pad(enc["input_ids"], (0, extra), value=int(tokenizer.pad_token_id)),
            "attention_mask": F.pad(enc["attention_mask"], (0, extra), value=0),
        }
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def embed(
    encoder: Encoder,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_seq_length: int,
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """Unit-norm embeddings ``[N, d]`` (float32, CPU) of ``texts`` (prompts already prepended).

    Texts are batched longest first, as sentence-transformers does, to waste little on padding.
    """
    if not texts:
        return torch.empty(0, encoder.dim)
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = torch.empty(len(texts), encoder.dim)
    try:
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenize(tokenizer, [texts[i] for i in idx], max_seq_length)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out[idx] = encoder(**batch).float().cpu()
    finally:
        encoder.train(was_training)
    return out


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def save_sentence_transformer(
    encoder: Encoder,
    tokenizer: Any,
    out_dir: str | os.PathLike[str],
    *,
    prompts: Mapping[str, str],
    max_seq_length: int,
) -> Path:
    """Write ``encoder`` as a sentence-transformers directory, atomically (temp dir, then rename).

    Layout: root transformer (``config.json``, ``model.safetensors``, tokenizer), ``1_Pooling``
    (the encoder's modes, prompt included), one ``<i>_Dense`` per Dense layer (``linear.weight``,
    ``linear.bias`` if any, in safetensors; its activation), ``<n>_Normalize``, ``modules.json``,
    ``sentence_bert_config.json`` and
    ``config_sentence_transformers.json`` holding ``prompts``, and last ``mixopt_checksums.json``
    (SHA-256 of every other file). Weights are float32, safetensors only.
    """
    import sentence_transformers
    import transformers

    # Imported here, when a checkpoint is saved: bench/trainer.py imports this module on a GPU
    # image that runs it without mixopt (tests/trainers/test_encoder_model.py holds it to that).
    from mixopt import atomic
    from mixopt.checksums import write_checksums

    target = Path(out_dir)
    # atomic.directory gives what appears the umask's permissions (transformers writes its weight
    # shards through private temporary files): other users' jobs read checkpoints too.
    with atomic.directory(target) as tmp:
        encoder.transformer.save_pretrained(tmp)
        stray = [p.name for p in tmp.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
        if stray:
            raise RuntimeError(f"transformers wrote non-safetensors weights {stray}")
        tok = tokenizer
        old_max = tok.model_max_length
        tok.model_max_length = max_seq_length  # sentence-transformers truncates at this length
        try:
            tok.save_pretrained(tmp)
        finally:
            tok.model_max_length = old_max
        _write_json(
            tmp / "sentence_bert_config.json",
            {
                "transformer_task": "feature-extraction",
                "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                "module_output_name": "token_embeddings",
            },
        )
        modules = [
            {
                "idx": 0,
                "name": "0",
                "path": "",
                "type": "sentence_transformers.base.modules.transformer.Transformer",
            },
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
            },
        ]
        _write_json(
            tmp / "1_Pooling" / "config.json",
            encoder.pooling.config(encoder.hidden_size),
        )
        for i, (layer, act) in enumerate(zip(encoder.dense, encoder.activations), start=2):
            folder = tmp / f"{i}_Dense"
            _write_json(
                folder / "config.json",
                {
                    "in_features": layer.in_features,
                    "out_features": layer.out_features,
                    "bias": layer.bias is not None,
                    "activation_function": f"{type(act).__module__}.{type(act).__qualname__}",
                    "module_input_name": "sentence_embedding",
                    "module_output_name": "sentence_embedding",
                },
            )
            state = {
                f"linear.{k}": v.detach().float().cpu().contiguous() for k, v in layer.state_dict().items()
            }
            save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
            modules.append(
                {
                    "idx": i,
                    "name": str(i),
                    "path": folder.name,
                    "type": "sentence_transformers.base.modules.dense.Dense",
                }
            )
        n = len(modules)
        _write_json(
            tmp / f"{n}_Normalize" / "config.json",
            {"module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"},
        )
        modules.append(
            {
                "idx": n,
                "name": str(n),
                "path": f"{n}_Normalize",
                "type": "sentence_transformers.base.modules.normalize.Normalize",
            }
        )
        _write_json(tmp / "modules.json", modules)
        _write_json(
            tmp / "config_sentence_transformers.json",
            {
                "__version__": {
                    "sentence_transformers": sentence_transformers.__version__,
                    "transformers": transformers.__version__,
                    "pytorch": torch.__version__,
                },
                "model_type": "SentenceTransformer",
                "prompts": dict(prompts),
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            },
        )
        write_checksums(tmp)  # last: it covers every file above
    return target
