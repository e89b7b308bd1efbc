"""Neuron-set artifacts: round trips, a planted-neuron recovery, interchange, inspection, bad input."""

from __future__ import annotations

import csv
import io
import json
import pickle
from pathlib import Path

import pytest
import torch

from lape_eval.arch import ACTIVATION_POINT, resolve
from lape_eval.neurons.corpus import CorpusSpec, token_stream
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.selection import select_language_neurons
from lape_eval.neurons.inspection import jaccard_matrix, upper_half_share
from lape_eval.neurons.neuron_set import NeuronSet, neuron_set_path, resolve_neuron_set, shipped_neuron_sets
from lape_eval.neurons.reference_masks import export_reference_masks, import_reference_masks
from lape_eval.neurons.stats import (
    CollectionIdentity,
    CollectSettings,
    LanguageStats,
    StatisticsFolder,
    StatisticsTable,
    collect,
    load_statistics,
)
from tiny_models import build_model, build_tokenizer


def run_cli(*args):
    from click.testing import CliRunner

    from lape_eval.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_user_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    for fragment in fragments:
        assert fragment in result.output, result.output


# --------------------------------------------------------------------------------------------------
# A hand-built set whose counts and overlaps are easy to compute by hand

WIDTH = 10
HAND = {  # language -> neuron indices per layer (3 layers)
    "en": [[1, 2], [], [5]],  # flat 1, 2, 25
    "de": [[2], [3], [5, 7]],  # flat 2, 13, 25, 27
    "ru": [[], [0, 3, 9], [8]],  # flat 10, 13, 19, 28
}


def hand_set(with_means: bool = True) -> NeuronSet:
    languages = list(HAND)
    flat = {lang: torch.tensor([l * WIDTH + i for l, idx in enumerate(layers) for i in idx], dtype=torch.int64)
            for lang, layers in HAND.items()}
    selected = torch.unique(torch.cat(list(flat.values())))
    # means[k, j] = 100 k + flat index: every value says which language and neuron it belongs to.
    means = (100 * torch.arange(3).view(-1, 1) + selected.view(1, -1)).float() if with_means else None
    info = {"model": {"id": "hand-made", "revision": None, "model_type": "llama", "activation_point": ACTIVATION_POINT},
            "selection": {"method": "LAPE", "top_rate": 0.25, "filter_quantile": 0.95, "activation_bar_quantile": 0.95,
                          "filter_threshold": 0.5, "activation_bar": 0.5},
            "statistics": {"corpus": "udhr", "seq_len": 64, "bos_token_id": None, "max_tokens": None,
                           "tokens_per_language": {"en": 100, "de": 120, "ru": 90}},
            "provenance": {"tool_version": "test", "created_by": None}}
    return NeuronSet(languages, 3, WIDTH, flat, selected, means, info)


def assert_same_set(a: NeuronSet, b: NeuronSet):
    assert a.languages == b.languages and a.shape == b.shape
    for lang in a.languages:
        assert torch.equal(a.flat_indices(lang), b.flat_indices(lang))
        assert all(torch.equal(x, y) for x, y in zip(a.indices(lang), b.indices(lang)))
    assert torch.equal(a.selected, b.selected)
    assert a.has_means == b.has_means
    if a.has_means:
        assert torch.equal(a.means_table, b.means_table)


