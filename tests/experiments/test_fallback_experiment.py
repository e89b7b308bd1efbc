"""The fallback experiment (method spec §6.6): the reference's prompt, order and cumulative unions
(against hand-built unions), every deactivation variant against a manual MLP computation, and a small
end-to-end run with its resume."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from float_bounds import FORWARD, assert_close_at_scale
from handmade_sets import make_set, picks
from lape_eval.arch import resolve
from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.lid import LanguageIdentifier
from lape_eval.experiments import fallback
from lape_eval.experiments.vicuna import load_questions
from recorded_runs import invoke
from tiny_models import build_model, build_tokenizer

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics


def test_prompt_is_the_reference_format_byte_for_byte():
    question = "What if the Beatles had never formed as a band?"
    reference = "Q: " + question + "A: "  # src/fallbacks.py: model.generate(["Q: "+prompt+"A: "], ...)
    assert fallback.fallback_prompt(question).encode("utf-8") == reference.encode("utf-8")
    assert fallback.fallback_prompt(question) == "Q: What if the Beatles had never formed as a band?A: "


def test_reference_order_value_and_length():
    assert fallback.cumulative_conditions(list(fallback.REFERENCE_ORDER)) == [
        ["en"], ["en", "fr"], ["en", "fr", "es"], ["en", "fr", "es", "it"], ["en", "fr", "es", "it", "pt"],
        ["en", "fr", "es", "it", "pt", "ru"], ["en", "fr", "es", "it", "pt", "ru", "de"],
        ["en", "fr", "es", "it", "pt", "ru", "de", "ar"], ["en", "fr", "es", "it", "pt", "ru", "de", "ar", "zh"],
        ["en", "fr", "es", "it", "pt", "ru", "de", "ar", "zh", "ko"],
        ["en", "fr", "es", "it", "pt", "ru", "de", "ar", "zh", "ko", "ja"]]
    assert fallback.DEACTIVATE_VALUE == -1.5 and fallback.MAX_NEW_TOKENS == 128
    assert fallback.FallbackSettings().variant == "negative"


def test_cumulative_unions_equal_hand_built_unions():
    ns = make_set(96)
    # handmade_sets.PICKS: en [[7, 20, 21], [3]], de [[7, 40], [50, 51, 52]], fr [[], [3, 90]]
    hand = {1: [[7, 20, 21], [3]], 2: [[7, 20, 21, 40], [3, 50, 51, 52]], 3: [[7, 20, 21, 40], [3, 50, 51, 52, 90]]}
    for languages in fallback.cumulative_conditions(["en", "de", "fr"]):
        union = fallback.union_per_layer(ns, languages)
        assert [u.tolist() for u in union] == hand[len(languages)]
    with pytest.raises(LapeEvalError, match="no neurons for ko"):
        fallback.union_per_layer(ns, ["en", "ko"])


def _expected(g, index, variant, value, generator):
    """The reference's update, neuron by neuron (src/fallbacks.py, llama_forward)."""
    out = g.clone()
    draws = torch.randn((*g.shape[:-1], len(index)), generator=generator) if generator is not None else None
    mean = g.mean(dim=-1)
    for k, j in enumerate(index):
        if variant == "negative":
            out[..., j] = value
        elif variant == "zero":
            out[..., j] = 0.0
        elif variant == "mean":
            out[..., j] = mean
        elif variant == "random":
            out[..., j] = draws[..., k] * 0.1
        elif variant == "mask":
            out[..., j] = g[..., j] * -0.1
        elif variant == "noise":
            out[..., j] = g[..., j] + draws[..., k] * 5.0
        elif variant == "invert":
            out[..., j] = -g[..., j]
    return out


@pytest.mark.parametrize("variant", fallback.VARIANTS)
def test_each_variant_reaches_the_mlp(variant):
    model = build_model("llama")
    sites = resolve(model)
    ns = make_set(sites.width)
    union = fallback.union_per_layer(ns, ["en", "de"])
    hand_union = [sorted(set(picks("en", layer)) | set(picks("de", layer))) for layer in range(2)]
    ids = torch.tensor([[5, 17, 33, 40, 7, 9]])
    seen = {}
    hooks = []
    for layer, decoder_layer in enumerate(sites.layers):
        mlp = decoder_layer.mlp
        hooks.append(mlp.register_forward_hook(
            lambda module, args, output, layer=layer: seen.__setitem__(layer, (args[0].detach(), output.detach()))))
    with torch.no_grad(), fallback.deactivate(model, union, variant, value=-1.5, seed=3):
        model(input_ids=ids)
    for handle in hooks:
        handle.remove()
    for layer, decoder_layer in enumerate(sites.layers):
        mlp = decoder_layer.mlp
        x, actual = seen[layer]
        g = mlp.act_fn(F.linear(x, mlp.gate_proj.weight))
        generator = torch.Generator().manual_seed(3 + layer) if variant in ("random", "noise") else None
        g = _expected(g, hand_union[layer], variant, -1.5, generator)
        expected = F.linear(g * F.linear(x, mlp.up_proj.weight), mlp.down_proj.weight)
        # FORWARD: one MLP of a tiny model in another summation order (tests/float_bounds.py).
        assert_close_at_scale(actual, expected, FORWARD, f"{variant}, layer {layer}")
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with fallback.deactivate(model, union, variant, value=-1.5, seed=3):
            edited = model(input_ids=ids).logits
    assert (plain - edited).abs().max() > 1e-3  # the edit changes the output; leaving the block restores it
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, plain)


