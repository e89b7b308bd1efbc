"""Tiny lm-eval tasks over local JSONL files, written into a temporary folder for the tests."""

from __future__ import annotations

import json
from pathlib import Path

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


def write_tasks(folder: Path) -> Path:
    """Write the tasks ``tiny_mc``, ``tiny_gen`` and ``tiny_grid``; return the include path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("mc", MC_ROWS), ("gen", GEN_ROWS), ("grid", GRID_ROWS)):
        (folder / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    common = "dataset_path: json\ntest_split: test\nmetadata:\n  version: 1.0\n"
    (folder / "tiny_mc.yaml").write_text(
        f"task: tiny_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'mc.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_text: \"Q: {{question}} A:\"\ndoc_to_choice: [\" yes\", \" no\"]\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n", encoding="utf-8")
    generate = ("output_type: generate_until\ndoc_to_text: \"Q: {{question}} \\nA:\"\ndoc_to_target: answer\n"
                "generation_kwargs:\n  until: [\"\\nQ:\"]\n  max_gen_toks: 6\n  do_sample: false\n"
                "metric_list:\n  - metric: exact_match\n")
    for task, data in (("tiny_gen", "gen.jsonl"), ("tiny_grid", "grid.jsonl")):
        (folder / f"{task}.yaml").write_text(
            f"task: {task}\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / data}\n{generate}",
            encoding="utf-8")
    return folder