class TestArtifact:
    def test_indices_and_means_per_layer_are_aligned(self):
        ns = hand_set()
        assert [t.tolist() for t in ns.indices("de")] == HAND["de"]
        assert all(t.dtype == torch.int64 for t in ns.indices("ru"))
        for layer, (idx, own, russian, others) in enumerate(
            zip(ns.indices("de"), ns.means("de"), ns.means("de", of="ru"), ns.mean_of_others("de"))
        ):
            flat = (layer * WIDTH + idx).float()
            assert torch.equal(own, 100 + flat)  # de is language 1
            assert torch.equal(russian, 200 + flat)
            assert torch.equal(others, (0 + 200) / 2 + flat)  # mean over en (0) and ru (200)
        assert [ns.neuron_count(k) for k in ns.languages] == [3, 4, 4]
        assert ns.unique_neuron_count == 8

    def test_save_load_round_trip_is_lossless_and_the_hash_stable(self, tmp_path):
        ns = hand_set()
        first = ns.save(tmp_path / "a.safetensors")
        loaded = NeuronSet.load(first)
        assert_same_set(ns, loaded)
        assert loaded.metadata == ns.metadata
        assert loaded.content_hash == ns.content_hash == loaded.metadata["content_hash"]
        again = loaded.save(tmp_path / "b.safetensors")
        assert first.read_bytes() == again.read_bytes()
        assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind

    def test_set_without_means_round_trips_and_refuses_mean_based_use(self, tmp_path):
        ns = hand_set(with_means=False)
        loaded = NeuronSet.load(ns.save(tmp_path / "n.safetensors"))
        assert_same_set(ns, loaded)
        assert not loaded.has_means and loaded.metadata["has_means"] is False
        with pytest.raises(LapeEvalError, match="no mean activations"):
            loaded.means("en")
        with pytest.raises(LapeEvalError, match="no mean activations"):
            loaded.mean_of_others("en")

    def test_subset_keeps_neurons_and_means_of_the_chosen_languages(self, tmp_path):
        ns = hand_set()
        sub = ns.subset(["ru", "en"])
        assert sub.languages == ["ru", "en"]
        assert sub.selected.tolist() == [1, 2, 10, 13, 19, 25, 28]
        for lang in ("ru", "en"):
            assert torch.equal(sub.flat_indices(lang), ns.flat_indices(lang))
            for of in ("ru", "en"):
                assert all(torch.equal(x, y) for x, y in zip(sub.means(lang, of=of), ns.means(lang, of=of)))
        assert all(torch.equal(x, y) for x, y in zip(sub.mean_of_others("ru"), ns.means("ru", of="en")))
        assert sub.metadata["provenance"]["subset_of"]["languages"] == ["en", "de", "ru"]
        assert_same_set(sub, NeuronSet.load(sub.save(tmp_path / "sub.safetensors")))
        with pytest.raises(LapeEvalError, match=r"ko not in the neuron set \(it has: en, de, ru\)"):
            ns.subset(["ko"])

    def test_check_model_names_both_shapes(self):
        llama = build_model("llama")  # 2 layers x 96
        ns = hand_set()
        ns.width, ns.num_layers = 96, 2  # the same set, declared for the llama shape
        ns.check_model(llama)
        ns.check_model(resolve(llama))
        with pytest.raises(LapeEvalError) as error:
            ns.check_model(build_model("qwen2"))  # 2 layers x 64
        assert "2 layers × 96 neurons (hand-made)" in str(error.value)
        assert "the model has 2 layers × 64 neurons" in str(error.value)
        with pytest.raises(LapeEvalError, match="the model has 3 layers × 96"):
            ns.check_model(build_model("gemma3"))

    def test_shipped_set_names_resolve(self, tmp_path, monkeypatch):
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


# --------------------------------------------------------------------------------------------------
# Interchange with the reference format


