"""The neuron-set artifact (lape_eval.neurons.neuron_set): per-layer views, round trips, the content
hash, subsets, shape checks, and damaged or foreign files."""

from __future__ import annotations

import json

import pytest
import torch

from lape_eval.arch import resolve
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.neuron_set import NeuronSet
from neuron_samples import HAND, WIDTH, assert_same_set, assert_user_error, hand_set, run_cli, synthetic_table, write_statistics
from tiny_models import build_model


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


class TestBadFiles:
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
        from lape_eval.tensor_files import save_tensors

        save_tensors(path, ns.tensors(), {**ns.metadata, "format_version": 99})
        with pytest.raises(LapeEvalError, match="format version 99; this lape-eval .* reads version 1"):
            NeuronSet.load(path)

    def test_json_metadata_is_readable_without_lape_eval(self, tmp_path):
        path = hand_set().save(tmp_path / "hand.safetensors")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads(handle.metadata()["lape_eval"])
            names = set(handle.keys())
        assert metadata["format"] == "lape-eval/neuron-set" and metadata["languages"] == ["en", "de", "ru"]
        assert names == {"indices.en", "indices.de", "indices.ru", "selected", "means"}
