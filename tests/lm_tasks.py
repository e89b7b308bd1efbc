"""Tiny lm-eval tasks over local JSONL files, written into a temporary folder for the tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

MC_ROWS = [
    {"question": "Is the sky blue?", "label": 0},
    {"question": "Ist der Himmel grün?", "label": 1},
    {"question": "Le ciel est-il bleu ?", "label": 0},
    {"question": "Do fish fly?", "label": 1},
]
GEN_ROWS = [
    {"question": "How are you today?", "answer": "fine"},
    {"question": "Wie heißt du?", "answer": "Anna"},
    {"question": "Quel temps fait-il ?", "answer": "beau"},
]
GRID_ROWS = [
    {"question": q, "source_lang": "en", "target_lang": t, "answer": ""}
    for q in ("How are you today?", "What is your name?")
    for t in ("en", "de", "fr")
]
# steer=doc with one spec per document ('steer' field): prompts of different lengths, specs that
# differ only in strength, the identity, and one document repeated (same prompt and spec).
ROWWISE_SPECS = ["+de:0.5", "+de:2", "-en +fr", "none", "-en +de:8", "-fr +en:3"]
ROWWISE_QUESTIONS = ["Hi?", "What is your name?", "How are you today, my dear old friend from far away?"]
ROWWISE_ROWS = [{"question": q, "steer": s, "answer": ""} for q in ROWWISE_QUESTIONS for s in ROWWISE_SPECS]
ROWWISE_ROWS.append(dict(ROWWISE_ROWS[4]))

COMMON = "dataset_path: json\ntest_split: test\nmetadata:\n  version: 1.0\n"
MULTIPLE_CHOICE = ("output_type: multiple_choice\ndoc_to_text: \"Q: {{question}} A:\"\n"
                   "doc_to_choice: [\" yes\", \" no\"]\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n")
GENERATE = ("output_type: generate_until\ndoc_to_text: \"Q: {{question}} \\nA:\"\ndoc_to_target: answer\n"
            "generation_kwargs:\n  until: [\"\\nQ:\"]\n  max_gen_toks: 6\n  do_sample: false\n"
            "metric_list:\n  - metric: exact_match\n")


def write_task(folder: Path, task: str, rows: list[dict], body: str) -> None:
    """One task ``task`` over ``rows`` (saved as ``<task>.jsonl``); ``body`` is MULTIPLE_CHOICE or GENERATE."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{task}.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    (folder / f"{task}.yaml").write_text(
        f"task: {task}\n{COMMON}dataset_kwargs:\n  data_files:\n    test: {data}\n{body}", encoding="utf-8")


def write_tasks(folder: Path) -> Path:
    """Write the tasks ``tiny_mc``, ``tiny_gen``, ``tiny_grid`` and ``tiny_rowwise``; return the include path."""
    write_task(folder, "tiny_mc", MC_ROWS, MULTIPLE_CHOICE)
    for task, rows in (("tiny_gen", GEN_ROWS), ("tiny_grid", GRID_ROWS), ("tiny_rowwise", ROWWISE_ROWS)):
        write_task(folder, task, rows, GENERATE)
    return folder


# Running them through lm-eval and reading the logged samples back


def evaluate(model, model_args, task_names, tasks, batch_size=2):
    from lm_eval import simple_evaluate

    return simple_evaluate(model=model, model_args={"dtype": "float32", **model_args}, tasks=task_names,
                           task_manager=tasks, device="cpu", batch_size=batch_size, bootstrap_iters=0,
                           log_samples=True)


def responses(results, task):
    return [sample["resps"] for sample in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


def loglikelihoods(results, task):
    return torch.tensor([[r[0][0] for r in resps] for resps in responses(results, task)], dtype=torch.float64)
