"""Benchmark: LAPE selection on statistics shaped like Llama-3.1-8B's (21 languages, 32 x 14336).

Targets (project brief): all five paper rates (1-5 %) in one call within 5 s and 3 GB peak memory on a
2-core CPU machine. The statistics are synthetic but realistic in shape and distribution: 1 M tokens
per language (+-20 %), per-neuron activation probabilities from a Beta distribution with
per-language variation, 3 % dead neurons, 2 % neurons strongly active for one to three languages,
and binomial counts.

The measurement runs in a fresh subprocess so that its memory high-water mark (``ru_maxrss``) is not
polluted by whatever ran before. The subprocess builds the inputs one language at a time (so building
them leaves no large transient peak), records ``ru_maxrss`` as the baseline, runs the selection once
(cold, as a user would) and reports the growth of ``ru_maxrss``: the extra memory the selection needs
on top of its inputs.

Run: ``python benchmarks/bench_lape.py``; a benchmark runner can call :func:`run`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

NAME = "lape_selection_llama8b_shape"
SHAPE = (21, 32, 14336)  # languages, layers, MLP width (Llama-3.1-8B, spec §2-3)
TIME_TARGET_S = 5.0
MEMORY_TARGET_GB = 3.0
REPO_ROOT = Path(__file__).resolve().parents[1]


def synthetic_statistics(shape=SHAPE, seed: int = 0):
    """``(positive_counts [K, L, I] int64, token_counts [K] int64)``, built language by language."""
    import numpy as np
    import torch

    num_langs, num_layers, width = shape
    rng = np.random.default_rng(seed)
    tokens = rng.integers(800_000, 1_200_000, size=num_langs)
    base = rng.beta(0.8, 2.5, size=(num_layers, width))  # how often each neuron fires in general
    dead = rng.random((num_layers, width)) < 0.03
    specific = rng.random((num_layers, width)) < 0.02
    favourites = rng.integers(num_langs, size=(3, num_layers, width))
    favourites[1:][rng.random((2, num_layers, width)) < 0.5] = -1  # one to three languages each

    counts = torch.empty(shape, dtype=torch.int64)
    for k in range(num_langs):
        probs = base * rng.lognormal(0.0, 0.3, size=base.shape)
        is_favourite = (favourites == k).any(axis=0)
        probs[specific & ~is_favourite] *= 0.05
        probs[specific & is_favourite] = rng.uniform(0.6, 0.95, size=int((specific & is_favourite).sum()))
        probs[dead] = 0.0
        counts[k] = torch.from_numpy(rng.binomial(tokens[k], np.clip(probs, 0.0, 1.0)))
    return counts, torch.from_numpy(tokens).long()


def _measure() -> dict:
    """Runs inside the subprocess: time and memory of one selection call for all five rates."""
    import gc
    import resource
    import time

    import torch

    from lape_eval.neurons.selection import PAPER_TOP_RATES, select_language_neurons

    counts, tokens = synthetic_statistics()
    languages = [f"lang{k}" for k in range(SHAPE[0])]
    gc.collect()
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    start = time.perf_counter()
    selections = select_language_neurons(counts, tokens, languages, PAPER_TOP_RATES)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # A fast wrong answer is no result: every rate must keep exactly round(rate * L * I) neurons.
    neurons = SHAPE[1] * SHAPE[2]
    for rate, selection in selections.items():
        expected = round(rate * neurons)
        if selection.selected.numel() != expected:
            raise AssertionError(f"rate {rate}: {selection.selected.numel()} neurons, expected {expected}")
    return {
        "seconds": seconds,
        "extra_bytes": (peak_kib - baseline_kib) * 1024,
        "process_peak_bytes": peak_kib * 1024,
        "input_bytes": counts.numel() * counts.element_size(),
        "threads": torch.get_num_threads(),
    }


def run() -> list[dict]:
    """Measure in a fresh subprocess; return one record per measured quantity."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--measure"],
        env=env, cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    )
    raw = json.loads(result.stdout.strip().splitlines()[-1])
    setting = (
        f"synthetic statistics K={SHAPE[0]}, L={SHAPE[1]}, I={SHAPE[2]}, rates 0.01-0.05 in one call, "
        f"{raw['threads']} torch threads, cold call"
    )
    extra_gb = raw["extra_bytes"] / 1e9
    return [
        {
            "name": NAME,
            "value": raw["seconds"],
            "unit": "s",
            "target": TIME_TARGET_S,
            "ratio": raw["seconds"] / TIME_TARGET_S,
            "baseline": f"target <= {TIME_TARGET_S:g} s from the project brief; {setting}",
        },
        {
            "name": f"{NAME}_peak_memory",
            "value": extra_gb,
            "unit": "GB",
            "target": MEMORY_TARGET_GB,
            "ratio": extra_gb / MEMORY_TARGET_GB,
            "baseline": (
                f"target <= {MEMORY_TARGET_GB:g} GB from the project brief; growth of ru_maxrss over a "
                f"process holding the {raw['input_bytes'] / 1e9:.2f} GB inputs "
                f"(whole process peak {raw['process_peak_bytes'] / 1e9:.2f} GB); {setting}"
            ),
        },
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure"]:
        print(json.dumps(_measure()))
    else:
        from run import print_records  # benchmarks/run.py: this file's sibling when run as a script

        print_records(run(), baselines=True)
