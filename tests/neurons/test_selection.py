"""Tests of LAPE selection (lape_eval.neurons.selection) against a plain reimplementation and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lape_eval.neurons.selection import (
    PAPER_TOP_RATES,
    activation_probabilities,
    lape_entropy,
    select_language_neurons,
    subset_languages,
)
from reference_lape import reference_selection

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

RATES = PAPER_TOP_RATES + (0.1, 0.3, 0.7, 0.95)
# LAPE here and in the reference: the same float64 operations in the same order (language by language),
# except that log may differ by an ulp (a vectorised log against the C library's): terms of one sign,
# so ≤ (L + a few)·u with L ≤ 21 languages and u = 2^-53, ~5e-15 relative. Measured: equal under
# scalar, AVX2 and AVX-512 kernels. A wrong normalisation or log base changes LAPE by 1e-2 or more.
# Probabilities and thresholds are exact (a division, then order statistics) and compared with ==.
ENTROPY_RTOL = 1e-12


def make_stats(seed: int, num_langs: int, num_layers: int, width: int, single_share: float = 0.1):
    """Random statistics with the awkward cases of spec §4.5 planted in them.

    Small token counts (some shared between languages) make many probabilities equal, including at
    the thresholds. Planted: dead neurons, single-language neurons (LAPE exactly 0, so ties at the
    selection boundary), neurons active for several languages, and exact copies of other neurons.
    """
    rng = np.random.default_rng(seed)
    tokens = rng.choice([40, 50, 50, 64, 100], size=num_langs)
    base = rng.beta(0.6, 2.0, size=(1, num_layers, width))
    jitter = rng.lognormal(0.0, 0.7, size=(num_langs, num_layers, width))
    probs = np.clip(base * jitter, 0.0, 1.0)
    neurons = num_layers * width
    roles = rng.choice(4, size=neurons, p=[0.9 - single_share, 0.05, single_share, 0.05])
    for flat, role in enumerate(roles):
        l, i = divmod(flat, width)
        if role == 1:  # dead
            probs[:, l, i] = 0.0
        elif role == 2:  # one language only
            probs[:, l, i] = 0.0
            probs[rng.integers(num_langs), l, i] = rng.uniform(0.2, 1.0)
        elif role == 3:  # high for a few languages
            chosen = rng.choice(num_langs, size=min(num_langs, 3), replace=False)
            probs[chosen, l, i] = rng.uniform(0.3, 1.0, size=len(chosen))
    counts = rng.binomial(tokens.reshape(-1, 1, 1), probs)
    for _ in range(max(1, neurons // 10)):  # identical rows, possibly across layers
        src, dst = rng.integers(neurons, size=2)
        counts[:, dst // width, dst % width] = counts[:, src // width, src % width]
    return counts, tokens


def languages_for(num_langs: int) -> list[str]:
    return [f"l{k}" for k in range(num_langs)]


def run_both(counts, tokens, rates, filter_q=0.95, bar_q=0.95):
    ours = select_language_neurons(
        torch.from_numpy(counts), torch.from_numpy(tokens), languages_for(len(tokens)), rates, filter_q, bar_q
    )
    theirs = {rate: reference_selection(counts, tokens, rate, filter_q, bar_q) for rate in rates}
    return ours, theirs


def as_lists(selection) -> list[list[list[int]]]:
    return [[layer.tolist() for layer in per_lang] for per_lang in selection.indices]


@pytest.mark.parametrize(
    "seed, shape, single_share",
    [
        (0, (5, 3, 40), 0.1),
        (1, (5, 3, 40), 0.0),
        (2, (5, 3, 40), 0.3),
        (3, (7, 4, 60), 0.1),
        (4, (21, 2, 50), 0.05),
        (5, (2, 3, 30), 0.2),
        (6, (1, 2, 30), 0.0),  # one language: every LAPE is 0 or +inf
    ],
)
@pytest.mark.parametrize("quantiles", [(0.95, 0.95), (0.9, 0.8), (0.8, 0.9), (0.5, 0.5)])
def test_matches_reference(seed, shape, single_share, quantiles):
    counts, tokens = make_stats(seed, *shape, single_share=single_share)
    ours, theirs = run_both(counts, tokens, RATES, *quantiles)
    for rate in RATES:
        assert as_lists(ours[rate]) == theirs[rate]["indices"], f"rate {rate}"
        assert ours[rate].selected.tolist() == theirs[rate]["selected"], f"rate {rate}"
        assert ours[rate].thresholds.filter_threshold == theirs[rate]["filter_threshold"]
        assert ours[rate].thresholds.activation_bar == theirs[rate]["activation_bar"]


@pytest.mark.parametrize("seed", [0, 1])
def test_entropy_matches_reference(seed):
    counts, tokens = make_stats(seed, 7, 4, 60)
    ours = lape_entropy(activation_probabilities(torch.from_numpy(counts), torch.from_numpy(tokens))).flatten()
    theirs = torch.tensor(reference_selection(counts, tokens, 0.01)["entropy"], dtype=torch.float64)
    dead = torch.from_numpy(counts.sum(axis=0) == 0).flatten()
    assert dead.any() and torch.isinf(ours[dead]).all()  # the reference has 0 there, then filters them
    torch.testing.assert_close(ours[~dead], theirs[~dead], rtol=ENTROPY_RTOL, atol=0.0)


def test_output_layout():
    counts, tokens = make_stats(7, 5, 3, 40)
    selection = select_language_neurons(torch.from_numpy(counts), torch.from_numpy(tokens),
                                        languages_for(5), (0.05,))[0.05]
    assert selection.languages == languages_for(5)
    assert len(selection.indices) == 5
    for per_lang in selection.indices:
        assert len(per_lang) == 3
        for layer in per_lang:
            assert layer.dtype == torch.int64
            assert torch.equal(layer, layer.sort().values)
    assert selection.selected.dtype == torch.int64
    assert torch.equal(selection.selected, selection.selected.unique())  # unique() sorts
    union = {l * 40 + i for per_lang in selection.indices for l, layer in enumerate(per_lang)
             for i in layer.tolist()}
    assert union == set(selection.selected.tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selected_count_is_exact_when_enough_neurons_pass(seed):
    rng = np.random.default_rng(seed)
    num_langs, num_layers, width = 21, 4, 500
    tokens = rng.integers(800, 1200, size=num_langs)
    probs = rng.beta(0.5, 3.0, size=(num_langs, num_layers, width))
    counts = rng.binomial(tokens.reshape(-1, 1, 1), probs)
    result = select_language_neurons(torch.from_numpy(counts), torch.from_numpy(tokens),
                                     languages_for(num_langs), RATES)
    tau = result[RATES[0]].thresholds.filter_threshold
    passing = int(((counts / tokens.reshape(-1, 1, 1)) > tau).any(axis=0).sum())
    for rate in RATES:
        expected = round(rate * num_layers * width)
        if expected <= passing:
            assert result[rate].selected.numel() == expected, f"rate {rate}"
        else:  # only the neurons that pass the filter can belong to a language
            assert result[rate].selected.numel() == passing, f"rate {rate}"


def test_hand_computed_case():
    # One layer, four neurons, two languages with 10 tokens each:
    #   neuron:     0     1     2 (dead)  3
    #   P(a)       1.0   0.5   0.0       0.2
    #   P(b)       0.0   0.5   0.0       0.8
    #   LAPE       0     ln 2  +inf      -(0.2 ln 0.2 + 0.8 ln 0.8) = 0.5004
    # Sorted probabilities: 0 0 0 .2 .5 .5 .8 1. With quantile 0.5, k = 4 -> tau = bar = 0.2.
    counts = torch.tensor([[[10, 5, 0, 2]], [[0, 5, 0, 8]]])
    tokens = torch.tensor([10, 10])
    result = select_language_neurons(counts, tokens, ["a", "b"], (0.1, 0.25, 0.5, 0.75, 0.99), 0.5, 0.5)

    def sets(rate):
        return [per_lang[0].tolist() for per_lang in result[rate].indices], result[rate].selected.tolist()

    assert result[0.25].thresholds.filter_threshold == 0.2
    assert sets(0.1) == ([[], []], [])  # M = round(0.4) = 0
    assert sets(0.25) == ([[0], []], [0])  # M = 1: neuron 0, only language a is above 0.2
    assert sets(0.5) == ([[0], [3]], [0, 3])  # M = 2: neuron 3; P(a) = 0.2 is not above the bar
    assert sets(0.75) == ([[0, 1], [1, 3]], [0, 1, 3])  # M = 3: neuron 1 belongs to both
    assert sets(0.99) == ([[0, 1], [1, 3]], [0, 1, 3])  # M = 4 keeps the dead neuron; no language

    # Raising only the bar to the 0.75 quantile (k = 6 -> 0.5) drops neuron 1 from both languages.
    higher_bar = select_language_neurons(counts, tokens, ["a", "b"], (0.75,), 0.5, 0.75)[0.75]
    assert higher_bar.thresholds.activation_bar == 0.5
    assert [per_lang[0].tolist() for per_lang in higher_bar.indices] == [[0], [3]]
    assert higher_bar.selected.tolist() == [0, 3]


def test_ties_are_broken_by_flat_index():
    # Every neuron is active for exactly one language: all LAPE are 0. P is 0.5 or 0; the 0.5
    # quantile is 0, so all neurons pass, and M = 2 must take the first two flat indices.
    counts = torch.tensor([[[5, 0], [0, 5]], [[0, 5], [5, 0]]])
    tokens = torch.tensor([10, 10])
    selection = select_language_neurons(counts, tokens, ["a", "b"], (0.5,), 0.5, 0.5)[0.5]
    assert selection.selected.tolist() == [0, 1]
    assert [[layer.tolist() for layer in per_lang] for per_lang in selection.indices] == [[[0], []], [[1], []]]


def test_lape_entropy_values():
    probabilities = torch.tensor(
        [[[0.3, 0.0, 0.2, 0.1]], [[0.0, 0.0, 0.2, 0.3]], [[0.0, 0.0, 0.2, 0.0]]], dtype=torch.float64
    )
    entropy = lape_entropy(probabilities)
    assert entropy.shape == (1, 4)
    assert entropy[0, 0].item() == 0.0 and math.copysign(1.0, entropy[0, 0].item()) == 1.0
    assert entropy[0, 1].item() == math.inf  # dead
    assert entropy[0, 2].item() == pytest.approx(math.log(3), rel=ENTROPY_RTOL)
    assert entropy[0, 3].item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=ENTROPY_RTOL)
    single = lape_entropy(torch.tensor([[[0.4, 0.0]]], dtype=torch.float64))
    assert single.tolist() == [[0.0, math.inf]]


def test_activation_probabilities():
    probabilities = activation_probabilities(torch.tensor([[[1, 2]], [[3, 0]]]), torch.tensor([4, 3]))
    assert probabilities.dtype == torch.float64
    assert probabilities.tolist() == [[[0.25, 0.5]], [[1.0, 0.0]]]


def test_int32_counts_give_the_same_result():
    counts, tokens = make_stats(8, 5, 3, 40)
    wide = select_language_neurons(torch.from_numpy(counts), torch.from_numpy(tokens), languages_for(5), RATES)
    narrow = select_language_neurons(torch.from_numpy(counts).int(), torch.from_numpy(tokens).int(),
                                     languages_for(5), RATES)
    for rate in RATES:
        assert as_lists(wide[rate]) == as_lists(narrow[rate])


# --- language subsets -------------------------------------------------------------------------------

def test_subset_languages_slices_in_requested_order():
    counts, tokens = make_stats(9, 5, 3, 40)
    sub_counts, sub_tokens, sub_langs = subset_languages(
        torch.from_numpy(counts), torch.from_numpy(tokens), languages_for(5), ["l3", "l0"]
    )
    assert sub_langs == ["l3", "l0"]
    assert torch.equal(sub_counts, torch.from_numpy(counts[[3, 0]]))
    assert torch.equal(sub_tokens, torch.from_numpy(tokens[[3, 0]]))


def test_selection_on_a_subset_is_the_selection_of_those_languages():
    counts, tokens = make_stats(10, 6, 3, 40)
    keep = ["l1", "l4", "l5"]
    sub = select_language_neurons(
        *subset_languages(torch.from_numpy(counts), torch.from_numpy(tokens), languages_for(6), keep), RATES
    )
    theirs = {rate: reference_selection(counts[[1, 4, 5]], tokens[[1, 4, 5]], rate) for rate in RATES}
    for rate in RATES:
        assert sub[rate].languages == keep
        assert as_lists(sub[rate]) == theirs[rate]["indices"]


def test_thresholds_depend_on_the_language_set():
    # Language c is much more active than a and b; dropping it lowers the global threshold.
    counts = torch.tensor([[[1, 2, 3, 4]], [[2, 1, 4, 3]], [[9, 9, 10, 10]]])
    tokens = torch.tensor([10, 10, 10])
    full = select_language_neurons(counts, tokens, ["a", "b", "c"], (0.5,), 0.6, 0.6)[0.5]
    sub = select_language_neurons(*subset_languages(counts, tokens, ["a", "b", "c"], ["a", "b"]),
                                  (0.5,), 0.6, 0.6)[0.5]
    assert sub.thresholds.filter_threshold < full.thresholds.filter_threshold


@pytest.mark.parametrize(
    "keep, message",
    [(["l1", "xx", "yy"], "xx, yy not in the statistics; available: l0, l1, l2"),
     (["l1", "l1"], "more than once: l1"),
     ([], "keep is empty")],
)
def test_subset_languages_errors(keep, message):
    counts, tokens = make_stats(11, 3, 2, 10)
    with pytest.raises(ValueError, match=message):
        subset_languages(torch.from_numpy(counts), torch.from_numpy(tokens), languages_for(3), keep)


# --- input validation -------------------------------------------------------------------------------

def _valid():
    return torch.tensor([[[1, 2]], [[3, 0]]]), torch.tensor([4, 3]), ["a", "b"]


@pytest.mark.parametrize("rate", [0, 1, 1.5, -0.01, float("nan"), True])
def test_rejects_top_rate_outside_unit_interval(rate):
    counts, tokens, langs = _valid()
    with pytest.raises(ValueError, match=rf"top_rate must be in the open interval \(0, 1\); got {rate!r}"):
        select_language_neurons(counts, tokens, langs, (0.01, rate))


@pytest.mark.parametrize("name", ["filter_quantile", "activation_bar_quantile"])
@pytest.mark.parametrize("value", [0.0, 1.0, 95])
def test_rejects_quantiles_outside_unit_interval(name, value):
    counts, tokens, langs = _valid()
    with pytest.raises(ValueError, match=rf"{name} must be in the open interval \(0, 1\); got {value!r}"):
        select_language_neurons(counts, tokens, langs, **{name: value})


@pytest.mark.parametrize(
    "counts, tokens, langs, message",
    [
        (torch.tensor([[1, 2], [3, 0]]), torch.tensor([4, 3]), ["a", "b"], r"shape \[languages, layers, neurons\]"),
        (torch.tensor([[[1, 2]], [[3, 0]]]), torch.tensor([4, 3, 5]), ["a", "b"], r"token_counts must have shape \[2\]"),
        (torch.tensor([[[1, 2]], [[3, 0]]]), torch.tensor([[4, 3]]), ["a", "b"], r"token_counts must have shape \[2\]"),
        (torch.tensor([[[1, 2]], [[3, 0]]]), torch.tensor([4, 3]), ["a"], "got 1 languages for statistics of 2"),
        (torch.tensor([[[1, 2]], [[3, 0]]]), torch.tensor([4, 3]), ["a", "a"], "more than once: a"),
        (torch.tensor([[[1, -2]], [[3, 0]]]), torch.tensor([4, 3]), ["a", "b"], "'a' has a negative count"),
        (torch.tensor([[[1, 2]], [[4, 0]]]), torch.tensor([4, 3]), ["a", "b"], r"'b' has a count \(4\) above its token count \(3\)"),
        (torch.tensor([[[0, 0]], [[3, 0]]]), torch.tensor([0, 3]), ["a", "b"], "token count of language 'a' is 0"),
        (torch.tensor([[[0, 0]], [[3, 0]]]), torch.tensor([-1, 3]), ["a", "b"], "token count of language 'a' is -1"),
        (torch.tensor([[[0.5, 0]], [[3, 0]]]), torch.tensor([4, 3]), ["a", "b"], "integer counts; got dtype torch.float32"),
        (torch.zeros(0, 1, 2, dtype=torch.long), torch.zeros(0, dtype=torch.long), [], "is empty"),
    ],
)
def test_rejects_bad_statistics(counts, tokens, langs, message):
    with pytest.raises(ValueError, match=message):
        select_language_neurons(counts, tokens, langs)


def test_rejects_empty_rates():
    counts, tokens, langs = _valid()
    with pytest.raises(ValueError, match="top_rates is empty"):
        select_language_neurons(counts, tokens, langs, ())


# --- determinism and purity -------------------------------------------------------------------------

def test_repeatable_and_leaves_inputs_untouched():
    counts, tokens = make_stats(12, 5, 3, 40)
    counts_t, tokens_t = torch.from_numpy(counts), torch.from_numpy(tokens)
    first = select_language_neurons(counts_t, tokens_t, languages_for(5), RATES)
    second = select_language_neurons(counts_t, tokens_t, languages_for(5), RATES)
    assert np.array_equal(counts_t.numpy(), counts) and np.array_equal(tokens_t.numpy(), tokens)
    for rate in RATES:
        assert as_lists(first[rate]) == as_lists(second[rate])
        assert torch.equal(first[rate].selected, second[rate].selected)


def test_language_order_does_not_matter():
    counts, tokens = make_stats(13, 5, 3, 40)
    langs = languages_for(5)
    order = [3, 0, 4, 2, 1]
    straight = select_language_neurons(torch.from_numpy(counts), torch.from_numpy(tokens), langs, RATES)
    shuffled = select_language_neurons(torch.from_numpy(counts[order]), torch.from_numpy(tokens[order]),
                                       [langs[k] for k in order], RATES)
    for rate in RATES:
        by_lang = dict(zip(shuffled[rate].languages, as_lists(shuffled[rate])))
        assert [by_lang[code] for code in langs] == as_lists(straight[rate])
        assert torch.equal(straight[rate].selected, shuffled[rate].selected)


def test_rates_together_equal_rates_alone():
    counts, tokens = make_stats(14, 5, 3, 40)
    args = (torch.from_numpy(counts), torch.from_numpy(tokens), languages_for(5))
    together = select_language_neurons(*args, RATES)
    for rate in RATES:
        alone = select_language_neurons(*args, (rate,))[rate]
        assert as_lists(alone) == as_lists(together[rate])
        assert alone.thresholds == together[rate].thresholds
