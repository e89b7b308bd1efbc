"""Benchmark: the cost of steering inside lm-eval (issue 4, "Performance").

Targets:

(a) A steered lm-eval run takes <= 1.10x the time of the same ``hf`` run (same tasks, same batch size).
(b) Steered batched generation keeps batching: generated tokens/s at batch 8 >= 3x batch 1 (tiny model).
(c) A ``steer=doc`` grid of N cells costs one model load and its wall time is below N separate runs.
(d) With steering off, ``lape`` costs the same as ``hf`` (ratio ~ 1.0; reported, target <= 1.05).

**Models.** ``small_llama``: a randomly initialised Llama with the tiny test tokenizer
(tests/tiny_models.py), made wider than the unit-test model so that a run is not all lm-eval overhead:
hidden 512, 8 layers, MLP width 2048 (Gemma-3-270M's), 8 heads / 4 KV heads, vocab 512, float32.
``gemma3_270m``: the real Gemma-3-270M (``pretrained=gemma-3-270m-gguf``, 18 layers x 2048 neurons,
vocab 262k, float32). ``tiny_llama``: the unit-test model (hidden 32, 2 layers, width 96) for (b).

**Neuron sets.** No shipped set is needed: a synthetic set over en, de, fr with 1 % of all the
model's neurons *per language* (20 of 2048 per layer and language for the 2048-wide models; 1 per
layer for the 96-wide tiny model), random indices, random means in [-0.5, 1.5). That is more neurons
per language than a real 1 % LAPE set over 21 languages (which holds 1 % in total), so the
steering cost here is an upper bound. The spec is ``-en +de`` (method add, alpha 1): two edits per
layer, at every layer.

**Tasks** (local JSONL, written to a scratch folder): ``bench_gen``, 8 English "Q: ... A:" prompts of
different lengths, greedy, ``max_gen_toks: 32`` with ``min_new_tokens: 32`` so that every arm generates
exactly the same number of tokens whatever the steering does to the text; ``bench_mc``, 24 documents x 4
choices (96 loglikelihood requests). Batch size 4 everywhere in (a).

**(a)/(d) method.** One subprocess per model. Each repetition runs the arms ``hf``, ``lape`` without a
steer (``lape_off``) and ``lape`` with ``steer=-en +de`` (``lape_steer``) back to back, in an order that
rotates between repetitions (A B C, B C A, C A B, ...), so load from other processes on the shared
2-core machine falls on every arm alike; each arm's time is the median over repetitions, and the
ratio is median(lape) / median(hf). Two measurements:

* ``run``: a whole run as the user sees it: ``simple_evaluate(model=NAME, model_args={pretrained=...})``,
  i.e. model construction (from the page-cached checkpoint) + task building + evaluation. This is the
  target's definition.
* ``eval``: the evaluation alone, with the LM objects built once (all three share one HF model object;
  ``lape`` hooks only live during its own calls): the stricter number, since loading is not diluting it.
  On Gemma only this one is measured (with the first 8 documents of each task): a whole run adds the
  same load time to both arms, so its ratio lies between 1 and the evaluation-only ratio.

Every arm is timed by wall clock (the target) and by the process's CPU time, which is much less
sensitive to other processes on the shared machine; both ratios are reported. The first repetition
also checks that ``lape_off`` gives exactly ``hf``'s outputs. Models run with one torch thread
(``LAPE_BENCH_THREADS`` changes it): on the shared 2-core machine two threads made a tiny model's
generation up to 15x slower and far noisier whenever other processes ran. With more threads the
model's own compute shrinks while the hooks' cost (single-threaded dispatch of a few small
gathers and scatters per layer) does not, so the ratios would rise somewhat.

**(b) method.** ``model.generate`` under ``lape_eval.steering.hooks.steer`` (positions ``all`` and
``generated``), 8 prompts of different lengths (left padding), greedy, exactly 32 new tokens per
prompt (``min_new_tokens``): 8 calls at batch 1 vs one call at batch 8, interleaved, medians;
throughput = 8 x 32 / time. The unsteered ratio is reported for reference.

**(c) method.** The grid: 3 source x 3 target languages = N = 9 cells ``-src +tgt``, 2 prompts per cell
(``bench_grid``, 18 documents, generation with 16 new tokens, batch 4). Grid arm: one
``simple_evaluate(model="lape", model_args={..., steer="doc"})``. Separate arm: N ``simple_evaluate``
calls, one per cell, each on a task holding only that cell's documents with ``steer=-src +tgt``, each
constructing the model from ``pretrained=`` as N ``lm_eval`` commands would (in one process, so the
separate runs even get warm imports and caches for free: the comparison favours them). Model loads
are counted by wrapping ``HFLM._create_model``. The per-document outputs of both arms must agree.

**(e) grid: row-wise steer=doc on the demo's forcing grid** (issue 14; its own benchmark,
``python -m benchmarks.run grid``, see :func:`grid`). Gemma-3-270M (``load_model("gemma-3-270m-gguf")``,
float32), the demo's 7 x 7 forcing grid (en, de, fr, es, zh, ru, ja; 10 questions per source language;
490 ``generate_until`` requests, ``max_gen_toks`` 32 as the demo passes it, the task's greedy decoding
with repetition penalty 1.1 and stop strings), steered as the demo steers it: ``steer=doc`` with the
shipped calibration's neuron set, method and positions and its α per target language, at the demo's
batch size. The requests are built once by lm-eval from the task; each arm then times one
``generate_until`` call of the ``lape`` model on all of them (one shared model object):

* ``rowwise``: ``steer=doc`` as shipped: one HFLM generation loop, rows of different specs in one batch;
* ``unsteered``: no steer, identical greedy requests *not* merged (``_deduplicate = False``), so the
  same 490 generations are made;
* ``per_spec``: ``steer=doc`` the way it ran before issue 14 (``_rowwise_generation = False``): one HFLM
  call per spec, 49 groups of 10 requests.

Each arm runs once (a full arm takes minutes), in the order unsteered, rowwise, per_spec, after a
one-batch warm-up; wall and CPU time are reported. Targets: rowwise <= 1.25 x unsteered, and rowwise at
least 2.5 x faster than per_spec. The row-wise and per-spec arms must give the same texts.
``--quick`` times the first 16 requests with 8 new tokens (a check that the code runs, not a measurement).

Run: ``python benchmarks/bench_steering.py [--quick]``; ``python -m benchmarks.run steering`` calls
:func:`run`, ``python -m benchmarks.run grid`` calls :func:`grid`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GEMMA = "gemma-3-270m-gguf"
RUN_TARGET = 1.10
OFF_TARGET = 1.05
BATCH_TARGET = 3.0
BATCH_SIZE = 4
GEN_TOKENS = 32
STEER = "-en +de"
LANGS = ["en", "de", "fr"]
# One torch thread: on the shared 2-core machine, two threads made a tiny model's generation up to 15x
# slower and far noisier whenever other processes ran (OpenMP barriers wait for a descheduled thread).
THREADS = int(os.environ.get("LAPE_BENCH_THREADS", "1"))

# model key -> (repetitions of the whole-run measurement, of the eval-only one), normal and quick. On
# Gemma only the evaluation is timed: a whole run only adds the same model load to both arms, so the
# evaluation-only ratio bounds the whole-run ratio from above (and a Gemma run costs minutes here).
REPETITIONS = {"small_llama": ((7, 7), (3, 3)), "gemma3_270m": ((0, 5), (0, 2))}
LIMITS = {"small_llama": None, "gemma3_270m": 8}  # documents per task (Gemma: 8 prompts, 8 x 4 choices)
THROUGHPUT_REPS = (9, 3)
GRID_REPS = (3, 1)

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Why is the sky blue during the day but red at sunset?",
    "Name a fruit.",
    "Which ocean lies between Europe and North America, and how deep is it on average?",
    "Who wrote the play Hamlet?",
    "What do bees make?",
    "How long does it take for light from the Sun to reach the Earth, roughly, in minutes?",
]
MC_STEMS = [
    "The cat sat on the", "She poured a cup of", "He opened the door and saw a", "The train arrives at",
    "In the morning we drink", "The children played in the", "My favourite colour is", "The river flows into the",
    "They bought a new", "At night the sky is full of", "The book was about a", "We met at the",
]
MC_CHOICES = [" mat", " tea", " dog", " noon"]


# --------------------------------------------------------------------------------------------------
# inputs: models, neuron sets and tasks, written into a scratch folder


def _tests_on_path() -> None:
    tests = str(REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def save_small_llama(directory: Path) -> Path:
    """The wider random Llama described in the module docstring, with the tiny test tokenizer."""
    import torch
    import transformers

    _tests_on_path()
    from tiny_models import _token_ids, save_tokenizer

    config = transformers.LlamaConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=8,
                                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
                                      initializer_range=0.02, tie_word_embeddings=False, **_token_ids())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(directory)
    save_tokenizer(directory)
    return directory


def synthetic_set(num_layers: int, width: int, seed: int = 0, rate: float = 0.01):
    """A neuron set over en, de, fr with ``rate`` of the neurons per language (random indices, means)."""
    import torch

    from lape_eval.neurons.neuron_set import NeuronSet

    generator = torch.Generator().manual_seed(seed)
    per_layer = max(1, round(rate * width))
    flat = {}
    for lang in LANGS:
        picks = [torch.randperm(width, generator=generator)[:per_layer].sort().values + layer * width
                 for layer in range(num_layers)]
        flat[lang] = torch.cat(picks).to(torch.int64)
    selected = torch.unique(torch.cat(list(flat.values())))
    means = torch.rand(len(LANGS), selected.numel(), generator=generator) * 2 - 0.5
    return NeuronSet(list(LANGS), num_layers, width, flat, selected, means,
                     {"model": {"id": f"synthetic-{num_layers}x{width}"}})


def write_tasks(folder: Path) -> Path:
    """``bench_gen``, ``bench_mc``, ``bench_grid`` and one ``bench_cell_<src>_<tgt>`` per grid cell."""
    folder.mkdir(parents=True, exist_ok=True)
    common = "test_split: test\ndataset_path: json\nmetadata:\n  version: 1.0\n"

    def task(name: str, rows: list[dict], body: str) -> None:
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        (folder / f"{name}.yaml").write_text(
            f"task: {name}\n{common}dataset_kwargs:\n  data_files:\n    test: {data}\n{body}", encoding="utf-8")

    def generate(tokens: int) -> str:
        return ("output_type: generate_until\ndoc_to_text: \"Q: {{question}}\\nA:\"\ndoc_to_target: answer\n"
                f"generation_kwargs:\n  until: [\"<never-stop>\"]\n  max_gen_toks: {tokens}\n"
                f"  min_new_tokens: {tokens}\n  do_sample: false\n"
                "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n")

    task("bench_gen", [{"question": q, "answer": ""} for q in QUESTIONS], generate(GEN_TOKENS))
    mc_rows = [{"text": stem, "label": i % 4} for i, stem in enumerate(MC_STEMS * 2)]
    task("bench_mc", mc_rows,
         "output_type: multiple_choice\ndoc_to_text: \"{{text}}\"\n"
         f"doc_to_choice: {json.dumps(MC_CHOICES)}\ndoc_to_target: label\n"
         "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    for cell in grid_cells():
        rows = [row for row in grid_rows() if (row["source_lang"], row["target_lang"]) == cell]
        task(f"bench_cell_{cell[0]}_{cell[1]}", rows, generate(GRID_TOKENS))
    task("bench_grid", grid_rows(), generate(GRID_TOKENS))
    return folder


GRID_TOKENS = 16


def grid_cells() -> list[tuple[str, str]]:
    return [(source, target) for source in LANGS for target in LANGS]


def grid_rows() -> list[dict]:
    return [{"question": q, "source_lang": s, "target_lang": t, "answer": ""}
            for s, t in grid_cells() for q in QUESTIONS[:2]]


def prepare(folder: Path, with_gemma: bool = True) -> dict:
    """Write every input; return their paths (and why Gemma is missing, if it is)."""
    _tests_on_path()
    from tiny_models import save_model

    paths = {"tasks": str(write_tasks(folder / "tasks"))}
    small = save_small_llama(folder / "small_llama")
    paths["small_llama"] = str(small)
    paths["small_llama_set"] = str(synthetic_set(8, 2048).save(folder / "small_llama_set.safetensors"))
    paths["tiny_llama"] = str(save_model("llama", folder / "tiny_llama"))
    paths["tiny_llama_set"] = str(synthetic_set(2, 96).save(folder / "tiny_llama_set.safetensors"))
    if with_gemma:
        try:
            from lape_eval.models import resolve_pretrained

            gemma = resolve_pretrained(GEMMA)
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(gemma)
            config = getattr(config, "text_config", config)
            paths["gemma3_270m"] = gemma
            paths["gemma3_270m_set"] = str(synthetic_set(config.num_hidden_layers, config.intermediate_size)
                                           .save(folder / "gemma3_270m_set.safetensors"))
        except Exception as error:  # the demo extra is not installed, or the conversion failed
            paths["gemma3_270m_error"] = f"{type(error).__name__}: {error}"
    return paths


# --------------------------------------------------------------------------------------------------
# (a) + (d): whole runs and evaluation alone, hf vs lape


def _samples(result: dict) -> dict:
    return {task: [s["resps"] for s in sorted(samples, key=lambda s: s["doc_id"])]
            for task, samples in result["samples"].items()}


def _rotations(names: list[str], repetitions: int):
    for rep in range(repetitions):
        shift = rep % len(names)
        yield rep, names[shift:] + names[:shift]


def measure_runs(paths: dict, model_key: str, quick: bool) -> dict:
    import gc

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from lape_eval.evaluation.lm import LapeLM

    run_reps, eval_reps = REPETITIONS[model_key][1 if quick else 0]
    pretrained, neurons = paths[model_key], paths[f"{model_key}_set"]
    manager = TaskManager(include_path=paths["tasks"], include_defaults=False)
    common = dict(tasks=["bench_gen", "bench_mc"], task_manager=manager, device="cpu", batch_size=BATCH_SIZE,
                  bootstrap_iters=0, log_samples=True, limit=LIMITS[model_key])
    base = {"pretrained": pretrained, "dtype": "float32"}
    arms = {"hf": ("hf", base), "lape_off": ("lape", {**base, "neurons": neurons}),
            "lape_steer": ("lape", {**base, "neurons": neurons, "steer": STEER})}
    names = list(arms)
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    times = {kind: {clock: {name: [] for name in names} for clock in clocks} for kind in ("run", "eval")}
    outputs = {}

    def timed(kind: str, name: str, call):
        gc.collect()
        start = {clock: now() for clock, now in clocks.items()}
        result = call()
        for clock, now in clocks.items():
            times[kind][clock][name].append(now() - start[clock])
        outputs.setdefault(name, _samples(result))

    if run_reps:
        simple_evaluate(model="hf", model_args=base, **common)  # warm-up: imports, page cache, Arrow cache
        for _, order in _rotations(names, run_reps):
            for name in order:
                model, args = arms[name]
                timed("run", name, lambda: simple_evaluate(model=model, model_args=args, **common))

    # evaluation alone: one HF model object shared by the three LM wrappers
    hf = HFLM(pretrained=pretrained, dtype="float32", device="cpu", batch_size=BATCH_SIZE)
    shared = dict(pretrained=hf.model, tokenizer=hf.tokenizer, batch_size=BATCH_SIZE)
    lms = {"hf": hf, "lape_off": LapeLM(neurons=neurons, **shared),
           "lape_steer": LapeLM(neurons=neurons, steer=STEER, **shared)}
    evaluate = {**common, "device": None}
    simple_evaluate(model=lms["lape_steer"], **evaluate)  # warm-up
    for _, order in _rotations(names, eval_reps):
        for name in order:
            timed("eval", name, lambda: simple_evaluate(model=lms[name], **evaluate))

    config = hf.model.config
    kinds = [kind for kind, reps in (("run", run_reps), ("eval", eval_reps)) if reps]
    median, paired = _medians_and_ratios(times, kinds, names)
    return {
        "model": (f"{model_key}: {config.model_type}, {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
                  f"MLP width {config.intermediate_size}, vocab {config.vocab_size}, float32"),
        "median": median, "paired": paired, "times": times,
        "repetitions": {"run": run_reps, "eval": eval_reps}, "limit": LIMITS[model_key],
        "lape_off_equals_hf": outputs["lape_off"] == outputs["hf"],
        "steer_changes_outputs": outputs["lape_steer"] != outputs["hf"],
        "threads": torch.get_num_threads(), "load": os.getloadavg(),
    }


def _medians_and_ratios(times: dict, kinds: list[str], names: list[str]) -> tuple[dict, dict]:
    """Per kind, clock and arm: the median time, and the sorted ratios of each repetition to ``hf``'s
    repetition of the same index (run in the same rotation, close in time)."""
    import statistics

    median = {kind: {clock: {name: statistics.median(values) for name, values in by_clock.items()}
                     for clock, by_clock in times[kind].items()} for kind in kinds}
    paired = {kind: {clock: {name: sorted(a / b for a, b in zip(by_clock[name], by_clock["hf"])) for name in names[1:]}
                     for clock, by_clock in times[kind].items()} for kind in kinds}
    return median, paired


# --------------------------------------------------------------------------------------------------
# (b) batched generation throughput under steering


def measure_throughput(paths: dict, quick: bool) -> dict:
    import gc
    import statistics

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lape_eval.neurons.neuron_set import NeuronSet
    from lape_eval.steering.hooks import steer

    reps = THROUGHPUT_REPS[1 if quick else 0]
    model = AutoModelForCausalLM.from_pretrained(paths["tiny_llama"], dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(paths["tiny_llama"])
    tokenizer.padding_side = "left"
    neurons = NeuronSet.load(paths["tiny_llama_set"])
    prompts = [f"Q: {q}\nA:" for q in QUESTIONS]
    singles = [tokenizer([p], return_tensors="pt") for p in prompts]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    settings = dict(max_new_tokens=GEN_TOKENS, min_new_tokens=GEN_TOKENS, do_sample=False,
                    pad_token_id=tokenizer.pad_token_id)
    arms = {"off": None, "all": "all", "generated": "generated"}

    def generate(encoded):
        out = model.generate(**encoded, **settings)
        assert out.shape[1] - encoded["input_ids"].shape[1] == GEN_TOKENS
        return out

    def run(positions: str | None, batched: bool) -> float:
        import contextlib

        context = steer(model, neurons, STEER, positions=positions) if positions else contextlib.nullcontext()
        gc.collect()
        with torch.no_grad(), context:
            start = time.perf_counter()
            if batched:
                generate(batch)
            else:
                for encoded in singles:
                    generate(encoded)
            return time.perf_counter() - start

    for positions in arms.values():  # warm-up
        run(positions, True)
        run(positions, False)
    variants = [(arm, batched) for arm in arms for batched in (False, True)]
    keys = [f"{arm}_b{8 if batched else 1}" for arm, batched in variants]
    times: dict[str, list[float]] = {key: [] for key in keys}
    for _, order in _rotations(list(range(len(variants))), reps):
        for index in order:
            arm, batched = variants[index]
            times[keys[index]].append(run(arms[arm], batched))
    tokens = len(prompts) * GEN_TOKENS
    median = {key: statistics.median(values) for key, values in times.items()}
    return {"tokens_per_s": {key: tokens / value for key, value in median.items()},
            "ratio": {arm: median[f"{arm}_b1"] / median[f"{arm}_b8"] for arm in arms},
            "times": times, "repetitions": reps, "threads": torch.get_num_threads(), "load": os.getloadavg(),
            "model": "tests/tiny_models.py llama (hidden 32, 2 layers, MLP width 96), float32",
            "prompt_lengths": [int(s["input_ids"].shape[1]) for s in singles]}


# --------------------------------------------------------------------------------------------------
# (c) a steer=doc grid vs N separate runs


def measure_grid(paths: dict, model_key: str, quick: bool) -> dict:
    import gc
    import statistics

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    import lape_eval.evaluation.lm  # noqa: F401

    reps = GRID_REPS[1 if quick else 0]
    loads = {"count": 0}
    original = HFLM._create_model

    def counted(self, *args, **kwargs):
        loads["count"] += 1
        return original(self, *args, **kwargs)

    HFLM._create_model = counted
    manager = TaskManager(include_path=paths["tasks"], include_defaults=False)
    args = {"pretrained": paths[model_key], "dtype": "float32", "neurons": paths[f"{model_key}_set"]}
    common = dict(task_manager=manager, device="cpu", batch_size=BATCH_SIZE, bootstrap_iters=0, log_samples=True)
    cells = grid_cells()

    def grid():
        result = simple_evaluate(model="lape", model_args={**args, "steer": "doc"}, tasks=["bench_grid"], **common)
        return [s["resps"] for s in sorted(result["samples"]["bench_grid"], key=lambda s: s["doc_id"])]

    def separate():
        outputs = []
        for source, target in cells:
            task = f"bench_cell_{source}_{target}"
            result = simple_evaluate(model="lape", model_args={**args, "steer": f"-{source} +{target}"},
                                     tasks=[task], **common)
            outputs += [s["resps"] for s in sorted(result["samples"][task], key=lambda s: s["doc_id"])]
        return outputs

    grid(), separate()  # warm-up
    times: dict[str, list[float]] = {"grid": [], "separate": []}
    load_counts: dict[str, int] = {}
    outputs = {}
    for _, order in _rotations(["grid", "separate"], reps):
        for name in order:
            gc.collect()
            before = loads["count"]
            start = time.perf_counter()
            outputs[name] = grid() if name == "grid" else separate()
            times[name].append(time.perf_counter() - start)
            load_counts[name] = loads["count"] - before
    median = {name: statistics.median(values) for name, values in times.items()}
    return {"cells": len(cells), "documents": len(grid_rows()), "median": median, "times": times,
            "loads": load_counts, "same_outputs": outputs["grid"] == outputs["separate"],
            "distinct_outputs": len({json.dumps(o) for o in outputs["grid"]}), "repetitions": reps,
            "load": os.getloadavg()}


# --------------------------------------------------------------------------------------------------
# (e) row-wise steer=doc on the demo's forcing grid (python -m benchmarks.run grid)

GRID_LANGUAGES = ("en", "de", "fr", "es", "zh", "ru", "ja")  # the demo's (lape_eval.demo.DEFAULT_LANGUAGES)
ROWWISE_TARGET = 1.25  # rowwise / unsteered, at most
PER_SPEC_TARGET = 2.5  # per_spec / rowwise, at least
QUICK_REQUESTS, QUICK_TOKENS = 16, 8


def task_requests(tasks: list[str], metadata: dict | None = None, limit: int | None = None,
                  max_gen_toks: int | None = None) -> list:
    """The requests lm-eval builds for ``tasks`` as ``lape-eval demo`` runs them (``--metadata``,
    ``--limit``, ``--gen_kwargs max_gen_toks=N``)."""
    from lape_eval.evaluation.suite import task_manager

    manager = task_manager(metadata=metadata)
    loaded = manager.load(tasks)["tasks"]
    requests = []
    for name in tasks:
        loaded[name].build_all_requests(rank=0, world_size=1, limit=limit)
        requests += loaded[name].instances
    if max_gen_toks is not None:
        for request in requests:  # what `--gen_kwargs max_gen_toks=N` does to the task's settings
            context, settings = request.arguments
            request.arguments = (context, {**settings, "max_gen_toks": max_gen_toks})
    return requests


def demo_grid_requests(max_gen_toks: int, languages=GRID_LANGUAGES) -> list:
    """The demo's forcing-grid requests, built by lm-eval from the task as ``lape-eval demo`` runs it."""
    return task_requests(["lape_forcing_grid"], {"languages": ",".join(languages)}, max_gen_toks=max_gen_toks)


