"""Export additive steer specs to the ``.pt`` format of lm-eval's built-in ``steered`` model.

``steered`` adds ``steering_coefficient * steering_vector`` to a module's output at every position
(``action: add``). Adding α·μ(lang) on a language's neurons is exactly that, with a vector that is
zero except at those neurons, on the hookpoint ``<layers>.<i>.mlp.act_fn``. diffmean adds a constant
too. Deactivation, replacement and multiplication are not additions of a constant, so only ``+``
terms with ``add`` or ``diffmean`` export; anything else is refused with a clear error.

Hookpoint names are module names under ``model.base_model`` (``layers.3.mlp.act_fn`` for Llama);
under PEFT the base model is the LoRA wrapper and names gain a ``model.model.`` prefix.

:func:`export_steered` is ``lape-eval export-steered``: it checks the spec, the set and the output
name, then reads only the model's config (an empty model on the meta device gives the names and
shapes) and writes the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lape_eval.arch import resolve
from lape_eval.errors import LapeEvalError
from lape_eval.files import atomic_path
from lape_eval.models import resolve_pretrained
from lape_eval.neurons.shipped import resolve_neuron_set
from lape_eval.steering.hooks import compile_steer
from lape_eval.steering.spec import SteerSpec, parse_steer


def check_exportable(spec: SteerSpec) -> None:
    """Refuse specs that are not an addition of a constant (see the module doc)."""
    if spec.deactivated or spec.method not in ("add", "diffmean"):
        raise LapeEvalError(
            "Only purely additive specs can be exported to the built-in steered model: '+' terms with "
            f"method=add or diffmean and no '-' terms (got steer='{spec}', method={spec.method}). The "
            "steered model's 'clamp' action fixes one direction, not a set of neurons."
        )


def check_output_name(path: Path) -> None:
    if path.suffix not in (".pt", ".pth"):
        raise LapeEvalError(f"The steered model reads .pt or .pth files; name the output {path.stem}.pt.")
    if path.is_dir():
        raise LapeEvalError(f"{path} is a folder: name the .pt file to write, e.g. {path / 'steer.pt'}.")


def steered_vectors(model, neuron_set, spec: SteerSpec, hookpoint_prefix: str = "") -> dict[str, dict]:
    """The ``steered`` model's steer dictionary for ``spec`` on ``model`` (PEFT-wrapped or not).

    ``hookpoint_prefix`` is prepended to the names (``"model.model."`` names the hookpoints of a
    plain model as they appear under a PEFT adapter)."""
    check_exportable(spec)
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
    check_output_name(path)
    vectors = steered_vectors(model, neuron_set, spec, hookpoint_prefix)
    with atomic_path(path) as temporary:
        torch.save(vectors, temporary)
    return path


def export_steered(neuron_set: str, model_name: str, steer: str, *, out: Path | str, method: str = "add",
                   alpha: float = 1.0, for_peft: bool = False, trust_remote_code: bool = False) -> Path:
    """``lape-eval export-steered``: check everything, then write ``steer`` on ``neuron_set`` for ``model_name``.

    ``for_peft`` names the hookpoints as they appear under a PEFT adapter (``model.<base prefix>.``)."""
    spec = parse_steer(steer, method=method, alpha=alpha)
    check_exportable(spec)
    check_output_name(Path(out))
    loaded_set = resolve_neuron_set(neuron_set)
    compile_steer(spec, loaded_set)  # the set has the languages and means the spec needs
    model = load_meta_model(model_name, trust_remote_code=trust_remote_code)
    prefix = f"model.{model.base_model_prefix}." if for_peft else ""
    return save_steered(model, loaded_set, spec, out, hookpoint_prefix=prefix)


def load_meta_model(model_name: str, *, trust_remote_code: bool = False):
    """The model's modules without weights (names and shapes only), from its config alone."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(resolve_pretrained(model_name), trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
