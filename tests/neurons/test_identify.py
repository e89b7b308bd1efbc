"""Identification (lape_eval.neurons.identify and the `identify` command): planted neurons recovered
exactly from collected statistics, file names, several rates, and bad input."""

from __future__ import annotations

import pytest
import torch

from lape_eval.arch import ACTIVATION_POINT
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.corpus import CorpusSpec, token_stream
from lape_eval.neurons.identify import (default_set_name, identify_neuron_sets, neuron_set_from_selection,
                                        parse_top_rates, rate_label, set_file_name)
from lape_eval.neurons.neuron_set import NeuronSet
from lape_eval.neurons.selection import select_language_neurons
from lape_eval.neurons.stats import CollectSettings, collect, load_statistics
from neuron_samples import assert_same_set, assert_user_error, run_cli, synthetic_table, write_statistics
from tiny_models import build_model, build_tokenizer

# --------------------------------------------------------------------------------------------------
# Planted neurons: a tiny model edited so that chosen neurons fire only on Russian tokens

LANGS = ["en", "ru", "zh"]
PLANTED = {0: [7, 50], 1: [3, 90]}  # layer -> neurons
INDICATOR, BIAS = 30, 31  # reserved hidden dimensions
MAX_TOKENS = 2000


def _plant(model, russian_only: set[int]):
    """Make the PLANTED neurons' gate pre-activation positive exactly on Russian-only tokens.

    The embedding's INDICATOR dimension is +1 on tokens that occur only in the Russian corpus and -1
    on every other token; BIAS is 1 everywhere. Zeroing those rows of every o_proj and down_proj means
    nothing else writes to them, so the residual stream carries the embedding's values into every layer,
    and RMSNorm (positive scale, weights 1) keeps their sign. A planted gate row reads only INDICATOR:
    g > 0 exactly on Russian-only tokens, so P(ru) is their share of the Russian tokens and P(en) =
    P(zh) = 0, i.e. LAPE 0. The other neurons get no INDICATOR input and a small negative bias, and the
    attention/MLP writes are damped: otherwise the random tiny model has neurons that fire on almost
    every token, and the 95th-percentile filter threshold would sit above any language-specific neuron.
    (With seed 0: threshold 0.55 against P(ru) 0.73; the next-lowest LAPE after the planted 0s is 0.56.)
    """
    with torch.no_grad():
        embedding = model.model.embed_tokens.weight
        embedding[:, INDICATOR] = -1.0
        embedding[sorted(russian_only), INDICATOR] = 1.0
        embedding[:, BIAS] = 1.0
        for layer, decoder_layer in enumerate(model.model.layers):
            for writer in (decoder_layer.self_attn.o_proj.weight, decoder_layer.mlp.down_proj.weight):
                writer.mul_(0.1)
                writer[[INDICATOR, BIAS]] = 0.0
            gate = decoder_layer.mlp.gate_proj.weight
            gate[:, INDICATOR] = 0.0
            gate[:, BIAS] = -0.2
            for neuron in PLANTED[layer]:
                gate[neuron] = 0.0
                gate[neuron, INDICATOR] = 1.0
    return model


@pytest.fixture(scope="module")
def planted_statistics(tmp_path_factory):
    tokenizer = build_tokenizer()
    corpus = CorpusSpec("udhr")
    # The exact token streams `collect` counts (no BOS: the tiny tokenizer adds none).
    streams = {lang: list(token_stream(corpus.documents(lang), tokenizer, MAX_TOKENS)) for lang in LANGS}
    russian_only = set(streams["ru"]) - set(streams["en"]) - set(streams["zh"])
    share = sum(token in russian_only for token in streams["ru"]) / len(streams["ru"])
    model = _plant(build_model("llama"), russian_only)
    folder = tmp_path_factory.mktemp("planted") / "stats"
    collect(model, tokenizer, LANGS, folder, CollectSettings(corpus, seq_len=64, max_tokens=MAX_TOKENS, progress=False),
            model_name="tiny-planted-llama")
    return folder, share


