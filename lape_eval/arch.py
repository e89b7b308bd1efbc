"""Where the "neuron" lives in each architecture.

The activation point of lape-eval, for every supported family, is the output of the MLP's
activation module: the gated activation ``g = act(gate_proj(x))`` of a gated MLP, taken *before*
the product with ``up_proj(x)`` (method spec §4.1, §5). Identification counts ``g > 0`` and every
steering operator edits ``g``. In transformers these modules are separate ``nn.Module`` objects per
layer (``mlp.act_fn``; ``mlp.activation_fn`` in Phi-3, whose fused ``gate_up_proj`` is chunked
before the activation; ``mlp.act`` in the non-gated GPT-2), so a forward hook on them sees and can
replace exactly ``g``. ``tests/foundation/test_arch.py`` checks this against a manual computation per family.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from lape_eval.errors import LapeEvalError

ACTIVATION_POINT = "mlp_activation_output"  # recorded in every statistics file and neuron set
# Where residual-stream means are taken and directions are added: the output hidden state of a decoder
# layer (before the next layer; for the last layer, before the final norm).
RESIDUAL_POINT = "decoder_layer_output"


@dataclass(frozen=True)
class FamilySpec:
    """How to find the neurons in one family of architectures.

    ``activation`` is the attribute path, inside a decoder layer, of the module whose output is g.
    ``mlp_kind`` says how g is produced (used by the fine-tuning code to find the neuron's weights):
    ``gated``: g = act(gate_proj x), y = down_proj(g * up_proj x);
    ``fused``: gate and up are the two halves of the rows of ``gate_up_proj``;
    ``plain``: g = act(c_fc x), y = c_proj g (GPT-2 Conv1D layout, weights stored transposed; for
    the width, an ``nn.Linear`` fc of a registered family is also understood).
    """

    name: str
    model_types: tuple[str, ...]
    activation: str = "mlp.act_fn"
    mlp_kind: str = "gated"
    projections: dict[str, str] = field(
        default_factory=lambda: {"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    )


_FAMILIES: list[FamilySpec] = [
    FamilySpec("Llama", ("llama",)),
    FamilySpec("Mistral", ("mistral",)),
    FamilySpec("Qwen2", ("qwen2",)),
    FamilySpec("Qwen3", ("qwen3",)),
    FamilySpec("Gemma", ("gemma",)),
    FamilySpec("Gemma2", ("gemma2",)),
    FamilySpec("Gemma3", ("gemma3_text", "gemma3")),
    FamilySpec("Cohere (Aya)", ("cohere", "cohere2")),
    FamilySpec("OLMo", ("olmo", "olmo2", "olmo3")),
    FamilySpec(
        "Phi-3", ("phi3",), activation="mlp.activation_fn", mlp_kind="fused",
        projections={"gate_up": "mlp.gate_up_proj", "down": "mlp.down_proj"},
    ),
    FamilySpec(
        "GPT-2", ("gpt2",), activation="mlp.act", mlp_kind="plain",
        projections={"fc": "mlp.c_fc", "proj": "mlp.c_proj"},
    ),
]


def register_family(spec: FamilySpec) -> None:
    """Teach lape-eval a new architecture (see the README, "Adding an architecture")."""
    _FAMILIES.insert(0, spec)


def supported_families() -> list[str]:
    return [f"{spec.name} ({', '.join(spec.model_types)})" for spec in _FAMILIES]


class UnsupportedArchitectureError(LapeEvalError):
    pass


@dataclass
class NeuronSites:
    """The resolved activation modules of one loaded model."""

    family: FamilySpec
    model_type: str
    layers: list[nn.Module]  # decoder layers, in order
    activations: list[nn.Module]  # the module whose output is g, one per layer
    width: int  # neurons per layer (MLP intermediate size)
    layer_path: str  # e.g. "model.layers" (relative to the unwrapped HF model)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_layers, self.width)

    def module_name(self, layer: int) -> str:
        return f"{self.layer_path}.{layer}.{self.family.activation}"

    def projection(self, layer: int, role: str) -> nn.Module:
        """The (PEFT-unwrapped) projection module ``role`` of ``layer`` (e.g. "gate", "down")."""
        return _base_layer(_get_path(self.layers[layer], self.family.projections[role]))


def residual_width(model: nn.Module) -> int:
    """The width of the residual stream (the hidden size) of a transformers model (PEFT allowed)."""
    config = unwrap_model(model).config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.hidden_size)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain transformers model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        return get_base()
    return model


def resolve(model: nn.Module) -> NeuronSites:
    """Find the per-layer activation modules of ``model`` (a transformers causal LM, PEFT allowed)."""
    hf_model = unwrap_model(model)
    config = getattr(hf_model, "config", None)
    model_type = getattr(getattr(config, "text_config", None), "model_type", None) or getattr(
        config, "model_type", type(hf_model).__name__
    )
    _refuse_mixture_of_experts(config, model_type)
    spec = next((s for s in _FAMILIES if model_type in s.model_types), None)
    if spec is None:
        raise UnsupportedArchitectureError(_unsupported_message(model_type))
    layer_path, layers = _find_decoder_layers(hf_model, spec)
    activations = [_get_path(layer, spec.activation) for layer in layers]
    if len({id(a) for a in activations}) != len(activations):
        raise UnsupportedArchitectureError(
            f"The {spec.name} model shares one activation module across layers, so a hook could not "
            "tell the layers apart. Upgrade transformers (it creates one module per layer)."
        )
    return NeuronSites(spec, model_type, layers, activations, _width(layers[0], spec), layer_path)


def _refuse_mixture_of_experts(config, model_type: str) -> None:
    for key in ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"):
        if (getattr(config, key, 0) or 0) > 1:
            raise UnsupportedArchitectureError(
                f"{model_type!r} is a mixture-of-experts model ({key}={getattr(config, key)}): its MLP "
                "neurons live in per-expert MLPs that see only the tokens routed to them, so LAPE "
                "activation probabilities are not defined the same way. lape-eval supports dense "
                f"decoders: {'; '.join(supported_families())}."
            )


def _unsupported_message(model_type: str) -> str:
    return (
        f"Unsupported architecture {model_type!r}: lape-eval does not know where its MLP neurons are. "
        f"Supported families: {'; '.join(supported_families())}. To add one, call "
        "lape_eval.arch.register_family(FamilySpec(name, model_types, activation='mlp.act_fn', "
        "mlp_kind='gated', projections={...})) naming the module whose output is act(gate_proj(x)) "
        "inside each decoder layer, and check it with the per-architecture test in tests/foundation/test_arch.py."
    )


def _find_decoder_layers(model: nn.Module, spec: FamilySpec) -> tuple[str, list[nn.Module]]:
    """The first ModuleList whose elements all own the family's activation module."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if all(_has_path(layer, spec.activation) for layer in module):
                return name, list(module)
    raise UnsupportedArchitectureError(
        f"Found no decoder layers holding '{spec.activation}' in this {spec.name} model "
        f"({type(model).__name__}); its layout differs from the one lape-eval knows. "
        + _unsupported_message(spec.model_types[0])
    )


def _width(layer: nn.Module, spec: FamilySpec) -> int:
    if spec.mlp_kind == "gated":
        return _base_layer(_get_path(layer, spec.projections["gate"])).weight.shape[0]
    if spec.mlp_kind == "fused":
        return _base_layer(_get_path(layer, spec.projections["gate_up"])).weight.shape[0] // 2
    fc = _base_layer(_get_path(layer, spec.projections["fc"]))
    if isinstance(fc, nn.Linear):  # a registered plain family with nn.Linear (weight: [out, in])
        return fc.out_features
    return fc.weight.shape[1]  # GPT-2's Conv1D stores its weight as [in, out]


def _base_layer(module: nn.Module) -> nn.Module:
    """PEFT wraps projections (``lora.Linear``); the frozen original sits in ``base_layer``."""
    return getattr(module, "base_layer", module)


def _get_path(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _has_path(module: nn.Module, path: str) -> bool:
    try:
        _get_path(module, path)
    except AttributeError:
        return False
    return True
