"""Safetensors files with lape-eval's JSON metadata in the header (neuron sets, statistics, deltas).

Written atomically through :func:`lape_eval.files.atomic_path`; read with clear errors for missing,
damaged or foreign files. Kept apart from :mod:`lape_eval.files` so that JSON readers need no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lape_eval.errors import LapeEvalError
from lape_eval.files import atomic_path

_METADATA_KEY = "lape_eval"


def save_tensors(target: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Save tensors as safetensors with ``metadata`` (any JSON value) stored in the header."""
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    with atomic_path(target) as temporary:
        save_file(tensors, str(temporary), metadata={_METADATA_KEY: json.dumps(metadata, ensure_ascii=False)})


def load_tensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a file written by :func:`save_tensors`; clear errors for missing or damaged files."""
    path = Path(path)
    if not path.exists():
        raise LapeEvalError(f"The {what} {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw_metadata = (handle.metadata() or {}).get(_METADATA_KEY)
        tensors = load_file(str(path))
        metadata = json.loads(raw_metadata) if raw_metadata else None
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as error:
        raise LapeEvalError(
            f"The {what} {path} is damaged or not a lape-eval file ({str(error).splitlines()[0]}). "
            "Delete it and re-create it."
        ) from None
    if metadata is None:
        raise LapeEvalError(f"The {what} {path} has no lape-eval metadata: it was not written by lape-eval.")
    return tensors, metadata
