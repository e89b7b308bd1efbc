"""Export additive steer specs to the ``.pt`` format of lm-eval's built-in ``steered`` model.

``steered`` adds ``steering_coefficient * steering_vector`` to a module's output at every position
(``action: add``). Adding α·μ(lang) on a language's neurons is exactly that, with a vector that is
zero except at those neurons, on the hookpoint ``<layers>.<i>.mlp.act_fn``. diffmean adds a constant
too. Deactivation, replacement and multiplication are not additions of a constant, so only ``+``
terms with ``add`` or ``diffmean`` export; anything else is refused with a clear error.

Hookpoint names are module names under ``model.base_model`` (``layers.3.mlp.act_fn`` for Llama);
under PEFT the base model is the LoRA wrapper and names gain a ``model.model.`` prefix.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lape_eval.arch import resolve
from lape_eval.files import atomic_path
from lape_eval.errors import LapeEvalError
from lape_eval.steering.spec import SteerSpec
from lape_eval.steering.hooks import compile_steer


def steered_vectors(model, neuron_set, spec: SteerSpec, hookpoint_prefix: str = "") -> dict[str, dict]:
    """The ``steered`` model's steer dictionary for ``spec`` on ``model`` (PEFT-wrapped or not).

    ``hookpoint_prefix`` is prepended to the names (``"model.model."`` names the hookpoints of a
    plain model as they appear under a PEFT adapter)."""
    if spec.deactivated or spec.method not in ("add", "diffmean"):
        raise LapeEvalError(
            "Only purely additive specs can be exported to the built-in steered model: '+' terms with "
            f"method=add or diffmean and no '-' terms (got steer='{spec}', method={spec.method}). The "
            "steered model's 'clamp' action fixes one direction, not a set of neurons."
        )
    sites = resolve(model)
    compiled = compile_steer(spec, neuron_set, sites)
    names = {id(module): name for name, module in model.base_model.named_modules()}
    steer: dict[str, dict] = {}
    for layer in compiled.touched_layers:
        vector = torch.zeros(sites.width, dtype=torch.float32)
        for edit in compiled.edits[layer]:
            vector.index_add_(0, edit.index, edit.values)
        steer[hookpoint_prefix + names[id(sites.activations[layer])]] = {
            "steering_vector": vector, "steering_coefficient": 1.0, "action": "add", "bias": None,
            "head_index": None,
        }
    return steer


def save_steered(model, neuron_set, spec: SteerSpec, path: Path | str, hookpoint_prefix: str = "") -> Path:
    """Write the ``.pt`` file (``steer_path=`` of ``lm_eval --model steered``)."""
    path = Path(path)
    if path.suffix not in (".pt", ".pth"):
        raise LapeEvalError(f"The steered model reads .pt or .pth files; name the output {path.stem}.pt.")
    vectors = steered_vectors(model, neuron_set, spec, hookpoint_prefix)
    with atomic_path(path) as temporary:
        torch.save(vectors, temporary)
    return path
