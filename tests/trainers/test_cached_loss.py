"""GradCache (``mini_batch_size``) and gradient checkpointing give the full-batch loss and gradients.

The reference is the plain full-batch step: one forward with a graph over the whole batch, the loss,
one backward. Every loss term is switched on alone and all together; the batch has rows without a
hard negative, a false negative and partial teacher embeddings, so every mask is exercised.
"""

from __future__ import annotations

import pytest
import torch

from trainers.losses import LossWeights, TeacherTargets, false_negative_mask
from trainers.model import load_encoder
from trainers.training import RandContext, Stepper, prepare_inputs

QUERIES = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10 w11", "w12 w13", "w4", "w14 w15 w16 w17"]
POSITIVES = ["w20", "w21 w22 w23 w24", "w25 w26", "w27 w28 w29 w30 w31 w32 w33 w34 w35", "w36", "w37 w38"]
NEGATIVES = ["w40 w41", None, "w42", "w43 w44 w45", None, "w46 w47 w48 w49 w50 w51"]
DIM = 32

# Each term alone, then all of them (EmbeddingGemma's settings: alpha 5, both regularisers on).
TERMS = {
    "nce": LossWeights(dims=(DIM,), temperature=0.1, hardness_alpha=0.0, spread_out=0.0, distill=0.0),
    "hardness": LossWeights(dims=(DIM,), temperature=0.1, hardness_alpha=5.0, spread_out=0.0, distill=0.0),
    "spread_out": LossWeights(dims=(DIM,), temperature=0.1, hardness_alpha=0.0, spread_out=1.0, distill=0.0),
    "distill": LossWeights(dims=(DIM,), temperature=0.1, hardness_alpha=0.0, spread_out=0.0, distill=1.0),
    "matryoshka": LossWeights(
        dims=(DIM, 16, 8), temperature=0.1, hardness_alpha=0.0, spread_out=0.0, distill=0.0
    ),
    "all": LossWeights(dims=(DIM, 16, 8), temperature=0.05, hardness_alpha=5.0, spread_out=1.0, distill=1.0),
}


def teacher(b: int = len(QUERIES), dim: int = 24) -> TeacherTargets:
    g = torch.Generator().manual_seed(5)
    q = torch.randn(b, dim, generator=g)
    n = torch.randn(b, dim, generator=g)
    q_present = torch.tensor([True, True, False, True, False, True])
    n_present = torch.tensor([True, False, True, False, False, True])
    return TeacherTargets({"query": (q * q_present[:, None], q_present), "negative": (n, n_present)})


def make_stepper(model_dir, weights, mini_batch_size=None, checkpointing=False) -> Stepper:
    loaded = load_encoder(model_dir, seed=0)
    return Stepper(
        loaded.encoder.train(),
        loaded.tokenizer,
        weights,
        lr=1e-3,
        weight_decay=0.0,
        warmup_steps=1,
        total_steps=2,
        max_seq_length=16,
        device=torch.device("cpu"),
        amp=None,
        mini_batch_size=mini_batch_size,
        gradient_checkpointing=checkpointing,
    )


def gradients(stepper: Stepper) -> tuple[float, dict[str, float], dict[str, torch.Tensor]]:
    inputs = prepare_inputs(
        stepper.tokenizer,
        QUERIES,
        POSITIVES,
        NEGATIVES,
        max_seq_length=stepper.max_seq_length,
        false_negatives=false_negative_mask(QUERIES, POSITIVES),
        teacher=teacher(),
    )
    loss, parts = stepper.backward(inputs)
    grads = {
        name: p.grad.detach().clone() for name, p in stepper.encoder.named_parameters() if p.grad is not None
    }
    return float(loss.detach()), {k: float(v) for k, v in parts.items()}, grads


def assert_same(got, want, tol=1e-5):
    """Loss and parts equal; each gradient tensor within ``tol`` of the reference, relative to the
    tensor's largest entry (float32 sums in another order differ by ~1e-7 of the magnitude)."""
    loss, parts, grads = got
    ref_loss, ref_parts, ref_grads = want
    assert loss == pytest.approx(ref_loss, rel=tol, abs=tol)
    assert parts == pytest.approx(ref_parts, rel=tol, abs=tol)
    assert grads.keys() == ref_grads.keys()
    assert any(float(g.abs().max()) > 1e-3 for g in ref_grads.values())  # the loss does reach the weights
    for name, g in ref_grads.items():
        scale = max(float(g.abs().max()), 1.0)
        assert float((grads[name] - g).abs().max()) <= tol * scale, name


