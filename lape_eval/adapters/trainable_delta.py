"""Training a neuron delta: trainable delta tensors of exactly the delta file's shapes, added to a frozen
model by forward hooks (the ``subnetwork`` and ``random`` fine-tuning methods).

Training never clones or touches a full weight matrix: the model's own weights stay frozen and
bit-identical, and :meth:`DeltaModule.to_delta` gives the :class:`~lape_eval.adapters.delta.NeuronDelta`
to save.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lape_eval.adapters.delta import INPUT_ROLES, NeuronDelta, hidden_size, read_entries, roles
from lape_eval.arch import resolve
from lape_eval.errors import LapeEvalError


class DeltaModule(nn.Module):
    """Trainable deltas of the given neurons' rows and columns, added to the model by forward hooks.

    Parameter ``l{layer}_{role}`` has the delta's shape ([n, d] for gate/up/fc, [d, n] for down/proj)
    and starts at zero, so the model's output is unchanged (bit for bit) until training moves it. The
    hooks (``attach``) compute, per layer,

    * gate/up (fc): ``y[..., idx] += x @ Δᵀ`` — fused gate_up: both halves in one matmul;
    * down (proj): ``y += g[..., idx] @ Δᵀ`` where g is the projection's input;

    which is exactly ``(W + Δ) x`` for the changed rows/columns. Memory per step is one [B, T, n]
    matmul result per projection (like a LoRA of rank n's intermediate), never a weight clone.
    """

    def __init__(self, model, indices: list[torch.Tensor], init: NeuronDelta | None = None):
        super().__init__()
        self.sites = resolve(model)
        kind = self.sites.family.mlp_kind
        if len(indices) != self.sites.num_layers:
            raise LapeEvalError(f"{len(indices)} layers of neuron indices for a {self.sites.num_layers}-layer model.")
        self.kind, self.width, self.hidden = kind, self.sites.width, hidden_size(self.sites)
        self.layer_ids = [layer for layer, index in enumerate(indices) if index.numel()]
        self._indices = [index.to(torch.int64).cpu() for index in indices]
        for layer in self.layer_ids:
            index = self._indices[layer]
            if bool((index[1:] <= index[:-1]).any()) or index[0] < 0 or index[-1] >= self.width:
                raise LapeEvalError(f"Layer {layer}: neuron indices must be sorted, unique and below {self.width}.")
            device = self.sites.projection(layer, "down" if kind != "plain" else "proj").weight.device
            self.register_buffer(f"index_{layer}", index.to(device), persistent=False)
            if kind == "fused":
                self.register_buffer(f"fused_index_{layer}", torch.cat([index, index + self.width]).to(device),
                                     persistent=False)
            n = index.numel()
            for role in roles(kind):
                shape = (n, self.hidden) if role in INPUT_ROLES[kind] else (self.hidden, n)
                value = torch.zeros(shape, dtype=torch.float32, device=device)
                if init is not None:
                    value.copy_(init.weights[layer][role])
                self.register_parameter(f"l{layer}_{role}", nn.Parameter(value))
        if init is not None and any(not torch.equal(a, b) for a, b in zip(init.indices, self._indices)):
            raise LapeEvalError("The initial delta covers other neurons than the ones to train.")
        self._handles: list = []

    @property
    def neuron_count(self) -> int:
        return sum(int(index.numel()) for index in self._indices)

    def delta(self, layer: int, role: str) -> nn.Parameter:
        return getattr(self, f"l{layer}_{role}")

    def index(self, layer: int) -> torch.Tensor:
        return getattr(self, f"index_{layer}")

    def pairs(self):
        """``(layer, role, parameter)`` for every trainable tensor."""
        for layer in self.layer_ids:
            for role in roles(self.kind):
                yield layer, role, self.delta(layer, role)

    def base_entries(self, layer: int, role: str) -> torch.Tensor:
        """The frozen model's weights at this delta's entries (float32, delta orientation)."""
        return read_entries(self.sites, layer, role, self.index(layer))

    # ---- hooks -------------------------------------------------------------------------------------

    def attach(self) -> "DeltaModule":
        if self._handles:
            return self
        sites, kind = self.sites, self.kind
        for layer in self.layer_ids:
            if kind == "gated":
                for role in ("gate", "up"):
                    self._hook(sites.projection(layer, role), self._rows_hook(layer, (role,), self.index(layer)))
                self._hook(sites.projection(layer, "down"), self._cols_hook(layer, "down"))
            elif kind == "fused":
                fused = getattr(self, f"fused_index_{layer}")
                self._hook(sites.projection(layer, "gate_up"), self._rows_hook(layer, ("gate", "up"), fused))
                self._hook(sites.projection(layer, "down"), self._cols_hook(layer, "down"))
            else:
                self._hook(sites.projection(layer, "fc"), self._rows_hook(layer, ("fc",), self.index(layer)))
                self._hook(sites.projection(layer, "proj"), self._cols_hook(layer, "proj"))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, module: nn.Module, function) -> None:
        self._handles.append(module.register_forward_hook(function))

    def _rows_hook(self, layer: int, row_roles: tuple[str, ...], index: torch.Tensor):
        params = [self.delta(layer, role) for role in row_roles]

        def add_rows(module, args, output):
            x = args[0]
            delta = params[0] if len(params) == 1 else torch.cat(params)
            update = F.linear(x, delta.to(x.dtype))
            return output.index_add(-1, index, update.to(output.dtype))

        return add_rows

    def _cols_hook(self, layer: int, role: str):
        param, index = self.delta(layer, role), self.index(layer)

        def add_cols(module, args, output):
            g = args[0].index_select(-1, index)
            return output + F.linear(g, param.to(g.dtype)).to(output.dtype)

        return add_cols

    # ---- export ------------------------------------------------------------------------------------

    def to_delta(self, info: dict | None = None) -> NeuronDelta:
        weights = [{} for _ in range(self.sites.num_layers)]
        for layer, role, param in self.pairs():
            weights[layer][role] = param.detach().float().cpu().clone()
        return NeuronDelta(self.kind, self.sites.num_layers, self.width, self.hidden,
                           [index.clone() for index in self._indices], weights, dict(info or {}))

