"""Tiny lm-eval tasks for the report tests (tables, regress, plots, fallback).

``write_report_tasks(folder)`` writes YAML + JSONL (+ a ``utils.py`` for the forcing-like tasks)
and returns the include path. The sentences come from ``tests/data/lid_sentences.jsonl`` (the same
10 sentences in each language, aligned by ``id``).

Tasks:

* ``rep_mc_en``, ``rep_mc_de``, ``rep_mc_fr`` — multiple choice between two sentences of the
  language (``acc``, ``acc_norm``), 20 docs each, in the group ``rep_mc`` (aggregate ``acc``, weighted by size);
* ``rep_qa_de`` — generation with two filters (``exact_match,strict-match`` and
  ``exact_match,flexible-extract``);
* ``rep_mt_en_de`` — "translation" en→de, corpus ``chrf`` and ``bleu`` (pass-through per sample);
* ``rep_force`` — a forcing grid: prompts in ``source_lang``, documents carry ``target_lang``;
  per sample ``target_rate`` (1.0 when the output's language is the target) and ``output_lang``
  (the language identified by lape_eval.evaluation.lid), like the real forcing task;
* ``rep_fallback`` — English prompts only, same per-sample fields (for the fallback study).
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).parent / "data" / "lid_sentences.jsonl"
MC_LANGS = ("en", "de", "fr")
FORCE_LANGS = ("en", "de", "fr")
QUESTION = {"en": "Say something:", "de": "Sag etwas:", "fr": "Dis quelque chose :"}
ASK = {"en": "Answer in {name}:", "de": "Antworte auf {name}:", "fr": "Réponds en {name} :"}
NAMES = {"en": "English", "de": "German", "fr": "French"}

UTILS = '''"""Per-sample fields of the forcing-like test tasks (like the real forcing task)."""

from lape_eval.evaluation.lid import identify_language


def forcing_results(doc, results):
    output = results[0] if results else ""
    language = identify_language(output)
    return {"target_rate": float(language == doc["target_lang"]), "output_lang": language}


def distinct_languages(items):
    return float(len(set(items)))
'''


def sentences() -> dict[str, list[str]]:
    by_lang: dict[str, list[str]] = {}
    for line in DATA.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_lang.setdefault(row["lang"], []).append(row["text"])
    return by_lang


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _data(folder: Path, name: str, rows: list[dict]) -> str:
    _write_jsonl(folder / f"{name}.jsonl", rows)
    return ("dataset_path: json\ntest_split: test\n"
            f"dataset_kwargs:\n  data_files:\n    test: {folder / (name + '.jsonl')}\n")


GENERATE = ("output_type: generate_until\n"
            "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: {tokens}\n  do_sample: false\n")


def write_report_tasks(folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = sentences()
    (folder / "utils.py").write_text(UTILS, encoding="utf-8")
    for lang in MC_LANGS:
        sents = text[lang]
        rows = [{"question": QUESTION[lang], "choices": [sents[i], sents[(i + j + 1) % len(sents)]][:: 1 - 2 * (i % 2)],
                 "label": i % 2} for j in range(2) for i in range(len(sents))]
        (folder / f"rep_mc_{lang}.yaml").write_text(
            f"task: rep_mc_{lang}\n{_data(folder, f'mc_{lang}', rows)}output_type: multiple_choice\n"
            "doc_to_text: \"{{question}}\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: label\n"
            "metric_list:\n  - metric: acc\n  - metric: acc_norm\nmetadata:\n  version: 1.0\n", encoding="utf-8")
    (folder / "rep_mc.yaml").write_text(
        "group: rep_mc\ntask: [rep_mc_en, rep_mc_de, rep_mc_fr]\naggregate_metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    weight_by_size: true\nmetadata:\n  version: 1.0\n", encoding="utf-8")

    rows = [{"question": s, "answer": s.split()[0]} for s in text["de"][:8]]
    (folder / "rep_qa_de.yaml").write_text(
        f"task: rep_qa_de\n{_data(folder, 'qa_de', rows)}{GENERATE.format(tokens=4)}"
        "doc_to_text: \"{{question}} Erstes Wort:\"\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: exact_match\n    ignore_case: true\n"
        "filter_list:\n  - name: strict-match\n    filter:\n      - function: regex\n"
        "        regex_pattern: \"^\\\\s*(\\\\w+)\"\n      - function: take_first\n"
        "  - name: flexible-extract\n    filter:\n      - function: regex\n        regex_pattern: \"(\\\\w+)\"\n"
        "        group_select: -1\n      - function: take_first\nmetadata:\n  version: 1.0\n", encoding="utf-8")

    rows = [{"source": en, "target": de} for en, de in zip(text["en"], text["de"])]
    (folder / "rep_mt_en_de.yaml").write_text(
        f"task: rep_mt_en_de\n{_data(folder, 'mt_en_de', rows)}{GENERATE.format(tokens=12)}"
        "doc_to_text: \"English: {{source}}\\nGerman:\"\ndoc_to_target: target\n"
        "metric_list:\n  - metric: chrf\n    aggregation: chrf\n    higher_is_better: true\n"
        "  - metric: bleu\n    aggregation: bleu\n    higher_is_better: true\nmetadata:\n  version: 1.0\n",
        encoding="utf-8")

    forcing = ("doc_to_text: \"{{prompt}}\"\ndoc_to_target: \"\"\n"
               "process_results: !function utils.forcing_results\nmetric_list:\n"
               "  - metric: target_rate\n    aggregation: mean\n    higher_is_better: true\n"
               "  - metric: output_lang\n    aggregation: !function utils.distinct_languages\n"
               "    higher_is_better: true\nmetadata:\n  version: 1.0\n")
    rows = [{"prompt": f"{s} {ASK[src].format(name=NAMES[tgt])}", "source_lang": src, "target_lang": tgt}
            for src in FORCE_LANGS for tgt in FORCE_LANGS for s in text[src][:4]]
    (folder / "rep_force.yaml").write_text(
        f"task: rep_force\n{_data(folder, 'force', rows)}{GENERATE.format(tokens=10)}{forcing}", encoding="utf-8")
    rows = [{"prompt": s, "source_lang": "en", "target_lang": "en"} for s in text["en"]]
    (folder / "rep_fallback.yaml").write_text(
        f"task: rep_fallback\n{_data(folder, 'fallback', rows)}{GENERATE.format(tokens=10)}{forcing}",
        encoding="utf-8")
    return folder
