"""Benchmark: activation-statistics collection, its throughput and its memory (issue 2).

Targets (issue 2, "Performance"):

(a) Collection runs at >= 0.9x the throughput of a plain forward pass of the same model on the same
    batches, measured in one process, on a tiny model and on Gemma-3-270M.
(b) Peak memory of collection does not grow with corpus size (the state is O(layers x neurons)).

**(a) throughput.** One subprocess per model. It builds the batches once from the bundled UDHR (all
21 languages, concatenated, tokenised, packed and batched with the real ``lape_eval.neurons.corpus``
functions, BOS as ``collect`` adds it), then times three variants on exactly those batches under
``torch.no_grad``:

* ``decoder``: the plain forward of ``unwrap_model(model).base_model`` (the decoder without the LM
  head, no hooks) -- the forward collection itself runs, so this ratio is the hooks' cost alone;
* ``causal_lm``: the plain forward of the whole causal LM (with the LM head), what a user calls "a
  forward pass of the model";
* ``collect``: the real per-batch step of ``lape_eval.neurons.stats._collect_language``: an
  ``ActivationRecorder`` with its hooks on the activation modules, ``set_count_mask`` and the
  decoder forward.

After a warm-up pass of each, the variants are interleaved batch by batch (for every batch the three
run back to back, in an order that rotates from one repetition to the next: A B C, B C A, C A B,
...) so that drift on a shared 2-core machine hits all of them alike; each variant's time per pass
is the median over repetitions. Throughput ratio = baseline time / collection time (>= 0.9 meets the
target); the JSON ``ratio`` is target / value, so ``ratio <= 1`` meets it, as in every benchmark here.
The paired per-repetition ratios (min / median / max) and the load average are reported too, since
other processes on the machine make single numbers noisy.

Each model is measured twice: wall-clock time at torch's default thread count (what a user sees;
records ``..._vs_decoder`` and ``..._vs_causal_lm``), and, as a companion that other processes
competing for the two cores hardly disturb, process CPU time with one thread, collection vs decoder
only (``..._vs_decoder_cputime_1thread``). With two threads on an oversubscribed machine every
parallel op waits for its slower thread, which inflates wall-clock time in proportion to the number
of ops, not to the work, and the hooks add ops.

**(b) memory.** The tiny Llama is saved to disk and collected with ``lape_eval.neurons.stats.collect`` (the
library call behind ``lape-eval collect``) from a local folder corpus of the English UDHR repeated to
1x, 4x and 16x the size, each in a fresh subprocess, three times per size. The extra memory of a run
is ``ru_maxrss`` after ``collect`` minus the RSS right after the model was loaded (about 20 MB, with a
few MB of run-to-run noise from the allocator, hence the median of the three); the record is the
16x / 1x ratio of the medians, target <= 1.1. Two records:

* ``collect_peak_memory_growth_16x_vs_1x``: the library's reader, ``CorpusSpec(folder)``: the files
  are streamed paragraph by paragraph (``corpus._read_paragraphs``; JSONL line by line), the token
  stream (``token_stream`` -> ``packed_sequences``) is lazy and the accumulators are [layers, neurons].
  (Before the readers streamed, this row measured 1.315x: the whole file was read and split first.)
* ``..._streamed_reader``: the same files read by an independent paragraph streamer (a ``CorpusSpec``
  subclass whose documents are identical, checked by the token counts), i.e. the memory of
  collection itself, as a cross-check of the first row.

Run: ``python benchmarks/bench_collect.py [--quick]``; ``python -m benchmarks.run collect`` calls
:func:`run`.
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
THROUGHPUT_TARGET = 0.9
MEMORY_RATIO_TARGET = 1.1
GEMMA = "gemma-3-270m-gguf"

# model key -> (batch size, sequence length, batches per timed pass, repetitions, quick repetitions)
THROUGHPUT_SETUPS = {
    "tiny_llama": (64, 256, 2, 31, 9),
    "gemma3_270m": (8, 256, 1, 7, 3),
}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
MEMORY_SIZES = (1, 4, 16)
MEMORY_REPEATS = 3  # fresh processes per size; the median extra memory is reported
MEMORY_BASE_COPIES = {False: 6, True: 2}  # copies of the English UDHR in the 1x corpus (quick: 2)
MEMORY_SETTINGS = {"seq_len": 256, "batch_size": 16}


# --------------------------------------------------------------------------------------------------
# (a) throughput, inside a subprocess


def _load(model_key: str):
    """The model (eval mode, float32, CPU) and its tokenizer."""
    if model_key == "tiny_llama":
        sys.path.insert(0, str(REPO_ROOT / "tests"))
        from tiny_models import build_model, build_tokenizer

        return build_model("llama"), build_tokenizer(), "tests/tiny_models.py llama (hidden 32, 2 layers, width 96)"
    from lape_eval.models import load_model

    loaded = load_model(GEMMA)
    config = loaded.model.config
    return loaded.model, loaded.tokenizer, (
        f"Gemma-3-270M ({config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"MLP width {config.intermediate_size}, vocab {config.vocab_size}, float32)"
    )


def udhr_batches(tokenizer, *, batch_size: int, seq_len: int, num_batches: int):
    """``num_batches`` full batches of packed multilingual UDHR text, built as ``collect`` builds them."""
    from itertools import chain, islice

    from lape_eval.neurons.corpus import CorpusSpec, bos_token_to_prepend, make_batch, packed_sequences, pad_token_id, token_stream
    from lape_eval.udhr import UDHR_LANGUAGES

    bos_id = bos_token_to_prepend(tokenizer, "auto")
    spec = CorpusSpec("udhr")
    documents = chain.from_iterable(spec.documents(lang) for lang in UDHR_LANGUAGES)
    wanted = batch_size * num_batches
    sequences = list(islice(packed_sequences(token_stream(documents, tokenizer, None), seq_len=seq_len,
                                             bos_id=bos_id), wanted))
    body = seq_len - (bos_id is not None)
    if len(sequences) < wanted or any(len(s) != body for s in sequences):
        raise RuntimeError(f"the bundled UDHR gives fewer than {wanted} full sequences of {seq_len} tokens")
    pad_id = pad_token_id(tokenizer)
    return [make_batch(sequences[i : i + batch_size], bos_id=bos_id, pad_id=pad_id)
            for i in range(0, wanted, batch_size)], bos_id


def _interleaved(variants: dict, num_batches: int, repetitions: int, clock) -> dict[str, list[float]]:
    """Seconds per pass (all batches) of each variant, interleaved batch by batch.

    For every batch the variants run back to back, in an order that rotates from one repetition to
    the next (A B C, B C A, C A B, ...), so that drift and bursts of load from other processes fall on
    all of them alike.
    """
    import gc

    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for rep in range(repetitions):
        shift = rep % len(names)
        elapsed = dict.fromkeys(names, 0.0)
        for index in range(num_batches):
            for name in names[shift:] + names[:shift]:
                start = clock()
                variants[name](index)
                elapsed[name] += clock() - start
        for name in names:
            times[name].append(elapsed[name])
    return times


def measure_throughput(model_key: str, quick: bool = False, threads: int | None = None, clock: str = "wall",
                       baselines: tuple[str, ...] = ("decoder", "causal_lm")) -> dict:
    import statistics

    import torch

    from lape_eval.arch import resolve, unwrap_model
    from lape_eval.neurons.stats import ActivationRecorder

    batch_size, seq_len, num_batches, repetitions, quick_repetitions = THROUGHPUT_SETUPS[model_key]
    repetitions = quick_repetitions if quick else repetitions
    if threads:
        torch.set_num_threads(threads)
    model, tokenizer, description = _load(model_key)
    device = next(model.parameters()).device
    batches, bos_id = udhr_batches(tokenizer, batch_size=batch_size, seq_len=seq_len, num_batches=num_batches)
    batches = [(b.input_ids.to(device), b.attention_mask.to(device), b.count_mask) for b in batches]
    decoder = unwrap_model(model).base_model
    recorder = ActivationRecorder(resolve(model), device)

    def plain(module):
        def forward(index: int):
            input_ids, attention_mask, _ = batches[index]
            module(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return forward

    def collection(index: int):  # the per-batch step of lape_eval.neurons.stats._collect_language
        input_ids, attention_mask, count_mask = batches[index]
        # The hooks sit on modules the baselines run too, so they are attached for this call only
        # (collect keeps them for the whole language; attaching and removing them costs microseconds).
        with recorder:
            recorder.set_count_mask(count_mask.to(device))
            decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)

    variants = {"decoder": plain(decoder), "causal_lm": plain(model), "collect": collection}
    variants = {name: variants[name] for name in (*baselines, "collect")}
    load_before = os.getloadavg()
    with torch.no_grad():
        for index in range(len(batches)):  # warm-up
            for forward in variants.values():
                forward(index)
        counted = sum(int(mask.sum()) for _, _, mask in batches)
        if int(recorder.tokens) != counted:  # a fast wrong answer is no result
            raise AssertionError(f"the recorder counted {int(recorder.tokens)} tokens, expected {counted}")
        times = _interleaved(variants, len(batches), repetitions, CLOCKS[clock])
    load_after = os.getloadavg()
    median = {name: statistics.median(values) for name, values in times.items()}
    tokens = sum(ids.numel() for ids, _, _ in batches)

    def paired(baseline: str) -> list[float]:
        return sorted(b / c for b, c in zip(times[baseline], times["collect"]))

    return {
        "model": description,
        "batch": f"{len(batches)} x [{batch_size} x {seq_len}] (BOS {'yes' if bos_id is not None else 'no'})",
        "tokens_per_pass": tokens,
        "counted_per_pass": counted,
        "repetitions": repetitions,
        "threads": torch.get_num_threads(),
        "median_s": median,
        "tokens_per_s": {name: tokens / seconds for name, seconds in median.items()},
        "clock": clock,
        "baselines": list(baselines),
        **{f"ratio_vs_{name}": median[name] / median["collect"] for name in baselines},
        **{f"paired_vs_{name}": paired(name) for name in baselines},
        "loadavg": [load_before[0], load_after[0]],
        "times": times,
    }


# --------------------------------------------------------------------------------------------------
# (b) memory, inside subprocesses


def prepare_memory_inputs(folder: Path, quick: bool) -> None:
    """The tiny Llama (saved like a real model) and corpora of 1x, 4x, 16x the English UDHR."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from tiny_models import save_model

    from lape_eval.udhr import udhr_paragraphs

    save_model("llama", folder / "model")
    text = "\n\n".join(udhr_paragraphs("en"))
    for size in MEMORY_SIZES:
        corpus = folder / f"corpus_{size}x"
        corpus.mkdir(parents=True, exist_ok=True)
        copies = MEMORY_BASE_COPIES[quick] * size
        (corpus / "en.txt").write_text("\n\n".join([text] * copies), encoding="utf-8")


