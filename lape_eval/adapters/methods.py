"""What a fine-tuning run trains and how it saves it (``lape-eval finetune --method``, method spec §8).

Everything of the model but the method's part is frozen:

* ``subnetwork`` — for every layer, the rows of gate and up and the columns of down that belong to
  the language's neurons in a neuron set (3 · d_model weights per neuron; fused gate_up and GPT-2's
  plain MLP handled). Trained as small delta tensors added by forward hooks
  (:class:`lape_eval.adapters.trainable_delta.DeltaModule`): no weight matrix is ever cloned, the
  model's own weights stay bit-identical, and the result is a compact neuron delta file;
* ``random`` — the same on a random neuron set with as many neurons *per layer* as the language's
  (layer-matched, seeded; the reference code's control sampled over all layers at once);
* ``lora`` — PEFT LoRA on the MLP projections (the reference defaults: r 32, alpha 64, dropout 0.1),
  saved as a standard PEFT adapter folder;
* ``mlp`` — every MLP weight, the larger baseline, saved as a full model folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from lape_eval.adapters.delta import DELTA_FILE, weights_per_neuron
from lape_eval.adapters.settings import FinetuneSettings
from lape_eval.adapters.trainable_delta import DeltaModule
from lape_eval.arch import NeuronSites, unwrap_model
from lape_eval.errors import LapeEvalError
from lape_eval.languages import get_language

log = logging.getLogger(__name__)


class Method:
    """The trainable part of one run. ``model`` is what the loop calls (a PEFT wrapper for LoRA)."""

    name: str
    adapter: str  # what best/ holds: "neuron_delta", "peft" or "model"

    def __init__(self, model, sites: NeuronSites):
        self.model = model
        self.sites = sites
        for parameter in model.parameters():
            parameter.requires_grad_(False)

    def named_trainable(self) -> dict[str, nn.Parameter]:
        raise NotImplementedError

    @property
    def parameters(self) -> list[nn.Parameter]:
        return list(self.named_trainable().values())

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters)

    @property
    def neuron_count(self) -> int | None:
        """Neurons trained (the neuron methods only)."""
        return None

    def optimizer_weight_decay(self, weight_decay: float) -> float:
        """Weight decay given to AdamW itself (the subnetwork applies its own, see ``decay``)."""
        return weight_decay

    def decay(self, lr: float, weight_decay: float) -> None:
        """Decoupled weight decay applied before the AdamW step (only for methods that do it themselves)."""

    def save(self, folder: Path, tokenizer, info: dict) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Called when training is done (the subnetwork removes its hooks)."""

    def describe_count(self) -> str:
        return f"{self.parameter_count:,}"


class SubnetworkMethod(Method):
    adapter = "neuron_delta"

    def __init__(self, model, sites: NeuronSites, indices: list[torch.Tensor], name: str):
        super().__init__(model, sites)
        self.name = name
        self.delta = DeltaModule(model, indices).attach()

    def named_trainable(self):
        return dict(self.delta.named_parameters())

    @property
    def neuron_count(self) -> int:
        return self.delta.neuron_count

    def optimizer_weight_decay(self, weight_decay: float) -> float:
        return 0.0

    @torch.no_grad()
    def decay(self, lr: float, weight_decay: float) -> None:
        # AdamW's decoupled decay of the trained weights W = W0 + Δ: W ← W − lr·wd·W, i.e.
        # Δ ← Δ − lr·wd·(W0 + Δ). The frozen W0 entries are gathered per tensor (no full-matrix copy).
        if weight_decay == 0:
            return
        for layer, role, param in self.delta.pairs():
            param.sub_((self.delta.base_entries(layer, role) + param) * (lr * weight_decay))

    def save(self, folder: Path, tokenizer, info: dict) -> None:
        self.delta.to_delta(info).save(folder / DELTA_FILE)

    def finish(self) -> None:
        self.delta.detach()  # the model computes as before again (its weights were never touched)

    def describe_count(self) -> str:
        per = weights_per_neuron(self.delta.kind, self.delta.hidden)
        return (f"{per // self.delta.hidden} × d_model {self.delta.hidden} × {self.delta.neuron_count} neurons = "
                f"{self.parameter_count:,}")