def measure_rowwise_grid(quick: bool) -> dict:
    """Time one generate_until call over the grid per arm (see the module docstring, (e))."""
    import gc
    from dataclasses import fields

    import torch

    from lape_eval.demo import DemoPlan, shipped_calibration
    from lape_eval.evaluation.lm import LapeLM
    from lape_eval.models import load_model
    from lape_eval.steering.calibration import read_calibration

    batch_size = next(f.default for f in fields(DemoPlan) if f.name == "batch_size")
    tokens = QUICK_TOKENS if quick else 32
    requests = demo_grid_requests(tokens)
    requests = requests[:QUICK_REQUESTS] if quick else requests
    calibration = shipped_calibration()
    chosen = read_calibration(calibration).chosen
    loaded = load_model(GEMMA)
    shared = dict(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size,
                  neurons=chosen.neuron_set)
    steering = dict(steer="doc", method=chosen.method, positions=chosen.positions, language_alphas=calibration)
    lms = {"unsteered": LapeLM(**shared), "rowwise": LapeLM(**shared, **steering),
           "per_spec": LapeLM(**shared, **steering)}
    lms["unsteered"]._deduplicate = False
    lms["per_spec"]._rowwise_generation = False
    lms["rowwise"].generate_until(requests[:batch_size], disable_tqdm=True)  # warm-up
    # Forward passes per arm: a batch decodes until its longest answer ends, so an arm whose answers
    # are longer (steering changes what the model says) runs more passes; time per pass isolates
    # the cost of steering itself from that.
    passes = {"count": 0}
    counter = loaded.model.register_forward_pre_hook(lambda module, args: passes.__setitem__("count", passes["count"] + 1))
    times, texts, forward_passes = {}, {}, {}
    for name, lm in lms.items():
        gc.collect()
        passes["count"] = 0
        wall, cpu = time.perf_counter(), time.process_time()
        texts[name] = lm.generate_until(requests, disable_tqdm=True)
        times[name] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
        forward_passes[name] = passes["count"]
    counter.remove()
    tokenizer = loaded.tokenizer
    return {
        "times": times, "forward_passes": forward_passes, "requests": len(requests), "max_gen_toks": tokens,
        "batch_size": batch_size,
        "specs": len({(r.doc["source_lang"], r.doc["target_lang"]) for r in requests}),
        "same_texts": texts["rowwise"] == texts["per_spec"],
        "mean_answer_tokens": {name: sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in out)
                               / len(out) for name, out in texts.items()},
        "steering": {"neurons": chosen.neuron_set, "method": chosen.method, "positions": chosen.positions},
        "threads": torch.get_num_threads(), "load": os.getloadavg(), "quick": quick,
    }


