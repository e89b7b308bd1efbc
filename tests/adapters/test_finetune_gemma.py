"""Slow: a short Maltese fine-tune of the real Gemma-3-270M on the bundled UDHR (one epoch of the
identify split: 3 steps of 2 x 512 tokens per method). Subnetwork training lowers the held-out loss;
the random and LoRA baselines run with the same token budget. The numbers are printed (run with
``-s``) for the record.

Measured (2-core machine): one epoch lowers the held-out loss 3.632 -> 3.534 (step 3), two epochs
-> 3.479 (step 6); the claim checked (a drop of more than 0.02 at a step after 0) holds after one, so
the test trains one and copies the model once loaded instead of loading it for every method."""

from __future__ import annotations

import pytest

from lape_eval.neurons.corpus import CorpusSpec
from lape_eval.adapters.settings import FinetuneSettings
from lape_eval.adapters.train import finetune

pytestmark = pytest.mark.slow

NEURONS = "gemma-3-270m-udhr-5pct"  # shipped; identified on the UDHR identify split (articles 1-22)


def test_short_subnetwork_finetune_lowers_maltese_heldout_loss_and_the_baselines_run(tmp_path):
    import copy

    from lape_eval.models import load_model
    from lape_eval.neurons.shipped import resolve_neuron_set

    neuron_set = resolve_neuron_set(NEURONS)
    loaded = load_model("gemma-3-270m-gguf")
    results = {}
    for method in ("subnetwork", "random", "lora"):
        model = copy.deepcopy(loaded.model)  # a fresh copy each time: training changes it, LoRA wraps it
        settings = FinetuneSettings(
            method=method, language="mt", neurons=NEURONS, corpus=CorpusSpec("udhr:identify"),
            heldout_corpus=CorpusSpec("udhr:heldout"), epochs=1, eval_every=3, progress=False,
        )  # the recipe: AdamW lr 1e-4, wd 0.01, clip 1.0, batch 2 x 512 tokens; LoRA r 32, alpha 64
        results[method] = finetune(model, loaded.tokenizer, tmp_path / method, settings,
                                   model_name="gemma-3-270m-gguf", neuron_set=neuron_set, dtype="float32")
    for method, result in results.items():
        held = result.heldout
        print(f"{method:>10}: {result.trainable_parameters:>9,} trainable ({result.parameter_formula}); held-out "
              f"loss {held['initial']:.4f} -> best {held['best']:.4f} (step {held['best_step']}), "
              f"{result.steps} steps, {result.tokens:,} tokens")
    sub = results["subnetwork"]
    assert sub.trainable_parameters == 3 * 640 * neuron_set.neuron_count("mt")
    assert results["random"].trainable_parameters == sub.trainable_parameters
    assert results["lora"].trainable_parameters == 32 * 3 * (640 + 2048) * 18
    assert len({r.tokens for r in results.values()}) == 1 and len({r.steps for r in results.values()}) == 1
    assert len({r.heldout["initial"] for r in results.values()}) == 1  # the same base model and held-out text
    assert sub.heldout["best"] < sub.heldout["initial"] - 0.02
    assert sub.heldout["best_step"] > 0
