"""Tolerances of the tests that compare floats computed on the fly (issue 12), and where they come from.

Two computations of the same float32 quantity that sum in another order (another CPU's kernels:
scalar, AVX2, AVX-512; another batch shape or padding; two processes instead of one; a hook against a
manual computation) differ by rounding alone. A float32 sum of n terms is off by at most n·u·Σ|terms|
(u = 2^-24 ≈ 6e-8; float64: u = 2^-53 ≈ 1.1e-16). Where terms cancel, an element near zero carries
the rounding of its large terms, so its own relative error means nothing: the bounds below are taken
relative to the compared tensor's scale, max|expected| (:func:`assert_close_at_scale`).

Comparisons of the same computation in the same process (same inputs, shapes and kernels) are exact
(``torch.equal``) and need no tolerance.
"""

from __future__ import annotations

import torch

U32 = 2.0**-24  # unit roundoff of float32

# One forward pass of a tiny test model (tests/tiny_models.py: hidden 32, MLP width 96, 2-3 layers,
# vocabulary 512) in another summation order. Its longest reduction inside a layer is the MLP's down
# projection, n = 96: n·u ≈ 5.7e-6 of the magnitude of its terms; roundings of both signs mostly cancel
# (typically ~√n·u), so 1e-5 of the output's scale covers the chain of layers. Log-likelihoods and losses
# (sums of log-probabilities of one sign: no cancellation) take it relative to each value, like
# LOGLIKELIHOOD_RTOL in tests/reports/test_fixtures.py; the float32 log-softmax over the 512-word
# vocabulary (≤ 512·u ≈ 3e-5 per token, on per-token values ~6) stays within it. Measured under scalar,
# AVX2 and AVX-512 kernels: ≤ 1.2e-6 of the scale, ≤ 1.8e-7 relative for log-likelihoods. What the
# tests look for (a wrong neuron or value edited, a padded token counted, an adapter or a steering
# vector not applied, other positions steered) moves the outputs by 2.8e-4 of their scale or more.
FORWARD = 1e-5

# Weights after a few AdamW steps computed two ways (two processes against one, the delta scheme against
# the rows themselves). Their gradients agree to ~3e-5 of the gradients' scale (forward and backward:
# about six chained products over n ≤ 96, see tests/adapters/test_step.py); AdamW divides each entry's
# gradient by that entry's own running RMS, so an entry whose gradient is far below the scale carries a
# larger relative error into its update. 1e-4 of the weights' scale covers a few steps of that.
# Measured: at most 1.5e-6 of the scale. A lost step, a rank's batch missing, weight decay or clipping on
# the wrong tensor move the weights by about one learning rate, 1e-2 of their scale or more.
TRAINED = 1e-4


def assert_close_at_scale(actual: torch.Tensor, expected: torch.Tensor, rel: float, what=None) -> None:
    """Every element within ``rel`` times the scale max|expected| (an absolute tolerance, no relative one);
    ``what`` prefixes the failure message."""
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    msg = None if what is None else (lambda message: f"{what}: {message}")
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=rel * scale, msg=msg)