def _rowwise_grid_records(raw: dict) -> list[dict]:
    wall = {name: t["wall"] for name, t in raw["times"].items()}
    cpu = {name: t["cpu"] for name, t in raw["times"].items()}
    setting = (f"{raw['requests']} forcing-grid requests ({raw['specs']} specs; demo languages "
               f"{','.join(GRID_LANGUAGES)}), Gemma-3-270M float32, {raw['max_gen_toks']} new tokens at most, batch "
               f"{raw['batch_size']}, steering {raw['steering']} with the shipped calibration's alphas; mean answer "
               f"tokens {', '.join(f'{k} {v:.1f}' for k, v in raw['mean_answer_tokens'].items())}; row-wise and "
               f"per-spec texts equal: {raw['same_texts']}; one run per arm; {raw['threads']} torch thread(s), load "
               f"average {', '.join(f'{x:.1f}' for x in raw['load'])}"
               + (" (QUICK: a smoke run)" if raw["quick"] else ""))
    vs_unsteered = wall["rowwise"] / wall["unsteered"]
    speedup = wall["per_spec"] / wall["rowwise"]
    passes = raw["forward_passes"]
    per_pass = {name: wall[name] / passes[name] for name in wall}
    setting += (f"; forward passes (a batch decodes until its longest answer ends): "
                f"{', '.join(f'{name} {count}' for name, count in passes.items())}; wall time per pass: "
                f"{', '.join(f'{name} {1000 * t:.0f} ms' for name, t in per_pass.items())}")
    return [
        {"name": "grid_rowwise_vs_unsteered", "value": vs_unsteered, "unit": "x", "target": ROWWISE_TARGET,
         "comparison": "<=", "ratio": vs_unsteered / ROWWISE_TARGET, "passed": vs_unsteered <= ROWWISE_TARGET,
         "cpu_ratio": cpu["rowwise"] / cpu["unsteered"],
         "baseline": (f"steer=doc row-wise {wall['rowwise']:.1f} s vs unsteered without de-duplication "
                      f"{wall['unsteered']:.1f} s (CPU {cpu['rowwise']:.1f} s vs {cpu['unsteered']:.1f} s); "
                      f"{setting}")},
        {"name": "grid_rowwise_speedup_over_per_spec", "value": speedup, "unit": "x", "target": PER_SPEC_TARGET,
         "comparison": ">=", "ratio": PER_SPEC_TARGET / speedup, "passed": speedup >= PER_SPEC_TARGET,
         "cpu_ratio": cpu["per_spec"] / cpu["rowwise"],
         "baseline": (f"steer=doc one HFLM call per spec (before issue 14) {wall['per_spec']:.1f} s vs row-wise "
                      f"{wall['rowwise']:.1f} s (CPU {cpu['per_spec']:.1f} s vs {cpu['rowwise']:.1f} s); {setting}")},
        {"name": "grid_rowwise_vs_unsteered_per_forward_pass", "value": per_pass["rowwise"] / per_pass["unsteered"],
         "unit": "x", "target": None, "ratio": None, "passed": None,
         "baseline": (f"wall time per forward pass, steer=doc row-wise {1000 * per_pass['rowwise']:.1f} ms "
                      f"({passes['rowwise']} passes) vs unsteered {1000 * per_pass['unsteered']:.1f} ms "
                      f"({passes['unsteered']} passes): the cost of the steering hooks alone; {setting}")},
    ]


