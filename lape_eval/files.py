"""Atomic file writes, JSON files, and safetensors files with JSON metadata (torch imported only by the latter).

Every artifact lape-eval writes goes through :func:`atomic_path`: the content is written to a
temporary file in the target folder and renamed over the target, so an interrupted or failed run
never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lape_eval.errors import LapeEvalError

if TYPE_CHECKING:
    import torch

_METADATA_KEY = "lape_eval"


@contextlib.contextmanager
def atomic_path(target: Path):
    """Yield a temporary path next to ``target``; rename it onto ``target`` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(target: Path, data: dict) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LapeEvalError(f"The {what} {path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LapeEvalError(f"The {what} {path} is not valid JSON ({error}); it may be truncated.") from None


def save_tensors(target: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Save tensors as safetensors with ``metadata`` (any JSON value) stored in the header."""
    from safetensors.torch import save_file  # here, not at the top: JSON readers and writers need no torch

    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    with atomic_path(target) as temporary:
        save_file(tensors, str(temporary), metadata={_METADATA_KEY: json.dumps(metadata, ensure_ascii=False)})


def load_tensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a file written by :func:`save_tensors`; clear errors for missing or damaged files."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

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
