"""The training loop: schedules, the best checkpoint, resuming, gradient checkpointing and bf16, data
parallelism, and the finetune command's refusal of bad input (before the model is loaded, writing
nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from adapter_runs import REPO, assert_usage_error, files_under, forbid_model_loading, invoke, train
from float_bounds import FORWARD, TRAINED, assert_close_at_scale
from handmade_sets import make_set

import lape_eval.adapters.train as train_module
from lape_eval.adapters.delta import NeuronDelta
from lape_eval.adapters.settings import FinetuneSettings
from lape_eval.adapters.train import TrainingProgress, lr_factor

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics


def test_learning_rate_warmup_and_schedules():
    def factors(schedule, warmup=2, total=10):
        s = FinetuneSettings(method="lora", language="de", schedule=schedule, warmup_steps=warmup)
        return [lr_factor(step, s, total) for step in range(total)]

    assert factors("constant") == [0.5, 1.0] + [1.0] * 8
    linear = factors("linear")
    assert linear[:3] == [0.5, 1.0, 1.0] and linear[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(linear[1:], linear[2:]))
    cosine = factors("cosine", warmup=0)
    assert cosine[0] == 1.0 and 0 < cosine[-1] < 0.05


def test_progress_keeps_the_first_and_the_lowest_heldout_loss():
    progress = TrainingProgress()
    assert [progress.record_heldout(step, loss) for step, loss in ((0, 3.0), (2, 2.5), (4, 2.7), (6, 2.5))] == [
        True, True, False, False]  # a tie is not an improvement: the earlier adapter stays
    assert (progress.initial_loss, progress.best_loss, progress.best_step) == (3.0, 2.5, 2)
    assert progress.last_evaluated_step == 6 and progress.last_heldout_loss == 2.5
    progress.took_step([[1, 2, 3], [4, 5]])
    assert (progress.step, progress.sequences, progress.tokens) == (1, 2, 5)


def test_without_heldout_text_the_last_step_is_the_adapter(tiny_model_dir, corpus, neurons, tmp_path):
    _, result = train(tiny_model_dir("llama"), tmp_path / "run", corpus, neurons, max_steps=3, heldout_fraction=0.0)
    assert result.heldout == {"initial": None, "best": None, "best_step": 3, "final": None}
    assert NeuronDelta.load(result.adapter).info["training"]["step"] == 3


def test_interrupted_run_resumes_to_the_same_adapter(tiny_model_dir, corpus, neurons, tmp_path, monkeypatch):
    model_dir = tiny_model_dir("llama")
    common = dict(method="lora", lora_rank=4, max_steps=7, eval_every=3, checkpoint_every=1, schedule="cosine",
                  warmup_steps=2)  # LoRA dropout: the RNG must resume too
    _, reference = train(model_dir, tmp_path / "whole", corpus, neurons, **common)

    real_step = train_module.train_step
    calls = {"n": 0}

    def crash_at_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", crash_at_five)
    with pytest.raises(KeyboardInterrupt):
        train(model_dir, tmp_path / "split", corpus, neurons, **common)
    monkeypatch.setattr(train_module, "train_step", real_step)
    assert (tmp_path / "split" / "checkpoint.pt").exists() and not (tmp_path / "split" / "summary.json").exists()
    _, resumed = train(model_dir, tmp_path / "split", corpus, neurons, **common)
    assert resumed.steps == reference.steps == 7
    assert resumed.heldout == reference.heldout
    from safetensors.torch import load_file

    a = load_file(str(reference.adapter / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 8))  # the log holds each step once
    assert not (tmp_path / "split" / "checkpoint.pt").exists()
    # A finished run is not trained again.
    _, again = train(model_dir, tmp_path / "split", corpus, neurons, **common)
    assert again.summary == resumed.summary


def test_best_checkpoint_is_the_lowest_heldout_loss(tiny_model_dir, corpus, neurons, tmp_path):
    _, result = train(tiny_model_dir("llama"), tmp_path / "run", corpus, neurons, max_steps=8, eval_every=2,
                      lr=0.3)  # a learning rate large enough to overshoot
    history = result.summary["history"]
    assert [h["step"] for h in history] == [0, 2, 4, 6, 8]
    best = min(history, key=lambda h: h["heldout_loss"])
    assert result.heldout["best"] == best["heldout_loss"] and result.heldout["best_step"] == best["step"]
    provenance = json.loads((result.adapter / "finetune.json").read_text())
    assert provenance["training"]["step"] == best["step"] and provenance["heldout_loss"] == best["heldout_loss"]


def test_gradient_checkpointing_and_bf16_autocast_run(tiny_model_dir, corpus, neurons, tmp_path):
    _, plain = train(tiny_model_dir("llama"), tmp_path / "plain", corpus, neurons, max_steps=3)
    _, checkpointed = train(tiny_model_dir("llama"), tmp_path / "gc", corpus, neurons, max_steps=3,
                            gradient_checkpointing=True)
    a, b = NeuronDelta.load(plain.adapter), NeuronDelta.load(checkpointed.adapter)
    # Checkpointing recomputes the same forward pass (same operations, shapes and kernels, in the same
    # process) during the backward pass: bit-identical gradients, so the same weights (measured equal
    # under scalar, AVX2 and AVX-512 kernels).
    for wa, wb in zip(a.weights, b.weights):
        for role in wa:
            assert torch.equal(wa[role], wb[role]), role
    _, bf16 = train(tiny_model_dir("llama"), tmp_path / "bf16", corpus, neurons, max_steps=3, bf16=True)
    assert all(torch.isfinite(torch.tensor(h["heldout_loss"])) for h in bf16.summary["history"])


def test_two_process_data_parallel_run_equals_one_process_with_the_global_batch(tiny_model_dir, corpus, neurons,
                                                                                tmp_path):
    model_dir = tiny_model_dir("llama")
    args = ["finetune", "--model", str(model_dir), "--language", "de", "--neurons", str(neurons), "--corpus",
            str(corpus), "--seq-len", "24", "--max-steps", "4", "--eval-every", "2", "--lr", "1e-2", "--no-progress",
            "--device", "cpu"]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "lape_eval",
         *args, "--batch-size", "1", "--out", str(tmp_path / "dp")],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    _, single = train(model_dir, tmp_path / "single", corpus, neurons, max_steps=4, eval_every=2, batch_size=2,
                      heldout_fraction=0.05)
    dp_summary = json.loads((tmp_path / "dp" / "summary.json").read_text())
    assert dp_summary["identity"]["world_size"] == 2 and dp_summary["tokens"] == single.tokens
    # Two ranks of one sequence each against one batch of two: the gradients are summed in another order
    # (all-reduce), so the weights agree to TRAINED of their scale (measured ≤ 1.5e-6), and the held-out
    # mean losses, a forward pass of those weights, to FORWARD relative (measured ≤ 1.4e-7). A rank
    # training on other sequences, or its gradient left out of the sum, moves the weights by ~lr = 1e-2,
    # a quarter of their scale.
    for a, b in zip(dp_summary["history"], single.summary["history"]):
        assert a["step"] == b["step"] and a["heldout_loss"] == pytest.approx(b["heldout_loss"], rel=FORWARD)
    dp, one = NeuronDelta.load(tmp_path / "dp" / "best"), NeuronDelta.load(single.adapter)
    assert all(torch.equal(a, b) for a, b in zip(dp.indices, one.indices))  # exactly the selected entries
    for wa, wb in zip(dp.weights, one.weights):
        for role in wa:
            assert_close_at_scale(wa[role], wb[role], TRAINED, what=role)


# --------------------------------------------------------------------------------------------------
# Bad input: clear errors, exit code 2, no traceback


class TestBadInput:
    @pytest.fixture(autouse=True)
    def _paths(self, tiny_model_dir, corpus, neurons, tmp_path):
        self.model = str(tiny_model_dir("llama"))
        self.corpus, self.neurons, self.tmp = str(corpus), str(neurons), tmp_path

    def run(self, *extra, out=None):
        return invoke("finetune", "--model", self.model, "--language", "de", "--neurons", self.neurons, "--corpus",
                      self.corpus, "--seq-len", "24", "--max-steps", "2", "--no-progress", "--out",
                      out or self.tmp / "run", *extra)

    def assert_error(self, result, *fragments):
        assert_usage_error(result, *fragments)

    def test_language_not_in_the_set(self):
        self.assert_error(self.run("--language", "ja"), "no neurons for 'ja'", "it covers en, de, fr")

    def test_neuron_set_of_another_model(self):
        wide = self.tmp / "wide.safetensors"
        make_set(width=4096).save(wide)
        self.assert_error(self.run("--neurons", str(wide)), "4096 neurons", "the model has 2 layers × 96 neurons")
        assert not (self.tmp / "run").exists()  # refused after the model loaded, but before anything was written

    def test_zero_token_budget(self):
        self.assert_error(self.run("--max-tokens", "0"), "--max-tokens is the training budget", "got 0")

    def test_corpus_without_text_for_the_language(self):
        empty = self.tmp / "empty"
        empty.mkdir()
        (empty / "de.jsonl").write_text(json.dumps({"other": "x"}) + "\n")
        self.assert_error(self.run("--corpus", str(empty)), "expected a JSON object with a 'text' field")
        (empty / "de.jsonl").write_text(json.dumps({"text": "Nur ein Dokument."}) + "\n")
        self.assert_error(self.run("--corpus", str(empty)), "The held-out text for 'de' holds no tokens")

    def test_subnetwork_needs_a_neuron_set(self):
        result = invoke("finetune", "--model", self.model, "--language", "de", "--corpus", self.corpus, "--out",
                        self.tmp / "x")
        self.assert_error(result, "give the neuron set with --neurons")

    def test_output_folder_holding_another_run(self):
        assert self.run().exit_code == 0
        self.assert_error(self.run("--method", "lora"), "holds another fine-tuning run", "method: 'subnetwork' there")

    def test_output_folder_holding_something_else(self):
        (self.tmp / "run").mkdir()
        (self.tmp / "run" / "notes.txt").write_text("mine")
        self.assert_error(self.run(), "is not empty and holds no run.json")

    def test_resuming_with_different_arguments(self, monkeypatch):
        real_step = train_module.train_step
        calls = {"n": 0}

        def crash(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("simulated crash")
            return real_step(*args, **kwargs)

        monkeypatch.setattr(train_module, "train_step", crash)
        assert isinstance(self.run("--checkpoint-every", "1").exception, RuntimeError)
        monkeypatch.setattr(train_module, "train_step", real_step)
        assert (self.tmp / "run" / "checkpoint.pt").exists()
        self.assert_error(self.run("--lr", "0.5"), "holds another fine-tuning run", "lr: 0.0001 there, 0.5 now",
                          "use the original arguments to resume")
        assert self.run("--checkpoint-every", "1").exit_code == 0  # the original arguments resume it

    @pytest.mark.parametrize("args, message", [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--heldout-fraction", "1.5"], "--heldout-fraction must be in [0, 1)"),
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--language", "xx"], "Unknown language code 'xx'"),
        (["--neurons", "no-such-set"], "No neuron set 'no-such-set'"),
    ])
    def test_other_arguments(self, args, message):
        self.assert_error(self.run(*args), message)

    @pytest.mark.parametrize("case", ["unreadable corpus", "no held-out text", "another run in the folder",
                                      "language not in the set", "bad number"])
    def test_bad_input_is_refused_before_the_model_loads_and_leaves_nothing(self, case, monkeypatch):
        """The next command must find everything as it was: no run.json (which would pin the run's
        arguments), no log, no staging folder; and the model is never loaded."""
        (self.tmp / "run").mkdir()
        extra = {"language not in the set": ["--language", "ja"], "bad number": ["--warmup-steps", "-1"]}.get(case, [])
        message = {"unreadable corpus": "expected a JSON object with a 'text' field",
                   "no held-out text": "The held-out text for 'de' holds no tokens",
                   "another run in the folder": "holds another fine-tuning run",
                   "language not in the set": "no neurons for 'ja'",
                   "bad number": "--warmup-steps must be ≥ 0"}[case]
        corpus = self.tmp / "corpus"
        corpus.mkdir()
        if case == "unreadable corpus":
            (corpus / "de.jsonl").write_text("{not json\n")
        elif case == "no held-out text":
            (corpus / "de.txt").write_text("Nur ein Dokument.\n")
        else:
            (corpus / "de.txt").write_text("\n\n".join(f"Dokument {i}." for i in range(40)))
        if case == "another run in the folder":
            (self.tmp / "run" / "run.json").write_text(json.dumps(
                {"format": "lape-eval/finetune-run", "identity": {"method": "lora"}}))
        before = files_under(self.tmp)
        forbid_model_loading(monkeypatch)
        result = self.run("--corpus", str(corpus), *extra)
        self.assert_error(result, message)
        assert files_under(self.tmp) == before
