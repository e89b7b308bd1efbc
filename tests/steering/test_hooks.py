"""Steering operators, positions, and the context manager, checked against manual computations.

Parsing the spec language is tested in test_spec.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lape_eval.arch import resolve
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.neuron_set import NeuronSet
from float_bounds import FORWARD, assert_close_at_scale
from handmade_sets import LANGS, make_set, mu, picks
from lape_eval.steering.spec import parse_steer
from lape_eval.steering.hooks import steer
from tiny_models import build_model, build_tokenizer

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics


def expected_gate(g: torch.Tensor, layer: int, ns: NeuronSet, spec) -> torch.Tensor:
    """The spec applied by hand, neuron by neuron (deactivations first, then activations)."""
    g = g.clone()
    terms = [t for t in spec.terms if t.sign == "-"] + [t for t in spec.terms if t.sign == "+"]
    for term in terms:
        for j in picks(term.language, layer):
            if term.sign == "-":
                g[..., j] = spec.deactivate_value if term.strength is None else term.strength
                continue
            a = spec.alpha if term.strength is None else term.strength
            target = mu(ns, term.language, layer, j)
            if spec.method == "add":
                g[..., j] += a * target
            elif spec.method == "replace":
                g[..., j] = a * target
            elif spec.method == "multiply":
                g[..., j] *= spec.beta if term.strength is None else term.strength
            else:
                others = [mu(ns, k, layer, j) for k in LANGS if k != term.language]
                g[..., j] += a * (target - sum(others) / len(others))
    return g


def manual_mlp(mlp, x, layer, ns, spec, act):
    g = act(F.linear(x, mlp.gate_proj.weight))
    return F.linear(expected_gate(g, layer, ns, spec) * F.linear(x, mlp.up_proj.weight), mlp.down_proj.weight)


SPECS = [
    ("-en", {}),
    ("-en", {"deactivate_value": -1.5}),
    ("+de", {"alpha": 2.0}),
    ("-en +de", {}),
    ("-en +de:3", {"alpha": 0.5}),
    ("+fr", {"method": "replace"}),
    ("+de", {"method": "multiply", "beta": -0.1}),
    ("+de", {"method": "diffmean", "alpha": 1.5}),
    ("-en -fr +de", {"method": "diffmean"}),
]


@pytest.mark.parametrize("arch, act", [("llama", F.silu), ("gemma3", lambda x: F.gelu(x, approximate="tanh"))])
@pytest.mark.parametrize("text, args", SPECS)
def test_every_operator_equals_a_manual_mlp_computation(arch, act, text, args):
    model = build_model(arch)
    sites = resolve(model)
    ns = make_set(sites.width, sites.num_layers)
    spec = parse_steer(text, **args)
    seen = {}
    handles = []
    for layer, block in enumerate(sites.layers):
        handles.append(block.mlp.register_forward_pre_hook(lambda m, a, layer=layer: seen.__setitem__(("x", layer), a[0])))
        handles.append(block.mlp.register_forward_hook(lambda m, a, out, layer=layer: seen.__setitem__(("y", layer), out)))
    ids = torch.tensor([[5, 17, 42, 8, 99, 120, 7], [33, 4, 250, 251, 252, 9, 10]])
    with torch.no_grad(), steer(model, ns, spec):
        model(input_ids=ids)
    for h in handles:
        h.remove()
    # Same input x, weights and shapes: the float32 products are bit-identical. Only the edit values
    # round differently (here α·μ and diffmean's mean of the others in float64, the hook's in float32):
    # a few u of |α·μ| on ≤ 3 neurons, ≤ 1e-6 of y's scale after the down projection; FORWARD bounds it.
    # Measured ≤ 9.2e-8 of the scale (scalar, AVX2, AVX-512). An edited value off by more than 1e-4 at
    # any neuron of the set (through its down-projection weights) exceeds the tolerance.
    for layer, block in enumerate(sites.layers):
        expected = manual_mlp(block.mlp, seen[("x", layer)], layer, ns, spec, act)
        assert_close_at_scale(seen[("y", layer)], expected, FORWARD)


@pytest.mark.parametrize("arch, act", [("llama", F.silu), ("gemma3", lambda x: F.gelu(x, approximate="tanh"))])
def test_one_spec_per_row_equals_the_manual_computation_of_each_row(arch, act):
    model = build_model(arch)
    sites = resolve(model)
    ns = make_set(sites.width, sites.num_layers)
    specs = [parse_steer(text, **args) for text, args in SPECS] + [parse_steer("none")]
    seen = {}
    handles = []
    for layer, block in enumerate(sites.layers):
        handles.append(block.mlp.register_forward_pre_hook(lambda m, a, layer=layer: seen.__setitem__(("x", layer), a[0])))
        handles.append(block.mlp.register_forward_hook(lambda m, a, out, layer=layer: seen.__setitem__(("y", layer), out)))
    ids = torch.randint(3, 250, (len(specs), 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), steer(model, ns, specs):
        model(input_ids=ids)
    for h in handles:
        h.remove()
    # A batch of 10 rows against one row: the products' kernels may block (and sum) otherwise, so one
    # MLP in another summation order (n ≤ 96), plus the edit values' rounding as above: FORWARD.
    # Measured ≤ 6.5e-7 of the scale.
    for layer, block in enumerate(sites.layers):
        for row, spec in enumerate(specs):
            expected = manual_mlp(block.mlp, seen[("x", layer)][row:row + 1], layer, ns, spec, act)
            assert_close_at_scale(seen[("y", layer)][row:row + 1], expected, FORWARD)


def test_one_spec_per_row_generates_what_each_spec_generates_alone():
    model = build_model("llama")
    tokenizer = build_tokenizer()
    ns = make_set(resolve(model).width)
    texts = ["-en +de", "-de +fr:3", "none", "-fr +en"]
    batch = tokenizer(["The quick brown fox"] * len(texts), return_tensors="pt")  # equal lengths: no padding
    args = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        with steer(model, ns, texts, alpha=6.0, positions="generated"):
            together = model.generate(**batch, **args)
        for row, text in enumerate(texts):
            with steer(model, ns, text, alpha=6.0, positions="generated"):
                alone = model.generate(**{k: v[row:row + 1] for k, v in batch.items()}, **args)
            # Token ids, not floats: a row's logits in the batch of 4 and alone differ in rounding only
            # (measured ≤ 1.2e-6 of their scale under scalar, AVX2 and AVX-512 kernels), far below the
            # smallest gap between the two best logits of these generations (2.1e-3 of the scale).
            assert torch.equal(together[row:row + 1], alone), text
    assert len({tuple(row.tolist()) for row in together}) > 1, "the specs should steer the rows apart"


def test_one_spec_per_row_refuses_mismatched_batches_and_mixed_positions():
    model = build_model("llama")
    ns = make_set(resolve(model).width)
    with pytest.raises(LapeEvalError, match="one spec per row"), steer(model, ns, ["-en", "+de"]):
        model(input_ids=torch.tensor([[5, 17, 42]]))
    with pytest.raises(LapeEvalError, match="share `positions`"):
        with steer(model, ns, [parse_steer("-en"), parse_steer("-en", positions="prompt")]):
            pass
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _edit_recorders(model, ns):
    """Record, per forward call, the positions whose g changed at the set's neurons of layer 0."""
    sites = resolve(model)
    index = ns.indices("en")[0]
    raw, edited = [], []
    before = sites.activations[0].register_forward_hook(lambda m, a, out: raw.append(out[..., index].clone()))
    return sites, raw, edited, before, index