def grid(quick: bool = False) -> list[dict]:
    """``python -m benchmarks.run grid`` (benchmarks/bench_grid.py): (e) of the module docstring."""
    return _rowwise_grid_records(_child("--rowwise-grid", *(["--quick"] if quick else [])))


# --------------------------------------------------------------------------------------------------
# records


def _child(*arguments: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(THREADS))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), *arguments], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def _spread(values: list[float]) -> str:
    return f"min {min(values):.3f} / median {values[len(values) // 2]:.3f} / max {max(values):.3f}"


def _run_records(key: str, raw: dict) -> list[dict]:
    records = []
    load = ", ".join(f"{x:.1f}" for x in raw["load"])
    docs = "all" if raw["limit"] is None else f"the first {raw['limit']}"
    for kind, label in (("run", "whole run (model construction + tasks + evaluation)"), ("eval", "evaluation only")):
        if kind not in raw["median"]:
            continue
        wall, cpu, reps = raw["median"][kind]["wall"], raw["median"][kind]["cpu"], raw["repetitions"][kind]
        for arm, target in (("lape_steer", RUN_TARGET), ("lape_off", OFF_TARGET)):
            ratio, cpu_ratio = wall[arm] / wall["hf"], cpu[arm] / cpu["hf"]
            what = "no steer"
            if arm == "lape_steer":
                what = f"steer='{STEER}' (1 % of neurons per language, positions=all)"
            records.append({
                "name": f"steering_{key}_{arm}_vs_hf_{kind}",
                "value": ratio, "unit": "x", "target": target, "comparison": "<=", "ratio": ratio / target,
                "passed": ratio <= target, "cpu_ratio": cpu_ratio,
                "baseline": (
                    f"{label}, wall time: lape {what} {wall[arm]:.2f} s vs hf {wall['hf']:.2f} s; CPU time "
                    f"{cpu[arm]:.2f} s vs {cpu['hf']:.2f} s (ratio {cpu_ratio:.3f}); medians of {reps} interleaved "
                    f"repetitions; paired wall ratios {_spread(raw['paired'][kind]['wall'][arm])}, paired CPU "
                    f"ratios {_spread(raw['paired'][kind]['cpu'][arm])}; {raw['model']}; tasks bench_gen "
                    f"({GEN_TOKENS} new tokens per prompt) + bench_mc (4 choices), {docs} documents, batch "
                    f"{BATCH_SIZE}; lape without steer gives hf's outputs exactly: {raw['lape_off_equals_hf']}; "
                    f"{raw['threads']} torch thread(s), load average {load}"
                ),
            })
    return records


