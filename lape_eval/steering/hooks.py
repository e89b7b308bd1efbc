"""Language arithmetics on a live model: steer specs compiled against a neuron set and applied by hooks.

A steer spec (:mod:`lape_eval.steering.spec`, where its language, operators and positions are
described) is compiled against a neuron set into per-layer edits of the gated activation g: the
indices of each language's neurons and the values that an edit sets (c, α·μ), adds (α·μ) or
multiplies by (β). Deactivations come first, then activations in the order written, at every layer the set
covers (method spec §1, §5).

A forward hook on each touched layer's activation module applies that layer's edits; a pre-hook on
the decoder tells, per forward pass, which token positions may be edited. With the KV cache, the
first forward pass of a generation holds the prompt and every later one a generated token, which is
how ``positions`` tells prompt tokens from generated ones; padding (known from the attention mask)
is never edited. ``answer`` assumes left padding in the prompt pass (as generation uses), where the
last position is every row's last token. A caller that knows where each row's parts are, as lm-eval's
log-likelihood passes do (right padding, no cache, context then continuation), gives the positions
itself with :meth:`SteeringHandle.given_mask`.

:func:`steer` applies a spec to any transformers causal LM and removes every hook on exit, even on
an exception; weights are never touched. Given a list of specs, one per batch row, it steers each row
of a batch its own way (a calibration or a sweep then fills whole batches instead of one small batch
per source/target pair).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields, replace

import torch

from lape_eval.arch import NeuronSites, resolve, unwrap_model
from lape_eval.errors import LapeEvalError
from lape_eval.languages import get_language
from lape_eval.steering.spec import POSITIONS, RESIDUAL_DIFFMEAN, SteerSpec, SteerTerm, parse_steer

# --- compiling a spec against a neuron set -----------------------------------------------------


@dataclass
class _Edit:
    """One edit of one layer: g[..., index] ← op(g[..., index], values)."""

    op: str  # "set" | "add" | "scale"
    index: torch.Tensor  # int64 [n]
    values: torch.Tensor  # [n] (or a scalar for "scale")


@dataclass
class CompiledSteer:
    """The per-layer edits of a spec on one neuron set; ``edits[layer]`` is applied in order."""

    spec: SteerSpec
    edits: list[list[_Edit]] = field(default_factory=list)

    @property
    def touched_layers(self) -> list[int]:
        return [layer for layer, edits in enumerate(self.edits) if edits]

    @property
    def positions(self) -> str:
        return self.spec.positions

    # What SteeringHandle hooks and how (steering.residual's compiled directions answer the same):
    def module(self, sites: NeuronSites, layer: int) -> torch.nn.Module:
        return sites.activations[layer]

    def apply(self, output, edits: list, mask: torch.Tensor | None):
        return _apply_edits(output, edits, mask)


def compile_steer(spec: SteerSpec, neuron_set, sites: NeuronSites | None = None) -> CompiledSteer:
    """Turn a spec into per-layer index/value tensors; errors name what is missing."""
    languages = list(neuron_set.languages)
    for term in spec.terms:
        if term.language not in languages:
            raise LapeEvalError(
                f"The neuron set has no neurons for '{term.language}' ({get_language(term.language).name}); "
                f"it covers {', '.join(languages)}. Use a set identified with that language."
            )
    if spec.method == RESIDUAL_DIFFMEAN:
        raise LapeEvalError(f"method={RESIDUAL_DIFFMEAN} steers the residual stream with a direction artifact "
                            "(directions=FILE, layer=N), not with a neuron set; choose a neuron method (add, "
                            "multiply, replace, diffmean) to steer with neurons.")
    if sites is not None:
        neuron_set.check_model(sites)
    needs_means = any(t.sign == "+" for t in spec.terms) and spec.method != "multiply"
    if needs_means and not neuron_set.has_means:
        raise LapeEvalError(
            f"method={spec.method} needs the mean activations of the neurons, and this neuron set has none "
            "(imported from the reference format without statistics). Re-import it with --stats, or use "
            "method=multiply or deactivation only."
        )
    edits: list[list[_Edit]] = [[] for _ in range(neuron_set.num_layers)]
    ordered = [t for t in spec.terms if t.sign == "-"] + [t for t in spec.terms if t.sign == "+"]
    for term in ordered:
        for layer, edit in enumerate(_edits_of(term, spec, neuron_set)):
            if edit is not None:
                edits[layer].append(edit)
    return CompiledSteer(spec, edits)


def _edits_of(term: SteerTerm, spec: SteerSpec, neuron_set) -> list[_Edit | None]:
    """Per layer, the edit of one term (None where the language has no neurons). The set's means are
    looked up once for all layers: that lookup is most of the cost of compiling a spec."""
    strength = spec.strength_of(term)
    indices = neuron_set.indices(term.language)
    if term.sign == "-" or spec.method == "multiply":
        op = "set" if term.sign == "-" else "scale"
        values = [torch.full((index.numel(),), strength, dtype=torch.float32) for index in indices]
    else:
        means = [mu.float() for mu in neuron_set.means(term.language)]
        if spec.method == "diffmean":
            means = [mu - rest.float() for mu, rest in zip(means, neuron_set.mean_of_others(term.language))]
        values = [strength * mu for mu in means]
        op = "set" if spec.method == "replace" else "add"
    return [_Edit(op, index, value) if index.numel() else None for index, value in zip(indices, values)]


@dataclass
class _RowwiseEdit:
    """All edits of one layer for a batch whose rows carry different specs.

    Every edit is affine in the old value (set: 0·g + v, add: g + v, scale: s·g), so a row's chain of
    edits collapses into one affine map per neuron, and the batch into ``g ← a·g + b`` over the union
    of the rows' neurons (rows that leave a neuron alone have a = 1, b = 0).
    """

    index: torch.Tensor  # int64 [n]: union of the neurons any row edits in this layer
    scale: torch.Tensor  # [rows, n]
    shift: torch.Tensor  # [rows, n]


@dataclass
class RowwiseSteer:
    """Per-layer edits for a batch: row ``i`` is steered by ``specs[i]``."""

    specs: list[SteerSpec]
    edits: list[list[_RowwiseEdit]]

    @property
    def touched_layers(self) -> list[int]:
        return [layer for layer, edits in enumerate(self.edits) if edits]

    @property
    def positions(self) -> str:
        return self.specs[0].positions

    def module(self, sites: NeuronSites, layer: int) -> torch.nn.Module:
        return sites.activations[layer]

    def apply(self, output, edits: list, mask: torch.Tensor | None):
        return _apply_rowwise(output, edits, mask)


def compile_rowwise(specs: list[SteerSpec], neuron_set, sites: NeuronSites | None = None,
                    compiled: dict | None = None) -> RowwiseSteer:
    """Compile one spec per batch row; every spec must edit the same ``positions``.

    ``compiled`` (spec -> :class:`CompiledSteer`) keeps each spec's own compilation across calls: a
    caller that steers many batches (lm-eval's ``steer=doc``) compiles each spec once, since looking
    up a spec's means costs far more than combining a batch's rows."""
    if not specs:
        raise LapeEvalError("steer() got an empty list of specs: give one spec per batch row.")
    if len({spec.positions for spec in specs}) > 1:
        raise LapeEvalError(f"Specs steered in one batch must share `positions` ({', '.join(POSITIONS)}): "
                            "run batches with different positions separately.")
    cache = {} if compiled is None else compiled
    for spec in dict.fromkeys(specs):
        if spec not in cache:
            cache[spec] = compile_steer(spec, neuron_set, sites)
    compiled = [cache[spec] for spec in specs]
    edits: list[list[_RowwiseEdit]] = [[] for _ in range(neuron_set.num_layers)]
    for layer in range(neuron_set.num_layers):
        row_edits = [c.edits[layer] for c in compiled]
        if not any(row_edits):
            continue
        index = torch.unique(torch.cat([e.index for row in row_edits for e in row]))
        scale = torch.ones(len(specs), index.numel())
        shift = torch.zeros(len(specs), index.numel())
        for row, chain in enumerate(row_edits):
            for edit in chain:  # compose in the order the single-spec hook applies them
                at = torch.searchsorted(index, edit.index)
                values = edit.values.expand(edit.index.numel())
                if edit.op == "set":
                    scale[row, at], shift[row, at] = 0.0, values
                elif edit.op == "add":
                    shift[row, at] += values
                else:
                    scale[row, at] *= values
                    shift[row, at] *= values
        edits[layer].append(_RowwiseEdit(index, scale, shift))
    return RowwiseSteer(list(specs), edits)


# --- hooks ----------------------------------------------------------------------------------------


class _PositionTracker:
    """Knows, for the forward pass in progress, which token positions may be edited.

    A pre-hook on the decoder reads the attention mask and the KV-cache length: a pass with an empty
    cache holds the prompt, a pass with a non-empty cache holds generated tokens.
    """

    def __init__(self, positions: str):
        self.positions = positions
        self.mask: torch.Tensor | None = None  # [B, T] bool, None = edit every position
        self.skip = False  # nothing to edit in this pass
        self.given: torch.Tensor | None = None  # a caller's own mask for the passes in progress (see given_mask)
        self._masks: dict[torch.device, torch.Tensor] = {}  # this pass's mask on other devices (sharding)

    def pre_hook(self, module, args, kwargs):
        self._masks = {}
        if self.given is not None:
            self._use_given(_input_tensor(args, kwargs))
            return
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
        inputs = _input_tensor(args, kwargs)
        length = None if inputs is None else inputs.shape[1]
        is_prompt = past == 0
        self.skip = (self.positions == "prompt" and not is_prompt) or (self.positions == "generated" and is_prompt)
        attention = kwargs.get("attention_mask")
        # Only this pass's columns matter: a generated token is never padding, so a decoding pass of a
        # left-padded batch edits every row without a mask (one torch.where per layer less per token).
        current = attention[:, -length:] if torch.is_tensor(attention) and attention.dim() == 2 and length else None
        self.mask = None if current is None or bool(current.all()) else current.bool()
        if self.positions == "answer" and is_prompt and length is not None and length > 1:
            last = torch.zeros(inputs.shape[0], length, dtype=torch.bool, device=inputs.device)
            last[:, -1] = True
            self.mask = last if self.mask is None else self.mask & last

    def _use_given(self, inputs: torch.Tensor | None) -> None:
        if inputs is None or tuple(inputs.shape[:2]) != tuple(self.given.shape):
            shape = None if inputs is None else tuple(inputs.shape[:2])
            raise LapeEvalError(f"A position mask of shape {tuple(self.given.shape)} was given for a forward pass "
                                f"over inputs of shape {shape}: give one mask entry per row and token of the batch.")
        self.mask = self.given.to(inputs.device)
        self.skip = not bool(self.mask.any())

    def mask_on(self, device: torch.device) -> torch.Tensor | None:
        """The mask on ``device``: a model sharded over devices (``parallelize=True``) runs later
        layers elsewhere than the decoder's input."""
        mask = self.mask
        if mask is None or mask.device == device:
            return mask
        if device not in self._masks:
            self._masks[device] = mask.to(device)
        return self._masks[device]


def _input_tensor(args, kwargs) -> torch.Tensor | None:
    for candidate in (kwargs.get("input_ids"), args[0] if args else None, kwargs.get("inputs_embeds")):
        if torch.is_tensor(candidate):
            return candidate
    return None


def _apply_edits(g: torch.Tensor, edits: list[_Edit], mask: torch.Tensor | None) -> torch.Tensor:
    if torch.is_grad_enabled():
        g = g.clone()  # keep autograd's saved tensors intact when training with steering on
    for edit in edits:
        old = g[..., edit.index]
        if edit.op == "set":
            new = edit.values.expand_as(old)
        elif edit.op == "add":
            new = old + edit.values
        else:
            new = old * edit.values
        if mask is not None:
            new = torch.where(mask.unsqueeze(-1), new, old)
        g[..., edit.index] = new.to(g.dtype)
    return g


def _apply_rowwise(g: torch.Tensor, edits: list[_RowwiseEdit], mask: torch.Tensor | None) -> torch.Tensor:
    if torch.is_grad_enabled():
        g = g.clone()
    for edit in edits:
        if g.shape[0] != edit.scale.shape[0]:
            raise LapeEvalError(f"A batch of {g.shape[0]} rows was steered with {edit.scale.shape[0]} specs: "
                                "give steer() exactly one spec per row of every batch it runs.")
        old = g[..., edit.index]
        new = old * edit.scale.unsqueeze(1) + edit.shift.unsqueeze(1)
        if mask is not None:
            new = torch.where(mask.unsqueeze(-1), new, old)
        g[..., edit.index] = new.to(g.dtype)
    return g


class SteeringHandle:
    """What :func:`steer` yields: the compiled spec, and ``remove()`` (called on exit).

    ``compiled`` says what to hook and how: ``touched_layers``, ``edits[layer]``, ``positions``,
    ``module(sites, layer)`` (the hooked module) and ``apply(output, edits, mask)`` (the edited
    output). Neuron edits (:class:`CompiledSteer`, :class:`RowwiseSteer`) hook the activation module;
    residual directions (``lape_eval.steering.residual``) hook a decoder layer."""

    def __init__(self, model, compiled, sites: NeuronSites):
        self.compiled = compiled
        self._apply = compiled.apply
        self.tracker = _PositionTracker(compiled.positions)
        self._handles = []
        decoder = unwrap_model(model).base_model
        self._handles.append(decoder.register_forward_pre_hook(self.tracker.pre_hook, with_kwargs=True))
        for layer in compiled.touched_layers:
            module = compiled.module(sites, layer)
            self._handles.append(module.register_forward_hook(
                self._hook(compiled.edits[layer], _module_device(sites.layers[layer]))))

    def _hook(self, edits: list, device: torch.device):
        tracker, apply = self.tracker, self._apply
        # The edits' tensors, per device the layer has run on: normally one, placed here up front. A
        # layer whose weights are offloaded (accelerate's device_map with CPU/disk offload, as
        # parallelize=True does when the model does not fit) has its parameters on "meta" and runs on
        # whatever device its offload hook picks, so the device is taken from the activations.
        placed = {} if device.type == "meta" else {device: _edits_on(edits, device)}

        def edit(module, args, output):
            if tracker.skip:
                return None
            local = placed.get(output.device)
            if local is None:
                local = placed[output.device] = _edits_on(edits, output.device)
            return apply(output, local, tracker.mask_on(output.device))

        return edit

    @contextlib.contextmanager
    def given_mask(self, mask: torch.Tensor):
        """Edit exactly the positions where ``mask`` ([rows, tokens], bool) is true in the forward
        passes inside the block, instead of the positions the spec's ``positions`` would derive.

        For callers that know more than the attention mask and the KV cache tell: lm-eval scores a
        continuation in one right-padded pass without a cache, and only the caller knows where each
        row's context ends (see :mod:`lape_eval.evaluation.lm`)."""
        self.tracker.given = mask.bool()
        try:
            yield self
        finally:
            self.tracker.given = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _edits_on(edits: list, device: torch.device) -> list:
    """The edits (dataclasses) with every tensor field moved to ``device``."""
    return [replace(e, **{f.name: getattr(e, f.name).to(device) for f in fields(e)
                          if torch.is_tensor(getattr(e, f.name))}) for e in edits]


def _module_device(module: torch.nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


@contextlib.contextmanager
def steer(model, neuron_set, spec: SteerSpec | str | list, **spec_args):
    """Apply ``spec`` (a :class:`SteerSpec` or a string like ``"-en +de"``) to ``model`` inside the block.

    >>> with steer(model, NeuronSet.load("gemma.safetensors"), "-en +de", alpha=1.5):
    ...     model.generate(...)

    A list of specs steers row ``i`` of every batch with ``spec[i]`` (batches must then have exactly
    that many rows): ``steer(model, ns, ["-en +de", "-en +fr", "none"])``.
    """
    sites = resolve(model)
    if isinstance(spec, (list, tuple)):
        specs = [s if isinstance(s, SteerSpec) else parse_steer(s, **spec_args) for s in spec]
        compiled = compile_rowwise(specs, neuron_set, sites)
    else:
        if isinstance(spec, str) or spec is None:
            spec = parse_steer(spec, **spec_args)
        compiled = compile_steer(spec, neuron_set, sites)
    handle = SteeringHandle(model, compiled, sites)
    try:
        yield handle
    finally:
        handle.remove()
