"""The background batch loader: same batches in the same order as the synchronous loop; errors and
shutdown; the trainer's result does not depend on prefetching or on the memory options."""

from __future__ import annotations

import threading

import pytest
import torch
from safetensors.torch import load_file

from mixopt.trial import Trial
from trainers.batching import MixtureSampler, TaskStream, teacher_targets
from trainers.embedding import train
from trainers.losses import false_negative_mask
from trainers.model import load_encoder
from trainers.prefetch import BatchLoader
from trainers.training import StepInputs, prepare_inputs

TINY = {
    "matryoshka_dims": [64, 32],
    "batch_size": 16,
    "max_seq_length": 32,
    "learning_rate": 1e-3,
    "cpu_threads": 1,
}


def producer(synth_root, synth_tasks, seed: int):
    """The trainer's per-batch host work: sample, pair, prompt, tokenise, build the masks."""
    tokenizer = load_encoder(synth_root / "model").tokenizer
    streams = {
        t.name: TaskStream(t.name, t.kind.value, t.train_file, seed=[seed, i])
        for i, t in enumerate(synth_tasks)
    }
    sampler = MixtureSampler(streams, {t.name: 1 / 3 for t in synth_tasks}, batch_size=8, seed=seed)
    tasks = {t.name: t for t in synth_tasks}

    def produce() -> StepInputs:
        batch = sampler.next_batch()
        task = tasks[batch.task]
        return prepare_inputs(
            tokenizer,
            [task.prompt.query + q for q in batch.queries],
            [task.prompt.document + p for p in batch.positives],
            [None if n is None else task.prompt.document + n for n in batch.negatives],
            max_seq_length=32,
            false_negatives=false_negative_mask(batch.queries, batch.positives, batch.groups),
            teacher=teacher_targets(batch),
            task=batch.task,
        )

    return produce


def same_inputs(a: StepInputs, b: StepInputs) -> bool:
    def eq(x, y):
        return (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))

    return (
        a.task == b.task
        and a.batch_size == b.batch_size
        and a.tokens.n_tokens == b.tokens.n_tokens
        and len(a.tokens.sides) == len(b.tokens.sides)
        and all(torch.equal(sa[k], sb[k]) for sa, sb in zip(a.tokens.sides, b.tokens.sides) for k in sa)
        and eq(a.neg_index, b.neg_index)
        and eq(a.has_negative, b.has_negative)
        and eq(a.false_negatives, b.false_negatives)
    )


def test_the_background_loader_yields_the_synchronous_sequence(synth_root, synth_tasks):
    produce = producer(synth_root, synth_tasks, seed=3)
    reference = [produce() for _ in range(30)]
    assert len({r.task for r in reference}) == 3  # all task kinds were drawn
    for depth in (0, 1, 4):
        with BatchLoader(producer(synth_root, synth_tasks, seed=3), depth=depth) as loader:
            got = [next(loader) for _ in range(30)]
        assert all(same_inputs(g, r) for g, r in zip(got, reference)), depth
    other = producer(synth_root, synth_tasks, seed=4)
    assert not all(same_inputs(other(), r) for r in reference[:3])  # the comparison can fail


def test_an_error_of_the_producer_is_raised_in_order_and_the_thread_ends():
    calls = []

    def produce() -> int:
        calls.append(1)
        if len(calls) == 3:
            raise KeyError("third")
        return len(calls)

    loader = BatchLoader(produce, depth=2)
    assert next(loader) == 1 and next(loader) == 2
    with pytest.raises(KeyError, match="third"):
        next(loader)
    assert loader._thread is not None and not loader._thread.is_alive()
    assert len(calls) == 3  # nothing produced after the error


def test_close_stops_a_producer_blocked_on_a_full_queue():
    produced = threading.Semaphore(0)

    def produce() -> int:
        produced.release()
        return 0

    loader = BatchLoader(produce, depth=1)
    for _ in range(2):  # one in the queue, one waiting to be put
        assert produced.acquire(timeout=5)
    loader.close()
    assert not loader._thread.is_alive()
    with pytest.raises(StopIteration):
        next(loader)
    with pytest.raises(ValueError, match="depth must be >= 0"):
        BatchLoader(produce, depth=-1)


def test_prefetching_and_memory_options_leave_the_trial_unchanged(synth_root, synth_tasks, tmp_path):
    def run(name, **options):
        trial = Trial(
            mixture={t.name: 1 / 3 for t in synth_tasks},
            hyperparameters={},
            seed=2,
            steps=4,
            output_dir=tmp_path / name,
            tasks=synth_tasks,
            options={"model": str(synth_root / "model"), **TINY, **options},
            trial_id=name,
        )
        result = train(trial, lambda s, m: None)
        return result, load_file(result.checkpoint / "model.safetensors")

    (sync, w_sync), (ahead, w_ahead) = run("sync", prefetch=0), run("ahead", prefetch=3)
    assert sync.objective == ahead.objective and all(torch.equal(w_sync[k], w_ahead[k]) for k in w_sync)
    cached, w_cached = run("cached", prefetch=2, mini_batch_size=5, gradient_checkpointing=True)
    assert cached.objective == pytest.approx(sync.objective, abs=1e-4)
    assert cached.extra["final_loss"] == pytest.approx(sync.extra["final_loss"], rel=1e-4)
    for k in w_sync:
        torch.testing.assert_close(w_cached[k], w_sync[k], atol=1e-4, rtol=1e-4, msg=k)