@pytest.mark.parametrize("positions", ["all", "prompt", "generated", "answer"])
def test_positions_edit_exactly_the_tokens_they_name_with_left_padding_and_kv_cache(positions):
    model = build_model("llama")
    tokenizer = build_tokenizer()
    ns = make_set(resolve(model).width)
    sites, raw, edited, before, index = _edit_recorders(model, ns)
    prompts = ["The quick brown fox jumps", "Hi"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    pads = batch["attention_mask"] == 0
    assert pads.any(), "the test needs a left-padded row"
    with torch.no_grad(), steer(model, ns, "-en", deactivate_value=7.0, positions=positions):
        after = sites.activations[0].register_forward_hook(lambda m, a, out: edited.append(out[..., index].clone()))
        model.generate(**batch, max_new_tokens=4, do_sample=False, use_cache=True, pad_token_id=tokenizer.pad_token_id)
        after.remove()
    before.remove()
    assert len(raw) == len(edited) == 4  # one prefill pass + three single-token decoding passes
    for step, (r, e) in enumerate(zip(raw, edited)):
        changed = (r != e).any(-1)  # [B, T]
        prompt_pass = step == 0
        if prompt_pass and positions == "answer":  # only the last prompt token: it predicts the first answer token
            want = torch.zeros_like(pads)
            want[:, -1] = True
        elif prompt_pass:
            want = ~pads if positions in ("all", "prompt") else torch.zeros_like(pads)
        else:
            want = torch.full(changed.shape, positions in ("all", "generated", "answer"))
        assert torch.equal(changed, want), (positions, step)
        assert bool((e[changed] == 7.0).all())


@pytest.mark.parametrize("spec_positions", ["all", "answer", "generated"])
def test_a_given_mask_overrides_what_positions_would_derive(spec_positions):
    model = build_model("llama")
    ns = make_set(resolve(model).width)
    sites, raw, edited, before, index = _edit_recorders(model, ns)
    ids = torch.tensor([[5, 17, 42, 8, 0], [33, 4, 250, 0, 0]])  # right-padded, no cache: lm-eval's scoring pass
    given = torch.tensor([[True, True, False, False, False], [False, True, True, False, False]])
    with torch.no_grad(), steer(model, ns, "-en", deactivate_value=7.0, positions=spec_positions) as handle:
        after = sites.activations[0].register_forward_hook(lambda m, a, out: edited.append(out[..., index].clone()))
        with handle.given_mask(given):
            model(input_ids=ids)
        with handle.given_mask(torch.zeros_like(given)):
            model(input_ids=ids)
        with pytest.raises(LapeEvalError, match="one mask entry per row and token"), handle.given_mask(given[:1]):
            model(input_ids=ids)
        after.remove()
    before.remove()
    assert torch.equal((raw[0] != edited[0]).any(-1), given)
    assert bool((edited[0][given] == 7.0).all())
    assert torch.equal(raw[1], edited[1])  # an all-false mask edits nothing
    assert handle.tracker.given is None


def test_context_manager_restores_the_model_bit_identically_even_on_error():
    model = build_model("llama")
    ns = make_set(resolve(model).width)
    ids = torch.tensor([[5, 17, 42, 8]])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        with steer(model, ns, "-en +de", alpha=4.0):
            steered = model(input_ids=ids).logits
        assert not torch.equal(steered, reference)
        with pytest.raises(RuntimeError, match="boom"):
            with steer(model, ns, "-en +de"):
                raise RuntimeError("boom")
        after = model(input_ids=ids).logits
    assert torch.equal(after, reference)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_steering_composes_with_autograd_without_touching_saved_tensors():
    model = build_model("llama")
    ns = make_set(resolve(model).width)
    with steer(model, ns, "-en +de"):
        loss = model(input_ids=torch.tensor([[5, 17, 42, 8]]), labels=torch.tensor([[5, 17, 42, 8]])).loss
        loss.backward()
    assert model.model.layers[0].mlp.gate_proj.weight.grad is not None


class TestSpecsThatDoNotFitTheSet:
    def test_language_not_in_the_set(self):
        model = build_model("llama")
        ns = make_set(resolve(model).width)
        with pytest.raises(LapeEvalError, match="no neurons for 'zh'.*covers en, de, fr"):
            with steer(model, ns, "+zh"):
                pass

    def test_set_for_another_model_shape(self):
        model = build_model("qwen2")  # width 64
        ns = make_set(96)
        with pytest.raises(LapeEvalError, match="96"):
            with steer(model, ns, "+de"):
                pass
        assert not any(m._forward_hooks for m in model.modules())

    def test_means_needed_but_absent(self):
        model = build_model("llama")
        ns = make_set(resolve(model).width)
        ns.means_table = None
        with pytest.raises(LapeEvalError, match="needs the mean activations"):
            with steer(model, ns, "+de"):
                pass
        with steer(model, ns, "-en +de", method="multiply", beta=0.5):
            pass


def test_language_alphas_steer_like_per_term_strengths():
    model = build_model("llama")
    ns = make_set(resolve(model).width)
    ids = torch.tensor([[5, 17, 42, 8]])
    with torch.no_grad():
        with steer(model, ns, "+de", language_alphas={"de": 2.5}):
            by_table = model(input_ids=ids).logits
        with steer(model, ns, "+de:2.5"):
            by_term = model(input_ids=ids).logits
    assert torch.equal(by_table, by_term)  # the same float32 edit values, the same computation: exact


def test_a_set_of_languages_outside_the_21_steers_by_any_spelling_of_their_codes():
    # The hand-made set with de and fr renamed to Slovak and Greek (CLaS-Bench languages): "-eng +slk"
    # must edit exactly what "-en +de" edits on the original set.
    model = build_model("llama")
    sites = resolve(model)
    original = make_set(sites.width, sites.num_layers)
    renamed = NeuronSet(["en", "sk", "el"], original.num_layers, original.width,
                        {new: original.flat[old] for new, old in zip(["en", "sk", "el"], LANGS)},
                        original.selected, original.means_table, {"model": {"id": "tiny"}})
    ids = torch.tensor([[5, 17, 42, 8, 99, 120, 7]])
    with torch.no_grad():
        with steer(model, original, parse_steer("-en +de", alpha=2.0)):
            expected = model(input_ids=ids).logits
        with steer(model, renamed, parse_steer("-eng +slk", alpha=2.0)):
            got = model(input_ids=ids).logits
        plain = model(input_ids=ids).logits
    assert torch.equal(got, expected) and not torch.equal(got, plain)
