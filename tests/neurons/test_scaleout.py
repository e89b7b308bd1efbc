"""Scale-out routes of the ``lape`` model (issue 4, item 8): data parallel over processes, and
``parallelize=True`` with the model spread over devices (here: CPU + disk offload).

Data parallel: ``torchrun --standalone --nproc_per_node 2`` on CPU, with ``ACCELERATE_USE_CPU=true``
so that accelerate sets up a 2-process gloo group. Stock lm-eval 0.4.13 does not split documents
across processes on CPU (see tests/scaleout_worker.py and docs/scale-out.md), so the worker enables
HFLM's data-parallel branch as HFLM itself does when it sees several GPUs. The 2-process results
must equal the 1-process results document by document, for a global steer and for a ``steer=doc``
grid whose ranks hold different steer specs (with a loglikelihood_rolling task, whose HFLM
implementation makes a collective call per request-method call: the ranks must stay in step).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from handmade_sets import make_set
from lm_tasks import ROWWISE_ROWS, write_tasks

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

WORKER = Path(__file__).parents[1] / "scaleout_worker.py"
# Steer specs of the rolling task's documents: with 2 ranks, rank 0 gets documents 0, 2, 4 (all
# "-en +de") and rank 1 gets 1, 3 ("+fr", "-de +en"), so the ranks' groups differ completely.
ROLLING_ROWS = [
    {"text": "The quick brown fox jumps over the lazy dog.", "steer": "-en +de"},
    {"text": "Le renard brun rapide saute par-dessus le chien paresseux.", "steer": "+fr"},
    {"text": "Every evening we walk along the river and talk about the day.", "steer": "-en +de"},
    {"text": "Der schnelle braune Fuchs springt über den faulen Hund.", "steer": "-de +en"},
    {"text": "Language models learn to predict the next word in a sentence.", "steer": "-en +de"},
]


def _write_rolling_task(folder: Path) -> None:
    data = folder / "rolling.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROLLING_ROWS), encoding="utf-8")
    (folder / "tiny_rolling.yaml").write_text(
        "task: tiny_rolling\ndataset_path: json\ntest_split: test\nmetadata:\n  version: 1.0\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\noutput_type: loglikelihood_rolling\n"
        "doc_to_text: \"\"\ndoc_to_target: \"{{text}}\"\nmetric_list:\n  - metric: word_perplexity\n",
        encoding="utf-8")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    folder = write_tasks(tmp_path_factory.mktemp("tasks"))
    _write_rolling_task(folder)
    neurons = tmp_path_factory.mktemp("sets") / "tiny.safetensors"
    make_set(width=96).save(neurons)
    return {"tasks": folder, "neurons": str(neurons), "model": str(tiny_model_dir("llama")),
            "out": tmp_path_factory.mktemp("out")}


def _evaluate(setup, name: str, model_args: dict, tasks: list[str], processes: int, batch_size: int = 1) -> dict:
    out = setup["out"] / f"{name}-{processes}.json"
    spec = {"model_args": {"pretrained": setup["model"], "neurons": setup["neurons"], "dtype": "float32",
                           **model_args},
            "batch_size": batch_size, "tasks": tasks, "tasks_folder": str(setup["tasks"]), "out": str(out)}
    if processes == 1:
        command = [sys.executable, str(WORKER), json.dumps(spec)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   str(WORKER), json.dumps(spec)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    # A rank that waits for a collective the other never makes hangs (HFLM sets a 52-week timeout):
    # stop the whole process group, torchrun's workers included, after a generous limit.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{processes} process(es) did not finish within 420 s (ranks out of step?)")
    assert process.returncode == 0, stderr[-4000:]
    return json.loads(out.read_text())


def _per_request(run: dict) -> dict:
    """Per task and document, the first response of each request (the evaluator pads the shorter
    rank with a repeat of its last request, which appends a second response to that request)."""
    return {task: [(row["doc_id"], [resps[0] for resps in row["resps"]]) for row in rows]
            for task, rows in run["samples"].items()}


@pytest.mark.parametrize("name, model_args, tasks, batch_size", [
    ("global", {"steer": "-en +de", "alpha": 4.0}, ["tiny_mc", "tiny_gen"], 1),
    ("grid", {"steer": "doc", "alpha": 8.0}, ["tiny_grid", "tiny_rolling"], 1),
    # Each rank batches its own documents of different specs together (row-wise steering).
    ("rowwise", {"steer": "doc", "alpha": 2.0}, ["tiny_rowwise"], 4),
])
def test_two_data_parallel_processes_equal_one_process(setup, name, model_args, tasks, batch_size):
    single = _evaluate(setup, name, model_args, tasks, processes=1, batch_size=batch_size)
    double = _evaluate(setup, name, model_args, tasks, processes=2, batch_size=batch_size)
    assert single["world_size"] == 1 and double["world_size"] == 2
    # Exact, log-likelihoods included: with batch size 1 every request is computed alone by the same
    # kernels (same machine and environment, one thread in every worker), so its floats are
    # bit-identical. With row-wise batches of 4 the ranks batch other documents together; that task
    # compares generated text only, greedy choices that rounding could flip only at a near-tie.
    assert _per_request(double) == _per_request(single)
    assert double["lape"] == single["lape"]
    expected_docs = {"tiny_mc": 4, "tiny_gen": 3, "tiny_grid": 6, "tiny_rolling": len(ROLLING_ROWS),
                     "tiny_rowwise": len(ROWWISE_ROWS)}
    for task in tasks:
        assert [doc_id for doc_id, _ in _per_request(double)[task]] == list(range(expected_docs[task]))


def test_parallelize_with_offloaded_layers_equals_one_device(setup, tmp_path):
    """``parallelize=True`` with a memory cap: accelerate keeps the embedding in memory and offloads the
    decoder layers to disk (their parameters live on the meta device until their forward). The steering
    hooks must still edit every layer, with the padding mask of generation, exactly as on one device."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lape_eval.evaluation.lm import LapeLM

    manager = TaskManager(include_path=str(setup["tasks"]), include_defaults=False)
    args = {"pretrained": setup["model"], "neurons": setup["neurons"], "dtype": "float32", "steer": "-en +de",
            "alpha": 4.0, "positions": "generated", "device": "cpu", "batch_size": 2}

    def evaluate(lm):
        result = simple_evaluate(model=lm, tasks=["tiny_mc", "tiny_gen"], task_manager=manager, bootstrap_iters=0,
                                 log_samples=True)
        return {task: [s["resps"] for s in sorted(rows, key=lambda s: s["doc_id"])]
                for task, rows in result["samples"].items()}

    plain = evaluate(LapeLM(**args))
    sharded_lm = LapeLM(**args, parallelize=True, max_cpu_memory=150_000, offload_folder=str(tmp_path / "offload"))
    placement = sharded_lm.model.hf_device_map
    assert "disk" in placement.values() and "cpu" in placement.values(), placement
    assert sharded_lm._sites.layers[0].mlp.gate_proj.weight.device.type == "meta"
    # Offloaded layers load their float32 weights exactly and run on the CPU with the same kernels,
    # batches and shapes: the same computation in the same process, so the results are bit-identical.
    assert evaluate(sharded_lm) == plain


def test_tensor_parallelism_is_refused_before_the_model_loads(setup, monkeypatch):
    """tp_plan splits each MLP's neurons over processes; a set's indices refer to whole layers."""
    from lm_eval.models.huggingface import HFLM

    from lape_eval.errors import LapeEvalError
    from lape_eval.evaluation.lm import LapeLM

    def no_model_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(HFLM, "__init__", no_model_load)
    with pytest.raises(LapeEvalError, match="tensor parallelism"):
        LapeLM(pretrained="unused", neurons=setup["neurons"], steer="-en +de", tp_plan="auto")
