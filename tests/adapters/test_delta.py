"""The neuron-delta file: provenance recorded, bad files refused."""

from __future__ import annotations

import pytest
from adapter_runs import D_MODEL, load, train

from lape_eval.adapters.delta import DELTA_FILE, NeuronDelta
from lape_eval.errors import LapeEvalError


def test_delta_file_records_provenance_and_refuses_bad_files(tiny_model_dir, corpus, neurons, tmp_path):
    from lape_eval.neurons.neuron_set import NeuronSet

    _, result = train(tiny_model_dir("llama"), tmp_path / "run", corpus, neurons, max_steps=2)
    delta = NeuronDelta.load(result.adapter / DELTA_FILE)
    info = delta.info
    assert info["base_model"]["id"] == str(tiny_model_dir("llama")) and info["base_model"]["hidden_size"] == D_MODEL
    assert info["neuron_set"]["content_hash"] == NeuronSet.load(neurons).content_hash
    assert info["language"] == "de" and info["method"] == "subnetwork"
    assert info["data"]["corpus"].startswith(str(corpus)) and info["data"]["tokens_seen"] > 0
    assert info["training"]["lr"] == 1e-2 and info["training"]["step"] == result.heldout["best_step"]
    # damaged, foreign, or for another model
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LapeEvalError, match="damaged"):
        NeuronDelta.load(tmp_path / "junk.safetensors")
    with pytest.raises(LapeEvalError, match="not a lape-eval neuron delta"):
        NeuronDelta.load(neurons)
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    with pytest.raises(LapeEvalError, match="load it with peft=PATH"):
        NeuronDelta.load(tmp_path / "lora")
    with pytest.raises(LapeEvalError, match="3 layers"):
        delta.apply(load(tiny_model_dir("gemma3")).model)
    with pytest.raises(LapeEvalError, match="d_model"):
        from lape_eval.evaluation.lm import LapeLM

        LapeLM(pretrained=str(tiny_model_dir("qwen2")), neuron_delta=str(result.adapter), device="cpu")
    with pytest.raises(LapeEvalError, match="does not exist"):
        from lape_eval.evaluation.lm import LapeLM

        LapeLM(pretrained="unused", neuron_delta=str(tmp_path / "missing.safetensors"))
