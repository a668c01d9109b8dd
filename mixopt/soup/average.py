"""Stream-average sentence-transformers checkpoints, tensor by tensor, through safetensors.

The uniform model soup (Wortsman et al., 2022, arXiv:2203.05482) of ``K`` checkpoints of one
architecture is, for every parameter tensor ``p``,

    soup[p] = cast_{dtype(p)}( (1/K) * sum_k float32(theta_k[p]) )

accumulated in float32 (float64 for float64 tensors) so that bf16/fp16 checkpoints lose nothing
to the summation, then cast back to the checkpoints' own dtype. Non-float tensors (integer
buffers) cannot be averaged: they must be equal in every checkpoint and are copied.

Memory: each tensor is processed in row chunks of at most ``chunk_bytes`` (64 MiB of float32 by
default). For each chunk, every ingredient file is opened with ``safetensors.safe_open``, the
rows are read with ``get_slice``, added into the accumulator, and the file is closed again.
Closing matters: ``safe_open`` memory-maps the whole file, and the pages it has touched count in
the process's resident memory until the map goes away; a handle kept open for the whole run
would end up holding every ingredient in RSS. The output file is written as a stream too: its
header is known before any data (names, dtypes and shapes are checked to agree up front), so
chunks go to disk as they are finished. Peak memory is therefore a few chunks, independent of
the number of ingredients *and* of the model size. ``bench/soup.py`` measures it.

Before anything is written, :func:`mixopt.soup.checkpoints.check_compatible` checks that the
checkpoints can be averaged. While streaming, NaN/inf in an ingredient or in the result stops the
soup with the run, file and tensor named.

This module imports only torch and safetensors (no pydantic, no MLflow), so that the benchmark
runs on a bare GPU image.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import struct
import sys
import warnings
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from mixopt.checksums import CHECKSUMS_FILE, write_checksums
from mixopt.soup.checkpoints import (
    DTYPES,
    FLOAT_CODES,
    CheckpointError,
    TensorInfo,
    WeightFile,
    check_compatible,
    verify_checksums,
)
from mixopt.soup.outdir import MARKER, atomic_directory

# Element-wise averaging is memory-bound: one thread already streams faster than a disk reads,
# and a second OpenMP thread on a busy machine spins waiting for a core (see bench/RESULTS.md,
# section "Model soup").
DEFAULT_THREADS = 1

# 64 MiB of float32 accumulator per chunk: large enough that per-chunk overhead (one open per
# ingredient) is negligible, small next to any model worth souping.
DEFAULT_CHUNK_BYTES = 64 * 2**20

if sys.byteorder != "little":  # pragma: no cover - safetensors stores little-endian bytes
    raise ImportError("mixopt.soup.average writes safetensors bytes directly and needs a little-endian CPU")


@dataclass(frozen=True)
class AverageStats:
    """What :func:`average_into` did."""

    n_ingredients: int
    n_files: int
    n_tensors: int
    n_bytes: int  # bytes of tensor data written (one model's size)
    dtypes: tuple[str, ...]


# --------------------------------------------------------------------------- streaming


def _row_chunks(info: TensorInfo, chunk_bytes: int) -> Iterator[tuple[int, int] | None]:
    """Row ranges ``[a, b)`` along dim 0 covering the tensor; ``None`` for a 0-d tensor."""
    if not info.shape:
        yield None
        return
    rows = info.shape[0]
    row_numel = 1
    for d in info.shape[1:]:
        row_numel *= d
    # Sized by the float32 accumulator, the largest buffer a chunk needs.
    step = max(1, chunk_bytes // max(1, row_numel * 4))
    for a in range(0, rows, step):
        yield a, min(rows, a + step)


def _read_chunk(path: Path, name: str, rows: tuple[int, int] | None) -> torch.Tensor:
    # Open per chunk, so the mapped pages are released as soon as the rows are used (see module doc).
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(name) if rows is None else f.get_slice(name)[rows[0] : rows[1]]


def _describe_rows(info: TensorInfo, rows: tuple[int, int] | None) -> str:
    return (
        "" if rows is None or (rows[0] == 0 and rows[1] == info.shape[0]) else f" (rows {rows[0]}:{rows[1]})"
    )


def _header_bytes(wf: WeightFile) -> bytes:
    header: dict[str, Any] = {}
    if wf.metadata:
        header["__metadata__"] = wf.metadata
    offset = 0
    for name, info in wf.tensors.items():
        header[name] = {
            "dtype": info.dtype,
            "shape": list(info.shape),
            "data_offsets": [offset, offset + info.nbytes],
        }
        offset += info.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the reference writer pads the header to 8 bytes so data stays aligned
    return struct.pack("<Q", len(raw)) + raw


def average_file(
    sources: Sequence[Path],
    dest: Path,
    header: WeightFile,
    labels: Sequence[str],
    file: str = "",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    num_threads: int | None = DEFAULT_THREADS,
) -> int:
    """Write the element-wise mean of the safetensors files ``sources`` to ``dest``; return bytes written.

    ``header`` is the (already checked) common header. For a float tensor ``p`` of ``K`` sources:
    ``dest[p] = ((sum_k acc(src_k[p])) / K).to(dtype(p))`` with ``acc`` float32 (float64 for F64).
    Raises :class:`CheckpointError` on NaN/inf in a source or in the result, and on a non-float
    tensor that differs between sources.
    """
    k = len(sources)
    written = 0
    chunks = [
        (name, rows) for name, info in header.tensors.items() for rows in _row_chunks(info, chunk_bytes)
    ]
    buffers = _Buffers(max((_chunk_numel(header.tensors[n], r) for n, r in chunks), default=0))
    with _torch_threads(num_threads), _Prefetcher(sources, header) as prefetch, dest.open("wb") as out:
        out.write(_header_bytes(header))
        for i, (name, rows) in enumerate(chunks):
            if i == 0:
                prefetch(*chunks[0])
            if i + 1 < len(chunks):
                # Ask the kernel to start reading the next chunk while this one is computed, so
                # disk reads overlap the arithmetic instead of stalling it page fault by page fault.
                prefetch(*chunks[i + 1])
            info = header.tensors[name]
            if info.dtype in FLOAT_CODES:
                result = _mean_chunk(sources, name, rows, info, labels, file, k, buffers)
            else:
                result = _equal_chunk(sources, name, rows, info, labels, file)
            result = result.reshape(-1)
            out.write(result.view(torch.uint8).numpy().data)
            written += result.numel() * result.element_size()
    return written


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (``None``: leave torch's setting), restoring it after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _chunk_numel(info: TensorInfo, rows: tuple[int, int] | None) -> int:
    n = 1
    for d in info.shape[1:]:
        n *= d
    return n * (rows[1] - rows[0]) if rows is not None else 1


class _Buffers:
    """Reused chunk buffers, one per dtype. A fresh 64 MiB tensor per chunk would cost more than
    the arithmetic: the allocator returns large blocks to the OS, so every new one is zero-filled
    page by page again (see bench/RESULTS.md, section "Model soup")."""

    def __init__(self, numel: int):
        self.numel = numel
        self.store: dict[torch.dtype, torch.Tensor] = {}

    def get(self, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        if dtype not in self.store:
            self.store[dtype] = torch.empty(self.numel, dtype=dtype)
        n = 1
        for d in shape:
            n *= d
        return self.store[dtype][:n].view(shape)


class _Prefetcher:
    """``posix_fadvise(WILLNEED)`` on the byte range of a chunk in every source (a no-op where unsupported).

    Holds plain file descriptors only (no memory maps), so it costs no resident memory.
    """

    def __init__(self, sources: Sequence[Path], header: WeightFile):
        self.header = header
        self.enabled = hasattr(os, "posix_fadvise")
        self.files: list[tuple[int, int, dict[str, tuple[int, int]]]] = []
        if self.enabled:
            for src in sources:
                data_start, offsets = _data_offsets(src)
                self.files.append((os.open(src, os.O_RDONLY), data_start, offsets))

    def __enter__(self) -> _Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd, _, _ in self.files:
            os.close(fd)

    def __call__(self, name: str, rows: tuple[int, int] | None) -> None:
        if not self.enabled:
            return
        info = self.header.tensors[name]
        row_bytes = info.nbytes // info.shape[0] if info.shape and info.shape[0] else info.nbytes
        a, b = rows if rows is not None else (0, 1)
        for fd, data_start, offsets in self.files:
            start = data_start + offsets[name][0] + a * row_bytes
            os.posix_fadvise(fd, start, (b - a) * row_bytes, os.POSIX_FADV_WILLNEED)


def _data_offsets(path: Path) -> tuple[int, dict[str, tuple[int, int]]]:
    """Where tensor data starts in a safetensors file, and each tensor's ``[begin, end)`` after it."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return 8 + n, {
        k: (v["data_offsets"][0], v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"
    }