def _throughput_records(raw: dict) -> list[dict]:
    records = []
    tps = raw["tokens_per_s"]
    for arm in ("all", "generated"):
        ratio = raw["ratio"][arm]
        records.append({
            "name": f"steering_batch8_vs_batch1_throughput_positions_{arm}",
            "value": ratio, "unit": "x", "target": BATCH_TARGET, "comparison": ">=", "ratio": BATCH_TARGET / ratio,
            "passed": ratio >= BATCH_TARGET,
            "baseline": (
                f"steered generation (steer='{STEER}', positions={arm}): {tps[f'{arm}_b8']:.0f} tokens/s at batch 8 "
                f"vs {tps[f'{arm}_b1']:.0f} at batch 1; unsteered {tps['off_b8']:.0f} vs {tps['off_b1']:.0f} tokens/s "
                f"(ratio {raw['ratio']['off']:.2f}); {raw['model']}; 8 prompts of {min(raw['prompt_lengths'])}-"
                f"{max(raw['prompt_lengths'])} tokens (left padding at batch 8), {GEN_TOKENS} new tokens each, "
                f"greedy; medians of {raw['repetitions']} interleaved repetitions"
            ),
        })
    return records


def _grid_records(key: str, raw: dict) -> list[dict]:
    median = raw["median"]
    ratio = median["grid"] / median["separate"]
    return [{
        "name": f"steering_doc_grid_vs_separate_runs_{key}",
        "value": ratio, "unit": "x", "target": 1.0, "comparison": "<=", "ratio": ratio,
        "passed": ratio < 1.0 and raw["loads"]["grid"] == 1,
        "baseline": (
            f"steer=doc grid of {raw['cells']} cells ({raw['documents']} documents, {GRID_TOKENS} new tokens each, "
            f"batch {BATCH_SIZE}) in one run: {median['grid']:.2f} s and {raw['loads']['grid']} model load; "
            f"{raw['cells']} separate runs (one per cell, each loading the model): {median['separate']:.2f} s and "
            f"{raw['loads']['separate']} loads; medians of {raw['repetitions']} interleaved repetitions; "
            f"same per-document outputs: {raw['same_outputs']} ({raw['distinct_outputs']} distinct generations); "
            f"model {key}"
        ),
    }]