class LoraMethod(Method):
    name = "lora"
    adapter = "peft"

    def __init__(self, model, sites: NeuronSites, rank: int, alpha: float, dropout: float):
        from peft import LoraConfig, get_peft_model

        super().__init__(model, sites)
        targets = mlp_module_names(sites)
        conv1d = sites.family.mlp_kind == "plain" and not isinstance(sites.projection(0, "fc"), nn.Linear)
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                            fan_in_fan_out=conv1d, task_type="CAUSAL_LM")
        self.model = get_peft_model(model, config)

    def named_trainable(self):
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def save(self, folder: Path, tokenizer, info: dict) -> None:
        self.model.save_pretrained(str(folder))


class MlpMethod(Method):
    name = "mlp"
    adapter = "model"

    def __init__(self, model, sites: NeuronSites):
        super().__init__(model, sites)
        self._named = {}
        for layer in range(sites.num_layers):
            for role in sites.family.projections:
                module = sites.projection(layer, role)
                for name, parameter in module.named_parameters():
                    parameter.requires_grad_(True)
                    self._named[f"layers.{layer}.{role}.{name}"] = parameter

    def named_trainable(self):
        return dict(self._named)

    def save(self, folder: Path, tokenizer, info: dict) -> None:
        unwrap_model(self.model).save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))


def mlp_module_names(sites: NeuronSites) -> list[str]:
    """Full module names (relative to the transformers model) of every layer's MLP projections."""
    return [f"{sites.layer_path}.{layer}.{path}" for layer in range(sites.num_layers)
            for path in sites.family.projections.values()]


def random_layer_matched(indices: list[torch.Tensor], width: int, seed: int) -> list[torch.Tensor]:
    """Per layer, as many neurons as ``indices`` has there, drawn uniformly without replacement (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for index in indices:
        picked = torch.randperm(width, generator=generator)[: index.numel()]
        out.append(torch.sort(picked).values.to(torch.int64))
    return out


# --------------------------------------------------------------------------------------------------
# The neuron set a run trains


def check_language_in_set(neuron_set, language: str, source: str | None = None) -> None:
    """The set has neurons for ``language`` (needs no model: run before one is loaded)."""
    name = f" {source}" if source else ""
    if language not in neuron_set.languages:
        raise LapeEvalError(
            f"The neuron set{name} has no neurons for '{language}' ({get_language(language).name}): it covers "
            f"{', '.join(neuron_set.languages)}. Use --language with one of those, or a set identified with "
            f"{language}."
        )
    if neuron_set.neuron_count(language) == 0:
        raise LapeEvalError(f"The neuron set{name} has no neuron for '{language}' at all: there is nothing to "
                            "train. Use a higher top rate.")


def check_neuron_set_fits(neuron_set, settings: FinetuneSettings, sites: NeuronSites, model_name: str) -> None:
    """The set (if any) is for this model and, for the neuron methods, has the language's neurons."""
    if neuron_set is None:
        return
    if settings.trains_neurons:
        check_language_in_set(neuron_set, settings.language, settings.neurons)
    neuron_set.check_model(sites)
    set_model = ((neuron_set.info or {}).get("model") or {}).get("id")
    if set_model and set_model != model_name:
        log.warning("The neuron set was identified on %s; fine-tuning %s.", set_model, model_name)


def build_method(model, sites: NeuronSites, settings: FinetuneSettings, neuron_set) -> Method:
    if settings.trains_neurons:
        check_language_in_set(neuron_set, settings.language, settings.neurons)
        neuron_set.check_model(sites)
        indices = neuron_set.indices(settings.language)
        if settings.method == "random":
            indices = random_layer_matched(indices, sites.width, settings.random_set_seed)
        return SubnetworkMethod(model, sites, indices, settings.method)
    if settings.method == "lora":
        return LoraMethod(model, sites, settings.lora_rank, settings.lora_alpha, settings.lora_dropout)
    return MlpMethod(model, sites)