def _mean_chunk(
    sources: Sequence[Path],
    name: str,
    rows: tuple[int, int] | None,
    info: TensorInfo,
    labels: Sequence[str],
    file: str,
    k: int,
    buffers: _Buffers,
) -> torch.Tensor:
    acc_dtype = torch.float64 if info.dtype == "F64" else torch.float32
    dtype = DTYPES[info.dtype]
    first = _read_chunk(sources[0], name, rows)
    acc = buffers.get(acc_dtype, tuple(first.shape))
    if k > 1 and first.dtype == acc_dtype:
        # acc = src_0 + src_1 in one pass, then += the others (in place, in acc_dtype).
        torch.add(first, _read_chunk(sources[1], name, rows), out=acc)
        rest = sources[2:]
    else:
        acc.copy_(first)  # converts bf16/fp16 to float32 exactly
        rest = sources[1:]
    del first
    for src in rest:
        acc.add_(_read_chunk(src, name, rows))  # in-place: computed in acc_dtype
    acc.div_(k)
    if dtype == acc_dtype:
        out = acc
    else:
        out = buffers.get(dtype, tuple(acc.shape))
        out.copy_(acc)
    # A NaN or inf in any source makes the mean non-finite, so one check of the result covers all
    # sources; only when it fails are the sources re-read to name the culprit.
    if not _all_finite(out):
        for src, label in zip(sources, labels, strict=True):
            bad = ~torch.isfinite(_read_chunk(src, name, rows).to(acc_dtype))
            if bool(bad.any()):
                raise CheckpointError(
                    f"{label}: tensor {name!r} in {file or src.name} has {int(bad.sum())} NaN/inf values"
                    f"{_describe_rows(info, rows)}; a diverged checkpoint cannot be an ingredient — drop this run"
                )
        raise CheckpointError(
            f"the average of tensor {name!r} in {file} overflows (the {acc_dtype} sum or the cast back to "
            f"{info.dtype}){_describe_rows(info, rows)} although every ingredient is finite; "
            "the ingredients' values are too large to average"
        )
    return out


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every element is finite. Fast path: one reduction, no boolean temporary; a NaN or
    inf element always makes the sum non-finite (a finite sum that overflows falls through to the
    exact element-wise check)."""
    if t.numel() == 0:
        return True
    if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        t = t.float()  # float8: no reductions
    if math.isfinite(float(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def _equal_chunk(
    sources: Sequence[Path],
    name: str,
    rows: tuple[int, int] | None,
    info: TensorInfo,
    labels: Sequence[str],
    file: str,
) -> torch.Tensor:
    first = _read_chunk(sources[0], name, rows).clone()
    for src, label in zip(sources[1:], labels[1:], strict=True):
        if not torch.equal(first, _read_chunk(src, name, rows)):
            raise CheckpointError(
                f"{label}: non-float tensor {name!r} ({info}) in {file} differs from {labels[0]}'s; "
                "integer buffers cannot be averaged and must be equal in every ingredient"
            )
    return first


def average_into(
    checkpoints: Sequence[Path],
    dest: Path,
    labels: Sequence[str] | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    skip_files: Sequence[str] = ("README.md", CHECKSUMS_FILE, MARKER),
) -> AverageStats:
    """Average sentence-transformers ``checkpoints`` into the existing empty directory ``dest``.

    Every ``*.safetensors`` file is averaged (:func:`average_file`); every other file is copied
    from the first checkpoint, except ``skip_files`` (its model card, checksums and soup marker
    describe that checkpoint, not the soup). Checks run first (:func:`check_compatible`); the
    ingredients' checksums are the caller's to verify, once (:func:`verify_checksums`). Not
    atomic by itself: write into a directory from :func:`mixopt.soup.outdir.atomic_directory`.
    """
    checkpoints = [Path(c) for c in checkpoints]
    labels = list(labels) if labels is not None else [str(c) for c in checkpoints]
    headers = check_compatible(checkpoints, labels)
    dest = Path(dest)
    copy_other_files(checkpoints[0], dest, headers, skip_files)
    n_bytes = 0
    for rel, header in headers.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        n_bytes += average_file([c / rel for c in checkpoints], dest / rel, header, labels, rel, chunk_bytes)
    return AverageStats(
        n_ingredients=len(checkpoints),
        n_files=len(headers),
        n_tensors=sum(len(h.tensors) for h in headers.values()),
        n_bytes=n_bytes,
        dtypes=tuple(sorted({t.dtype for h in headers.values() for t in h.tensors.values()})),
    )


def copy_other_files(
    first: Path,
    dest: Path,
    weights: Collection[str],
    skip_files: Sequence[str] = ("README.md", CHECKSUMS_FILE, MARKER),
) -> None:
    """Copy every file of checkpoint ``first`` into ``dest`` except the ``weights`` (relative
    paths) and ``skip_files`` (a model card, checksums and soup marker describe ``first`` alone)."""
    for p in sorted(Path(first).rglob("*")):
        rel = p.relative_to(first)
        if p.is_dir() or rel.as_posix() in weights or rel.as_posix() in skip_files:
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest / rel)


def average_checkpoints(
    checkpoints: Sequence[Path],
    out: Path,
    labels: Sequence[str] | None = None,
    force: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> AverageStats:
    """Uniform soup of ``checkpoints`` written atomically to ``out`` (see :func:`average_into`).

    Every checkpoint's recorded checksums are verified first; one without them is averaged with
    a warning. ``force`` replaces only an earlier soup (:func:`mixopt.soup.outdir.check_replaceable`).
    """
    checkpoints = [Path(c) for c in checkpoints]
    labels = list(labels) if labels is not None else [str(c) for c in checkpoints]
    unverified = verify_checksums(checkpoints, labels)
    if unverified:
        warnings.warn(unverified_line(unverified), stacklevel=2)
    with atomic_directory(out, force=force) as tmp:
        stats = average_into(checkpoints, tmp, labels, chunk_bytes)
        write_checksums(tmp)
        return stats


def unverified_line(labels: Sequence[str]) -> str:
    """The one warning line for ingredients whose checkpoints record no checksums."""
    return (
        f"warning: {len(labels)} checkpoint(s) record no checksums (written by an older mixopt or "
        f"another trainer), averaged unverified: {', '.join(labels)}"
    )