def run(quick: bool = False) -> list[dict]:
    records = []
    flag = ["--quick"] if quick else []
    with tempfile.TemporaryDirectory(prefix="bench-steering-") as scratch:
        paths = _child("--prepare", scratch)
        paths_file = Path(scratch) / "paths.json"
        paths_file.write_text(json.dumps(paths))
        for key in ("small_llama", "gemma3_270m"):
            if key not in paths:
                records.append({"name": f"steering_{key}_lape_steer_vs_hf_run", "value": None, "unit": "x",
                                "target": RUN_TARGET, "comparison": "<=", "ratio": None, "passed": None,
                                "baseline": f"skipped: {paths.get(f'{key}_error')}"})
                continue
            records += _run_records(key, _child("--runs", str(paths_file), key, *flag))
        records += _throughput_records(_child("--throughput", str(paths_file), *flag))
        records += _grid_records("small_llama", _child("--grid", str(paths_file), "small_llama", *flag))
    return records


if __name__ == "__main__":
    import torch

    torch.set_num_threads(THREADS)
    arguments = sys.argv[1:]
    quick = "--quick" in arguments
    arguments = [a for a in arguments if a != "--quick"]
    if arguments[:1] == ["--prepare"]:
        print(json.dumps(prepare(Path(arguments[1]))))
    elif arguments[:1] == ["--rowwise-grid"]:
        print(json.dumps(measure_rowwise_grid(quick)))
    elif arguments[:1] in (["--runs"], ["--throughput"], ["--grid"]):
        paths = json.loads(Path(arguments[1]).read_text())
        if arguments[0] == "--runs":
            result = measure_runs(paths, arguments[2], quick)
        elif arguments[0] == "--throughput":
            result = measure_throughput(paths, quick)
        else:
            result = measure_grid(paths, arguments[2], quick)
        print(json.dumps(result))
    else:
        from run import print_records  # benchmarks/run.py: this file's sibling when run as a script

        print_records(run(quick), baselines=True)
