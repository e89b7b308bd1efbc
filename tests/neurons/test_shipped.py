"""Shipped neuron sets (lape_eval.neurons.shipped): lookup by name or path, and the sets shipped in
neuron_sets/ (Gemma-3-270M on the bundled UDHR): sizes and the qualitative findings of the paper,
checked against the files (see neuron_sets/README.md)."""

from __future__ import annotations

import pytest

from lape_eval.errors import LapeEvalError
from lape_eval.languages import PAPER_LANGUAGES, get_language
from lape_eval.neurons.inspection import jaccard_matrix, upper_half_share
from lape_eval.neurons.shipped import neuron_set_path, resolve_neuron_set, shipped_neuron_sets
from neuron_samples import hand_set

RATES = {1: 0.01, 2: 0.02, 3: 0.03, 4: 0.04, 5: 0.05}


@pytest.mark.parametrize("percent", sorted(RATES))
def test_shipped_set_loads_verifies_and_has_the_lape_size(percent):
    name = f"gemma-3-270m-udhr-{percent}pct"
    assert name in shipped_neuron_sets()
    ns = resolve_neuron_set(name)  # checks format and content hash
    assert ns.shape == (18, 2048) and ns.languages == list(PAPER_LANGUAGES)
    assert ns.unique_neuron_count == round(RATES[percent] * 18 * 2048)
    assert ns.info["selection"]["top_rate"] == RATES[percent]
    assert ns.info["statistics"]["corpus"] == "udhr:identify"
    assert ns.has_means


def test_default_set_shows_the_papers_qualitative_findings():
    ns = resolve_neuron_set("gemma-3-270m-udhr-1pct")
    non_latin = [code for code in ns.languages if not get_language(code).latin_script]
    assert sorted(non_latin) == sorted(["bo", "ja", "ar", "zh", "ru", "ko", "hi"])
    assert all(ns.neuron_count(code) > ns.neuron_count("en") for code in non_latin)
    assert upper_half_share(ns) > 0.5
    overlap = jaccard_matrix(ns)
    index = ns.languages.index
    assert overlap[index("da"), index("no")] > overlap[index("en"), index("de")]


def test_shipped_set_names_resolve(tmp_path, monkeypatch):
    path = hand_set().save(tmp_path / "hand-1pct.safetensors")
    (tmp_path / "README.md").write_text("not a set")
    monkeypatch.setattr("lape_eval.resources.shipped_folder", lambda name: tmp_path if name == "neuron_sets" else None)
    assert shipped_neuron_sets() == {"hand-1pct": path}
    assert neuron_set_path("hand-1pct") == path
    assert neuron_set_path("hand-1pct.safetensors") == path
    assert resolve_neuron_set("hand-1pct").content_hash == hand_set().content_hash
    assert resolve_neuron_set(str(path)).languages == ["en", "de", "ru"]
    with pytest.raises(LapeEvalError, match=r"No neuron set 'nope'.*shipped: hand-1pct"):
        neuron_set_path("nope")
