"""What a sentence-transformers checkpoint holds, and whether several can be averaged.

Checks, all before anything is written: the same ``*.safetensors`` files (relative paths) in
every checkpoint; the same tensor names, shapes and dtypes in each; the architecture files
(``modules.json``, every ``config.json``, ``sentence_bert_config.json``,
``config_sentence_transformers.json``) equal as JSON up to version stamps; the tokenizer files
byte-identical (SHA-256); no pickle weights (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``), which
could run code when loaded. And, before any of it, :func:`verify_checksums`: every file's SHA-256
against the ``mixopt_checksums.json`` the trainer wrote (:mod:`mixopt.checksums`).

This module imports only torch and safetensors (no pydantic, no MLflow), like
:mod:`mixopt.soup.average`.
"""

from __future__ import annotations

import collections
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from mixopt.checksums import ChecksumError
from mixopt.checksums import verify_checksums as _verify_one

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
ARCHITECTURE_FILES = (
    "modules.json",
    "config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
)
# Keys that record which library versions wrote a file, not what the model is.
VOLATILE_KEYS = frozenset({"transformers_version", "__version__", "_name_or_path"})

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
FLOAT_CODES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


class CheckpointError(ValueError):
    """Checkpoints that cannot be averaged; the message names the run, file and tensor."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file: its dtype code (``"F32"``, ``"BF16"``...) and shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * DTYPES[self.dtype].itemsize

    def __str__(self) -> str:
        return f"shape {list(self.shape)} dtype {self.dtype}"


@dataclass(frozen=True)
class WeightFile:
    """The header of one ``*.safetensors`` file: tensors in file order, and its ``__metadata__``."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] | None


# --------------------------------------------------------------------------- inspection


def verify_checksums(
    checkpoints: Sequence[Path], labels: Sequence[str], manifest_digests: Sequence[str | None] = ()
) -> list[str]:
    """Verify each checkpoint's recorded SHA-256s; return the labels of those that record none.

    A corrupted file raises :class:`CheckpointError` naming the run and the file. A checkpoint
    without ``mixopt_checksums.json`` (written by an older mixopt, or by a trainer that does not
    record checksums) cannot be verified: the caller says so and goes on. ``manifest_digests``
    (per checkpoint, from its run's MLflow tag) also pin each manifest itself.
    """
    unverified = []
    digests = list(manifest_digests) or [None] * len(checkpoints)
    for c, label, digest in zip(checkpoints, labels, digests, strict=True):
        if not Path(c).is_dir():
            raise CheckpointError(f"{label}: checkpoint directory {c} does not exist")
        try:
            if not _verify_one(c, label, digest):
                unverified.append(label)
        except ChecksumError as e:
            raise CheckpointError(str(e)) from None
    return unverified


def read_header(path: Path) -> WeightFile:
    """Names, dtypes and shapes of the tensors in ``path``, in the order of their data in the file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            # File order, so the averaged file is laid out like its ingredients.
            names = list(f.offset_keys()) if hasattr(f, "offset_keys") else list(f.keys())
            tensors = {}
            for name in names:
                s = f.get_slice(name)
                tensors[name] = TensorInfo(s.get_dtype(), tuple(int(d) for d in s.get_shape()))
            return WeightFile(tensors, f.metadata())
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def weight_files(checkpoint: Path) -> list[str]:
    """Relative paths (POSIX) of every ``*.safetensors`` file under ``checkpoint``, sorted."""
    return sorted(
        p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*.safetensors") if p.is_file()
    )


def refuse_pickles(checkpoint: Path, label: str) -> None:
    """Raise if ``checkpoint`` holds pickle weights: unpickling can execute arbitrary code."""
    for p in sorted(checkpoint.rglob("*")):
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES:
            raise CheckpointError(
                f"{label}: {p} is a pickle file; the soup reads weights only from safetensors, "
                "because loading a pickle can run arbitrary code. Re-save the checkpoint with "
                "safe_serialization=True (model.save(path, safe_serialization=True)) and remove the pickle."
            )


def _strip_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip_volatile(v) for v in value]
    return value


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    """A short description of where two JSON values first differ (``key.sub: x != y``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{where}{k}: present in only one of them"
            if a[k] != b[k]:
                return _first_difference(a[k], b[k], f"{where}{k}.")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}].")
    return f"{where.rstrip('.') or '(whole file)'}: {json.dumps(a)[:80]} != {json.dumps(b)[:80]}"


def _architecture_files(checkpoint: Path) -> list[str]:
    return sorted(
        p.relative_to(checkpoint).as_posix()
        for p in checkpoint.rglob("*")
        if p.is_file() and p.name in ARCHITECTURE_FILES
    )