def _current_rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _streamed_folder_corpus(folder: Path):
    """``CorpusSpec(folder)`` that reads ``<lang>.txt`` paragraph by paragraph instead of whole.

    Same documents as the library's folder reader for these files (paragraphs separated by blank
    lines, stripped); it separates the memory of collection itself from that of reading the file.
    """
    from lape_eval.neurons.corpus import CorpusSpec

    class StreamedFolder(CorpusSpec):
        def documents(self, lang):
            lines: list[str] = []
            with open(Path(self.source) / f"{lang}.txt", encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        lines.append(line)
                    elif lines:
                        yield "".join(lines).strip()
                        lines = []
            if lines:
                yield "".join(lines).strip()

    return StreamedFolder(str(folder))


def measure_memory(model_dir: Path, corpus_dir: Path, out_dir: Path, streamed: bool = False) -> dict:
    import gc
    import resource

    from lape_eval.neurons.corpus import CorpusSpec
    from lape_eval.models import load_model
    from lape_eval.neurons.stats import CollectSettings, collect

    loaded = load_model(str(model_dir))
    gc.collect()
    rss_after_load = _current_rss_bytes()
    corpus = _streamed_folder_corpus(corpus_dir) if streamed else CorpusSpec(str(corpus_dir))
    settings = CollectSettings(corpus, progress=False, **MEMORY_SETTINGS)
    start = time.perf_counter()
    stats = collect(loaded.model, loaded.tokenizer, ["en"], out_dir, settings, model_name=str(model_dir))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "tokens": stats["en"].tokens,
        "corpus_bytes": (corpus_dir / "en.txt").stat().st_size,
        "rss_after_load": rss_after_load,
        "peak": peak,
        "extra": peak - rss_after_load,
        "seconds": seconds,
    }