@pytest.mark.parametrize("term", list(TERMS))
def test_mini_batches_give_the_full_batch_loss_and_gradients(tiny_model_dir, term):
    weights = TERMS[term]
    full = gradients(make_stepper(tiny_model_dir, weights))
    # 2 divides neither the 4 present negatives into uneven chunks nor the 6 rows: use 4 (a ragged
    # last chunk of 2) and 1 (every text alone) too.
    for mini_batch_size in (1, 4):
        assert_same(gradients(make_stepper(tiny_model_dir, weights, mini_batch_size)), full)


def test_checkpointing_gives_the_same_gradients_with_and_without_mini_batches(tiny_model_dir):
    weights = TERMS["all"]
    full = gradients(make_stepper(tiny_model_dir, weights))
    assert_same(gradients(make_stepper(tiny_model_dir, weights, checkpointing=True)), full)
    assert_same(gradients(make_stepper(tiny_model_dir, weights, mini_batch_size=4, checkpointing=True)), full)


def test_a_mini_batch_step_updates_the_weights_as_the_full_batch_step(tiny_model_dir):
    weights = TERMS["all"]
    steppers = [make_stepper(tiny_model_dir, weights), make_stepper(tiny_model_dir, weights, 3)]
    for stepper in steppers:
        for _ in range(2):
            stepper.step(
                QUERIES, POSITIVES, NEGATIVES, false_negatives=false_negative_mask(QUERIES, POSITIVES)
            )
    for (name, a), b in zip(steppers[0].encoder.named_parameters(), steppers[1].encoder.parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)


def test_dropout_masks_are_replayed_in_the_second_pass(tiny_model_dir):
    """With dropout on, the gradient equals that of the same chunks run once with a graph.

    The reference runs each chunk once with autograd from the same seed, so it draws the dropout
    masks the cached first pass draws; without the replayed RNG state the recomputed chunks would
    draw new masks and the gradients would differ.
    """
    weights = TERMS["all"]
    stepper = make_stepper(tiny_model_dir, weights, mini_batch_size=4)
    for layer in stepper.encoder.transformer.layers:
        layer.self_attn.attention_dropout = 0.5
    inputs = prepare_inputs(
        stepper.tokenizer,
        QUERIES,
        POSITIVES,
        NEGATIVES,
        max_seq_length=16,
        false_negatives=false_negative_mask(QUERIES, POSITIVES),
    )
    torch.manual_seed(11)
    loss, _ = stepper.backward(inputs)
    cached = {n: p.grad.clone() for n, p in stepper.encoder.named_parameters() if p.grad is not None}

    stepper.optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    sides = [
        torch.cat([stepper.encoder(ids, mask) for ids, mask in side])
        for side in stepper._chunks(inputs.tokens)
    ]
    ref_loss, _ = stepper._loss(sides, inputs, stepper._masks_on_device(inputs))
    ref_loss.backward()
    assert float(loss.detach()) == pytest.approx(float(ref_loss.detach()), rel=1e-6)
    for name, p in stepper.encoder.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(cached[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)

    # Another seed draws other masks: the comparison above can fail.
    stepper.optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(12)
    other, _ = stepper.backward(inputs)
    assert float(other) != pytest.approx(float(loss), rel=1e-6)


def test_rand_context_replays_the_cpu_rng():
    torch.manual_seed(0)
    state = RandContext(torch.zeros(1))
    first = torch.rand(3)
    with state:
        again = torch.rand(3)
    after = torch.rand(3)
    torch.manual_seed(0)
    torch.rand(3)
    assert torch.equal(first, again) and torch.equal(after, torch.rand(3))


def test_mini_batch_size_must_be_positive(tiny_model_dir):
    with pytest.raises(ValueError, match="mini_batch_size must be >= 1"):
        make_stepper(tiny_model_dir, TERMS["nce"], mini_batch_size=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mini_batches_match_the_full_batch_on_cuda_in_bf16(tiny_model_dir):
    """bf16 autocast on CUDA: chunked and full-batch gradients agree to bf16 precision."""
    weights = TERMS["all"]

    def on_cuda(mini_batch_size):
        stepper = make_stepper(tiny_model_dir, weights, mini_batch_size)
        stepper.encoder.cuda()
        stepper.device, stepper.amp = torch.device("cuda"), torch.bfloat16
        return gradients(stepper)

    loss, _, grads = on_cuda(3)
    ref_loss, _, ref_grads = on_cuda(None)
    assert loss == pytest.approx(ref_loss, rel=2e-2)
    for name, g in ref_grads.items():
        scale = float(g.abs().max()) + 1e-6
        assert float((grads[name] - g).abs().max()) / scale < 5e-2, name
