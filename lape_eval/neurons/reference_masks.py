"""Interchange with the reference code's activation masks: ``torch.save``d ``list[language][layer]``
index tensors, read with ``torch.load(..., weights_only=True)`` only, so a crafted pickle cannot run
code (the user gives the language order, which the format does not store).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from lape_eval import __version__
from lape_eval.arch import ACTIVATION_POINT
from lape_eval.files import atomic_path
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.identify import mean_activations_at, statistics_info_of
from lape_eval.neurons.neuron_set import NeuronSet, flatten_layers, language_list, union_of


def export_reference_masks(neuron_set: NeuronSet, path: Path | str) -> Path:
    """Write the reference format: ``torch.save`` of ``list[language][layer]`` int64 index tensors."""
    # clone: split() returns views of one storage, and torch.save would store all of it per chunk.
    masks = [[chunk.clone() for chunk in neuron_set.indices(lang)] for lang in neuron_set.languages]
    with atomic_path(Path(path)) as temporary:
        torch.save(masks, temporary)
    return Path(path)


def import_reference_masks(
    path: Path | str, languages, *, width: int | None = None, statistics=None,
    model: str | None = None, top_rate: float | None = None,
) -> NeuronSet:
    """Read a reference activation mask safely; the user gives its language order.

    The MLP width is not in the reference format: it comes from ``statistics`` (a StatisticsTable,
    which also fills the means) or ``width``. Without statistics the set has no means.
    """
    path = Path(path)
    languages = language_list(languages)
    masks = _load_reference_list(path)
    if len(masks) != len(languages):
        raise LapeEvalError(
            f"{path} holds masks for {len(masks)} languages, but {len(languages)} language codes were given "
            f"({', '.join(languages)}); give the codes in the file's language order."
        )
    width, num_layers = _reference_shape(path, masks, width, statistics)
    flat = {}
    for lang, per_layer in zip(languages, masks):
        for layer, idx in enumerate(per_layer):
            outside = idx[(idx < 0) | (idx >= width)]
            if outside.numel():
                raise LapeEvalError(f"{path}: language '{lang}', layer {layer} has neuron index {int(outside[0])}, "
                                    f"outside 0..{width - 1} for width {width}.")
            if torch.unique(idx).numel() != idx.numel():
                raise LapeEvalError(f"{path}: language '{lang}', layer {layer} lists a neuron more than once.")
        flat[lang] = torch.sort(flatten_layers(per_layer, width)).values
    selected = union_of(flat.values())
    info = {
        "model": {"id": model, "revision": None, "model_type": None, "activation_point": ACTIVATION_POINT},
        "selection": {"method": "LAPE", "top_rate": top_rate, "filter_quantile": None,
                      "activation_bar_quantile": None, "filter_threshold": None, "activation_bar": None},
        "statistics": None,
        "provenance": {"tool_version": __version__,
                       "imported_from": {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                         "format": "reference activation mask"}},
    }
    means = None
    if statistics is not None:
        means = mean_activations_at(statistics, languages, selected)
        info["model"], info["statistics"] = statistics_info_of(statistics, languages)
        info["model"]["id"] = model or info["model"]["id"]
    return NeuronSet(languages, num_layers, width, flat, selected, means, info)


def _load_reference_list(path: Path) -> list[list[torch.Tensor]]:
    """``torch.load(weights_only=True)``: a pickle that names any non-tensor class is refused unrun."""
    if not path.is_file():
        raise LapeEvalError(f"The mask file {path} does not exist.")
    try:
        masks = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means "not a plain mask file"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LapeEvalError(
            f"{path} was refused: it is not a plain list of index tensors that can be loaded safely "
            f"(torch.load with weights_only=True: {first_line[:300]}). No code from it was run."
        ) from None
    shape_error = LapeEvalError(
        f"{path} is not in the reference mask format: expected a list over languages of lists over layers of "
        f"1-D integer tensors, got {_describe(masks)}."
    )
    if not isinstance(masks, list) or not masks or not all(isinstance(per, list) for per in masks):
        raise shape_error
    for per_layer in masks:
        for idx in per_layer:
            if (not isinstance(idx, torch.Tensor) or idx.dim() != 1 or idx.dtype.is_floating_point
                    or idx.dtype.is_complex or idx.dtype == torch.bool):
                raise shape_error
    layer_counts = sorted({len(per) for per in masks})
    if len(layer_counts) != 1 or layer_counts[0] == 0:
        raise LapeEvalError(f"{path}: the languages have different or zero numbers of layers ({layer_counts}).")
    return [[idx.to(torch.int64) for idx in per] for per in masks]


def _reference_shape(path: Path, masks, width: int | None, statistics) -> tuple[int, int]:
    num_layers = len(masks[0])
    if statistics is not None:
        identity = statistics.identity
        if width is not None and width != identity.width:
            raise LapeEvalError(f"The given width {width} differs from the statistics' width {identity.width}.")
        if num_layers != identity.num_layers:
            raise LapeEvalError(
                f"{path} has masks for {num_layers} layers; the statistics are for {identity.num_layers} layers "
                f"× {identity.width} neurons ({identity.model})."
            )
        return identity.width, num_layers
    if width is None:
        raise LapeEvalError(
            "The reference mask format does not record the MLP width (intermediate size): give the width, or "
            "statistics of the model (which also provide the mean activations steering needs)."
        )
    if width < 1:
        raise LapeEvalError(f"The width must be positive (got {width}).")
    return width, num_layers


def _describe(value) -> str:
    if isinstance(value, list):
        inner = {type(v).__name__ for v in value}
        return f"a list of {', '.join(sorted(inner)) or 'nothing'}"
    return f"a {type(value).__name__}"
