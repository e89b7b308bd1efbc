"""What each fine-tuning method trains: exactly the selected rows and columns (subnetwork), a
layer-matched random set (random), and the subnetwork's delta scheme against training the rows
themselves."""

from __future__ import annotations

import json

import pytest
import torch
from adapter_runs import D_MODEL, WIDTH, invoke, load, selected_mask, train
from float_bounds import FORWARD, TRAINED, assert_close_at_scale
from handmade_sets import make_set

import lape_eval.adapters.methods as methods_module
from lape_eval.adapters.delta import DELTA_FILE, NeuronDelta, read_entries
from lape_eval.adapters.methods import random_layer_matched
from lape_eval.adapters.settings import FinetuneSettings
from lape_eval.adapters.trainable_delta import DeltaModule
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.corpus import make_batch

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics


@pytest.mark.parametrize("arch", ["llama", "phi3", "gpt2"])
def test_subnetwork_changes_exactly_the_selected_rows_and_columns(arch, tiny_model_dir, corpus, neurons, tmp_path):
    from lape_eval.neurons.neuron_set import NeuronSet

    model_dir = tiny_model_dir(arch)
    original = {k: v.clone() for k, v in load(model_dir).model.state_dict().items()}
    loaded, result = train(model_dir, tmp_path / "run", corpus, neurons, max_steps=6, eval_every=3)
    # The live model's own weights are never written: training goes through the delta tensors.
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    delta = NeuronDelta.load(result.adapter / DELTA_FILE)
    indices = NeuronSet.load(neurons).indices("de")
    assert all(torch.equal(a, b) for a, b in zip(delta.indices, indices))
    merged = load(model_dir).model
    delta.apply(merged)
    changed_somewhere = 0
    for name, tensor in merged.state_dict().items():
        mask = selected_mask(name, tensor.shape, arch, indices)
        assert torch.equal(tensor[~mask], original[name][~mask]), f"{name} changed outside the selected entries"
        changed_somewhere += int((tensor[mask] != original[name][mask]).sum())
    per_neuron = (3 if arch != "gpt2" else 2) * D_MODEL
    assert changed_somewhere > 0.9 * per_neuron * sum(i.numel() for i in indices)
    # And the merged model computes what the hooked model trained.
    batch = make_batch([[5, 6, 7, 8, 9, 10]], bos_id=None, pad_id=0)
    with torch.no_grad():
        live = load(model_dir).model
        hooks = DeltaModule(live, delta.indices, init=delta).attach()
        expected = live(input_ids=batch.input_ids).logits
        hooks.detach()
        # W₀ + Δ merged against W₀·x + Δ·x added by the hooks: one forward pass in another summation
        # order, FORWARD of the logits' scale (measured ≤ 3.4e-7). The delta itself moves them by ≥ 9%.
        assert_close_at_scale(merged(input_ids=batch.input_ids).logits, expected, FORWARD)
        fresh = load(model_dir).model
        assert torch.equal(live(input_ids=batch.input_ids).logits, fresh(input_ids=batch.input_ids).logits)


@pytest.mark.parametrize("arch, per_neuron", [("llama", 3), ("phi3", 3), ("gpt2", 2)])
def test_trainable_parameter_count_is_weights_per_neuron_times_d_model_and_printed(arch, per_neuron, tiny_model_dir,
                                                                                    corpus, neurons, tmp_path):
    n = make_set(WIDTH).neuron_count("de")
    out = invoke("finetune", "--model", tiny_model_dir(arch), "--language", "de", "--neurons", neurons, "--corpus",
                 corpus, "--seq-len", "24", "--max-steps", "1", "--no-progress", "--out", tmp_path / "run")
    assert out.exit_code == 0, out.output
    expected = per_neuron * D_MODEL * n
    assert f"{per_neuron} × d_model {D_MODEL} × {n} neurons = {expected:,}" in out.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trainable_parameters"] == expected and summary["neurons"] == n
    assert NeuronDelta.load(tmp_path / "run" / "best").parameter_count == expected


def test_random_baseline_is_layer_matched_and_seeded():
    indices = [torch.tensor([1, 5, 9]), torch.tensor([], dtype=torch.int64), torch.tensor([0, 2])]
    first = random_layer_matched(indices, 50, seed=1)
    assert [len(i) for i in first] == [3, 0, 2]
    assert all(torch.equal(a, b) for a, b in zip(first, random_layer_matched(indices, 50, seed=1)))
    assert not all(torch.equal(a, b) for a, b in zip(first, random_layer_matched(indices, 50, seed=2)))
    for index in first:
        assert torch.equal(index, torch.unique(index)) and (index < 50).all()