class _Payload:
    """Unpickling this runs ``open(marker, "w")``, which creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class TestReferenceFormat:
    def test_export_import_round_trip_is_lossless(self, tmp_path):
        ns = hand_set()
        exported = export_reference_masks(ns, tmp_path / "mask")
        raw = torch.load(exported, weights_only=True)
        assert [[t.tolist() for t in layers] for layers in raw] == list(HAND.values())
        assert all(t.dtype == torch.int64 for layers in raw for t in layers)
        back = import_reference_masks(exported, ns.languages, width=WIDTH)
        assert_same_set(hand_set(with_means=False), back)
        again = export_reference_masks(back, tmp_path / "mask2")
        assert [[t.tolist() for t in layers] for layers in torch.load(again, weights_only=True)] == list(HAND.values())

    def test_import_with_statistics_restores_the_means(self, tmp_path):
        table = synthetic_table(["en", "de", "ru", "zh"], num_layers=3, width=40, seed=1)
        selection = select_language_neurons(table.positive_counts, table.tokens, table.languages, [0.1])[0.1]
        ns = NeuronSet.from_selection(selection, table)
        assert ns.unique_neuron_count == 12
        mask = export_reference_masks(ns, tmp_path / "mask")
        back = import_reference_masks(mask, ns.languages, statistics=table)
        assert_same_set(ns, back)
        assert back.metadata["model"]["id"] == "synthetic"
        assert back.metadata["provenance"]["imported_from"]["file"] == "mask"

    def test_cli_import_and_export(self, tmp_path):
        ns_file = hand_set().save(tmp_path / "hand.safetensors")
        result = run_cli("export-masks", ns_file, "--out", tmp_path / "mask")
        assert result.exit_code == 0, result.output
        assert "language order en,de,ru" in result.output
        result = run_cli("import-masks", tmp_path / "mask", "--languages", "en,de,ru", "--width", WIDTH,
                         "--model", "hand-made", "--out", tmp_path / "back.safetensors")
        assert result.exit_code == 0, result.output
        assert "without mean activations" in result.output
        assert_same_set(hand_set(with_means=False), NeuronSet.load(tmp_path / "back.safetensors"))

    @pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
    def test_a_malicious_pickle_is_refused_without_running_code(self, tmp_path, writer):
        proof = tmp_path / "proof"
        pickle.loads(pickle.dumps(_Payload(proof))).close()
        assert proof.exists()  # the payload really runs code when unpickled without restrictions

        marker = tmp_path / "marker"
        payload = [[torch.tensor([1, 2]), _Payload(marker)]]
        path = tmp_path / "evil.pt"
        if writer == "torch.save":
            torch.save(payload, path)
        else:
            path.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(LapeEvalError, match="refused.*No code from it was run"):
            import_reference_masks(path, ["en"], width=WIDTH)
        result = run_cli("import-masks", path, "--languages", "en", "--width", WIDTH, "--out", tmp_path / "o.safetensors")
        assert_user_error(result, "refused", "weights_only")
        assert not marker.exists()
        assert not (tmp_path / "o.safetensors").exists()

    @pytest.mark.parametrize("content, message", [
        ({"en": [torch.tensor([1])]}, "got a dict"),
        ([torch.tensor([1])], "got a list of Tensor"),
        ([[torch.tensor([0.5])]], "1-D integer tensors"),
        ([[torch.tensor([[1]])]], "1-D integer tensors"),
        ([[torch.tensor([1])], [torch.tensor([1]), torch.tensor([2])]], "different or zero numbers of layers"),
        ([[torch.tensor([1, 10])]], "neuron index 10, outside 0..9"),
        ([[torch.tensor([3, 3])]], "more than once"),
    ])
    def test_malformed_masks_are_refused(self, tmp_path, content, message):
        path = tmp_path / "mask"
        torch.save(content, path)
        languages = ["en", "de"][: len(content)] if isinstance(content, list) else ["en"]
        with pytest.raises(LapeEvalError, match=message):
            import_reference_masks(path, languages, width=WIDTH)

    def test_import_needs_the_language_order_and_the_width(self, tmp_path):
        mask = export_reference_masks(hand_set(), tmp_path / "mask")
        with pytest.raises(LapeEvalError, match="masks for 3 languages, but 2 language codes"):
            import_reference_masks(mask, ["en", "de"], width=WIDTH)
        with pytest.raises(LapeEvalError, match="listed more than once: en"):
            import_reference_masks(mask, ["en", "en", "de"], width=WIDTH)
        with pytest.raises(LapeEvalError, match="does not record the MLP width"):
            import_reference_masks(mask, ["en", "de", "ru"])
        with pytest.raises(LapeEvalError, match="does not exist"):
            import_reference_masks(tmp_path / "missing", ["en"], width=WIDTH)
        garbage = tmp_path / "garbage"
        garbage.write_bytes(b"not a pickle at all")
        with pytest.raises(LapeEvalError, match="refused"):
            import_reference_masks(garbage, ["en"], width=WIDTH)


# --------------------------------------------------------------------------------------------------
# Inspection


def test_inspect_counts_and_jaccard_equal_a_hand_computation(tmp_path):
    path = hand_set().save(tmp_path / "hand.safetensors")
    result = run_cli("inspect", path, "--format", "csv")
    assert result.exit_code == 0, result.output
    blocks = {}
    for block in result.output.strip().split("\n\n"):
        title, *lines = block.splitlines()
        blocks[title.removeprefix("# ")] = list(csv.reader(io.StringIO("\n".join(lines))))
    assert blocks["Neurons per language"] == [
        ["language", "name", "script", "neurons", "unique", "shared"],
        ["en", "English", "Latin", "3", "1", "2"],  # 1 alone; 2 and 25 shared with de
        ["de", "German", "Latin", "4", "1", "3"],  # 27 alone
        ["ru", "Russian", "Cyrillic", "4", "3", "1"],  # 13 shared with de
    ]
    assert blocks["Neurons per layer"] == [
        ["layer", "any", "en", "de", "ru"],
        ["0", "2", "2", "1", "0"],
        ["1", "3", "0", "1", "3"],
        ["2", "3", "1", "2", "1"],
        ["total", "8", "3", "4", "4"],
    ]
    overlap = blocks["Language overlap (Jaccard)"]
    assert overlap[0] == ["", "en", "de", "ru"]
    values = [[float(v) for v in row[1:]] for row in overlap[1:]]
    expected = [[1, 2 / 5, 0], [2 / 5, 1, 1 / 7], [0, 1 / 7, 1]]  # en∩de = {2, 25}; de∩ru = {13}
    assert torch.allclose(torch.tensor(values, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                          atol=1e-6)  # csv keeps 6 significant digits
    assert torch.allclose(jaccard_matrix(hand_set()), torch.tensor(expected, dtype=torch.float64))
    assert upper_half_share(hand_set()) == pytest.approx(4 / 11)  # layer 2 of 3 holds 4 of 11 assignments

    text = run_cli("inspect", path)
    assert text.exit_code == 0, text.output
    assert "0.40" in text.output and "0.14" in text.output and "hand-made" in text.output
    assert "36% of assignments in the upper half" in text.output
    shown = run_cli("inspect", path, "--languages", "ru,de", "--format", "markdown")
    assert shown.exit_code == 0, shown.output
    assert "| ru | Russian | Cyrillic | 4 | 3 | 1 |" in shown.output  # unique w.r.t. the whole set
    assert "| de | 0.14 | 1.00 |" in shown.output
    assert "| en" not in shown.output


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
        assert_same_set(NeuronSet.from_selection(selections[rate], table), loaded)
        assert loaded.metadata["selection"]["top_rate"] == rate
        assert loaded.metadata["statistics"]["tokens_per_language"] == {lang: MAX_TOKENS for lang in LANGS}
        assert loaded.metadata["model"] == {"id": "tiny-planted-llama", "revision": None, "model_type": "llama",
                                            "activation_point": ACTIVATION_POINT}
    assert "ru" in result.output and "planted-5pct.safetensors" in result.output
    exact.check_model(build_model("llama"))


# --------------------------------------------------------------------------------------------------
# Bad input


def synthetic_table(languages, num_layers=2, width=96, seed=0, model="synthetic") -> StatisticsTable:
    generator = torch.Generator().manual_seed(seed)
    tokens = 1000
    counts = torch.randint(0, tokens + 1, (len(languages), num_layers, width), generator=generator)
    sums = torch.randn(len(languages), num_layers, width, generator=generator, dtype=torch.float64) * tokens
    identity = CollectionIdentity(model, None, "llama", num_layers, width, ACTIVATION_POINT, "udhr", 64, None, None)
    return StatisticsTable(identity, list(languages), counts, sums, torch.full((len(languages),), tokens))


def write_statistics(folder: Path, table: StatisticsTable) -> Path:
    target = StatisticsFolder(folder)
    target.claim(table.identity)
    for k, lang in enumerate(table.languages):
        target.save_language(LanguageStats(lang, int(table.tokens[k]), table.positive_counts[k],
                                           table.activation_sums[k]), {})
    return folder


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

    def test_corrupted_truncated_or_foreign_set_files(self, tmp_path):
        good = hand_set().save(tmp_path / "good.safetensors")
        data = good.read_bytes()

        truncated = tmp_path / "truncated.safetensors"
        truncated.write_bytes(data[: len(data) // 2])
        assert_user_error(run_cli("inspect", truncated), "damaged")

        flipped = tmp_path / "flipped.safetensors"
        flipped.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))  # last byte: tensor data
        assert_user_error(run_cli("inspect", flipped), "modified or corrupted", "content hash does not match")

        header_length = int.from_bytes(data[:8], "little")
        header = data[8 : 8 + header_length].decode()
        assert '\\"top_rate\\": 0.25' in header
        edited = tmp_path / "edited.safetensors"  # a metadata value changed, same length, still valid
        edited.write_bytes(data[:8] + header.replace('\\"top_rate\\": 0.25', '\\"top_rate\\": 0.75').encode()
                           + data[8 + header_length :])
        assert_user_error(run_cli("inspect", edited), "modified or corrupted")
        with pytest.raises(LapeEvalError, match="modified or corrupted"):
            NeuronSet.load(edited)

        statistics = write_statistics(tmp_path / "stats", synthetic_table(["en"]))
        assert_user_error(run_cli("inspect", statistics / "en.safetensors"),
                          "not a lape-eval neuron set", "activation-statistics")
        assert_user_error(run_cli("inspect", tmp_path / "missing.safetensors"), "No neuron set")
        assert_user_error(run_cli("export-masks", flipped, "--out", tmp_path / "mask"), "modified or corrupted")
        assert not (tmp_path / "mask").exists()

    def test_a_future_format_version_is_named(self, tmp_path):
        ns = hand_set()
        path = tmp_path / "future.safetensors"
        from lape_eval.files import save_tensors

        save_tensors(path, ns.tensors(), {**ns.metadata, "format_version": 99})
        with pytest.raises(LapeEvalError, match="format version 99; this lape-eval .* reads version 1"):
            NeuronSet.load(path)

    def test_import_width_and_layers_must_match_the_statistics(self, tmp_path):
        table = synthetic_table(["en", "de", "ru"], num_layers=2, width=96)
        mask = export_reference_masks(hand_set(), tmp_path / "mask")  # 3 layers
        with pytest.raises(LapeEvalError, match="masks for 3 layers; the statistics are for 2 layers × 96"):
            import_reference_masks(mask, ["en", "de", "ru"], statistics=table)
        with pytest.raises(LapeEvalError, match="--width 10 differs from the statistics' width 96"):
            import_reference_masks(mask, ["en", "de", "ru"], statistics=table, width=10)

    def test_json_metadata_is_readable_without_lape_eval(self, tmp_path):
        path = hand_set().save(tmp_path / "hand.safetensors")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads(handle.metadata()["lape_eval"])
            names = set(handle.keys())
        assert metadata["format"] == "lape-eval/neuron-set" and metadata["languages"] == ["en", "de", "ru"]
        assert names == {"indices.en", "indices.de", "indices.ru", "selected", "means"}
