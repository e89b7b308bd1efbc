"""Residual DiffMean steering (``method=residual_diffmean``): one direction added to one decoder layer's output.

A spec ``"-src +tgt"`` (see :mod:`lape_eval.steering.spec`) compiled against a direction artifact
(:class:`~lape_eval.neurons.directions.ResidualDirections`) and a layer ℓ is the vector
``v = α · normalise(m_ℓ(tgt) − m_ℓ(src))`` (``"+tgt"``: minus the mean of the other languages),
computed in float64 and rounded once to float32. A forward hook on decoder layer ℓ adds ``v`` to the
layer's output hidden state at every position the spec's ``positions`` allow (``all``: every
position, as CLaS-Bench does; padding is skipped the same way as for neuron edits), before the next
layer reads it. α comes from the ``+`` term's strength, ``language_alphas`` or ``alpha``.

Row-wise batches (``steer=doc`` generation) stack one vector per row (zeros for an unsteered row).
The compiled objects answer what :class:`~lape_eval.steering.hooks.SteeringHandle` asks (layers,
edits, positions, the hooked module, how to apply), so positions, devices, sharding and removal are
the neuron hooks' own code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from lape_eval.arch import NeuronSites, resolve
from lape_eval.errors import LapeEvalError
from lape_eval.steering.spec import RESIDUAL_DIFFMEAN, SteerSpec


@dataclass
class _ResidualEdit:
    """h ← h + vectors (per row: [rows, H], or [1, H] for every row)."""

    vectors: torch.Tensor


@dataclass
class ResidualSteer:
    """The compiled steering of one spec (``rows`` = 1) or of one spec per batch row, at ``layer``."""

    specs: list[SteerSpec]
    layer: int
    vectors: torch.Tensor  # float32 [rows, H]

    @property
    def touched_layers(self) -> list[int]:
        return [] if not bool(self.vectors.any()) else [self.layer]

    @property
    def edits(self) -> dict[int, list[_ResidualEdit]]:
        return {self.layer: [_ResidualEdit(self.vectors)]}

    @property
    def positions(self) -> str:
        return self.specs[0].positions

    @property
    def vector(self) -> torch.Tensor:
        """[H] float32: the one spec's vector (what export-steered writes)."""
        if self.vectors.shape[0] != 1:
            raise LapeEvalError("A row-wise residual steering has one vector per row, not one vector.")
        return self.vectors[0]

    def module(self, sites: NeuronSites, layer: int) -> torch.nn.Module:
        return sites.layers[layer]

    def apply(self, output, edits: list[_ResidualEdit], mask: torch.Tensor | None):
        hidden = output[0] if isinstance(output, tuple) else output  # some layers return a tuple
        for edit in edits:
            vectors = edit.vectors
            if vectors.shape[0] not in (1, hidden.shape[0]):
                raise LapeEvalError(f"A batch of {hidden.shape[0]} rows was steered with {vectors.shape[0]} specs: "
                                    "give steer() exactly one spec per row of every batch it runs.")
            # Added in the model's dtype, as lm-eval's `steered` model adds its vector.
            steered = hidden + vectors.to(hidden.dtype).unsqueeze(1)
            hidden = steered if mask is None else torch.where(mask.unsqueeze(-1), steered, hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def residual_vector(spec: SteerSpec, directions, layer: int) -> torch.Tensor:
    """[H] float32: α · normalise(m(target) − m(source)) of ``spec`` at ``layer`` (zeros for no terms)."""
    if spec.method != RESIDUAL_DIFFMEAN:
        raise LapeEvalError(f"A direction artifact steers with method={RESIDUAL_DIFFMEAN}, not method={spec.method}; "
                            "the neuron methods need a neuron set (neurons=...).")
    directions.check_layer(layer)
    if spec.is_identity:
        return torch.zeros(directions.hidden_size, dtype=torch.float32)
    (target,) = [t for t in spec.terms if t.sign == "+"]  # parse_steer checked the terms' structure
    sources = [t.language for t in spec.terms if t.sign == "-"]
    unit = directions.direction(target.language, sources[0] if sources else None, layer)
    return (spec.strength_of(target) * unit).to(torch.float32)


def compile_residual(spec: SteerSpec, directions, layer: int) -> ResidualSteer:
    """Compile one spec (the caller checks the artifact against its model: ``directions.check_model``)."""
    return ResidualSteer([spec], layer, residual_vector(spec, directions, layer).unsqueeze(0))


def compile_residual_rowwise(specs: list[SteerSpec], directions, layer: int,
                             compiled: dict | None = None) -> ResidualSteer:
    """One vector per batch row; ``compiled`` (spec -> ResidualSteer) reuses single-spec compilations."""
    if len({spec.positions for spec in specs}) > 1:
        raise LapeEvalError("Specs steered row-wise in one batch must use the same positions.")
    cache = {} if compiled is None else compiled
    vectors = []
    for spec in specs:
        if spec not in cache:
            cache[spec] = compile_residual(spec, directions, layer)
        vectors.append(cache[spec].vectors[0])
    return ResidualSteer(list(specs), layer, torch.stack(vectors))


@contextlib.contextmanager
def steer_residual(model, directions, spec: SteerSpec | str | list, layer: int, **spec_args):
    """Apply ``spec`` (``"-en +de"``; a list: one spec per batch row) at decoder layer ``layer`` inside the block.

    >>> with steer_residual(model, ResidualDirections.load("dirs.safetensors"), "-en +de", layer=3, alpha=5):
    ...     model.generate(...)
    """
    from lape_eval.steering.hooks import SteeringHandle
    from lape_eval.steering.spec import parse_steer

    spec_args = {"method": RESIDUAL_DIFFMEAN, **spec_args}
    directions.check_model(model)
    if isinstance(spec, (list, tuple)):
        specs = [s if isinstance(s, SteerSpec) else parse_steer(s, **spec_args) for s in spec]
        compiled = compile_residual_rowwise(specs, directions, layer)
    else:
        compiled = compile_residual(spec if isinstance(spec, SteerSpec) else parse_steer(spec, **spec_args),
                                    directions, layer)
    handle = SteeringHandle(model, compiled, resolve(model))
    try:
        yield handle
    finally:
        handle.remove()
