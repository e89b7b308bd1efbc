"""``lape-eval merge``: a neuron delta (or a PEFT LoRA adapter) merged into its base model and saved as a
full Hugging Face model folder, or a neuron delta written as a standard PEFT LoRA adapter
(:func:`delta_to_peft`: per-module rank n, ``ΔW = B A`` with a one-hot B for rows and a one-hot A for
columns, scaling 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lape_eval import __version__
from lape_eval.adapters.adapter_folder import write_adapter_folder
from lape_eval.adapters.delta import NeuronDelta
from lape_eval.adapters.settings import ModelSource
from lape_eval.arch import resolve, unwrap_model
from lape_eval.errors import LapeEvalError
from lape_eval.files import read_json

MERGE_FORMATS = ("hf", "peft")


@dataclass
class MergeResult:
    out_dir: Path
    adapter: Path  # what was merged or converted
    format: str  # "hf" (a full model folder) or "peft" (a PEFT LoRA adapter folder)
    delta: NeuronDelta | None  # the neuron delta merged or converted; None where a PEFT adapter was merged


@dataclass
class MergeInput:
    """A checked ``--delta``: a neuron delta (``delta``) or a PEFT adapter folder (``delta`` None)."""

    path: Path
    delta: NeuronDelta | None

    @property
    def is_peft(self) -> bool:
        return self.delta is None


def check_merge_inputs(adapter: Path | str, out_dir: Path | str, fmt: str) -> MergeInput:
    """Everything that can be checked without the model: the output folder is new or empty, the adapter
    is a readable neuron delta or PEFT adapter folder, and the format fits it. Writes nothing."""
    adapter, out_dir = Path(adapter), Path(out_dir)
    if fmt not in MERGE_FORMATS:
        raise LapeEvalError(f"Unknown merge format {fmt!r}: choose one of {', '.join(MERGE_FORMATS)}.")
    if out_dir.exists() and not out_dir.is_dir():
        raise LapeEvalError(f"The output {out_dir} is a file, not a folder: choose a new folder with --out.")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise LapeEvalError(f"The output folder {out_dir} is not empty: choose a new folder with --out.")
    if not adapter.exists():
        raise LapeEvalError(f"The adapter {adapter} does not exist: give a neuron delta file (or a finetune run's "
                            "best/ folder), or a PEFT adapter folder.")
    if adapter.is_dir() and (adapter / "adapter_config.json").exists():
        read_json(adapter / "adapter_config.json", "PEFT adapter configuration")  # damaged: say so now
        if fmt == "peft":
            raise LapeEvalError(f"{adapter} already is a PEFT adapter folder.")
        return MergeInput(adapter, None)
    return MergeInput(adapter, NeuronDelta.load(adapter))


def merge_adapter(source: ModelSource, adapter: Path | str, out_dir: Path | str, fmt: str = "hf") -> MergeResult:
    """Apply a neuron delta (or a PEFT adapter folder) to the model and save a full model (``fmt`` "hf"),
    or write the neuron delta as a PEFT adapter (``fmt`` "peft"). The model is loaded on the CPU unless
    ``source.device`` says otherwise, after every input has been checked."""
    checked = check_merge_inputs(adapter, out_dir, fmt)
    out_dir = Path(out_dir)
    loaded = source.load(source.device or "cpu")
    provenance = {"kind": "lape-eval merge", "base_model": source.name, "revision": source.revision,
                  "adapter": str(checked.path), "tool_version": __version__}
    delta = checked.delta
    if delta is not None:
        delta.check_model(resolve(loaded.model))
        provenance["neuron_delta"] = delta.describe()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "peft":
        write_adapter_folder(out_dir, lambda folder: delta_to_peft(delta, loaded.model, folder, source.name),
                             provenance)
        return MergeResult(out_dir, checked.path, fmt, delta)
    model = loaded.model
    if checked.is_peft:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(checked.path)).merge_and_unload()
    else:
        delta.apply(model)

    def write(folder: Path) -> None:
        model.save_pretrained(str(folder))
        loaded.tokenizer.save_pretrained(str(folder))

    write_adapter_folder(out_dir, write, provenance)
    return MergeResult(out_dir, checked.path, fmt, delta)


# --------------------------------------------------------------------------------------------------
# A neuron delta as a standard PEFT LoRA adapter


def delta_to_peft(delta: NeuronDelta, model, out_dir: Path | str, base_model_name: str | None = None) -> Path:
    """Write ``delta`` as a PEFT LoRA adapter folder for ``model`` (which is wrapped in the process).

    Rows: ``ΔW[idx] = Δ`` is ``B A`` with A = Δ ([n, d]) and B the [I, n] one-hot of idx; columns:
    ``ΔW[:, idx] = Δ`` is B = Δ ([d, n]) and A the [n, I] one-hot. Each module gets rank n and
    alpha n (scaling 1) through ``rank_pattern`` / ``alpha_pattern``; dropout 0.
    """
    from peft import LoraConfig, get_peft_model

    hf_model = unwrap_model(model)
    sites = resolve(hf_model)
    delta.check_model(sites)
    projections = sites.family.projections
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for layer, index in enumerate(delta.indices):
        if not index.numel():
            continue
        prefix = f"{sites.layer_path}.{layer}."
        w = delta.weights[layer]
        if delta.mlp_kind == "gated":
            for role in ("gate", "up"):
                factors[prefix + projections[role]] = (w[role], _one_hot(delta.width, index))
            factors[prefix + projections["down"]] = (_one_hot(delta.width, index).T, w["down"])
        elif delta.mlp_kind == "fused":
            rows = torch.cat([index, index + delta.width])
            factors[prefix + projections["gate_up"]] = (torch.cat([w["gate"], w["up"]]),
                                                        _one_hot(2 * delta.width, rows))
            factors[prefix + projections["down"]] = (_one_hot(delta.width, index).T, w["down"])
        else:
            factors[prefix + projections["fc"]] = (w["fc"], _one_hot(delta.width, index))
            factors[prefix + projections["proj"]] = (_one_hot(delta.width, index).T, w["proj"])
    if not factors:
        raise LapeEvalError("The neuron delta covers no neuron: there is nothing to write as an adapter.")
    ranks = {re.escape(name): int(a.shape[0]) for name, (a, _) in factors.items()}
    conv1d = delta.mlp_kind == "plain" and not isinstance(sites.projection(0, "fc"), nn.Linear)
    config = LoraConfig(r=max(ranks.values()), lora_alpha=max(ranks.values()), target_modules=sorted(factors),
                        rank_pattern=ranks, alpha_pattern=dict(ranks), lora_dropout=0.0, bias="none",
                        fan_in_fan_out=conv1d, init_lora_weights=False,
                        base_model_name_or_path=base_model_name)
    peft_model = get_peft_model(hf_model, config)
    inner = peft_model.base_model.model
    with torch.no_grad():
        for name, (a, b) in factors.items():
            module = inner.get_submodule(name)
            module.lora_A["default"].weight.copy_(a)
            module.lora_B["default"].weight.copy_(b)
            if module.scaling["default"] != 1.0:
                raise AssertionError(f"PEFT scaling of {name} is {module.scaling['default']}, expected 1")
    peft_model.save_pretrained(str(out_dir))
    return Path(out_dir)


def _one_hot(size: int, index: torch.Tensor) -> torch.Tensor:
    """[size, n] with a 1 at (index[k], k)."""
    out = torch.zeros(size, index.numel(), dtype=torch.float32)
    out[index, torch.arange(index.numel())] = 1.0
    return out
