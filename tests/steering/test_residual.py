"""Residual DiffMean steering (method=residual_diffmean): the edit equals a forward pass with the vector
added by hand at the chosen layer's output; row-wise batches, strengths, and bad input."""

from __future__ import annotations

import pytest
import torch

from float_bounds import FORWARD, assert_close_at_scale
from handmade_sets import make_directions, make_set
from lape_eval.errors import LapeEvalError
from lape_eval.steering.hooks import compile_steer
from lape_eval.steering.residual import steer_residual
from lape_eval.steering.spec import parse_steer
from tiny_models import build_model

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

IDS = torch.tensor([[1, 5, 17, 42, 8, 99], [1, 250, 251, 252, 9, 10]])


def _by_hand(model, vectors: dict[int, torch.Tensor], ids=IDS):
    """Logits with ``vectors[row]`` added to the hooked layer's output of that row, by a plain hook."""
    (layer, rows), = vectors.items()

    def add(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden + rows.unsqueeze(1)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = model.model.layers[layer].register_forward_hook(add)
    try:
        with torch.no_grad():
            return model(input_ids=ids).logits
    finally:
        handle.remove()


def _steered(model, directions, spec, layer, ids=IDS, **args):
    with steer_residual(model, directions, spec, layer=layer, **args), torch.no_grad():
        return model(input_ids=ids).logits


def _unit(vector: torch.Tensor) -> torch.Tensor:
    return vector / vector.pow(2).sum().sqrt()


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("spec, args, expected", [
    # expected(means, layer) -> the float64 vector, written out from the table
    ("-en +de", {"alpha": 4.0}, lambda m, l: 4.0 * _unit(m[1, l] - m[0, l])),
    ("-fr +en:2.5", {}, lambda m, l: 2.5 * _unit(m[0, l] - m[2, l])),
    ("+de", {"alpha": 3.0}, lambda m, l: 3.0 * _unit(m[1, l] - (m[0, l] + m[2, l]) / 2)),
    ("-en +de", {"alpha": 1.0, "language_alphas": "de:6 fr:0.5"}, lambda m, l: 6.0 * _unit(m[1, l] - m[0, l])),
])
def test_the_edit_equals_a_forward_with_the_vector_added_at_the_layer(layer, spec, args, expected):
    model = build_model("llama")
    directions = make_directions()
    vector = expected(directions.means_table, layer).float()
    by_hand = _by_hand(model, {layer: vector.expand(2, -1)})
    steered = _steered(model, directions, spec, layer, **args)
    # The same additions in the same order; the vector may differ in its last float32 bit (normalised
    # here in another order), which moves the logits by far less than FORWARD of their scale.
    assert_close_at_scale(steered, by_hand, FORWARD)
    with torch.no_grad():
        plain = model(input_ids=IDS).logits
    assert (steered - plain).abs().max() > 100 * FORWARD * plain.abs().max()


def test_each_row_of_a_batch_takes_its_own_spec():
    model = build_model("llama")
    directions = make_directions()
    specs = ["-en +de", "none"]
    batch = _steered(model, directions, specs, 1, alpha=5.0)
    for row, spec in enumerate(specs):
        alone = _steered(model, directions, spec, 1, ids=IDS[row : row + 1], alpha=5.0)
        assert_close_at_scale(batch[row : row + 1], alone, FORWARD, what=spec)
    m = directions.means_table
    assert_close_at_scale(batch, _by_hand(model, {1: torch.stack([5.0 * _unit(m[1, 1] - m[0, 1]).float(),
                                                                   torch.zeros(32)])}), FORWARD)


def test_equal_source_and_target_steer_nothing():
    model = build_model("llama")
    with torch.no_grad():
        plain = model(input_ids=IDS).logits
    assert torch.equal(_steered(model, make_directions(), "-de +de", 0, alpha=5.0), plain)


def test_hooks_are_removed_on_exit():
    model = build_model("llama")
    with torch.no_grad():
        before = model(input_ids=IDS).logits
    _steered(model, make_directions(), "-en +de", 0, alpha=5.0)
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, before)


@pytest.mark.parametrize("spec, layer, message", [
    ("-en +zh", 0, "no language 'zh'"),
    ("-en +de", 2, "Layer 2 is out of range.*0 to 1"),
    ("-en +de", -1, "Layer -1 is out of range"),
    ("+de +fr", 0, "one '\\+' term"),
    ("-en", 0, "one '\\+' term"),
    ("-en -fr +de", 0, "at most one '-' term"),
    ("-en:0.5 +de", 0, "takes no strength"),
])
def test_bad_specs_and_layers_are_refused(spec, layer, message):
    with pytest.raises(LapeEvalError, match=message):
        _steered(build_model("llama"), make_directions(), spec, layer)


def test_an_artifact_of_another_model_is_refused():
    with pytest.raises(LapeEvalError, match="2 layers × hidden size 32 .*model has 3 layers"):
        _steered(build_model("gemma3"), make_directions(), "-en +de", 0)
    with pytest.raises(LapeEvalError, match="hidden size 64"):
        _steered(build_model("llama"), make_directions(hidden_size=64), "-en +de", 0)


def test_a_lone_language_has_no_rest_to_subtract():
    with pytest.raises(LapeEvalError, match="holds only 'de'"):
        _steered(build_model("llama"), make_directions(languages=["de"]), "+de", 0)


def test_neuron_sets_do_not_take_the_residual_method():
    with pytest.raises(LapeEvalError, match="not with a neuron set"):
        compile_steer(parse_steer("-en +de", method="residual_diffmean"), make_set(96))
