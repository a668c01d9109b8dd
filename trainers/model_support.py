"""Which models the shipped trainers take, decided from a model's configuration files alone.

``trainers.embedding`` (the EmbeddingGemma recipe) takes a transformer of one of two families:

- **Gemma3 text** (``config.json`` ``model_type: gemma3_text``), loaded with bidirectional attention
  forced (EmbeddingGemma's encoder);
- **an encoder**: a ``model_type`` that transformers' ``AutoModel`` loads and that has a
  masked-language-model head class, not an encoder-decoder (BERT, RoBERTa, XLM-R, MPNet,
  ModernBERT, DistilBERT, ELECTRA, DeBERTa, ...): its attention is bidirectional already;

either as a plain Hugging Face folder or as a sentence-transformers folder whose ``modules.json``
lists Transformer, Pooling, then any Dense layers and an optional Normalize. It refuses a
decoder-only causal language model (GPT-2, Llama, Qwen: their attention is causal and this
trainer makes only Gemma3's bidirectional), an encoder-decoder (T5, BART), a ``model_type`` the
installed transformers does not know (a model with remote code: none is run), and a folder with no
``config.json``.

``trainers.sentence_transformers`` takes what ``SentenceTransformer(path)`` loads without remote
code: a sentence-transformers folder (``modules.json``), or a ``config.json`` whose ``model_type``
the installed transformers knows (a causal decoder included: sentence-transformers pools it).

:func:`embedding_check` and :func:`sentence_transformers_check` are the trainers' ``check_model``
hooks (:mod:`mixopt.trial`): ``mixopt validate`` and the sweep's checks ask the chosen trainer
before any trial, and its one line says which shipped trainer can take the model instead. They
read ``config.json``, ``modules.json`` and the Pooling config, never weights; a hub id is resolved
to those files only (nothing when the hub cannot be reached: the trial then says).

Imports only the standard library and transformers' configuration classes (no weights, no torch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

EMBEDDING = "trainers.embedding:train"
SENTENCE_TRANSFORMERS = "trainers.sentence_transformers:train"
GEMMA3 = "gemma3_text"
ACCEPTS = (
    "trainers.embedding takes a Gemma3 text model (made bidirectional, e.g. google/embeddinggemma-300m) "
    "or an encoder that transformers' AutoModel loads (BERT, RoBERTa, XLM-R, MPNet, ModernBERT, ...)"
)
# Files fetched for a hub id when only its configuration is wanted.
_CONFIG_PATTERNS = ["config.json", "modules.json", "*/config.json"]
# The sentence-transformers modules the built-in trainer reproduces, by class name.
_HEAD = ("Transformer", "Pooling")


class ModelLoadError(ValueError):
    """A model directory or hub repo that cannot be used as the encoder; the message says why."""


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: invalid JSON: {e}") from None


@dataclass(frozen=True)
class StModules:
    """A sentence-transformers folder's module list, checked to be one the built-in trainer reproduces.

    Attributes:
        transformer_dir: the Transformer module's folder.
        pooling_dir: the Pooling module's folder (its ``config.json``).
        dense_dirs: the Dense modules' folders, in order.
        normalize: whether the list ends with Normalize.
    """

    transformer_dir: Path
    pooling_dir: Path
    dense_dirs: tuple[Path, ...]
    normalize: bool


def st_modules(directory: Path) -> StModules:
    """Parse ``directory/modules.json``: Transformer, Pooling, Dense..., optional Normalize."""
    where = directory / "modules.json"
    modules = read_json(where)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelLoadError(f"{where}: expected a list of modules")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    body = kinds[2:-1] if kinds[-1:] == ["Normalize"] else kinds[2:]
    if tuple(kinds[:2]) != _HEAD or any(k != "Dense" for k in body):
        raise ModelLoadError(
            f"{where}: modules {kinds}; trainers.embedding reproduces Transformer, Pooling, Dense..., "
            "Normalize (trainers.sentence_transformers loads any sentence-transformers model)"
        )
    paths = [directory / str(m.get("path", "")) for m in modules]
    return StModules(paths[0], paths[1], tuple(paths[2 : 2 + len(body)]), kinds[-1] == "Normalize")


def architecture(directory: Path) -> Literal["gemma3", "encoder"]:
    """The family of the transformer in ``directory`` (its ``config.json``); ModelLoadError, one line
    naming the file and what the built-in trainer takes, for any other."""
    where = directory / "config.json"
    config = read_json(where)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type == GEMMA3:
        return "gemma3"
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_MAPPING_NAMES,
    )

    if model_type not in CONFIG_MAPPING_NAMES:
        raise ModelLoadError(f"{where}: {_unknown(model_type)}; {ACCEPTS}")
    try:
        encoder_decoder = bool(AutoConfig.for_model(**config).is_encoder_decoder)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{where}: transformers cannot read it: {e}") from None
    if encoder_decoder:
        what = "an encoder-decoder"
    elif model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and model_type in MODEL_MAPPING_NAMES:
        return "encoder"
    elif model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        what = "a decoder-only causal language model"
    else:
        what = "not a text encoder"
    raise ModelLoadError(f"{where}: model_type {model_type!r} is {what}; {ACCEPTS}")


def _unknown(model_type: object) -> str:
    import transformers

    if model_type is None:
        return "no model_type"
    return (
        f"model_type {model_type!r} is not one transformers {transformers.__version__} knows "
        "(remote code is not run)"
    )


def embedding_problem(directory: Path) -> str | None:
    """Why the built-in trainer cannot take the model in ``directory`` (None: it can); no weights read."""
    from .pooling import Pooling, PoolingError

    try:
        transformer_dir = directory
        if (directory / "modules.json").exists():
            modules = st_modules(directory)
            Pooling.from_config(read_json(modules.pooling_dir / "config.json"), modules.pooling_dir)
            transformer_dir = modules.transformer_dir
        architecture(transformer_dir)
    except (ModelLoadError, PoolingError) as e:
        return str(e)
    return None


def sentence_transformers_problem(directory: Path) -> str | None:
    """Why ``SentenceTransformer(directory)`` cannot load the model without remote code (None: it can)."""
    if (directory / "modules.json").exists():
        return None
    try:
        config = read_json(directory / "config.json")
    except ModelLoadError as e:
        return f"{e}: neither a transformers nor a sentence-transformers model folder"
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in CONFIG_MAPPING_NAMES:
        return f"{directory / 'config.json'}: {_unknown(model_type)}"
    return None


def config_dir(model: str | os.PathLike[str]) -> Path | None:
    """A local folder holding the model's configuration files: the directory itself, or a hub
    snapshot of the config files only; None when a hub id cannot be fetched here."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(model).startswith((".", "/", "~")) or str(model).count("/") > 1:
        return None  # a missing path: the sweep's path check says so
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(model), allow_patterns=_CONFIG_PATTERNS))
    except Exception:  # offline, gated, not found: the trial reports it with the reason
        return None


_PROBLEMS: dict[str, Callable[[Path], str | None]] = {
    EMBEDDING: embedding_problem,
    SENTENCE_TRANSFORMERS: sentence_transformers_problem,
}


def check_for(target: str, model: str) -> str | None:
    """One line when the trainer ``target`` cannot take ``model``, saying which shipped trainer can."""
    directory = config_dir(model)
    if directory is None:
        return None
    problem = _PROBLEMS[target](directory)
    if problem is None:
        return None
    others = [t for t, why in _PROBLEMS.items() if t != target and why(directory) is None]
    if others:
        return f"{problem}; set trainer.target: {others[0]} (it can take this model)"
    return f"{problem}; no shipped trainer can take this model"


def embedding_check(model: str) -> str | None:
    """``trainers.embedding``'s ``check_model`` hook (:func:`check_for`)."""
    return check_for(EMBEDDING, model)


def sentence_transformers_check(model: str) -> str | None:
    """``trainers.sentence_transformers``'s ``check_model`` hook (:func:`check_for`)."""
    return check_for(SENTENCE_TRANSFORMERS, model)
