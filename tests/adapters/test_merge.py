"""Adapters in lm_eval, `lape-eval merge` (a full model folder or a PEFT adapter), PEFT export, steering on
top of an adapter, and merge's refusal of bad input."""

from __future__ import annotations

import json

import pytest
import torch
from adapter_runs import assert_usage_error, files_under, forbid_model_loading, invoke, load, train
from float_bounds import FORWARD, assert_close_at_scale

import lape_eval.evaluation.lm  # noqa: F401  registers the lape model
from lape_eval.adapters.delta import DELTA_FILE, NeuronDelta
from lape_eval.adapters.merge import delta_to_peft

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics


def evaluate(model, model_args, tasks):
    from lm_eval import simple_evaluate

    results = simple_evaluate(model=model, model_args={"dtype": "float32", **model_args}, tasks=["tiny_mc"],
                              task_manager=tasks, device="cpu", batch_size=2, bootstrap_iters=0, log_samples=True)
    samples = sorted(results["samples"]["tiny_mc"], key=lambda s: s["doc_id"])
    return torch.tensor([[r[0][0] for r in s["resps"]] for s in samples], dtype=torch.float64), results


def _merge(*args):
    result = invoke("merge", *args)
    assert result.exit_code == 0, result.output
    return result


def test_every_method_evaluates_through_lm_eval(tiny_model_dir, corpus, neurons, tmp_path, tasks):
    model_dir = str(tiny_model_dir("llama"))
    base, _ = evaluate("hf", {"pretrained": model_dir}, tasks)
    runs = {m: train(model_dir, tmp_path / m, corpus, neurons, method=m, max_steps=4, lr=5e-2, lora_rank=4)[1]
            for m in ("subnetwork", "random", "lora", "mlp")}
    for method in ("subnetwork", "random"):
        best = runs[method].adapter
        lape, results = evaluate("lape", {"pretrained": model_dir, "neuron_delta": str(best)}, tasks)
        assert (lape - base).abs().max() > 1e-4, method
        recorded = results["config"]["lape"]["neuron_delta"]
        assert recorded["method"] == method and recorded["language"] == "de"
        # merge: a full model folder that the stock hf model loads; the same numbers. lape merges the
        # delta at load with the same NeuronDelta.apply that wrote the folder: the same float32 weights
        # and the same forward pass, so bit-identical (measured under scalar, AVX2 and AVX-512 kernels).
        _merge("--model", model_dir, "--delta", best / DELTA_FILE, "--out", tmp_path / f"{method}-merged")
        merged, _ = evaluate("hf", {"pretrained": str(tmp_path / f"{method}-merged")}, tasks)
        assert torch.equal(merged, lape), method
        # ... and as a standard PEFT adapter: W₀·x + B·(A·x) against (W₀ + Δ)·x, one forward pass in
        # another summation order, FORWARD relative to each log-likelihood (sums of log-probabilities,
        # no cancellation; measured ≤ 1.6e-7). Dropping the adapter moves them by 9% or more (lape - base).
        _merge("--model", model_dir, "--delta", best, "--out", tmp_path / f"{method}-peft", "--format", "peft")
        peft, _ = evaluate("hf", {"pretrained": model_dir, "peft": str(tmp_path / f"{method}-peft")}, tasks)
        torch.testing.assert_close(peft, lape, rtol=FORWARD, atol=0.0)
    lora_hf, _ = evaluate("hf", {"pretrained": model_dir, "peft": str(runs["lora"].adapter)}, tasks)
    lora_lape, _ = evaluate("lape", {"pretrained": model_dir, "peft": str(runs["lora"].adapter)}, tasks)
    assert torch.equal(lora_hf, lora_lape) and (lora_hf - base).abs().max() > 1e-4
    assert json.loads((runs["lora"].adapter / "adapter_config.json").read_text())["r"] == 4
    mlp, _ = evaluate("hf", {"pretrained": str(runs["mlp"].adapter)}, tasks)
    assert (mlp - base).abs().max() > 1e-4
    _merge("--model", model_dir, "--delta", runs["lora"].adapter, "--out", tmp_path / "lora-merged")
    lora_merged, _ = evaluate("hf", {"pretrained": str(tmp_path / "lora-merged")}, tasks)
    torch.testing.assert_close(lora_merged, lora_hf, rtol=FORWARD, atol=0.0)  # merged LoRA: as the PEFT check above


