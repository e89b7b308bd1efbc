"""Interchange with the reference code's activation masks (lape_eval.neurons.reference_masks): lossless
round trips, means restored from statistics, malicious pickles refused unrun, malformed masks."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from lape_eval.errors import LapeEvalError
from lape_eval.neurons.identify import neuron_set_from_selection
from lape_eval.neurons.neuron_set import NeuronSet
from lape_eval.neurons.reference_masks import export_reference_masks, import_reference_masks
from lape_eval.neurons.selection import select_language_neurons
from neuron_samples import HAND, WIDTH, assert_same_set, assert_user_error, hand_set, run_cli, synthetic_table


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
        ns = neuron_set_from_selection(selection, table)
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


def test_import_width_and_layers_must_match_the_statistics(tmp_path):
    table = synthetic_table(["en", "de", "ru"], num_layers=2, width=96)
    mask = export_reference_masks(hand_set(), tmp_path / "mask")  # 3 layers
    with pytest.raises(LapeEvalError, match="masks for 3 layers; the statistics are for 2 layers × 96"):
        import_reference_masks(mask, ["en", "de", "ru"], statistics=table)
    with pytest.raises(LapeEvalError, match="width 10 differs from the statistics' width 96"):
        import_reference_masks(mask, ["en", "de", "ru"], statistics=table, width=10)


# CLaS-Bench's 32 languages in the order of its masks (identification/lape_identify.py), typed by hand.
CLAS_BENCH_ORDER = ("en ar bo da de es fr hi it ja ko mt nl no pl pt ru sv tr zh "
                    "sk el kk sw ka uk fa th id vi cs ro").split()


def _clas_bench_masks(path: Path) -> dict[str, list[list[int]]]:
    """A handmade mask file in the reference shape with the 32 CLaS-Bench languages: language i holds
    neuron i % 10 in layer 0 and, when i is odd, neuron 9 - i % 10 in layer 1."""
    per_language = {lang: [[i % WIDTH], [WIDTH - 1 - i % WIDTH] if i % 2 else []]
                    for i, lang in enumerate(CLAS_BENCH_ORDER)}
    torch.save([[torch.tensor(layer, dtype=torch.int64) for layer in layers] for layers in per_language.values()],
               path)
    return per_language


@pytest.mark.parametrize("spelling", [
    ",".join(CLAS_BENCH_ORDER),
    "clas-bench",
    # the 12 new languages as FLORES codes, ISO 639-3 codes and upper case: the same set
    ",".join(CLAS_BENCH_ORDER[:20]) + ",slk_Latn,ell_Grek,kaz,swh,kat_Geor,UK,pes_Arab,tha,ind_Latn,vie,ces,ron",
])
def test_cli_imports_a_mask_file_with_the_32_clas_bench_languages(tmp_path, spelling):
    written = _clas_bench_masks(tmp_path / "llama-5")
    out = tmp_path / "clas.safetensors"
    result = run_cli("import-masks", tmp_path / "llama-5", "--languages", spelling, "--width", WIDTH,
                     "--model", "meta-llama/Llama-3.1-8B-Instruct", "--top-rate", "0.05", "--out", out)
    assert result.exit_code == 0, result.output
    assert "32 languages, 2 layers × 10" in result.output
    ns = NeuronSet.load(out)
    assert ns.languages == CLAS_BENCH_ORDER
    for lang, layers in written.items():
        assert [t.tolist() for t in ns.indices(lang)] == layers, lang
    shown = run_cli("inspect", out, "--languages", "sk,ell_Grek,fa", "--format", "csv")
    assert shown.exit_code == 0, shown.output
    summary = shown.output.split("\n\n")[0].splitlines()  # the first table: neurons per language
    assert summary[1:] == ["language,name,script,neurons,unique,shared", "sk,Slovak,Latin,1,0,1",
                           "el,Greek,Greek,2,0,2", "fa,Persian,Arabic,1,0,1"]


def test_cli_import_names_an_unknown_code_and_near_matches(tmp_path):
    _clas_bench_masks(tmp_path / "mask")
    codes = ",".join(CLAS_BENCH_ORDER[:-1] + ["rx"])
    result = run_cli("import-masks", tmp_path / "mask", "--languages", codes, "--width", WIDTH,
                     "--out", tmp_path / "o.safetensors")
    assert_user_error(result, "Unknown language code 'rx'", "Near matches:", "register_language")
    assert not (tmp_path / "o.safetensors").exists()
    result = run_cli("import-masks", tmp_path / "mask", "--languages", "all", "--width", WIDTH,
                     "--out", tmp_path / "o.safetensors")
    assert_user_error(result, "holds masks for 32 languages, but 21 language codes were given")
    spelled_twice = ",".join(CLAS_BENCH_ORDER[:-1] + ["slk"])
    result = run_cli("import-masks", tmp_path / "mask", "--languages", spelled_twice, "--width", WIDTH,
                     "--out", tmp_path / "o.safetensors")
    assert_user_error(result, "listed more than once: sk")