def test_planted_neurons_are_recovered_exactly(planted_statistics, tmp_path):
    folder, share = planted_statistics
    table = load_statistics(folder, LANGS)
    probability = table.positive_counts.double() / table.tokens.view(-1, 1, 1)
    for layer, neurons in PLANTED.items():  # the construction did what it says
        assert probability[:, layer, neurons].tolist() == [[0.0] * 2, [share] * 2, [0.0] * 2]

    # 0.021 keeps round(0.021 * 2 * 96) = 4 neurons: exactly as many as were planted.
    result = run_cli("identify", folder, "--out", tmp_path, "--name", "planted", "--top-rates", "0.021,0.05",
                     "--languages", ",".join(LANGS))
    assert result.exit_code == 0, result.output
    exact = NeuronSet.load(tmp_path / "planted-2.1pct.safetensors")
    assert exact.metadata["selection"]["filter_threshold"] < share  # the planted neurons pass the filter
    assert [t.tolist() for t in exact.indices("ru")] == [PLANTED[0], PLANTED[1]]
    assert exact.neuron_count("en") == exact.neuron_count("zh") == 0
    assert exact.unique_neuron_count == 4

    wider = NeuronSet.load(tmp_path / "planted-5pct.safetensors")
    assert wider.unique_neuron_count == round(0.05 * 2 * 96)
    for layer, neurons in PLANTED.items():
        assert set(neurons) <= set(wider.indices("ru")[layer].tolist())
        for other in ("en", "zh"):
            assert not set(neurons) & set(wider.indices(other)[layer].tolist())

    # Means: planted neurons are positive on Russian, negative (SiLU of a negative input) elsewhere,
    # and equal the statistics' mean activations at the set's indices.
    mean_activation = table.mean_activation.float()
    for layer, (idx, russian, english) in enumerate(zip(exact.indices("ru"), exact.means("ru"), exact.means("ru", of="en"))):
        assert (russian > 0).all() and (english < 0).all()
        assert torch.equal(russian, mean_activation[1, layer, idx])
        assert torch.equal(english, mean_activation[0, layer, idx])

    # The written files hold exactly what the selection and statistics give (identify round trip).
    selections = select_language_neurons(table.positive_counts, table.tokens, LANGS, [0.021, 0.05])
    for rate, loaded in ((0.021, exact), (0.05, wider)):
        assert_same_set(neuron_set_from_selection(selections[rate], table), loaded)
        assert loaded.metadata["selection"]["top_rate"] == rate
        assert loaded.metadata["statistics"]["tokens_per_language"] == {lang: MAX_TOKENS for lang in LANGS}
        assert loaded.metadata["model"] == {"id": "tiny-planted-llama", "revision": None, "model_type": "llama",
                                            "activation_point": ACTIVATION_POINT}
    assert "ru" in result.output and "planted-5pct.safetensors" in result.output
    exact.check_model(build_model("llama"))


# --------------------------------------------------------------------------------------------------
# Bad input and naming


