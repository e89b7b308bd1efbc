"""Held-out ablation: loss bookkeeping and the specificity criterion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lape_eval.steering.ablation import AblationReport, ablate, heldout_batch, mean_losses
from lape_eval.arch import resolve
from lape_eval.neurons.corpus import CorpusSpec
from float_bounds import FORWARD
from handmade_sets import make_set
from tiny_models import build_model, build_tokenizer

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics


def test_specificity_criterion_by_hand():
    report = AblationReport(
        languages=["en", "de", "fr"], ablated=["en", "de"],
        baseline=torch.tensor([2.0, 3.0, 4.0]),
        losses=torch.tensor([[2.5, 3.1, 4.3], [2.1, 3.05, 4.4]]), tokens=[10, 10, 10],
    )
    # Fixed float32 inputs: 3.1, 4.3, ... are stored to within u·4 ≈ 2.4e-7 (u = 2^-24), so the rises
    # (differences and means of two) are exact to within 1e-6.
    assert abs(report.own_rise("en") - 0.5) < 1e-6 and abs(report.others_rise("en") - 0.2) < 1e-6
    assert abs(report.own_rise("de") - 0.05) < 1e-6 and abs(report.others_rise("de") - 0.25) < 1e-6
    assert report.specific_languages == ["en"]
    assert "1 of 2 languages" in report.table()


def test_mean_losses_equal_a_manual_cross_entropy_with_padding():
    model, tokenizer = build_model("llama"), build_tokenizer()
    batch = heldout_batch(tokenizer, ["en", "ru"], CorpusSpec("udhr:heldout"), max_tokens=20)
    assert batch.count_mask.sum(1).tolist() == [20, 20]
    losses = mean_losses(model, batch)
    for row in range(2):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].unsqueeze(0)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        expected = F.cross_entropy(logits, ids[0, 1:])
        # The row in a batch of 2 against alone: one forward pass in another summation order, and the
        # loss is a mean of positive terms (no cancellation), so FORWARD relative to it. Measured: equal
        # (these two rows need no padding). One token more or fewer moves it by ~5e-3 relative.
        torch.testing.assert_close(losses[row], expected, rtol=FORWARD, atol=0.0)


def test_ablation_rows_equal_losses_under_deactivation():
    model, tokenizer = build_model("llama"), build_tokenizer()
    ns = make_set(resolve(model).width)
    report = ablate(model, tokenizer, ns, languages=["en", "de"], ablated=["en", "de"],
                    corpus=CorpusSpec("udhr:heldout"), max_tokens=16, progress=False)
    batch = heldout_batch(tokenizer, ["en", "de"], CorpusSpec("udhr:heldout"), max_tokens=16)
    # ablate() runs mean_losses on this same batch (deactivate_value 0 is the default): the same
    # computation in the same process, so the losses are bit-identical.
    assert torch.equal(report.baseline, mean_losses(model, batch))
    from lape_eval.steering.hooks import steer

    with steer(model, ns, "-de"):
        assert torch.equal(report.losses[1], mean_losses(model, batch))
    assert not torch.equal(report.losses[1], report.baseline)
