"""The resolver finds, in every supported family, the module whose output is g = act(gate_proj(x)).

Each check recomputes g by hand from the layer's weights and the MLP input captured by a forward
pre-hook, with the activation function written out here (not the model's own module), so a hook
on the wrong module, the wrong half of a fused projection, or the product with up_proj fails.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from float_bounds import assert_close_at_scale
from tiny_models import (
    ARCHITECTURES, CORPUS, MOE_ARCHITECTURES, UNSUPPORTED_ARCHITECTURES, build_model, build_tokenizer,
)

from lape_eval import arch
from lape_eval.arch import FamilySpec, UnsupportedArchitectureError, register_family, resolve, supported_families

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

# The model's float32 g against act(x·Wᵀ) in float64 from the same captured x: the one float32
# reduction is the gate projection over n = 32 (33 with GPT-2's bias) terms, off by ≤ n·u·Σ|x_i·w_i|
# (u = 2^-24), and Σ|x_i·w_i| ≤ 2·max|g| in these models (measured); the activation's slope is ≤ 1.13
# and its own float32 evaluation adds a few u. So ≤ (33·2·1.13 + 4)·u ≈ 4.7e-6 of g's scale; per-element
# relative error means nothing where g crosses zero. Measured ≤ 3.3e-7 of the scale under scalar, AVX2
# and AVX-512 kernels; the wrong module, half of a fused projection or activation is off by O(1).
G_REL = 1e-5
# y = down(g·up(x)) in float32 against float64: the down projection sums n = 96 terms whose magnitude
# Σ|w_j·h_j| is ≤ 2.5·max|y| here (measured), 96·2.5·u ≈ 1.4e-5 of y's scale, plus g's and up's own
# error carried through: 3e-5. Measured ≤ 5.2e-7 of the scale; the edit moves y by more than 0.1.
Y_REL = 3e-5


# --------------------------------------------------------------------------------------------------
# Reference computations, independent of lape_eval.arch


def activation_name(config) -> str:
    config = config.get_text_config()
    for key in ("hidden_activation", "hidden_act", "activation_function"):  # Gemma2/3, most, GPT-2
        name = getattr(config, key, None)
        if name:
            return name
    raise AssertionError(f"no activation function in {type(config).__name__}")


def reference_act(name: str, x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    if name in ("silu", "swish"):
        return x * torch.sigmoid(x)
    if name in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_python_tanh"):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name in ("gelu", "gelu_python"):
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name == "relu":
        return x.clamp_min(0.0)
    raise AssertionError(f"add the formula for activation {name!r} to the test")


def linear(x: torch.Tensor, module: nn.Module, rows: slice = slice(None)) -> torch.Tensor:
    """x @ W.T + b in float64, for an nn.Linear or a GPT-2 Conv1D (weight stored [in, out])."""
    if isinstance(module, nn.Linear):
        weight = module.weight[rows]
        bias = None if module.bias is None else module.bias[rows]
    else:  # transformers.pytorch_utils.Conv1D
        weight = module.weight.T[rows]
        bias = module.bias[rows]
    out = x.double() @ weight.double().T
    return out if bias is None else out + bias.double()


def mlp_kind(mlp: nn.Module) -> str:
    if hasattr(mlp, "gate_proj"):
        return "gated"
    if hasattr(mlp, "gate_up_proj"):
        return "fused"
    if hasattr(mlp, "c_fc") or hasattr(mlp, "dense_h_to_4h"):
        return "plain"
    raise AssertionError(f"unknown MLP layout {type(mlp).__name__}")


def gate_preactivation(mlp: nn.Module, x: torch.Tensor, width: int) -> torch.Tensor:
    kind = mlp_kind(mlp)
    if kind == "gated":
        return linear(x, mlp.gate_proj)
    if kind == "fused":  # Phi3MLP: gate, up = gate_up_proj(x).chunk(2, dim=-1) -> the first half
        return linear(x, mlp.gate_up_proj, slice(0, width))
    return linear(x, getattr(mlp, "c_fc", None) or mlp.dense_h_to_4h)


def up_preactivation(mlp: nn.Module, x: torch.Tensor, width: int) -> torch.Tensor:
    if mlp_kind(mlp) == "gated":
        return linear(x, mlp.up_proj)
    return linear(x, mlp.gate_up_proj, slice(width, 2 * width))  # fused: the second half


def mlp_output_from_g(mlp: nn.Module, x: torch.Tensor, g: torch.Tensor, width: int) -> torch.Tensor:
    """The MLP output when its activation output is ``g``: down(g * up(x)), or proj(g)."""
    if mlp_kind(mlp) == "plain":
        return linear(g, getattr(mlp, "c_proj", None) or mlp.dense_4h_to_h)
    return linear(g * up_preactivation(mlp, x, width), mlp.down_proj)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    base = model.base_model  # LlamaModel, GPT2Model, Gemma3Model (multimodal), ...
    base = getattr(base, "language_model", base)
    return base.layers if hasattr(base, "layers") else base.h


def expected_width(config) -> int:
    config = config.get_text_config()
    if config.model_type == "gpt2":
        return config.n_inner or 4 * config.n_embd
    return config.intermediate_size


def inputs() -> dict:
    tok = build_tokenizer()
    texts = [CORPUS["bo"][0], CORPUS["zh"][0] + " " + CORPUS["en"][0]]
    return dict(tok(texts, return_tensors="pt", padding=True))


def capture(model: nn.Module, layer: nn.Module, activation: nn.Module, edit=None) -> dict:
    """Run the model; return the MLP input x and output y of ``layer`` and the hooked value g."""
    seen: dict[str, torch.Tensor] = {}

    def pre_mlp(module, args, kwargs):
        seen["x"] = (args[0] if args else next(iter(kwargs.values()))).detach().clone()

    def post_mlp(module, args, kwargs, output):
        seen["y"] = output.detach().clone()

    def post_act(module, args, output):
        seen["g"] = output.detach().clone()
        return None if edit is None else edit(output)

    handles = [
        layer.mlp.register_forward_pre_hook(pre_mlp, with_kwargs=True),
        layer.mlp.register_forward_hook(post_mlp, with_kwargs=True),
        activation.register_forward_hook(post_act),
    ]
    try:
        with torch.no_grad():
            model(**inputs())
    finally:
        for handle in handles:
            handle.remove()
    return seen


def assert_hook_sees_act_of_gate(model: nn.Module, sites, layer_index: int) -> None:
    layer = sites.layers[layer_index]
    seen = capture(model, layer, sites.activations[layer_index])
    pre = gate_preactivation(layer.mlp, seen["x"], sites.width)
    expected = reference_act(activation_name(model.config), pre)
    assert seen["g"].shape == expected.shape == (*seen["x"].shape[:-1], sites.width)
    # The check must be able to fail: O(1) pre-activations with both signs.
    assert pre.abs().max() > 1.0 and (seen["g"] > 0).any() and (seen["g"] < 0).any()
    assert_close_at_scale(seen["g"].double(), expected, G_REL)


# --------------------------------------------------------------------------------------------------
# Every supported family


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def arch_model(request):
    return request.param, build_model(request.param)


def test_tiny_models_cover_every_supported_model_type():
    configs = [build_model(name).config for name in ARCHITECTURES]
    covered = {c.model_type for c in configs} | {c.get_text_config().model_type for c in configs}
    for spec in arch._FAMILIES:
        assert set(spec.model_types) <= covered, f"no tiny model for {spec.name}"


def test_resolve_finds_layers_width_and_modules(arch_model):
    _, model = arch_model
    config = model.config.get_text_config()
    sites = resolve(model)
    layers = decoder_layers(model)
    assert sites.model_type == config.model_type
    assert sites.num_layers == config.num_hidden_layers == len(layers)
    assert all(a is b for a, b in zip(sites.layers, layers))
    assert sites.width == expected_width(config)
    assert sites.width != config.hidden_size
    assert sites.shape == (sites.num_layers, sites.width)
    assert sites.family.mlp_kind == mlp_kind(layers[0].mlp)
    assert len({id(a) for a in sites.activations}) == sites.num_layers
    for index in range(sites.num_layers):
        assert model.get_submodule(sites.module_name(index)) is sites.activations[index]
        for role, path in sites.family.projections.items():
            assert sites.projection(index, role) is layers[index].get_submodule(path)


def test_hook_sees_act_of_gate_projection(arch_model):
    _, model = arch_model
    sites = resolve(model)
    for index in range(sites.num_layers):
        assert_hook_sees_act_of_gate(model, sites, index)


def test_editing_hook_output_edits_g_before_the_up_product(arch_model):
    _, model = arch_model
    sites = resolve(model)
    index = sites.num_layers - 1
    layer, width = sites.layers[index], sites.width
    zeroed, raised = 3, width - 5

    def edit(g):
        g = g.clone()
        g[..., zeroed] = 0.0
        g[..., raised] = 3.0
        return g

    seen = capture(model, layer, sites.activations[index], edit=edit)
    g = reference_act(activation_name(model.config), gate_preactivation(layer.mlp, seen["x"], width))
    g_edited = g.clone()
    g_edited[..., zeroed] = 0.0
    g_edited[..., raised] = 3.0
    expected = mlp_output_from_g(layer.mlp, seen["x"], g_edited, width)
    assert_close_at_scale(seen["y"].double(), expected, Y_REL)

    unedited = mlp_output_from_g(layer.mlp, seen["x"], g, width)
    assert (expected - unedited).abs().max() > 0.1  # the edit has a visible effect
    if sites.family.mlp_kind != "plain":
        # Had the hook been on the product g * up(x), the same edit would have given this instead.
        product = g * up_preactivation(layer.mlp, seen["x"], width)
        product[..., zeroed] = 0.0
        product[..., raised] = 3.0
        assert (seen["y"].double() - linear(product, layer.mlp.down_proj)).abs().max() > 0.1


# --------------------------------------------------------------------------------------------------
# PEFT


@pytest.mark.parametrize("name", ["llama", "phi3", "gpt2", "gemma3_multimodal"])
def test_peft_wrapped_model_resolves_to_the_same_sites(name):
    peft = pytest.importorskip("peft")
    model = build_model(name)
    plain = resolve(model)
    targets = list(plain.family.projections.values())  # e.g. mlp.gate_proj, or mlp.c_fc for GPT-2
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False,  # random, non-zero delta
        fan_in_fan_out=name == "gpt2",
    )
    wrapped = peft.get_peft_model(model, config).eval()
    sites = resolve(wrapped)

    assert sites.family == plain.family and sites.layer_path == plain.layer_path
    assert sites.width == plain.width and sites.num_layers == plain.num_layers
    assert all(a is b for a, b in zip(sites.layers, plain.layers))
    assert all(a is b for a, b in zip(sites.activations, plain.activations))
    assert wrapped.get_base_model().get_submodule(sites.module_name(0)) is sites.activations[0]

    index = sites.num_layers - 1
    layer = sites.layers[index]
    gate_role = {"gated": "gate", "fused": "gate_up", "plain": "fc"}[sites.family.mlp_kind]
    lora_gate = layer.get_submodule(sites.family.projections[gate_role])
    assert hasattr(lora_gate, "lora_A"), "PEFT did not wrap the gate projection"
    base_gate = sites.projection(index, gate_role)
    assert base_gate is lora_gate.base_layer and not hasattr(base_gate, "lora_A")

    # The hook sees act(what the LoRA-wrapped gate projection actually outputs)...
    gate_out = {}
    handle = lora_gate.register_forward_hook(lambda m, a, out: gate_out.update(z=out.detach().clone()))
    try:
        seen = capture(wrapped, layer, sites.activations[index])
    finally:
        handle.remove()
    act = activation_name(model.config)
    z = gate_out["z"][..., : sites.width]  # Phi-3: the gate is the first half
    assert_close_at_scale(seen["g"].double(), reference_act(act, z), G_REL)  # from the same float32 z
    # ...which differs from act(base gate): the adapter is live.
    without_lora = reference_act(act, gate_preactivation(_base_mlp(layer.mlp), seen["x"], sites.width))
    assert (seen["g"].double() - without_lora).abs().max() > 1e-3

    if name == "llama":  # explicitly: act(x @ (W + scaling * B @ A).T)
        lora_a, lora_b = lora_gate.lora_A["default"].weight, lora_gate.lora_B["default"].weight
        delta = lora_gate.scaling["default"] * lora_b @ lora_a
        expected = reference_act("silu", seen["x"].double() @ (base_gate.weight + delta).double().T)
        assert_close_at_scale(seen["g"].double(), expected, G_REL)  # plus the rank-4 path: 32 + 4 terms


class _base_mlp:
    """A view of an MLP whose PEFT-wrapped projections read as their frozen base layers."""

    def __init__(self, mlp: nn.Module):
        self._mlp = mlp

    def __getattr__(self, item):
        module = getattr(self._mlp, item)
        return getattr(module, "base_layer", module)


# --------------------------------------------------------------------------------------------------
# Refusals and register_family


@pytest.mark.parametrize("name", sorted(MOE_ARCHITECTURES))
def test_mixture_of_experts_is_refused(name):
    model = build_model(name)
    with pytest.raises(UnsupportedArchitectureError, match="mixture-of-experts") as info:
        resolve(model)
    assert model.config.model_type in str(info.value)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_ARCHITECTURES))
def test_unknown_dense_architecture_is_refused_with_guidance(name):
    model = build_model(name)
    with pytest.raises(UnsupportedArchitectureError) as info:
        resolve(model)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert repr(model.config.model_type) in message
    assert "register_family" in message
    for family in supported_families():
        assert family in message
    assert "mixture-of-experts" not in message


def test_register_family_teaches_a_gated_architecture():
    model = build_model("stablelm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(arch, "_FAMILIES", list(arch._FAMILIES))
        register_family(FamilySpec("StableLM", ("stablelm",)))
        sites = resolve(model)
        assert sites.family.name == "StableLM" and sites.model_type == "stablelm"
        assert sites.shape == (model.config.num_hidden_layers, model.config.intermediate_size)
        assert sites.layer_path == "model.layers"
        for index in range(sites.num_layers):
            assert_hook_sees_act_of_gate(model, sites, index)
    with pytest.raises(UnsupportedArchitectureError):  # the registration did not leak
        resolve(model)


def test_register_family_teaches_a_plain_linear_architecture():
    model = build_model("gpt_neox")
    spec = FamilySpec(
        "GPT-NeoX", ("gpt_neox",), activation="mlp.act", mlp_kind="plain",
        projections={"fc": "mlp.dense_h_to_4h", "proj": "mlp.dense_4h_to_h"},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(arch, "_FAMILIES", list(arch._FAMILIES))
        register_family(spec)
        sites = resolve(model)
        assert sites.width == model.config.intermediate_size != model.config.hidden_size
        assert sites.layer_path == "gpt_neox.layers"
        for index in range(sites.num_layers):
            assert_hook_sees_act_of_gate(model, sites, index)
    with pytest.raises(UnsupportedArchitectureError):
        resolve(model)


def test_a_registered_family_must_match_the_layout():
    model = build_model("stablelm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(arch, "_FAMILIES", list(arch._FAMILIES))
        register_family(FamilySpec("StableLM (wrong path)", ("stablelm",), activation="mlp.activation"))
        with pytest.raises(UnsupportedArchitectureError, match="Found no decoder layers holding 'mlp.activation'"):
            resolve(model)