def test_steering_composes_with_a_neuron_delta_and_with_lora(tiny_model_dir, corpus, neurons, tmp_path, tasks):
    from peft import PeftModel

    from lape_eval.neurons.neuron_set import NeuronSet
    from lape_eval.steering.export import save_steered
    from lape_eval.steering.spec import parse_steer

    model_dir = str(tiny_model_dir("llama"))
    steer = {"neurons": str(neurons), "steer": "-en +fr", "alpha": 3.0}
    _, sub = train(model_dir, tmp_path / "sub", corpus, neurons, max_steps=3, lr=5e-2)
    _merge("--model", model_dir, "--delta", sub.adapter, "--out", tmp_path / "merged")
    both, results = evaluate("lape", {"pretrained": model_dir, "neuron_delta": str(sub.adapter), **steer}, tasks)
    reference, _ = evaluate("lape", {"pretrained": str(tmp_path / "merged"), **steer}, tasks)
    delta_only, _ = evaluate("lape", {"pretrained": model_dir, "neuron_delta": str(sub.adapter)}, tasks)
    assert torch.equal(both, reference) and (both - delta_only).abs().max() > 1e-4
    assert results["config"]["lape"]["steer"] == "-en +fr" and "neuron_delta" in results["config"]["lape"]

    _, lora = train(model_dir, tmp_path / "lora", corpus, neurons, method="lora", lora_rank=4, max_steps=3, lr=5e-2)
    model = PeftModel.from_pretrained(load(model_dir).model, str(lora.adapter))
    # lm_eval's own steered model (additive specs only) on the same LoRA adapter is the reference
    path = save_steered(model, NeuronSet.load(neurons), parse_steer("+fr", alpha=3.0), tmp_path / "steer.pt")
    stock, _ = evaluate("steered", {"pretrained": model_dir, "peft": str(lora.adapter), "steer_path": str(path)}, tasks)
    lape, _ = evaluate("lape", {"pretrained": model_dir, "peft": str(lora.adapter), **steer, "steer": "+fr"}, tasks)
    lora_only, _ = evaluate("lape", {"pretrained": model_dir, "peft": str(lora.adapter)}, tasks)
    # Both add the same float32 values α·μ to g at the same module (steered adds a vector that is 0.0
    # elsewhere): the same computation, bit-identical (measured under scalar, AVX2 and AVX-512 kernels).
    assert torch.equal(lape, stock)
    assert (lape - lora_only).abs().max() > 1e-4


def test_peft_export_equals_the_merged_model_for_fused_and_plain_mlps(tiny_model_dir, corpus, neurons, tmp_path):
    from peft import PeftModel

    for arch in ("phi3", "gpt2"):
        model_dir = tiny_model_dir(arch)
        _, result = train(model_dir, tmp_path / arch, corpus, neurons, max_steps=3, lr=5e-2)
        delta = NeuronDelta.load(result.adapter)
        delta_to_peft(delta, load(model_dir).model, tmp_path / f"{arch}-peft")
        peft = PeftModel.from_pretrained(load(model_dir).model, str(tmp_path / f"{arch}-peft"))
        merged = load(model_dir).model
        delta.apply(merged)
        ids = torch.tensor([[5, 9, 14, 20, 33, 41, 50]])
        with torch.no_grad():
            # W₀·x + B·(A·x) against (W₀ + Δ)·x: FORWARD of the logits' scale (measured ≤ 4.6e-7); the
            # adapter itself moves them by 0.3 of that scale (checked next).
            assert_close_at_scale(peft(input_ids=ids).logits, merged(input_ids=ids).logits, FORWARD, what=arch)
            assert not torch.allclose(merged(input_ids=ids).logits, load(model_dir).model(input_ids=ids).logits)


# --------------------------------------------------------------------------------------------------
# Bad input: clear errors, exit code 2, no traceback; refused before the model loads, nothing written


def test_merge_refuses_a_non_empty_folder_and_a_foreign_file(tiny_model_dir, neurons, tmp_path):
    model = str(tiny_model_dir("llama"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = invoke("merge", "--model", model, "--delta", neurons, "--out", tmp_path / "new")
    assert_usage_error(result, "not a lape-eval neuron delta")
    result = invoke("merge", "--model", model, "--delta", neurons, "--out", tmp_path / "full")
    assert_usage_error(result, "is not empty")


@pytest.mark.parametrize("case", ["foreign file", "non-empty output folder", "PEFT adapter to PEFT",
                                  "damaged PEFT adapter"])
def test_merge_refuses_bad_input_before_the_model_loads_and_writes_nothing(case, neurons, tmp_path, monkeypatch):
    (tmp_path / "peft").mkdir()
    (tmp_path / "peft" / "adapter_config.json").write_text("{}" if case != "damaged PEFT adapter" else "{trunc")
    out = tmp_path / "out"
    if case == "non-empty output folder":
        out.mkdir()
        (out / "x").write_text("x")
    adapter = {"foreign file": neurons, "non-empty output folder": neurons}.get(case, tmp_path / "peft")
    message = {"foreign file": "not a lape-eval neuron delta", "non-empty output folder": "is not empty",
               "PEFT adapter to PEFT": "already is a PEFT adapter folder",
               "damaged PEFT adapter": "is not valid JSON"}[case]
    extra = ["--format", "peft"] if case == "PEFT adapter to PEFT" else []
    before = files_under(tmp_path)
    forbid_model_loading(monkeypatch)
    result = invoke("merge", "--model", "any-model", "--delta", adapter, "--out", out, *extra)
    assert_usage_error(result, message)
    assert files_under(tmp_path) == before