def test_random_method_trains_a_layer_matched_set(tiny_model_dir, corpus, neurons, tmp_path):
    from lape_eval.neurons.neuron_set import NeuronSet

    _, result = train(tiny_model_dir("llama"), tmp_path / "run", corpus, neurons, method="random", max_steps=2,
                      random_seed=3)
    delta = NeuronDelta.load(result.adapter)
    language = NeuronSet.load(neurons).indices("de")
    assert [i.numel() for i in delta.indices] == [i.numel() for i in language]
    assert any(not torch.equal(a, b) for a, b in zip(delta.indices, language))
    assert delta.info["random_seed"] == 3 and delta.info["method"] == "random"


def test_a_language_without_neurons_in_the_set_is_refused_without_a_model():
    from lape_eval.adapters.methods import check_language_in_set
    from lape_eval.neurons.neuron_set import NeuronSet

    full = make_set(WIDTH)
    check_language_in_set(full, "de")  # hand-made: de has 5 neurons
    with pytest.raises(LapeEvalError, match=r"has no neurons for 'ja' \(Japanese\): it covers en, de, fr"):
        check_language_in_set(full, "ja")
    empty = NeuronSet(["en", "de"], 2, WIDTH, {"en": torch.tensor([3]), "de": torch.zeros(0, dtype=torch.int64)},
                      torch.tensor([3]), torch.zeros(2, 1), {})
    with pytest.raises(LapeEvalError, match="no neuron for 'de' at all"):
        check_language_in_set(empty, "de")


class RowsReference(methods_module.Method):
    """The reference code's scheme: trainable copies of the rows/columns scattered into clones of the
    full matrices at every forward (torch parametrizations), plain AdamW on the copies."""

    name = "reference"

    def __init__(self, model, sites, indices):
        from torch.nn.utils import parametrize

        super().__init__(model, sites)
        self._named = {}
        for layer, index in enumerate(indices):
            if not index.numel():
                continue
            for role, axis in (("gate", 0), ("up", 0), ("down", 1)):
                module = sites.projection(layer, role)
                rows = module.weight.detach().index_select(axis, index).clone()
                scatter = _Scatter(index, axis, rows)
                parametrize.register_parametrization(module, "weight", scatter)
                self._named[f"{layer}.{role}"] = scatter.rows

    def named_trainable(self):
        return dict(self._named)


class _Scatter(torch.nn.Module):
    def __init__(self, index, axis, rows):
        super().__init__()
        self.index, self.axis = index, axis
        self.rows = torch.nn.Parameter(rows)

    def forward(self, weight):
        return weight.index_copy(self.axis, self.index, self.rows)


def test_subnetwork_training_equals_training_the_rows_themselves(tiny_model_dir):
    """Same data, AdamW, weight decay and clipping: the delta scheme ends where the reference scheme does."""
    from lape_eval.adapters.methods import SubnetworkMethod
    from lape_eval.adapters.step import train_step
    from lape_eval.arch import resolve
    from lape_eval.distributed import Distributed

    indices = [torch.tensor([3, 7, 40]), torch.tensor([1, 95])]
    s = FinetuneSettings(method="subnetwork", language="de", lr=3e-2, weight_decay=0.5, clip=0.05, batch_size=2)
    groups = [[[5 + i + j for i in range(10)], [30 + j, 31, 32, 33, 34]] for j in range(4)]
    finals = []
    for scheme in ("delta", "reference"):
        model = load(tiny_model_dir("llama")).model
        sites = resolve(model)
        method = (SubnetworkMethod(model, sites, indices, "subnetwork") if scheme == "delta"
                  else RowsReference(model, sites, indices))
        optimizer = torch.optim.AdamW(method.parameters, lr=s.lr,
                                      weight_decay=method.optimizer_weight_decay(s.weight_decay))
        for group in groups:
            train_step(method, optimizer, group, s, 1, 0, torch.device("cpu"), Distributed())
        if scheme == "delta":
            weights = {f"{layer}.{role}": read_entries(sites, layer, role, indices[layer])
                       + method.delta.delta(layer, role) for layer in (0, 1) for role in ("gate", "up", "down")}
        else:
            weights = {name: p.detach() for name, p in method.named_trainable().items()}
        finals.append(weights)
    start = load(tiny_model_dir("llama")).model
    # The rows W₀ + Δ against the rows themselves, after 4 AdamW steps whose gradients came through
    # another summation order (x·W₀ᵀ + x·Δᵀ against x·Wᵀ): TRAINED of the weights' scale (measured
    # ≤ 7.9e-7 of it). Decay on Δ instead of W₀ + Δ moves them by lr·wd·|W| ≈ 1e-2 per step.
    for name, value in finals[1].items():
        assert_close_at_scale(finals[0][name], value, TRAINED, what=name)
        layer, role = name.split(".")
        assert not torch.allclose(value, read_entries(resolve(start), int(layer), role, indices[int(layer)]))
