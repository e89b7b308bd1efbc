"""The logit lens (method spec §6.7): per-layer probabilities against a manual computation (the final
RMSNorm, the LM head and Gemma's soft-cap applied by hand) on a tiny Llama and a tiny Gemma-3 (and on
the real Gemma-3-270M, slow), the last layer against the model's own logits, the per-language masses
against hand sums, the refusal of an unchecked family, and the command."""

from __future__ import annotations

import csv
import io

import pytest
import torch

from float_bounds import FORWARD, assert_close_at_scale
from handmade_sets import make_set
from lape_eval.arch import resolve
from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.lid import LanguageIdentifier
from lape_eval.experiments import logit_lens
from recorded_runs import invoke
from tiny_models import build_model, build_tokenizer

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

IDS = torch.tensor([[5, 17, 33, 40, 7, 9, 120]])


def manual_probabilities(model, ids, gemma: bool, softcap: float | None) -> torch.Tensor:
    """Layers 1..L-1 from transformers' hidden states (outputs of the decoder layers before the final
    norm), normalised and projected by hand; layer L is the model's own output."""
    with torch.no_grad():
        output = model(input_ids=ids, output_hidden_states=True)
    config = model.config
    weight = model.model.norm.weight
    head = model.lm_head.weight
    rows = []
    for h in output.hidden_states[1:-1]:
        h = h[0, -1].float()
        normed = h / torch.sqrt(h.pow(2).mean() + config.rms_norm_eps)
        normed = normed * (1.0 + weight.float()) if gemma else normed * weight.float()
        logits = head.float() @ normed
        if softcap is not None:
            logits = softcap * torch.tanh(logits / softcap)
        rows.append(torch.softmax(logits, dim=-1))
    rows.append(torch.softmax(output.logits[0, -1].float(), dim=-1))
    return torch.stack(rows)


@pytest.mark.parametrize("arch,softcap", [("llama", None), ("gemma3", None), ("gemma3", 2.0)])
def test_layer_probabilities_equal_the_manual_computation(arch, softcap):
    model = build_model(arch)
    gemma = arch.startswith("gemma")
    if softcap is not None:
        model.config.final_logit_softcapping = softcap  # read by the forward pass and by final_head
    lens = torch.softmax(logit_lens.layer_logits(model, IDS), dim=-1)
    assert lens.shape[0] == resolve(model).num_layers
    # FORWARD: a tiny model's forward pass in another summation order (tests/float_bounds.py); the
    # softmax over 512 words keeps the logits' relative error.
    assert_close_at_scale(lens, manual_probabilities(model, IDS, gemma, softcap), FORWARD, arch)


def test_softcap_matters():
    model = build_model("gemma3")
    plain = logit_lens.layer_logits(model, IDS)
    model.config.final_logit_softcapping = 2.0
    capped = logit_lens.layer_logits(model, IDS)
    assert capped.abs().max() <= 2.0 and (plain - capped).abs().max() > 0.1


class ByToken(LanguageIdentifier):
    """A stand-in identifier: token texts containing a vowel are 'de', others 'en'."""

    name = "stub"

    def _classify(self, lines):
        return [("de" if any(v in line for v in "aeiou") else "en", 1.0) for line in lines]


def test_masses_are_hand_sums_of_the_top_tokens():
    model, tokenizer = build_model("llama"), build_tokenizer()
    logits = logit_lens.layer_logits(model, IDS)
    tops = logit_lens.top_tokens(logits, tokenizer, ByToken(), top_k=5)
    for layer, top in enumerate(tops):
        probabilities = torch.softmax(logits[layer], dim=-1)
        order = torch.argsort(probabilities, descending=True)[:5].tolist()
        assert top.token_ids == order and top.layer == layer + 1
        hand = {"de": 0.0, "en": 0.0}
        for token_id in order:
            text = tokenizer.decode([token_id]).replace("\n", " ").strip()
            label = "unknown" if not any(c.isalpha() for c in text) else (
                "de" if any(v in text for v in "aeiou") else "en")
            if label in hand:
                hand[label] += float(probabilities[token_id])
        # 1e-6: five float32 probabilities summed in another order.
        assert top.mass("de") == pytest.approx(hand["de"], abs=1e-6)
        assert top.mass("en") == pytest.approx(hand["en"], abs=1e-6)


def test_rows_average_over_prompts(tmp_path):
    model, tokenizer = build_model("llama"), build_tokenizer()
    prompts = {"de": ["Q: Wie heißt du? \nA:", "Q: Woher kommst du? \nA:"]}
    rows = logit_lens.run_logit_lens(model, tokenizer, prompts, ByToken(), progress=False,
                                     tokens_file=tmp_path / "tokens.jsonl")
    per_prompt = []
    for prompt in prompts["de"]:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        per_prompt.append(logit_lens.top_tokens(logit_lens.layer_logits(model, ids), tokenizer, ByToken()))
    assert [r.layer for r in rows] == [1, 2]
    for row in rows:
        tops = [p[row.layer - 1] for p in per_prompt]
        # 1e-6: two sums of five float32 probabilities, averaged.
        assert row.prompt_language_mass == pytest.approx(sum(t.mass("de") for t in tops) / 2, abs=1e-6)
        assert row.english_mass == pytest.approx(sum(t.mass("en") for t in tops) / 2, abs=1e-6)
        assert row.prompts == 2
    assert len((tmp_path / "tokens.jsonl").read_text().splitlines()) == 4


def test_unchecked_family_is_refused(monkeypatch):
    monkeypatch.setattr(logit_lens, "_LENS_FAMILIES", ("gpt2",))
    with pytest.raises(LapeEvalError, match="after its last layer"):
        logit_lens.final_head(build_model("llama"))


def test_cli_with_a_steer_spec(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    make_set(resolve(build_model("llama")).width).save(tmp_path / "set.safetensors")
    invoke("experiment", "logit-lens", "--model", model_dir, "--device", "cpu", "--languages", "en,de", "--lid",
           "cld2", "--neurons", tmp_path / "set.safetensors", "--steer", "-en +de:4", "--out", tmp_path / "lens")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "lens" / "logit_lens.csv").read_text())))
    assert {(r["condition"], r["language"]) for r in rows} == {("none", "en"), ("none", "de"), ("-en +de:4", "en"),
                                                                ("-en +de:4", "de")}
    assert {r["layer"] for r in rows} == {"1", "2"} and all(r["prompts"] == "6" for r in rows)
    assert (tmp_path / "lens" / "logit_lens.png").is_file()
    assert "--steer needs --neurons" in invoke("experiment", "logit-lens", "--model", model_dir, "--steer", "-en",
                                               "--out", tmp_path / "x", expect=2).output


@pytest.mark.slow
def test_real_gemma3(gemma):
    model, tokenizer = gemma.model, gemma.tokenizer
    ids = tokenizer("Q: Wie heißt du? \nA:", return_tensors="pt")["input_ids"]
    softcap = getattr(model.config, "final_logit_softcapping", None)
    lens = torch.softmax(logit_lens.layer_logits(model, ids), dim=-1)
    # FORWARD: the same forward pass in another summation order, on a 640-wide model (float32).
    assert_close_at_scale(lens, manual_probabilities(model, ids, True, softcap), FORWARD, "gemma-3-270m")
