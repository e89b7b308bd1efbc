"""Neuron deltas: the trained weights of a language subnetwork, compact, and how they meet a model.

A language's neuron j in layer l owns, in a gated MLP, row j of ``gate_proj`` and of ``up_proj``
(its input weights) and column j of ``down_proj`` (its output weights); in Phi-3's fused
``gate_up_proj`` the rows j and width + j; in GPT-2's plain MLP column j of ``c_fc`` and row j of
``c_proj`` (Conv1D stores weights transposed). Subnetwork fine-tuning (method spec §8.3) changes
exactly these entries, so its result is stored as a *neuron delta*: per layer the neuron indices and
the change of each of those rows and columns, nothing else.

File format (``.safetensors``, metadata ``format = "lape-eval/neuron-delta"``), per layer ``l`` with
at least one neuron (all float32 except the indices):

* ``layers.<l>.indices`` — int64 ``[n]``, sorted neuron indices of the layer;
* ``layers.<l>.gate``, ``layers.<l>.up`` (gated and fused) / ``layers.<l>.fc`` (plain) —
  ``[n, d_model]``: row k is the change of neuron ``indices[k]``'s input weights, in
  ``nn.Linear``'s ``[out, in]`` orientation whatever the module stores;
* ``layers.<l>.down`` (gated and fused) / ``layers.<l>.proj`` (plain) — ``[d_model, n]``: column k
  is the change of neuron ``indices[k]``'s output weights.

The JSON metadata records the base model's shape (layers, width, d_model, MLP kind), its id, and the
provenance of the training run (neuron set hash, language, data, steps). This module is the format's
one reader and writer (:meth:`NeuronDelta.save`, :meth:`NeuronDelta.load`) and merges a delta into a
loaded model (:meth:`NeuronDelta.apply`, ``W[rows] += Δ``: what the ``lape`` lm-eval model does with
``neuron_delta=`` and what ``lape-eval merge`` saves). Training the delta is
:mod:`lape_eval.adapters.trainable_delta`; writing it as a PEFT LoRA adapter is
:mod:`lape_eval.adapters.merge`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lape_eval import __version__
from lape_eval.arch import NeuronSites, resolve
from lape_eval.tensor_files import load_tensors, save_tensors
from lape_eval.errors import LapeEvalError

log = logging.getLogger(__name__)

DELTA_FORMAT = "lape-eval/neuron-delta"
DELTA_VERSION = 1
DELTA_FILE = "neuron_delta.safetensors"

# Per MLP kind: the roles of a neuron's input weights (rows [n, d]) and output weights (cols [d, n]).
INPUT_ROLES = {"gated": ("gate", "up"), "fused": ("gate", "up"), "plain": ("fc",)}
OUTPUT_ROLES = {"gated": ("down",), "fused": ("down",), "plain": ("proj",)}


def roles(mlp_kind: str) -> tuple[str, ...]:
    return INPUT_ROLES[mlp_kind] + OUTPUT_ROLES[mlp_kind]


def weights_per_neuron(mlp_kind: str, hidden_size: int) -> int:
    """Trainable weights one neuron owns: 3·d_model in a gated MLP, 2·d_model in a plain one."""
    return len(roles(mlp_kind)) * hidden_size


def hidden_size(sites: NeuronSites) -> int:
    """d_model, read from the first MLP projection (works for Linear and GPT-2's Conv1D)."""
    kind = sites.family.mlp_kind
    if kind == "gated":
        return sites.projection(0, "gate").weight.shape[1]
    if kind == "fused":
        return sites.projection(0, "gate_up").weight.shape[1]
    fc = sites.projection(0, "fc")
    return fc.weight.shape[1] if isinstance(fc, nn.Linear) else fc.weight.shape[0]


# --------------------------------------------------------------------------------------------------
# Where a role's entries sit in the model's weight matrices


def _entry_location(sites: NeuronSites, layer: int, role: str) -> tuple[torch.Tensor, str, int]:
    """(weight tensor, "rows" | "cols", index offset) holding ``role``'s entries of ``layer``.

    "rows": the delta [n, d] is ``weight[offset + idx, :]``; "cols": the delta [d, n] (or [n, d]
    transposed, see below) is ``weight[:, offset + idx]``.
    """
    kind = sites.family.mlp_kind
    if kind == "gated":
        weight = sites.projection(layer, role).weight
        return weight, ("rows" if role in ("gate", "up") else "cols"), 0
    if kind == "fused":
        if role == "down":
            return sites.projection(layer, "down").weight, "cols", 0
        return sites.projection(layer, "gate_up").weight, "rows", (0 if role == "gate" else sites.width)
    module = sites.projection(layer, role)
    linear = isinstance(module, nn.Linear)
    if role == "fc":  # delta [n, d] = rows of an nn.Linear [I, d], columns of a Conv1D [d, I] (transposed)
        return module.weight, ("rows" if linear else "cols_t"), 0
    return module.weight, ("cols" if linear else "rows_t"), 0  # proj: delta [d, n]


def read_entries(sites: NeuronSites, layer: int, role: str, index: torch.Tensor) -> torch.Tensor:
    """The model's current weights at ``role``'s entries of neurons ``index``, float32, in delta orientation."""
    weight, where, offset = _entry_location(sites, layer, role)
    index = index.to(weight.device) + offset
    with torch.no_grad():
        if where == "rows":
            return weight.index_select(0, index).float()
        if where == "cols":
            return weight.index_select(1, index).float()
        if where == "cols_t":
            return weight.index_select(1, index).float().T
        return weight.index_select(0, index).float().T  # rows_t


def add_entries(sites: NeuronSites, layer: int, role: str, index: torch.Tensor, delta: torch.Tensor,
                scale: float = 1.0) -> None:
    """``W[entries] += scale · delta`` in place (in float32, then rounded to the weight's dtype once)."""
    weight, where, offset = _entry_location(sites, layer, role)
    index = index.to(weight.device) + offset
    delta = delta.to(device=weight.device, dtype=torch.float32) * scale
    with torch.no_grad():
        if where in ("cols_t", "rows_t"):
            delta = delta.T
        if where in ("rows", "rows_t"):
            weight.index_copy_(0, index, (weight.index_select(0, index).float() + delta).to(weight.dtype))
        else:
            weight.index_copy_(1, index, (weight.index_select(1, index).float() + delta).to(weight.dtype))


# --------------------------------------------------------------------------------------------------
# The artifact


@dataclass
class NeuronDelta:
    """Per layer: neuron indices and the change of their rows / columns (see the module docstring)."""

    mlp_kind: str
    num_layers: int
    width: int
    hidden: int
    indices: list[torch.Tensor]  # per layer, sorted int64 (empty where no neuron)
    weights: list[dict[str, torch.Tensor]]  # per layer, role -> float32 delta ([n, d] or [d, n])
    info: dict = field(default_factory=dict)

    @property
    def neuron_count(self) -> int:
        return sum(int(idx.numel()) for idx in self.indices)

    @property
    def parameter_count(self) -> int:
        return sum(int(t.numel()) for per_layer in self.weights for t in per_layer.values())

    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for layer, index in enumerate(self.indices):
            if index.numel():
                tensors[f"layers.{layer}.indices"] = index
                for role, value in self.weights[layer].items():
                    tensors[f"layers.{layer}.{role}"] = value
        return tensors

    @property
    def metadata(self) -> dict:
        return {"format": DELTA_FORMAT, "format_version": DELTA_VERSION, "mlp_kind": self.mlp_kind,
                "num_layers": self.num_layers, "width": self.width, "hidden_size": self.hidden,
                "neurons": self.neuron_count, "parameters": self.parameter_count, "tool_version": __version__,
                **self.info}

    def save(self, path: Path | str) -> Path:
        save_tensors(Path(path), self.tensors(), self.metadata)
        return Path(path)

    @classmethod
    def load(cls, path: Path | str) -> "NeuronDelta":
        """Read and check a delta file (a folder holding ``neuron_delta.safetensors`` works too)."""
        path = Path(path)
        if path.is_dir():
            if (path / "adapter_config.json").exists() and not (path / DELTA_FILE).exists():
                raise LapeEvalError(f"{path} is a PEFT adapter folder (a LoRA run's output), not a neuron delta: "
                                    "load it with peft=PATH.")
            path = path / DELTA_FILE
        tensors, meta = load_tensors(path, "neuron delta file")
        if meta.get("format") != DELTA_FORMAT:
            raise LapeEvalError(f"{path} is not a lape-eval neuron delta (its format is {meta.get('format')!r}); "
                                "neuron deltas are written by `lape-eval finetune --method subnetwork|random`.")
        if meta.get("format_version") != DELTA_VERSION:
            raise LapeEvalError(f"{path} has neuron-delta format version {meta.get('format_version')!r}; this "
                                f"lape-eval ({__version__}) reads version {DELTA_VERSION}.")
        try:
            kind, layers, width, hidden = meta["mlp_kind"], int(meta["num_layers"]), int(meta["width"]), int(
                meta["hidden_size"])
            expected_roles = roles(kind)
        except (KeyError, TypeError, ValueError):
            raise LapeEvalError(f"{path} is an incomplete neuron delta (its metadata lacks the model shape).") from None
        indices, weights = [], []
        for layer in range(layers):
            index = tensors.pop(f"layers.{layer}.indices", torch.zeros(0, dtype=torch.int64))
            per_role = {role: tensors.pop(f"layers.{layer}.{role}", None) for role in expected_roles}
            indices.append(index)
            weights.append({} if not index.numel() else per_role)
            _check_layer(path, layer, index, per_role if index.numel() else {}, width, hidden, kind)
        if tensors:
            raise LapeEvalError(f"{path} holds unexpected tensors {sorted(tensors)[:5]} for a {layers}-layer "
                                f"{kind} MLP delta.")
        info = {k: v for k, v in meta.items() if k not in (
            "format", "format_version", "mlp_kind", "num_layers", "width", "hidden_size", "neurons", "parameters",
            "tool_version")}
        return cls(kind, layers, width, hidden, indices, weights, info)

    def check_model(self, sites: NeuronSites) -> None:
        theirs = (sites.family.mlp_kind, sites.num_layers, sites.width, hidden_size(sites))
        mine = (self.mlp_kind, self.num_layers, self.width, self.hidden)
        if theirs != mine:
            base = (self.info.get("base_model") or {}).get("id") or "unknown model"
            raise LapeEvalError(
                f"The neuron delta is for a {mine[0]} MLP with {mine[1]} layers × {mine[2]} neurons and d_model "
                f"{mine[3]} ({base}); the model has a {theirs[0]} MLP with {theirs[1]} layers × {theirs[2]} neurons "
                f"and d_model {theirs[3]}. Apply it to the model it was trained on."
            )

    def apply(self, model, scale: float = 1.0) -> None:
        """Merge into ``model``'s weights in place (PEFT-wrapped models: into the base weights)."""
        sites = resolve(model)
        self.check_model(sites)
        base = (self.info.get("base_model") or {})
        if base.get("model_type") and base["model_type"] != sites.model_type:
            log.warning("The neuron delta was trained on a %s model; applying it to a %s model.",
                        base["model_type"], sites.model_type)
        for layer, index in enumerate(self.indices):
            if index.numel():
                for role, value in self.weights[layer].items():
                    add_entries(sites, layer, role, index, value, scale)

    def describe(self) -> dict:
        """Provenance for results files (no tensors)."""
        return {"neurons": self.neuron_count, "parameters": self.parameter_count, **self.info}


def _check_layer(path, layer, index, per_role, width, hidden, kind) -> None:
    def fail(problem):
        raise LapeEvalError(f"{path} is not a valid neuron delta: layer {layer} {problem}.")

    if index.dtype != torch.int64 or index.dim() != 1:
        fail(f"indices must be a 1-D int64 tensor, not {index.dtype} {tuple(index.shape)}")
    n = index.numel()
    if n and (index[0] < 0 or index[-1] >= width or bool((index[1:] <= index[:-1]).any())):
        fail(f"indices are not sorted, unique and within 0..{width - 1}")
    for role, value in per_role.items():
        if value is None:
            fail(f"has no '{role}' tensor")
        shape = (n, hidden) if role in INPUT_ROLES[kind] else (hidden, n)
        if value.dtype != torch.float32 or tuple(value.shape) != shape:
            fail(f"'{role}' must be float32 {list(shape)}, not {value.dtype} {list(value.shape)}")
