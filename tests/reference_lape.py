"""A deliberately plain LAPE selection, written from the method spec §4.4 text, for cross-checking.

It shares no code with ``lape_eval.neurons.selection``: plain Python loops over neurons and languages, ``math.log``
and Python sorting. It follows the spec literally, including the reference's handling of dead
neurons (NaN -> 0 -> LAPE 0, then removed by the filter); ties in LAPE are ranked by flat index,
the deterministic choice the spec asks for (§4.5). Only meant for small shapes.
"""

from __future__ import annotations

import math

import numpy as np


def reference_selection(
    positive_counts: np.ndarray,
    token_counts: np.ndarray,
    top_rate: float,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
) -> dict:
    """Return ``{"indices": [lang][layer] -> sorted list of ints, "selected": sorted list,
    "filter_threshold": float, "activation_bar": float, "entropy": flat list of LAPE before the filter}``."""
    counts = np.asarray(positive_counts)
    tokens = np.asarray(token_counts)
    num_langs, num_layers, width = counts.shape

    # Step 1: activation probabilities, P[k][l][i] = count / tokens (IEEE division, float64).
    prob = [[[float(counts[k, l, i]) / float(tokens[k]) for i in range(width)]
             for l in range(num_layers)] for k in range(num_langs)]

    entropy = _entropy(prob, num_langs, num_layers, width)  # steps 2-3

    # Step 4: tau = k-th smallest of all probabilities (1-based, k = round(rate * N)).
    flat = sorted(prob[k][l][i] for k in range(num_langs) for l in range(num_layers) for i in range(width))
    tau = _kth(flat, filter_rate)

    unfiltered = list(entropy)

    # Step 5: a neuron with P <= tau for every language is dismissed.
    for l in range(num_layers):
        for i in range(width):
            if all(prob[k][l][i] <= tau for k in range(num_langs)):
                entropy[l * width + i] = math.inf

    # Step 6: keep the M lowest-LAPE neurons, ties by flat index.
    count = round(num_layers * width * top_rate)
    ranked = sorted(range(num_layers * width), key=lambda f: (entropy[f], f))
    kept = ranked[:count]

    # Step 7: assign each kept neuron to every language whose P exceeds the activation bar.
    bar = _kth(flat, activation_bar_ratio)
    indices = [[[] for _ in range(num_layers)] for _ in range(num_langs)]
    selected = set()
    for f in kept:
        l, i = divmod(f, width)
        for k in range(num_langs):
            if prob[k][l][i] > bar:
                indices[k][l].append(i)
                selected.add(f)
    for per_lang in indices:
        for per_layer in per_lang:
            per_layer.sort()
    return {"indices": indices, "selected": sorted(selected), "filter_threshold": tau, "activation_bar": bar,
            "entropy": unfiltered}


def _entropy(prob, num_langs: int, num_layers: int, width: int) -> list[float]:
    """Steps 2-3: normalise over languages, NaN -> 0, entropy with log 0 := 0 (flat over layer * width + neuron)."""
    entropy = []
    for l in range(num_layers):
        for i in range(width):
            total = 0.0
            for k in range(num_langs):
                total += prob[k][l][i]
            value = 0.0
            for k in range(num_langs):
                share = prob[k][l][i] / total if total > 0 else 0.0
                if share > 0:
                    value += share * math.log(share)
            entropy.append(-value)
    return entropy


def _kth(flat: list[float], rate: float) -> float:
    """The k-th smallest of the sorted ``flat`` (1-based), k = round(rate * N) clamped to [1, N]."""
    k = min(max(round(len(flat) * rate), 1), len(flat))
    return flat[k - 1]