class TestBadInput:
    def test_statistics_of_different_models_mixed(self, tmp_path):
        first = write_statistics(tmp_path / "a", synthetic_table(["en", "de"]))
        second = write_statistics(tmp_path / "b", synthetic_table(["ru"], width=64, model="other"))
        result = run_cli("identify", first, second, "--out", tmp_path / "sets")
        assert_user_error(result, "made with other settings", "width: 64 there, 96 now", "model: ")
        assert not (tmp_path / "sets").exists()

    def test_language_missing_from_the_statistics(self, tmp_path):
        folder = write_statistics(tmp_path / "a", synthetic_table(["en", "de", "ru"]))
        result = run_cli("identify", folder, "--languages", "en,ko", "--out", tmp_path / "sets")
        assert_user_error(result, "No statistics for ko", "found: de, en, ru")
        assert not (tmp_path / "sets").exists()

    @pytest.mark.parametrize("rates, message", [
        ("1.5", "1.5 is not in the open interval (0, 1)"),
        ("0", "0 is not in the open interval (0, 1)"),
        ("0.01,-0.02", "-0.02 is not in the open interval"),
        ("5", "for 5 % write 0.05"),
        ("abc", "'abc' is not a number"),
        ("0.001", "keeps round(0.001 × 192) = 0"),
    ])
    def test_top_rate_outside_the_open_unit_interval(self, tmp_path, rates, message):
        folder = write_statistics(tmp_path / "a", synthetic_table(["en", "de"]))
        result = run_cli("identify", folder, "--top-rates", rates, "--out", tmp_path / "sets")
        assert_user_error(result, message)
        assert not (tmp_path / "sets").exists()

    def test_identify_subset_names_and_several_rates(self, tmp_path):
        folder = write_statistics(tmp_path / "a", synthetic_table(["en", "de", "ru"], model="org/My Model"))
        result = run_cli("identify", folder, "--languages", "ru,en", "--top-rates", "0.05,0.025,0.05",
                         "--out", tmp_path / "sets")
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in (tmp_path / "sets").iterdir()) == [
            "My-Model-udhr-2.5pct.safetensors", "My-Model-udhr-5pct.safetensors"]
        loaded = NeuronSet.load(tmp_path / "sets" / "My-Model-udhr-2.5pct.safetensors")
        assert loaded.languages == ["ru", "en"]
        assert loaded.metadata["provenance"]["created_by"]["top_rates"] == [0.05, 0.025]


class TestLibraryMessages:
    """The library names values generically; only the command line names its options."""

    @pytest.mark.parametrize("text, message", [
        ("abc", "top rates: 'abc' is not a number"),
        ("2", "top rates: 2 is not in the open interval (0, 1)"),
        ("", "top rates is empty"),
        ("0.01,0.0100000000001", "two rates would get the same file name"),
    ])
    def test_parse_top_rates(self, text, message):
        with pytest.raises(LapeEvalError) as error:
            parse_top_rates(text)
        assert message in str(error.value) and "--" not in str(error.value)

    def test_parse_top_rates_keeps_the_order_and_drops_repeats(self):
        assert parse_top_rates("0.05, 0.01 0.05") == [0.05, 0.01]

    @pytest.mark.parametrize("keyword, message", [
        ({"filter_quantile": 1.5}, "The filter quantile must be in the open interval (0, 1); got 1.5"),
        ({"activation_bar_quantile": 0.0}, "The activation-bar quantile must be in the open interval (0, 1)"),
    ])
    def test_quantiles(self, tmp_path, keyword, message):
        folder = write_statistics(tmp_path / "a", synthetic_table(["en", "de"]))
        with pytest.raises(LapeEvalError) as error:
            identify_neuron_sets([folder], [0.05], **keyword)
        assert message in str(error.value) and "--" not in str(error.value)

    def test_a_rate_that_keeps_no_neuron(self, tmp_path):
        folder = write_statistics(tmp_path / "a", synthetic_table(["en", "de"]))  # 2 layers x 96 = 192 neurons
        with pytest.raises(LapeEvalError) as error:
            identify_neuron_sets([folder], [0.002])
        assert "The top rate 0.002 keeps round(0.002 × 192) = 0" in str(error.value) and "--" not in str(error.value)

    def test_file_names(self):
        assert [rate_label(r) for r in (0.01, 0.025, 0.1)] == ["1pct", "2.5pct", "10pct"]
        assert set_file_name("gemma-udhr", 0.025) == "gemma-udhr-2.5pct.safetensors"
        assert default_set_name("google/gemma-3-270m", "udhr") == "gemma-3-270m-udhr"
        assert default_set_name("/models/My Model/", "udhr:identify") == "My-Model"
