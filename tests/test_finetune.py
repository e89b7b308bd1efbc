"""Per-language adapters: subnetwork fine-tuning (exactly the selected rows and columns), the LoRA,
random and MLP baselines, the training loop (padding, weight decay, resume, data parallelism), the
neuron-delta file, merge, and evaluation of every adapter through lm_eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from handmade_sets import make_set
from lm_tasks import write_tasks
from tiny_models import CORPUS

import lape_eval.finetune as finetune_module
import lape_eval.lm  # noqa: F401  registers the lape model
from lape_eval.corpus import CorpusSpec, make_batch
from lape_eval.delta import DELTA_FILE, DeltaModule, NeuronDelta, delta_to_peft, read_entries
from lape_eval.errors import LapeEvalError
from lape_eval.finetune import FinetuneSettings, causal_lm_loss_sum, finetune, random_layer_matched

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

REPO = Path(__file__).resolve().parents[1]
WIDTH = 96  # MLP width of the tiny llama / phi3 / gpt2 models
D_MODEL = 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for lang, sentences in CORPUS.items():
        (folder / f"{lang}.txt").write_text("\n\n".join(sentences * 8), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def neurons(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sets") / "tiny.safetensors"
    make_set(width=WIDTH).save(path)
    return path


def load(model_dir):
    from lape_eval.models import load_model

    return load_model(str(model_dir))


def settings(corpus, neurons, **overrides) -> FinetuneSettings:
    base = dict(method="subnetwork", language="de", corpus=CorpusSpec(str(corpus)), neurons=str(neurons),
                seq_len=24, batch_size=2, lr=1e-2, eval_every=4, heldout_fraction=0.2, progress=False)
    base.update(overrides)
    return FinetuneSettings(**base)


def train(model_dir, out, corpus, neurons, **overrides):
    from lape_eval.neuron_set import NeuronSet

    loaded = load(model_dir)
    s = settings(corpus, neurons, **overrides)
    neuron_set = NeuronSet.load(neurons) if s.neurons else None
    result = finetune(loaded.model, loaded.tokenizer, out, s, model_name=str(model_dir), neuron_set=neuron_set)
    return loaded, result


def selected_mask(weight_name: str, shape, arch: str, indices: list[torch.Tensor]) -> torch.Tensor | None:
    """True at the entries of ``weight_name`` that belong to the neurons ``indices`` (None: no such entries)."""
    mask = torch.zeros(shape, dtype=torch.bool)
    parts = weight_name.split(".")
    if "layers" in parts:
        layer = int(parts[parts.index("layers") + 1])
    elif "h" in parts:
        layer = int(parts[parts.index("h") + 1])
    else:
        return mask
    idx = indices[layer]
    if weight_name.endswith("gate_up_proj.weight"):  # before "up_proj.weight", which it also ends with
        mask[idx] = True
        mask[idx + WIDTH] = True
    elif weight_name.endswith(("gate_proj.weight", "up_proj.weight")):
        mask[idx] = True
    elif weight_name.endswith("down_proj.weight"):
        mask[:, idx] = True
    elif weight_name.endswith("c_fc.weight"):  # Conv1D [d, I]
        mask[:, idx] = True
    elif weight_name.endswith("mlp.c_proj.weight"):  # Conv1D [I, d]
        mask[idx] = True
    return mask


# --------------------------------------------------------------------------------------------------
# Exactly the selected rows and columns


@pytest.mark.parametrize("arch", ["llama", "phi3", "gpt2"])
def test_subnetwork_changes_exactly_the_selected_rows_and_columns(arch, tiny_model_dir, corpus, neurons, tmp_path):
    from lape_eval.neuron_set import NeuronSet

    model_dir = tiny_model_dir(arch)
    original = {k: v.clone() for k, v in load(model_dir).model.state_dict().items()}
    loaded, result = train(model_dir, tmp_path / "run", corpus, neurons, max_steps=6, eval_every=3)
    # The live model's own weights are never written: training goes through the delta tensors.
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    delta = NeuronDelta.load(result.adapter / DELTA_FILE)
    indices = NeuronSet.load(neurons).indices("de")
    assert all(torch.equal(a, b) for a, b in zip(delta.indices, indices))
    merged = load(model_dir).model
    delta.apply(merged)
    changed_somewhere = 0
    for name, tensor in merged.state_dict().items():
        mask = selected_mask(name, tensor.shape, arch, indices)
        assert torch.equal(tensor[~mask], original[name][~mask]), f"{name} changed outside the selected entries"
        changed_somewhere += int((tensor[mask] != original[name][mask]).sum())
    per_neuron = (3 if arch != "gpt2" else 2) * D_MODEL
    assert changed_somewhere > 0.9 * per_neuron * sum(i.numel() for i in indices)
    # And the merged model computes what the hooked model trained.
    batch = make_batch([[5, 6, 7, 8, 9, 10]], bos_id=None, pad_id=0)
    with torch.no_grad():
        live = load(model_dir).model
        hooks = DeltaModule(live, delta.indices, init=delta).attach()
        expected = live(input_ids=batch.input_ids).logits
        hooks.detach()
        torch.testing.assert_close(merged(input_ids=batch.input_ids).logits, expected, rtol=1e-5, atol=1e-5)
        fresh = load(model_dir).model
        assert torch.equal(live(input_ids=batch.input_ids).logits, fresh(input_ids=batch.input_ids).logits)


@pytest.mark.parametrize("arch, per_neuron", [("llama", 3), ("phi3", 3), ("gpt2", 2)])
def test_trainable_parameter_count_is_weights_per_neuron_times_d_model_and_printed(arch, per_neuron, tiny_model_dir,
                                                                                    corpus, neurons, tmp_path):
    from click.testing import CliRunner

    from lape_eval.cli import cli

    n = make_set(WIDTH).neuron_count("de")
    out = CliRunner().invoke(cli, ["finetune", "--model", str(tiny_model_dir(arch)), "--language", "de", "--neurons",
                                   str(neurons), "--corpus", str(corpus), "--seq-len", "24", "--max-steps", "1",
                                   "--no-progress", "--out", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    expected = per_neuron * D_MODEL * n
    assert f"{per_neuron} × d_model {D_MODEL} × {n} neurons = {expected:,}" in out.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trainable_parameters"] == expected and summary["neurons"] == n
    assert NeuronDelta.load(tmp_path / "run" / "best").parameter_count == expected


def test_random_baseline_is_layer_matched_and_seeded():
    indices = [torch.tensor([1, 5, 9]), torch.tensor([], dtype=torch.int64), torch.tensor([0, 2])]
    first = random_layer_matched(indices, 50, seed=1)
    assert [len(i) for i in first] == [3, 0, 2]
    assert all(torch.equal(a, b) for a, b in zip(first, random_layer_matched(indices, 50, seed=1)))
    assert not all(torch.equal(a, b) for a, b in zip(first, random_layer_matched(indices, 50, seed=2)))
    for index in first:
        assert torch.equal(index, torch.unique(index)) and (index < 50).all()


def test_random_method_trains_a_layer_matched_set(tiny_model_dir, corpus, neurons, tmp_path):
    from lape_eval.neuron_set import NeuronSet

    _, result = train(tiny_model_dir("llama"), tmp_path / "run", corpus, neurons, method="random", max_steps=2,
                      random_seed=3)
    delta = NeuronDelta.load(result.adapter)
    language = NeuronSet.load(neurons).indices("de")
    assert [i.numel() for i in delta.indices] == [i.numel() for i in language]
    assert any(not torch.equal(a, b) for a, b in zip(delta.indices, language))
    assert delta.info["random_seed"] == 3 and delta.info["method"] == "random"


# --------------------------------------------------------------------------------------------------
# The loop


def test_heldout_documents_are_a_disjoint_evenly_spread_fraction():
    from lape_eval.finetune import split_documents

    docs = [f"doc {i}" for i in range(40)]
    train_docs = list(split_documents(iter(docs), 0.1, "train"))
    heldout = list(split_documents(iter(docs), 0.1, "heldout"))
    assert len(heldout) == 4 and sorted(train_docs + heldout, key=docs.index) == docs
    assert heldout == ["doc 9", "doc 19", "doc 29", "doc 39"]
    assert list(split_documents(iter(docs), 0.0, "train")) == docs


def test_learning_rate_warmup_and_schedules():
    from lape_eval.finetune import lr_factor

    def factors(schedule, warmup=2, total=10):
        s = FinetuneSettings(method="lora", language="de", schedule=schedule, warmup_steps=warmup)
        return [lr_factor(step, s, total) for step in range(total)]

    assert factors("constant") == [0.5, 1.0] + [1.0] * 8
    linear = factors("linear")
    assert linear[:3] == [0.5, 1.0, 1.0] and linear[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(linear[1:], linear[2:]))
    cosine = factors("cosine", warmup=0)
    assert cosine[0] == 1.0 and 0 < cosine[-1] < 0.05


def test_without_heldout_text_the_last_step_is_the_adapter(tiny_model_dir, corpus, neurons, tmp_path):
    _, result = train(tiny_model_dir("llama"), tmp_path / "run", corpus, neurons, max_steps=3, heldout_fraction=0.0)
    assert result.heldout == {"initial": None, "best": None, "best_step": 3, "final": None}
    assert NeuronDelta.load(result.adapter).info["training"]["step"] == 3


def test_padding_never_contributes_to_the_loss(tiny_model_dir):
    loaded = load(tiny_model_dir("llama"))
    model = loaded.model
    sequences = [[11, 12, 13, 14, 15, 16, 17, 18], [21, 22, 23, 24]]
    narrow = make_batch(sequences, bos_id=1, pad_id=0)
    wide_ids = torch.cat([narrow.input_ids, torch.full((2, 7), 2)], dim=1)  # extra padding (EOS as pad)
    wide_mask = torch.cat([narrow.attention_mask, torch.zeros(2, 7, dtype=torch.long)], dim=1)
    delta = DeltaModule(model, [torch.tensor([3, 7]), torch.tensor([1])]).attach()
    results = []
    for ids, mask in ((narrow.input_ids, narrow.attention_mask), (wide_ids, wide_mask)):
        delta.zero_grad()
        loss, count = causal_lm_loss_sum(model, ids, mask)
        loss.backward()
        results.append((loss.detach(), count, [p.grad.clone() for p in delta.parameters()]))
    (loss_a, count_a, grads_a), (loss_b, count_b, grads_b) = results
    assert count_a == count_b == 8 + 4  # every real token after BOS, no pad
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
    # The extra padded columns change only the order of float32 reductions (attention over 15 instead
    # of 8 columns, other matmul blocking), never which terms are summed. Rounding of a float32 sum of n
    # terms is bounded by n·u·Σ|terms| (u = 2^-24); with the widest reduction here n = 96 (MLP width) and
    # about six chained products forward and backward, that is ~3e-5 of the gradient's scale, so the
    # bound is taken relative to max|grad|, not per element (cancellation makes small elements' relative
    # error meaningless). Measured under scalar, AVX2 and AVX-512 kernels: at most 2.2e-6 of the scale.
    # A pad counted as a target would move the gradients by ~1/12 of their scale (one token of 12).
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=0, atol=3e-5 * a.abs().max().item())
    # Labelling pads as targets (the reference code's pitfall) would change the loss:
    with torch.no_grad():
        naive = model(input_ids=wide_ids, attention_mask=wide_mask, labels=wide_ids).loss
    assert abs(float(naive) - float(loss_a) / count_a) > 1e-3


class RowsReference(finetune_module.Method):
    """The reference code's scheme: trainable copies of the rows/columns scattered into clones of the
    full matrices at every forward (torch parametrizations), plain AdamW on the copies."""

    name = "reference"

    def __init__(self, model, sites, indices):
        from torch.nn.utils import parametrize

        super().__init__(model, sites)
        self._named = {}
        for layer, index in enumerate(indices):
            if not index.numel():
                continue
            for role, axis in (("gate", 0), ("up", 0), ("down", 1)):
                module = sites.projection(layer, role)
                rows = module.weight.detach().index_select(axis, index).clone()
                scatter = _Scatter(index, axis, rows)
                parametrize.register_parametrization(module, "weight", scatter)
                self._named[f"{layer}.{role}"] = scatter.rows

    def named_trainable(self):
        return dict(self._named)


class _Scatter(torch.nn.Module):
    def __init__(self, index, axis, rows):
        super().__init__()
        self.index, self.axis = index, axis
        self.rows = torch.nn.Parameter(rows)

    def forward(self, weight):
        return weight.index_copy(self.axis, self.index, self.rows)


def test_subnetwork_training_equals_training_the_rows_themselves(tiny_model_dir):
    """Same data, AdamW, weight decay and clipping: the delta scheme ends where the reference scheme does."""
    from lape_eval.arch import resolve
    from lape_eval.distributed import Distributed
    from lape_eval.finetune import SubnetworkMethod, train_step

    indices = [torch.tensor([3, 7, 40]), torch.tensor([1, 95])]
    s = FinetuneSettings(method="subnetwork", language="de", lr=3e-2, weight_decay=0.5, clip=0.05, batch_size=2)
    groups = [[[5 + i + j for i in range(10)], [30 + j, 31, 32, 33, 34]] for j in range(4)]
    finals = []
    for scheme in ("delta", "reference"):
        model = load(tiny_model_dir("llama")).model
        sites = resolve(model)
        method = (SubnetworkMethod(model, sites, indices, "subnetwork") if scheme == "delta"
                  else RowsReference(model, sites, indices))
        optimizer = torch.optim.AdamW(method.parameters, lr=s.lr,
                                      weight_decay=method.optimizer_weight_decay(s.weight_decay))
        for group in groups:
            train_step(method, optimizer, group, s, 1, 0, torch.device("cpu"), Distributed())
        if scheme == "delta":
            weights = {f"{layer}.{role}": read_entries(sites, layer, role, indices[layer])
                       + method.delta.delta(layer, role) for layer in (0, 1) for role in ("gate", "up", "down")}
        else:
            weights = {name: p.detach() for name, p in method.named_trainable().items()}
        finals.append(weights)
    start = load(tiny_model_dir("llama")).model
    for name, value in finals[1].items():
        torch.testing.assert_close(finals[0][name], value, rtol=1e-5, atol=1e-6)
        layer, role = name.split(".")
        assert not torch.allclose(value, read_entries(resolve(start), int(layer), role, indices[int(layer)]))


def test_interrupted_run_resumes_to_the_same_adapter(tiny_model_dir, corpus, neurons, tmp_path, monkeypatch):
    model_dir = tiny_model_dir("llama")
    common = dict(method="lora", lora_rank=4, max_steps=7, eval_every=3, checkpoint_every=1, schedule="cosine",
                  warmup_steps=2)  # LoRA dropout: the RNG must resume too
    _, reference = train(model_dir, tmp_path / "whole", corpus, neurons, **common)

    real_step = finetune_module.train_step
    calls = {"n": 0}

    def crash_at_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(finetune_module, "train_step", crash_at_five)
    with pytest.raises(KeyboardInterrupt):
        train(model_dir, tmp_path / "split", corpus, neurons, **common)
    monkeypatch.setattr(finetune_module, "train_step", real_step)
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
    for wa, wb in zip(a.weights, b.weights):
        for role in wa:
            torch.testing.assert_close(wa[role], wb[role], rtol=1e-4, atol=1e-6)
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
    for a, b in zip(dp_summary["history"], single.summary["history"]):
        assert a["step"] == b["step"] and a["heldout_loss"] == pytest.approx(b["heldout_loss"], rel=1e-5)
    dp, one = NeuronDelta.load(tmp_path / "dp" / "best"), NeuronDelta.load(single.adapter)
    assert all(torch.equal(a, b) for a, b in zip(dp.indices, one.indices))  # exactly the selected entries
    for wa, wb in zip(dp.weights, one.weights):
        for role in wa:
            torch.testing.assert_close(wa[role], wb[role], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Adapters in lm_eval, merge, PEFT export, steering


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    from lm_eval.tasks import TaskManager

    folder = write_tasks(tmp_path_factory.mktemp("tasks"))
    return TaskManager(include_path=str(folder), include_defaults=False)


def evaluate(model, model_args, tasks):
    from lm_eval import simple_evaluate

    results = simple_evaluate(model=model, model_args={"dtype": "float32", **model_args}, tasks=["tiny_mc"],
                              task_manager=tasks, device="cpu", batch_size=2, bootstrap_iters=0, log_samples=True)
    samples = sorted(results["samples"]["tiny_mc"], key=lambda s: s["doc_id"])
    return torch.tensor([[r[0][0] for r in s["resps"]] for s in samples], dtype=torch.float64), results


def _merge(*args):
    from click.testing import CliRunner

    from lape_eval.cli import cli

    result = CliRunner().invoke(cli, ["merge", *map(str, args)])
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
        # merge: a full model folder that the stock hf model loads; the same numbers
        _merge("--model", model_dir, "--delta", best / DELTA_FILE, "--out", tmp_path / f"{method}-merged")
        merged, _ = evaluate("hf", {"pretrained": str(tmp_path / f"{method}-merged")}, tasks)
        torch.testing.assert_close(merged, lape, rtol=0, atol=1e-6)
        # ... and as a standard PEFT adapter
        _merge("--model", model_dir, "--delta", best, "--out", tmp_path / f"{method}-peft", "--format", "peft")
        peft, _ = evaluate("hf", {"pretrained": model_dir, "peft": str(tmp_path / f"{method}-peft")}, tasks)
        torch.testing.assert_close(peft, lape, rtol=0, atol=1e-4)
    lora_hf, _ = evaluate("hf", {"pretrained": model_dir, "peft": str(runs["lora"].adapter)}, tasks)
    lora_lape, _ = evaluate("lape", {"pretrained": model_dir, "peft": str(runs["lora"].adapter)}, tasks)
    assert torch.equal(lora_hf, lora_lape) and (lora_hf - base).abs().max() > 1e-4
    assert json.loads((runs["lora"].adapter / "adapter_config.json").read_text())["r"] == 4
    mlp, _ = evaluate("hf", {"pretrained": str(runs["mlp"].adapter)}, tasks)
    assert (mlp - base).abs().max() > 1e-4
    _merge("--model", model_dir, "--delta", runs["lora"].adapter, "--out", tmp_path / "lora-merged")
    lora_merged, _ = evaluate("hf", {"pretrained": str(tmp_path / "lora-merged")}, tasks)
    torch.testing.assert_close(lora_merged, lora_hf, rtol=0, atol=1e-4)


def test_steering_composes_with_a_neuron_delta_and_with_lora(tiny_model_dir, corpus, neurons, tmp_path, tasks):
    from lape_eval.neuron_set import NeuronSet
    from lape_eval.steered_export import save_steered
    from lape_eval.steering import parse_steer
    from peft import PeftModel

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
    torch.testing.assert_close(lape, stock, rtol=0, atol=1e-5)
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
            torch.testing.assert_close(peft(input_ids=ids).logits, merged(input_ids=ids).logits, rtol=1e-4, atol=1e-5)
            assert not torch.allclose(merged(input_ids=ids).logits, load(model_dir).model(input_ids=ids).logits)


def test_delta_file_records_provenance_and_refuses_bad_files(tiny_model_dir, corpus, neurons, tmp_path):
    from lape_eval.neuron_set import NeuronSet

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
        from lape_eval.lm import LapeLM

        LapeLM(pretrained=str(tiny_model_dir("qwen2")), neuron_delta=str(result.adapter), device="cpu")
    with pytest.raises(LapeEvalError, match="does not exist"):
        from lape_eval.lm import LapeLM

        LapeLM(pretrained="unused", neuron_delta=str(tmp_path / "missing.safetensors"))


# --------------------------------------------------------------------------------------------------
# Bad input: clear errors, exit code 2, no traceback


class TestBadInput:
    @pytest.fixture(autouse=True)
    def _paths(self, tiny_model_dir, corpus, neurons, tmp_path):
        self.model = str(tiny_model_dir("llama"))
        self.corpus, self.neurons, self.tmp = str(corpus), str(neurons), tmp_path

    def run(self, *extra, out=None):
        from click.testing import CliRunner

        from lape_eval.cli import cli

        args = ["finetune", "--model", self.model, "--language", "de", "--neurons", self.neurons, "--corpus",
                self.corpus, "--seq-len", "24", "--max-steps", "2", "--no-progress", "--out",
                str(out or self.tmp / "run")]
        return CliRunner().invoke(cli, [*args, *extra])

    def assert_error(self, result, *fragments):
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit)
        for fragment in fragments:
            assert fragment in result.output, result.output

    def test_language_not_in_the_set(self):
        self.assert_error(self.run("--language", "ja"), "no neurons for 'ja'", "it covers en, de, fr")

    def test_neuron_set_of_another_model(self):
        wide = self.tmp / "wide.safetensors"
        make_set(width=4096).save(wide)
        self.assert_error(self.run("--neurons", str(wide)), "4096 neurons", "the model has 2 layers × 96 neurons")

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
        from click.testing import CliRunner

        from lape_eval.cli import cli

        result = CliRunner().invoke(cli, ["finetune", "--model", self.model, "--language", "de", "--corpus",
                                          self.corpus, "--out", str(self.tmp / "x")])
        self.assert_error(result, "give the neuron set with --neurons")

    def test_output_folder_holding_another_run(self):
        assert self.run().exit_code == 0
        self.assert_error(self.run("--method", "lora"), "holds another fine-tuning run", "method: 'subnetwork' there")

    def test_output_folder_holding_something_else(self):
        (self.tmp / "run").mkdir()
        (self.tmp / "run" / "notes.txt").write_text("mine")
        self.assert_error(self.run(), "is not empty and holds no run.json")

    def test_resuming_with_different_arguments(self, monkeypatch):
        real_step = finetune_module.train_step
        calls = {"n": 0}

        def crash(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("simulated crash")
            return real_step(*args, **kwargs)

        monkeypatch.setattr(finetune_module, "train_step", crash)
        assert isinstance(self.run("--checkpoint-every", "1").exception, RuntimeError)
        monkeypatch.setattr(finetune_module, "train_step", real_step)
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

    def test_merge_refuses_a_non_empty_folder_and_a_foreign_file(self):
        from click.testing import CliRunner

        from lape_eval.cli import cli

        (self.tmp / "full").mkdir()
        (self.tmp / "full" / "x").write_text("x")
        result = CliRunner().invoke(cli, ["merge", "--model", self.model, "--delta", self.neurons, "--out",
                                          str(self.tmp / "new")])
        self.assert_error(result, "not a lape-eval neuron delta")
        result = CliRunner().invoke(cli, ["merge", "--model", self.model, "--delta", self.neurons, "--out",
                                          str(self.tmp / "full")])
        self.assert_error(result, "is not empty")
