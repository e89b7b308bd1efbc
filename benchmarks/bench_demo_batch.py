"""Benchmark: the demo's batch size (issue 14, item 4).

``python -m benchmarks.run demo_batch [--quick]``. The demo's generation runs through lm-eval's
HFLM loop, which sorts requests by length and generates ``batch_size`` rows at a time. On a CPU a
wider batch amortises each step's weight reads over more rows but pads more and keeps finished rows
in the batch until its longest answer ends, so the best size is measured, not assumed.

Method: Gemma-3-270M (``load_model("gemma-3-270m-gguf")``, float32, torch's default thread count as
the demo uses it), one model object shared by every arm. The two steered generation steps of the
demo, built by lm-eval from the tasks exactly as ``lape-eval demo`` runs them:

* the 7 x 7 forcing grid: 490 requests, ``max_gen_toks`` 32, ``steer=doc`` with the shipped
  calibration (the demo's longest step);
* UDHR translation en-de, en-fr, en-zh, 10 paragraphs each: 30 requests, ``steer=doc`` with
  ``doc_template=add_target``.

Each batch size in ``SIZES`` times one ``generate_until`` call per step (after a one-batch warm-up),
sizes in increasing order, one run each (an arm takes minutes). Records: each size's time for both
steps together as a ratio to the batch-8 time measured in the same run (< 1: faster than 8), and
the number of answers that differ from batch 8's (left padding changes float summation order, so a
near-tie can flip a greedy token; the demo gate's baseline is measured at the demo's batch size).
``--quick``: 16 grid requests and 3 translation requests, 8 new tokens, sizes 8 and 16.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = (8, 16, 32, 64)
PAIRS = ("en-de", "en-fr", "en-zh")  # the demo's (lape_eval.demo.DEFAULT_PAIRS)
TRANSLATION_DOCS = 10


def measure(quick: bool) -> dict:
    import gc

    import torch

    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.bench_steering import GEMMA, demo_grid_requests, task_requests
    from lape_eval.demo import shipped_calibration
    from lape_eval.demo.plan import BATCH_SIZE
    from lape_eval.evaluation.lm import LapeLM
    from lape_eval.models import load_model
    from lape_eval.steering.calibration import read_calibration

    sizes = (8, 16) if quick else SIZES
    tokens = 8 if quick else 32
    grid = demo_grid_requests(tokens)
    translation = task_requests([f"lape_udhr_translation_{pair}" for pair in PAIRS],
                                limit=1 if quick else TRANSLATION_DOCS, max_gen_toks=tokens if quick else None)
    grid = grid[:16] if quick else grid
    calibration = shipped_calibration()
    chosen = read_calibration(calibration).chosen
    loaded = load_model(GEMMA)
    steering = dict(neurons=chosen.neuron_set, steer="doc", method=chosen.method, positions=chosen.positions,
                    language_alphas=calibration)
    steps = {"forcing grid": (grid, {}), "translation": (translation, {"doc_template": "add_target"})}
    times: dict[int, dict[str, float]] = {}
    texts: dict[int, dict[str, list[str]]] = {}
    for size in sizes:
        times[size], texts[size] = {}, {}
        for step, (requests, extra) in steps.items():
            lm = LapeLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=size, **steering, **extra)
            lm.generate_until(requests[:size], disable_tqdm=True)  # warm-up: allocator and kernels at this width
            gc.collect()
            started = time.perf_counter()
            texts[size][step] = lm.generate_until(requests, disable_tqdm=True)
            times[size][step] = time.perf_counter() - started
    reference = min(sizes)
    return {
        "times": times, "sizes": list(sizes), "demo_batch_size": BATCH_SIZE, "quick": quick,
        "requests": {step: len(requests) for step, (requests, _) in steps.items()}, "max_gen_toks": tokens,
        "differing": {size: {step: sum(a != b for a, b in zip(texts[size][step], texts[reference][step]))
                             for step in steps} for size in sizes},
        "threads": torch.get_num_threads(), "load": os.getloadavg(),
        "steering": {"neurons": chosen.neuron_set, "method": chosen.method, "positions": chosen.positions},
    }


def records(raw: dict) -> list[dict]:
    times = {int(size): value for size, value in raw["times"].items()}
    differing = {int(size): value for size, value in raw["differing"].items()}
    total = {size: sum(steps.values()) for size, steps in times.items()}
    reference = min(times)
    best = min(total, key=total.get)
    setting = (f"Gemma-3-270M float32, the demo's steered steps: forcing grid {raw['requests']['forcing grid']} "
               f"requests ({raw['max_gen_toks']} new tokens at most) and UDHR translation "
               f"{raw['requests']['translation']} requests, steer=doc with the shipped calibration {raw['steering']}; "
               f"one run per size; {raw['threads']} torch thread(s), load average "
               f"{', '.join(f'{x:.1f}' for x in raw['load'])}; fastest size {best}; the demo uses "
               f"{raw['demo_batch_size']}" + (" (QUICK: a smoke run)" if raw["quick"] else ""))
    out = []
    for size in sorted(times):
        ratio = total[size] / total[reference]
        out.append({
            "name": f"demo_batch_{size}_vs_{reference}", "value": ratio, "unit": "x", "target": None,
            "ratio": None, "passed": None,
            "baseline": (f"batch {size}: {total[size]:.1f} s (grid {times[size]['forcing grid']:.1f} s, translation "
                         f"{times[size]['translation']:.1f} s) vs batch {reference}: {total[reference]:.1f} s; answers "
                         f"differing from batch {reference}'s: grid {differing[size]['forcing grid']}, translation "
                         f"{differing[size]['translation']}; {setting}"),
        })
    return out


def run(quick: bool = False) -> list[dict]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure",
                             *(["--quick"] if quick else [])], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return records(json.loads(result.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        print(json.dumps(measure("--quick" in sys.argv)))
    else:
        from run import print_records  # benchmarks/run.py: this file's sibling when run as a script

        print_records(run("--quick" in sys.argv), baselines=True)
