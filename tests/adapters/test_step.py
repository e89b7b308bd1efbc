"""The loss of one step: real tokens only."""

from __future__ import annotations

import pytest
import torch
from adapter_runs import load
from float_bounds import FORWARD

from lape_eval.adapters.step import causal_lm_loss_sum
from lape_eval.adapters.trainable_delta import DeltaModule
from lape_eval.neurons.corpus import make_batch

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics


def test_padding_never_contributes_to_the_loss(tiny_model_dir):
    loaded = load(tiny_model_dir("llama"))
    model = loaded.model
    sequences = [[11, 12, 13, 14, 15, 16, 17, 18], [21, 22, 23, 24]]
    narrow = make_batch(sequences, bos_id=1, pad_id=0)
    wide_ids = torch.cat([narrow.input_ids, torch.full((2, 7), 2)], dim=1)  # extra padding (EOS as pad)
    wide_mask = torch.cat([narrow.attention_mask, torch.zeros(2, 7, dtype=torch.long)], dim=1)
    delta = DeltaModule(model, [torch.tensor([3, 7]), torch.tensor([1])]).attach()
    results = []
    for ids, mask in ((narrow.input_ids, narrow.attention_mask), (wide_ids, wide_mask)):
        delta.zero_grad()
        loss, count = causal_lm_loss_sum(model, ids, mask)
        loss.backward()
        results.append((loss.detach(), count, [p.grad.clone() for p in delta.parameters()]))
    (loss_a, count_a, grads_a), (loss_b, count_b, grads_b) = results
    assert count_a == count_b == 8 + 4  # every real token after BOS, no pad
    # The summed loss (12 positive terms, no cancellation): one forward pass in another summation order,
    # FORWARD relative to it (rtol=1e-6 was ~17 units in the last place, tighter than the reductions allow).
    # Measured ≤ 9.1e-8 relative (AVX-512; equal under scalar and AVX2). A pad counted moves it by ~1/12.
    torch.testing.assert_close(loss_b, loss_a, rtol=FORWARD, atol=0.0)
    # The extra padded columns change only the order of float32 reductions (attention over 15 instead
    # of 8 columns, other matmul blocking), never which terms are summed. Rounding of a float32 sum of n
    # terms is bounded by n·u·Σ|terms| (u = 2^-24); with the widest reduction here n = 96 (MLP width) and
    # about six chained products forward and backward, that is ~3e-5 of the gradient's scale, so the
    # bound is taken relative to max|grad|, not per element (cancellation makes small elements' relative
    # error meaningless). Measured under scalar, AVX2 and AVX-512 kernels: at most 2.2e-6 of the scale.
    # A pad counted as a target would move the gradients by ~1/12 of their scale (one token of 12).
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=0, atol=3e-5 * a.abs().max().item())
    # Labelling pads as targets (the reference code's pitfall) would change the loss:
    with torch.no_grad():
        naive = model(input_ids=wide_ids, attention_mask=wide_mask, labels=wide_ids).loss
    assert abs(float(naive) - float(loss_a) / count_a) > 1e-3