# --------------------------------------------------------------------------------------------------
# parent side


def _child(*args: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("LAPE_EVAL_CACHE", str(REPO_ROOT / ".cache"))  # as the Makefile sets it
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


BASELINE_LABELS = {
    "decoder": "plain decoder forward (base_model, no hooks, no LM head)",
    "causal_lm": "plain causal-LM forward (with LM head, no hooks)",
}


def _throughput_records(key: str, raw: dict) -> list[dict]:
    rate = raw["tokens_per_s"]
    cpu = raw["clock"] == "cpu"
    setting = (
        f"{raw['model']}; batches {raw['batch']}, same pre-built multilingual UDHR batches for all variants; "
        f"torch.no_grad, CPU, {raw['threads']} thread{'s' if raw['threads'] > 1 else ''}, "
        + ("process CPU time (insensitive to other processes competing for the cores)" if cpu else "wall-clock time")
        + f"; median of {raw['repetitions']} interleaved repetitions after warm-up; load average "
        f"{raw['loadavg'][0]:.1f} -> {raw['loadavg'][1]:.1f}"
    )
    per = "tok per CPU-s" if cpu else "tok/s"
    collect_line = f"collection (recorder hooks + set_count_mask + decoder) {rate['collect']:,.0f} {per}"
    records = []
    for baseline in raw["baselines"]:
        value = raw[f"ratio_vs_{baseline}"]
        pairs = raw[f"paired_vs_{baseline}"]
        label = BASELINE_LABELS[baseline]
        records.append({
            "name": f"collect_throughput_{key}_vs_{baseline}" + (f"_cputime_{raw['threads']}thread" if cpu else ""),
            "value": value,
            "unit": "x",
            "target": THROUGHPUT_TARGET,
            "comparison": ">=",
            "ratio": THROUGHPUT_TARGET / value,
            "baseline": (
                f"{label} {rate[baseline]:,.0f} {per} ({raw['median_s'][baseline]:.3f} s/pass) vs "
                f"{collect_line} ({raw['median_s']['collect']:.3f} s/pass); value = baseline time / collection "
                f"time, target >= {THROUGHPUT_TARGET:g}x (issue 2), ratio = target / value; paired per-repetition "
                f"ratios min {pairs[0]:.3f} / median {pairs[len(pairs) // 2]:.3f} / max {pairs[-1]:.3f}; {setting}"
            ),
        })
    return records


def _median_run(runs: list[dict]) -> dict:
    """The run with the median extra memory (its other fields come along)."""
    return sorted(runs, key=lambda run: run["extra"])[len(runs) // 2]


def _memory_record(runs: dict[int, dict], quick: bool, streamed: bool) -> dict:
    small, large = runs[min(runs)], runs[max(runs)]
    ratio = large["extra"] / small["extra"]
    difference_mb = (large["extra"] - small["extra"]) / 1e6
    sizes = "; ".join(
        f"{size}x: {run['tokens']:,} tokens, {run['corpus_bytes'] / 1e6:.2f} MB text, extra {run['extra'] / 1e6:.1f} MB "
        f"(process peak {run['peak'] / 1e6:.0f} MB, {run['seconds']:.0f} s)"
        for size, run in runs.items()
    )
    reader = (
        "documents streamed from the file paragraph by paragraph (a CorpusSpec subclass), which isolates the "
        "memory of collection itself (token stream, batches, accumulators) from that of reading the file"
        if streamed else
        "the library's local folder reader CorpusSpec(folder), which streams <lang>.txt paragraph by paragraph"
    )
    return {
        "name": f"collect_peak_memory_growth_{max(runs)}x_vs_{min(runs)}x" + ("_streamed_reader" if streamed else ""),
        "value": ratio,
        "unit": "x",
        "target": MEMORY_RATIO_TARGET,
        "comparison": "<=",
        "ratio": ratio / MEMORY_RATIO_TARGET,
        "baseline": (
            f"extra memory of lape_eval.neurons.stats.collect (ru_maxrss after the run minus RSS after model load), "
            f"{max(runs)}x corpus / {min(runs)}x corpus ({difference_mb:+.1f} MB), median of {MEMORY_REPEATS} fresh "
            f"processes per size; target <= {MEMORY_RATIO_TARGET:g}x (issue 2: no growth with corpus size); {reader}; tiny Llama loaded from "
            f"disk, English UDHR repeated ({MEMORY_BASE_COPIES[quick]} copies = 1x), seq_len "
            f"{MEMORY_SETTINGS['seq_len']}, batch {MEMORY_SETTINGS['batch_size']}; {sizes}"
        ),
    }


def run(quick: bool = False) -> list[dict]:
    """(a) throughput on the tiny Llama and Gemma-3-270M, (b) memory growth; one record per quantity."""
    records = []
    for key in THROUGHPUT_SETUPS:
        # Wall-clock at the default thread count (what a user sees), then a noise-robust companion:
        # one thread, process CPU time, collection vs the decoder only (the hooks' cost).
        for options in ((), ("--threads=1", "--clock=cpu", "--baselines=decoder")):
            try:
                raw = _child("--throughput", key, *options, *(["--quick"] if quick else []))
            except RuntimeError as error:
                if key != "gemma3_270m":
                    raise
                reason = str(error).strip().splitlines()[-1]
                records.append({"name": f"collect_throughput_{key}_vs_decoder", "value": None, "unit": "x",
                                "target": THROUGHPUT_TARGET, "comparison": ">=", "ratio": None, "passed": None,
                                "baseline": f"skipped: could not load {GEMMA} ({reason})"})
                break
            records += _throughput_records(key, raw)
    with tempfile.TemporaryDirectory(prefix="bench-collect-") as scratch:
        folder = Path(scratch)
        _child("--prepare", str(folder), *(["--quick"] if quick else []))
        tokens = {}
        for streamed, sizes in ((False, MEMORY_SIZES), (True, (MEMORY_SIZES[0], MEMORY_SIZES[-1]))):
            runs = {size: _median_run([_child("--memory", str(folder / "model"), str(folder / f"corpus_{size}x"),
                                              str(folder / f"out_{size}x_{streamed}_{repeat}"),
                                              *(["--streamed"] if streamed else []))
                                       for repeat in range(MEMORY_REPEATS)])
                    for size in sizes}
            for size, one in runs.items():
                if tokens.setdefault(size, one["tokens"]) != one["tokens"]:
                    raise AssertionError("the streamed reader saw other documents than the library's folder reader")
            records.append(_memory_record(runs, quick, streamed))
    return records


if __name__ == "__main__":
    arguments = sys.argv[1:]
    quick = "--quick" in arguments
    arguments = [a for a in arguments if a != "--quick"]
    if arguments[:1] == ["--throughput"]:
        options = dict(a.lstrip("-").split("=", 1) for a in arguments[2:])
        baselines = tuple(options.get("baselines", "decoder,causal_lm").split(","))
        print(json.dumps(measure_throughput(arguments[1], quick, int(options.get("threads", 0)) or None,
                                            options.get("clock", "wall"), baselines)))
    elif arguments[:1] == ["--prepare"]:
        prepare_memory_inputs(Path(arguments[1]), quick)
        print(json.dumps({"ok": True}))
    elif arguments[:1] == ["--memory"]:
        print(json.dumps(measure_memory(*map(Path, arguments[1:4]), streamed="--streamed" in arguments[4:])))
    else:
        from run import print_records  # benchmarks/run.py: this file's sibling when run as a script

        print_records(run(quick), baselines=True)
