"""Write the lm-eval runs that the report tests read (tests/data/report_runs/).

Every file under ``report_runs/`` is written by lm-eval itself (``simple_evaluate`` with an
``EvaluationTracker`` and ``log_samples``, saved exactly as the ``lm_eval`` command saves them) from
real runs of a tiny random Llama (tests/tiny_models.py) on the tiny tasks of tests/report_tasks.py.
The neuron set is made by the real pipeline too (``collect`` over the bundled UDHR in the 11
languages of the fallback study, then LAPE ``identify`` at top rate 25 %, quantiles 0.7 / 0.8 so
that every language of the tiny model gets neurons) and saved next to the runs as
``tiny-llama-udhr-25pct.safetensors``: the tests draw their neuron plots from it. The runs are made in a scratch
folder with relative paths (``pretrained=tiny-llama``), so no machine-specific path is recorded;
the only change made afterwards is dropping ``pretty_env_info`` (the machine's pip list and CPU)
from each results JSON.

Run from the repository root (about a minute on 2 CPU cores)::

    .venv/bin/python tests/data/make_report_fixtures.py            # rewrite tests/data/report_runs
    .venv/bin/python tests/data/make_report_fixtures.py OUT [RUN…]  # elsewhere, or only some runs

tests/reports/test_fixtures.py re-runs a few of them and checks they reproduce the committed files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
DEFAULT_OUT = HERE / "report_runs"

TABLE_TASKS = ["rep_mc", "rep_qa_de", "rep_mt_en_de"]
NEURONS = "tiny-llama-udhr-25pct.safetensors"
SET_LANGUAGES = ["en", "fr", "es", "it", "pt", "ru", "de", "ar", "zh", "ko", "ja"]
STEERED = {"neurons": NEURONS, "alpha": 8.0}

# name -> (lm-eval model, model_args, tasks). Each run gets its own --output_path (runs that differ
# only in steering arguments would otherwise share one folder).
RUNS: dict[str, tuple[str, dict, list[str]]] = {
    "base": ("hf", {}, TABLE_TASKS),
    "minus-en-plus-de": ("lape", {**STEERED, "steer": "-en +de"}, TABLE_TASKS),
    "plus-fr": ("lape", {**STEERED, "steer": "+fr"}, TABLE_TASKS),
    "plus-en": ("lape", {**STEERED, "steer": "+en"}, ["rep_mc"]),  # fewer tasks: missing cells
    "lora": ("hf", {"peft": "lora-de"}, TABLE_TASKS),
    "grid": ("lape", {**STEERED, "steer": "doc"}, ["rep_force"]),
    "fallback-0": ("lape", {"neurons": NEURONS}, ["rep_fallback"]),
    "fallback-1": ("lape", {**STEERED, "steer": "-en"}, ["rep_fallback"]),
    "fallback-2": ("lape", {**STEERED, "steer": "-en -fr"}, ["rep_fallback"]),
    "fallback-3": ("lape", {**STEERED, "steer": "-en -fr -es"}, ["rep_fallback"]),
    "fallback-11": ("lape", {**STEERED, "steer": "-" + " -".join(SET_LANGUAGES)}, ["rep_fallback"]),
}


@contextlib.contextmanager
def _inside(folder: Path):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _neuron_set(work: Path, out: Path) -> None:
    """collect + identify on the tiny model, as `lape-eval collect` / `identify` do."""
    from lape_eval.neurons.corpus import CorpusSpec
    from lape_eval.models import load_model
    from lape_eval.neurons.identify import identify_neuron_sets
    from lape_eval.neurons.stats import CollectSettings, collect

    with _inside(work):
        loaded = load_model("tiny-llama")
        collect(loaded.model, loaded.tokenizer, SET_LANGUAGES, Path("stats"),
                CollectSettings(CorpusSpec("udhr"), seq_len=64, max_tokens=3000, progress=False),
                model_name="tiny-llama")
        rate = 0.25
        params = {"statistics": ["stats"], "top_rates": [rate], "filter_quantile": 0.7, "activation_bar_quantile": 0.8}
        neuron_set = identify_neuron_sets([Path("stats")], [rate], None, 0.7, 0.8,
                                          created_by={"command": "tests/data/make_report_fixtures.py", **params})[rate]
        neuron_set.save(Path(NEURONS))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / NEURONS, out / NEURONS)


def _prepare(work: Path, out: Path) -> None:
    """The tiny model, the LoRA adapter, the neuron set and the tasks, under relative names."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from report_tasks import write_report_tasks
    from tiny_models import save_model

    save_model("llama", work / "tiny-llama")
    _neuron_set(work, out)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(work / "tiny-llama")
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "gate_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(work / "lora-de")
    with _inside(work):
        write_report_tasks(Path("tasks"))


def _run(name: str, out: Path, task_manager) -> Path:
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    import lape_eval.evaluation.lm  # noqa: F401  registers the lape model

    model, args, tasks = RUNS[name]
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    tracker = EvaluationTracker(output_path=str(target))
    results = simple_evaluate(model=model, model_args={"pretrained": "tiny-llama", "dtype": "float32", **args},
                              tasks=tasks, task_manager=task_manager, device="cpu", batch_size=4,
                              bootstrap_iters=100, log_samples=True, evaluation_tracker=tracker)
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    for path in target.rglob("results_*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("pretty_env_info", None)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return target


def make_fixtures(out: Path = DEFAULT_OUT, names: list[str] | None = None) -> dict[str, Path]:
    """Run the named runs (default: all) into ``out/<name>/`` (and write the neuron set into
    ``out``); return name -> folder."""
    for path in (str(TESTS), str(TESTS.parent)):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    import torch

    torch.set_num_threads(2)
    out = Path(out).resolve()
    names = list(RUNS) if names is None else names
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; known: {', '.join(RUNS)}")
    folders = {}
    with tempfile.TemporaryDirectory(prefix="lape-report-fixtures-") as scratch:
        work = Path(scratch)
        _prepare(work, out)
        with _inside(work):
            from lm_eval.tasks import TaskManager

            task_manager = TaskManager(include_path="tasks", include_defaults=False)
            for name in names:
                folders[name] = _run(name, out, task_manager)
    return folders


if __name__ == "__main__":
    arguments = sys.argv[1:]
    destination = Path(arguments[0]) if arguments else DEFAULT_OUT
    for run_name, folder in make_fixtures(destination, arguments[1:] or None).items():
        print(f"{run_name}: {folder}")
