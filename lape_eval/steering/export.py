"""Export additive steer specs to the ``.pt`` format of lm-eval's built-in ``steered`` model.

``steered`` adds ``steering_coefficient * steering_vector`` to a module's output at every position
(``action: add``). Adding α·μ(lang) on a language's neurons is exactly that, with a vector that is
zero except at those neurons, on the hookpoint ``<layers>.<i>.mlp.act_fn``. diffmean adds a constant
too. Deactivation, replacement and multiplication are not additions of a constant, so only ``+``
terms with ``add`` or ``diffmean`` export; anything else is refused with a clear error.

``residual_diffmean`` (a direction artifact and a layer ℓ) adds one vector to decoder layer ℓ's
output at every position: one entry on the hookpoint ``<layers>.<ℓ>`` (``steered`` adds to the
first element when a layer returns a tuple, as the ``lape`` model does).

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
from lape_eval.neurons.directions import ResidualDirections
from lape_eval.neurons.shipped import resolve_neuron_set
from lape_eval.steering.hooks import compile_steer
from lape_eval.steering.residual import compile_residual
from lape_eval.steering.spec import RESIDUAL_DIFFMEAN, SteerSpec, parse_steer


def check_exportable(spec: SteerSpec) -> None:
    """Refuse specs that are not an addition of a constant (see the module doc)."""
    if spec.method == RESIDUAL_DIFFMEAN:  # its '-' term is the source of the direction, not a deactivation
        return
    if spec.deactivated or spec.method not in ("add", "diffmean"):
        raise LapeEvalError(
            "Only purely additive specs can be exported to the built-in steered model: '+' terms with "
            f"method=add or diffmean and no '-' terms, or method={RESIDUAL_DIFFMEAN} (got steer='{spec}', "
            f"method={spec.method}). The "
            "steered model's 'clamp' action fixes one direction, not a set of neurons."
        )


def check_output_name(path: Path) -> None:
    if path.suffix not in (".pt", ".pth"):
        raise LapeEvalError(f"The steered model reads .pt or .pth files; name the output {path.stem}.pt.")
    if path.is_dir():
        raise LapeEvalError(f"{path} is a folder: name the .pt file to write, e.g. {path / 'steer.pt'}.")


def steered_vectors(model, source, spec: SteerSpec, hookpoint_prefix: str = "",
                    layer: int | None = None) -> dict[str, dict]:
    """The ``steered`` model's steer dictionary for ``spec`` on ``model`` (PEFT-wrapped or not).

    ``source`` is a neuron set, or for ``residual_diffmean`` a direction artifact (then ``layer`` is
    the decoder layer). ``hookpoint_prefix`` is prepended to the names (``"model.model."`` names the
    hookpoints of a plain model as they appear under a PEFT adapter)."""
    check_exportable(spec)
    sites = resolve(model)
    names = {id(module): name for name, module in model.base_model.named_modules()}
    if spec.method == RESIDUAL_DIFFMEAN:
        if layer is None:
            raise LapeEvalError(f"method={RESIDUAL_DIFFMEAN} adds its direction to one decoder layer: give the layer.")
        source.check_model(model)
        vectors = {sites.layers[layer]: compile_residual(spec, source, layer).vector}
    else:
        compiled = compile_steer(spec, source, sites)
        vectors = {}
        for layer in compiled.touched_layers:
            vector = torch.zeros(sites.width, dtype=torch.float32)
            for edit in compiled.edits[layer]:
                vector.index_add_(0, edit.index, edit.values)
            vectors[sites.activations[layer]] = vector
    return {hookpoint_prefix + names[id(module)]: {"steering_vector": vector, "steering_coefficient": 1.0,
                                                    "action": "add", "bias": None, "head_index": None}
            for module, vector in vectors.items()}


def save_steered(model, source, spec: SteerSpec, path: Path | str, hookpoint_prefix: str = "",
                 layer: int | None = None) -> Path:
    """Write the ``.pt`` file (``steer_path=`` of ``lm_eval --model steered``)."""
    path = Path(path)
    check_output_name(path)
    vectors = steered_vectors(model, source, spec, hookpoint_prefix, layer)
    with atomic_path(path) as temporary:
        torch.save(vectors, temporary)
    return path


def export_steered(source: str, model_name: str, steer: str, *, out: Path | str, method: str = "add",
                   alpha: float = 1.0, for_peft: bool = False, trust_remote_code: bool = False,
                   layer: int | None = None, language_alphas: str | None = None) -> Path:
    """``lape-eval export-steered``: check everything, then write ``steer`` on ``source`` (a neuron set, or
    for ``residual_diffmean`` a direction artifact and ``layer``) for ``model_name``.

    ``for_peft`` names the hookpoints as they appear under a PEFT adapter (``model.<base prefix>.``)."""
    spec = parse_steer(steer, method=method, alpha=alpha, language_alphas=language_alphas)
    check_exportable(spec)
    check_output_name(Path(out))
    if spec.method == RESIDUAL_DIFFMEAN:
        if layer is None:
            raise LapeEvalError(f"method={RESIDUAL_DIFFMEAN} adds its direction to one decoder layer: give --layer N.")
        loaded = ResidualDirections.load(source)
        compile_residual(spec, loaded, layer)  # the artifact has the languages and the layer
    else:
        if layer is not None:
            raise LapeEvalError(f"--layer is for method={RESIDUAL_DIFFMEAN}; neuron sets steer every layer they cover.")
        loaded = resolve_neuron_set(source)
        compile_steer(spec, loaded)  # the set has the languages and means the spec needs
    model = load_meta_model(model_name, trust_remote_code=trust_remote_code)
    prefix = f"model.{model.base_model_prefix}." if for_peft else ""
    return save_steered(model, loaded, spec, out, hookpoint_prefix=prefix, layer=layer)


def load_meta_model(model_name: str, *, trust_remote_code: bool = False):
    """The model's modules without weights (names and shapes only), from its config alone."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(resolve_pretrained(model_name), trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
