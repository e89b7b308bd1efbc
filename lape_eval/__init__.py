"""lape-eval: language neurons (LAPE) for lm-evaluation-harness.

Importing the package is cheap on purpose (no torch, no transformers): the lm-eval model
registration hook runs in every Python process of an environment that has lape-eval installed. The
few names a notebook reaches for are importable from here and loaded on first use:

>>> from lape_eval import load_model, resolve_neuron_set, steer, parse_steer, NeuronSet
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it (imported on first access, PEP 562)
_PUBLIC = {
    "load_model": "lape_eval.models",
    "NeuronSet": "lape_eval.neurons.neuron_set",
    "resolve_neuron_set": "lape_eval.neurons.shipped",
    "steer": "lape_eval.steering.hooks",
    "parse_steer": "lape_eval.steering.spec",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'lape_eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