class Labels(LanguageIdentifier):
    """A stand-in for lid.176: 'en' for answers with a Latin letter, else 'unknown'."""

    name = "stub"

    def _classify(self, lines):
        return [("en" if any("a" <= c.lower() <= "z" for c in line) else "xx", 1.0) for line in lines]


def test_end_to_end_on_a_tiny_model_and_resume(tmp_path, monkeypatch):
    model, tokenizer = build_model("llama"), build_tokenizer()
    ns = make_set(resolve(model).width)
    questions_file = tmp_path / "en.txt"
    questions_file.write_text("What is jazz?\nWhy do we sleep?\n", encoding="utf-8")
    questions = load_questions(questions_file)
    settings = fallback.FallbackSettings(order=["en", "de", "fr"], max_new_tokens=3, baseline=True, lid="cld2")
    out = tmp_path / "out"
    result = fallback.run_fallback(model, tokenizer, ns, questions, out, settings, model_name="tiny",
                                   progress=False, identifier=Labels())
    assert [s.number for s in result.study.steps] == [0, 1, 2, 3]
    assert [s.deactivated for s in result.study.steps] == [[], ["en"], ["en", "de"], ["en", "de", "fr"]]
    for step in range(4):
        rows = [json.loads(line) for line in fallback.step_file(out, step).read_text().splitlines()]
        assert [r["prompt"] for r in rows] == ["Q: What is jazz?A: ", "Q: Why do we sleep?A: "]
        assert result.study.steps[step].total == 2
        hand = {}
        for r in rows:
            hand[r["label"]] = hand.get(r["label"], 0) + 1
        assert dict(result.study.steps[step].counts) == hand
    recorded = json.loads((out / "settings.json").read_text())
    assert recorded["value"] == -1.5 and recorded["variant"] == "negative" and recorded["max_new_tokens"] == 3
    for name in ("table", "csv", "figure", "summary"):
        assert result.files[name].is_file()

    def no_generation(*args, **kwargs):
        raise AssertionError("a complete step was generated again")

    monkeypatch.setattr(fallback, "generate_answers", no_generation)
    again = fallback.run_fallback(model, tokenizer, ns, questions, out, settings, model_name="tiny", progress=False,
                                  identifier=Labels())
    assert [dict(s.counts) for s in again.study.steps] == [dict(s.counts) for s in result.study.steps]
    other = fallback.FallbackSettings(order=["en", "de", "fr"], max_new_tokens=3, baseline=True, value=0.0)
    with pytest.raises(LapeEvalError, match="other settings.*value"):
        fallback.run_fallback(model, tokenizer, ns, questions, out, other, model_name="tiny", progress=False,
                              identifier=Labels())


def test_cli(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    ns = make_set(resolve(build_model("llama")).width)
    ns.save(tmp_path / "set.safetensors")
    (tmp_path / "en.txt").write_text("What is jazz?\n", encoding="utf-8")
    out = invoke("experiment", "fallback", "--model", model_dir, "--device", "cpu", "--neurons",
                 tmp_path / "set.safetensors", "--questions", tmp_path / "en.txt", "--order", "en,de",
                 "--max-new-tokens", "2", "--lid", "cld2", "--out", tmp_path / "run").output
    assert "Falls back to" in out and "step 2 (deactivated: en de)" in out
    assert (tmp_path / "run" / "fallback.png").is_file()
    assert "no neurons for es, it, pt" in invoke("experiment", "fallback", "--model", model_dir, "--device", "cpu",
                                         "--neurons", tmp_path / "set.safetensors", "--questions",
                                         tmp_path / "en.txt", "--out", tmp_path / "run2", expect=2).output


def test_fallback_commands_points_to_the_experiment():
    out = invoke("fallback-commands", "--model-args", "pretrained=m", "--tasks", "t", "--output-root", "r",
                 expect=2).output
    assert "lape-eval experiment fallback" in out and "c = -1.5" in out