def _tokenizer_files(checkpoint: Path) -> list[str]:
    return sorted(
        p.relative_to(checkpoint).as_posix()
        for p in checkpoint.rglob("*")
        if p.is_file() and p.name in TOKENIZER_FILES
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path, label: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{label}: cannot read {path} as JSON: {e}") from e


def check_compatible(
    checkpoints: Sequence[Path], labels: Sequence[str] | None = None
) -> dict[str, WeightFile]:
    """Check that ``checkpoints`` can be averaged; return the weight files' headers (of the first).

    Every later checkpoint is compared with the first: pickle files, the set of weight files,
    architecture JSON files, tokenizer file hashes, then tensor names, shapes and dtypes. The
    first problem found raises :class:`CheckpointError` naming both runs.
    """
    checkpoints = [Path(c) for c in checkpoints]
    labels = list(labels) if labels is not None else [str(c) for c in checkpoints]
    if len(labels) != len(checkpoints):
        raise ValueError(f"{len(labels)} labels for {len(checkpoints)} checkpoints")
    if not checkpoints:
        raise CheckpointError("no checkpoints to average")
    for c, label in zip(checkpoints, labels, strict=True):
        if not c.is_dir():
            raise CheckpointError(f"{label}: checkpoint directory {c} does not exist")
        refuse_pickles(c, label)

    # The layout most ingredients share (ties: the one with more files) is the reference, so a
    # deleted weight file is blamed on the checkpoint that lacks it, whichever position it has.
    layouts = [tuple(weight_files(c)) for c in checkpoints]
    counts = collections.Counter(layouts)
    expected = max(counts, key=lambda lay: (counts[lay], len(lay)))
    if not expected:
        raise CheckpointError(f"{labels[0]}: no *.safetensors weight files in {checkpoints[0]}")
    for c, label, files in zip(checkpoints, labels, layouts, strict=True):
        missing = sorted(set(expected) - set(files))
        if missing:
            others = "the other ingredients have it" if counts[expected] > 1 else "another ingredient has it"
            raise CheckpointError(
                f"{label}: checkpoint {c} is missing {', '.join(missing)} ({others}); "
                "all ingredients must have the same weight files"
            )
    first = layouts.index(expected)
    ref, ref_label = checkpoints[first], labels[first]
    ref_files = list(expected)
    ref_arch = _architecture_files(ref)
    if "modules.json" not in ref_arch:
        raise CheckpointError(
            f"{ref_label}: {ref} has no modules.json; is it a sentence-transformers directory?"
        )
    ref_tok = {f: _sha256(ref / f) for f in _tokenizer_files(ref)}
    headers = {f: read_header(ref / f) for f in ref_files}

    for c, label in ((c, lab) for i, (c, lab) in enumerate(zip(checkpoints, labels)) if i != first):
        files = weight_files(c)
        if files != ref_files:
            only_ref = sorted(set(ref_files) - set(files))
            only_c = sorted(set(files) - set(ref_files))
            raise CheckpointError(
                f"{label}: its weight files differ from {ref_label}'s: "
                f"missing {only_ref or 'none'}, extra {only_c or 'none'}; all ingredients must have the same layout"
            )
        for f in ref_arch:
            if not (c / f).is_file():
                raise CheckpointError(f"{label}: {c / f} is missing, but {ref_label} has it")
            a, b = _strip_volatile(_read_json(ref / f, ref_label)), _strip_volatile(_read_json(c / f, label))
            if a != b:
                raise CheckpointError(
                    f"{label}: architecture file {f} differs from {ref_label}'s "
                    f"({_first_difference(a, b)}); checkpoints of different architectures cannot be averaged"
                )
        tok = _tokenizer_files(c)
        if tok != sorted(ref_tok):
            raise CheckpointError(
                f"{label}: tokenizer files {tok} differ from {ref_label}'s {sorted(ref_tok)}; "
                "all ingredients must share one tokenizer"
            )
        for f, digest in ref_tok.items():
            other = _sha256(c / f)
            if other != digest:
                raise CheckpointError(
                    f"{label}: tokenizer file {f} has SHA-256 {other[:12]}…, {ref_label}'s has {digest[:12]}…; "
                    "all ingredients must share one tokenizer"
                )
        for f in ref_files:
            _compare_headers(headers[f], read_header(c / f), f, ref_label, label)
    return headers


def _compare_headers(ref: WeightFile, other: WeightFile, file: str, ref_label: str, label: str) -> None:
    missing = [n for n in ref.tensors if n not in other.tensors]
    extra = [n for n in other.tensors if n not in ref.tensors]
    if missing or extra:
        raise CheckpointError(
            f"{label}: {file} lacks tensors {missing[:5] or 'none'} and has extra tensors {extra[:5] or 'none'} "
            f"compared with {ref_label}; checkpoints of different architectures cannot be averaged"
        )
    for name, info in ref.tensors.items():
        o = other.tensors[name]
        if o != info:
            raise CheckpointError(
                f"{label}: tensor {name!r} in {file} has {o}, but {ref_label} has {info}; "
                "every ingredient must have the same shapes and dtypes"
            )
