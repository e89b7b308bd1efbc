"""A small hand-made neuron set for steering tests: known indices, random means."""

from __future__ import annotations

import torch

from lape_eval.neurons.neuron_set import NeuronSet

LANGS = ["en", "de", "fr"]
# Per language and layer, hand-picked neuron indices (tiny models have 2 layers); neuron 7 of layer 0
# belongs to both en and de, so "-en +de" must set it to c and then add α·μ_de.
PICKS = {"en": [[7, 20, 21], [3]], "de": [[7, 40], [50, 51, 52]], "fr": [[], [3, 90]]}


def picks(lang: str, layer: int) -> list[int]:
    return PICKS[lang][layer] if layer < len(PICKS[lang]) else []


def make_set(width: int, num_layers: int = 2, seed: int = 0) -> NeuronSet:
    flat = {lang: torch.tensor([layer * width + j for layer in range(num_layers) for j in picks(lang, layer)],
                               dtype=torch.int64) for lang in LANGS}
    selected = torch.unique(torch.cat(list(flat.values())))
    generator = torch.Generator().manual_seed(seed)
    means = torch.rand(len(LANGS), selected.numel(), generator=generator) * 2 - 0.5
    return NeuronSet(LANGS, num_layers, width, flat, selected, means, {"model": {"id": "tiny"}})


def mu(ns: NeuronSet, of: str, layer: int, neuron: int) -> float:
    """μ of language ``of`` at one neuron, read straight from the table."""
    position = int((ns.selected == layer * ns.width + neuron).nonzero())
    return float(ns.means_table[LANGS.index(of), position])




def make_directions(hidden_size: int = 32, num_layers: int = 2, seed: int = 0, languages=LANGS):
    """A hand-made direction artifact: random float64 residual means [languages, layers, hidden]."""
    from lape_eval.neurons.directions import ResidualDirections

    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(len(languages), num_layers, hidden_size, generator=generator, dtype=torch.float64)
    return ResidualDirections(list(languages), means, {"model": {"id": "tiny"}})
