"""Benchmark: what language identification adds to the wall time of a generative lm-eval task.

Target (issue 5): LID adds < 5 % to the wall time of a generative task on a tiny model.

The task is ``lape_forcing_grid`` restricted to en, de, fr (90 documents, the paper's prompt and
stops, 32 new tokens instead of 256 to keep the run short, which makes LID's share *larger*), run
through ``lm_eval.simple_evaluate`` on a tiny random-weight Llama (tests/tiny_models.py: hidden 32,
2 layers, CPU, float32, batch size 16). The same task runs with the real LID metric and with LID
replaced by a stub that returns "unknown" at no cost, in the same process, interleaved (with/without,
then without/with, ...), after one warm-up of each; the record is the difference of the medians as a
percentage of the median without LID. The time spent inside the identifier during the runs with LID
is also measured directly and reported in ``baseline`` (it is not affected by machine noise).

Run: ``python benchmarks/bench_tasks_lid.py [backend ...]`` (default: cld2 and fasttext); a benchmark
runner can call :func:`run`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_PERCENT = 5.0
LANGUAGES = "en,de,fr"
NEW_TOKENS = 32
BATCH_SIZE = 16
REPETITIONS = 3


def _setup():
    sys.path.insert(0, str(REPO_ROOT))
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from lm_eval.models.huggingface import HFLM
    from tiny_models import save_model

    from lape_eval.evaluation.suite import task_manager

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    folder = save_model("llama", Path(tempfile.mkdtemp(prefix="bench-tasks-lid-")) / "tiny-llama")
    lm = HFLM(pretrained=str(folder), dtype="float32", device="cpu", batch_size=BATCH_SIZE)
    return lm, task_manager(metadata={"languages": LANGUAGES})


def _evaluate(lm, manager) -> tuple[float, int]:
    from lm_eval import simple_evaluate

    start = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=["lape_forcing_grid"], task_manager=manager, bootstrap_iters=0,
                              log_samples=False, gen_kwargs={"max_gen_toks": NEW_TOKENS}, verbosity="ERROR")
    return time.perf_counter() - start, results["results"]["lape_forcing_grid"]["sample_len"]


def run(backends: tuple[str, ...] | None = None) -> list[dict]:
    from lape_eval.evaluation import lid
    from lape_eval.evaluation import metrics as task_metrics

    backends = backends or ("cld2", "fasttext")
    lm, manager = _setup()
    real = task_metrics.identify_language
    lid_seconds = [0.0]

    def timed(text, *args, **kwargs):
        start = time.perf_counter()
        try:
            return real(text, *args, **kwargs)
        finally:
            lid_seconds[0] += time.perf_counter() - start

    def stub(text, *args, **kwargs):
        return lid.UNKNOWN

    records = []
    saved = os.environ.get(lid.BACKEND_ENV)
    try:
        for backend in backends:
            os.environ[lid.BACKEND_ENV] = backend
            lid.get_identifier(backend)  # model load happens once per process, not per task
            with_lid, without_lid, inside = [], [], []
            for repetition in range(REPETITIONS + 1):
                order = (True, False) if repetition % 2 == 0 else (False, True)
                for use_lid in order:
                    task_metrics.identify_language = timed if use_lid else stub
                    lid_seconds[0] = 0.0
                    seconds, documents = _evaluate(lm, manager)
                    if repetition == 0:
                        continue  # warm-up
                    (with_lid if use_lid else without_lid).append(seconds)
                    if use_lid:
                        inside.append(lid_seconds[0])
            base, full = statistics.median(without_lid), statistics.median(with_lid)
            percent = 100.0 * (full - base) / base
            direct = 100.0 * statistics.median(inside) / base
            records.append({
                "name": f"tasks_lid_overhead_{backend}",
                "value": percent,
                "unit": "%",
                "target": TARGET_PERCENT,
                "ratio": max(percent, 0.0) / TARGET_PERCENT,
                "baseline": (
                    f"target < {TARGET_PERCENT:g} % (issue 5). lape_forcing_grid ({LANGUAGES}: {documents} documents, "
                    f"{NEW_TOKENS} new tokens) on a tiny random Llama, CPU, batch {BATCH_SIZE}: median {full:.2f} s "
                    f"with LID ({backend}) vs {base:.2f} s without, {REPETITIONS} interleaved repetitions each; "
                    f"time inside the identifier {statistics.median(inside) * 1e3:.1f} ms per run = {direct:.2f} % "
                    f"(measured directly)"
                ),
            })
    finally:
        task_metrics.identify_language = real
        if saved is None:
            os.environ.pop(lid.BACKEND_ENV, None)
        else:
            os.environ[lid.BACKEND_ENV] = saved
    return records


if __name__ == "__main__":
    from run import print_records  # benchmarks/run.py: this file's sibling when run as a script

    print_records(run(tuple(sys.argv[1:]) or None), baselines=True)
