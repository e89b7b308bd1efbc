"""The neuron sets shipped with lape-eval (``neuron_sets/``, package ``lape_eval.neuron_sets``), and
the one way every command finds a set: a file path, or the name of a shipped set.
"""

from __future__ import annotations

from pathlib import Path

from lape_eval import resources
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.neuron_set import SUFFIX, NeuronSet


def shipped_neuron_sets() -> dict[str, Path]:
    """Name -> file of the sets shipped in ``neuron_sets/``."""
    folder = resources.shipped_folder("neuron_sets")
    files = sorted(folder.glob(f"*{SUFFIX}")) if folder is not None else []
    return {path.name[: -len(SUFFIX)]: path for path in files}


def neuron_set_path(name_or_path: str | Path) -> Path:
    """A set file path, or the file of a shipped set named ``name_or_path`` (with or without suffix)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_neuron_sets()
    name = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    if str(name_or_path) in (name, path.name) and name in shipped:
        return shipped[name]
    raise LapeEvalError(
        f"No neuron set {str(name_or_path)!r}: it is not a file, nor the name of a shipped set "
        f"(shipped: {', '.join(sorted(shipped)) or 'none'})."
    )


def resolve_neuron_set(name_or_path: str | Path) -> NeuronSet:
    """Load a set from a path or by the name of a shipped set (e.g. ``gemma-3-270m-udhr-1pct``)."""
    return NeuronSet.load(neuron_set_path(name_or_path))
