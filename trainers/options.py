"""The embedding trainer's options, validated once (the YAML's ``trainer:`` keys and the optimizer's
hyperparameters of the same names), and the CPU thread count a trial runs with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .model import DEFAULT_MODEL

M = TypeVar("M", bound=BaseModel)


class Options(BaseModel):
    """The trainer's options (the YAML's ``trainer:`` keys other than target/steps/seed).

    Defaults suit ``google/embeddinggemma-300m`` on a GPU; the tiny synthetic experiment sets
    small values. Any field may also be searched as a hyperparameter of the same name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="local directory or hub repo id of the encoder")
    matryoshka_dims: list[int] = Field(
        [768, 512, 256, 128], description="MRL dims; the first is the full dim"
    )
    batch_size: int = Field(64, ge=2, description="examples per step (query, positive, hard negative)")
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="fraction of the steps spent warming up")
    lr_schedule: Literal["linear", "cosine"] = "linear"
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables clipping")
    temperature: float = Field(0.05, gt=0, description="NCE temperature tau")
    hardness_alpha: float = Field(5.0, ge=0, description="alpha of the hardness weight exp(alpha*sg(sim))")
    spread_out_weight: float = Field(1.0, ge=0, description="weight of the spread-out regulariser")
    distill_weight: float = Field(
        1.0, ge=0, description="weight of embedding distillation (rows with teacher)"
    )
    max_seq_length: int = Field(256, ge=8)
    eval_every: int = Field(0, ge=0, description="evaluate on dev every N steps; 0: only at the end")
    eval_batch_size: int = Field(128, ge=1)
    classifier_train_rows: int = Field(
        2000, ge=2, description="size of the stratified train sample the classification probe is fitted on"
    )
    task_sampling: Literal["random", "stratified"] = Field(
        "random",
        description="'random': each step's task drawn with its weight; 'stratified': every task's count "
        "of steps so far within 2 of its weight x steps (less seed noise in short trials)",
    )
    objective: Literal["mean_task", "mean_kind"] = "mean_task"
    device: str = Field("auto", description="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:N'")
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="'auto': bf16 autocast on CUDA, float32 on CPU"
    )
    log_every: int = Field(10, ge=1, description="report loss / tokens/s / lr every N steps")
    shuffle_buffer: int = Field(10_000, ge=1, description="rows in each task's streaming shuffle buffer")
    progress: bool | None = Field(None, description="progress bar; None: only when stderr is a terminal")
    compile: bool = Field(False, description="torch.compile the transformer (pays off in long GPU trials)")
    prefetch: int = Field(
        2,
        ge=0,
        description="batches read, tokenised and pinned ahead by a background thread; 0: on the "
        "training thread between steps",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute each transformer layer in backward: less memory, ~+33% compute"
    )
    mini_batch_size: int | None = Field(
        None,
        ge=1,
        description="GradCache: embed the batch in chunks of this many texts; memory of one chunk, "
        "same loss and gradients as the full batch, one more forward; None: the whole batch at once",
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads during the trial; None: torch's default (Ray sets it per trial)",
    )

    @field_validator("dtype", mode="before")
    @classmethod
    def _no_fp16(cls, v: Any) -> Any:
        if isinstance(v, str) and v.lower() in ("float16", "fp16", "half"):
            raise ValueError(
                "float16 is not supported for Gemma: its activations overflow fp16; "
                "use 'bfloat16' (GPU) or 'float32'"
            )
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto":
            try:
                torch.device(v)
            except (RuntimeError, ValueError):
                raise ValueError(
                    f"device {v!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
                ) from None
        return v

    @field_validator("matryoshka_dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one Matryoshka dim (the full embedding dimension first)")
        if any(d < 1 for d in v) or any(a <= b for a, b in zip(v, v[1:])):
            raise ValueError(f"Matryoshka dims must be positive and strictly decreasing, got {v}")
        return v


def resolve_options(options: Mapping[str, Any], hyperparameters: Mapping[str, Any] | None = None) -> Options:
    """The YAML options with the optimizer's hyperparameters of the same names overriding them."""
    return validate_options(Options, "trainers.embedding", options, hyperparameters)


def validate_options(
    model: type[M], trainer: str, options: Mapping[str, Any], hyperparameters: Mapping[str, Any] | None = None
) -> M:
    """A trainer's ``model`` (its pydantic Options) from the YAML options, the optimizer's
    hyperparameters of the same names overriding them; every problem in one ValueError line."""
    hyperparameters = dict(hyperparameters or {})
    unknown = sorted(set(hyperparameters) - set(model.model_fields))
    if unknown:
        raise ValueError(
            f"hyperparameter(s) {unknown} are not options of {trainer}; "
            f"searchable names are {sorted(model.model_fields)}"
        )
    try:
        return model.model_validate({**dict(options), **hyperparameters})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors(include_url=False)
        )
        raise ValueError(f"invalid trainer options: {problems}") from None


class Threads:
    """Set torch's CPU thread count for the duration of a trial, then restore it."""

    def __init__(self, n: int | None):
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)
