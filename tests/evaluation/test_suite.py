"""The task suite (tasks/) through lm-eval, offline, on fixture data in the real datasets' schemas
(tests/data/tasks, written by scripts/make_task_fixtures.py).

* every shipped task runs end to end on a tiny random model (one simple_evaluate call);
* an oracle LM (gold answers) scores perfectly everywhere;
* hand-made predictions score what sacrebleu, hand-worked SQuAD examples and direct LID calls say;
* groups load and aggregate; metadata subsets the forcing grid; per-document steering runs the grid;
* bad input (missing data file, a row without a field, an unknown language code) is a clear error.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

from task_lms import OracleLM, ScriptedLM

from lape_eval.evaluation import metrics as tm
from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.lid import identify_language
from lape_eval.resources import tasks_folder
from lape_eval.evaluation.suite import (
    GENERATED_HEADER, generated_files, parse_task_name, shipped_groups, shipped_tasks, task_manager, write_shipped_tasks,
    write_task_yamls,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "data" / "tasks"
TASK_NAMES = [spec.name for spec in shipped_tasks()]


def evaluate(model, names, manager, **kwargs):
    from lm_eval import simple_evaluate

    options = dict(task_manager=manager, bootstrap_iters=0, log_samples=True)
    options.update(kwargs)
    return simple_evaluate(model=model, tasks=names, **options)


def metric(results, task, name, filt="none"):
    return results["results"][task][f"{name},{filt}"]


def samples(results, task):
    return sorted(results["samples"][task], key=lambda s: s["doc_id"])


@pytest.fixture(scope="module")
def manager():
    return task_manager(metadata={"data_dir": str(FIXTURES), "languages": "en,de,fr"})


@pytest.fixture(scope="module")
def oracle_results(manager):
    return evaluate(OracleLM(manager), TASK_NAMES, manager, limit=3)


# --------------------------------------------------------------------------------------------------
# The YAMLs


def test_generated_yamls_are_up_to_date(tmp_path):
    write_shipped_tasks(tmp_path)
    expected = {p.relative_to(tmp_path).as_posix(): p.read_text(encoding="utf-8") for p in tmp_path.glob("**/*.yaml")}
    actual = {p.relative_to(tasks_folder()).as_posix(): p.read_text(encoding="utf-8")
              for p in tasks_folder().glob("**/*.yaml") if p.read_text(encoding="utf-8").startswith(GENERATED_HEADER)}
    assert actual == expected, "run python scripts/make_task_yamls.py"
    template = (tasks_folder() / "forcing" / "_forcing_yaml").read_text(encoding="utf-8")
    assert template == (tmp_path / "forcing" / "_forcing_yaml").read_text(encoding="utf-8"), \
        "run python scripts/make_task_yamls.py"
    assert generated_files(tasks_folder()) == generated_files(tmp_path)


def test_every_yaml_is_indexed_and_no_tag_is_registered(manager):
    from lm_eval.tasks._yaml_loader import load_yaml

    names = {spec.name for spec in shipped_tasks()} | {group.name for group in shipped_groups()}
    assert len(names) == 228 and names <= set(manager.all_tasks)
    assert all(name.startswith("lape_") for name in names)
    yaml_files = list(tasks_folder().glob("**/*.yaml"))
    for path in yaml_files:  # lm-eval skips a YAML it cannot read without a word: none may be missing
        config = load_yaml(path, resolve_func=True)
        name = config.get("task") if isinstance(config.get("task"), str) else config.get("group")
        assert name in manager.all_tasks, path
    for path in [*yaml_files, *tasks_folder().glob("**/_*_yaml")]:
        assert not re.search(r"^tag:", path.read_text(encoding="utf-8"), re.M), path  # never hijack a tag


def test_counts_per_family():
    families = {}
    for spec in shipped_tasks():
        families[spec.family] = families.get(spec.family, 0) + 1
    assert families == {"forcing": 21, "forcing_grid": 1, "flores": 40, "udhr_translation": 40, "xquad": 12,
                        "belebele": 21, "belebele_ll": 21, "xnli": 15, "xnli_ll": 15}


def test_every_task_names_dataset_split_prompt_and_metric_version(manager):
    for spec in shipped_tasks():
        meta = spec.metadata
        assert {"version", "dataset", "dataset_split", "prompt", "metric_version"} <= set(meta), spec.name
    config = manager.load(["lape_flores_en-zh"])["tasks"]["lape_flores_en-zh"].config
    assert config.metadata["dataset_config"] == ["eng_Latn", "cmn_Hans"]  # FLORES+ renamed zho_Hans


def test_readme_documents_every_group_and_task_pattern():
    readme = (tasks_folder() / "README.md").read_text(encoding="utf-8")
    for group in shipped_groups():
        if not group.name.startswith("lape_lang_"):
            assert f"`{group.name}`" in readme, group.name
    for pattern in ["lape_forcing_<lang>", "lape_forcing_grid", "lape_flores_<src>-<tgt>",
                    "lape_udhr_translation_<src>-<tgt>", "lape_xquad_<lang>", "lape_belebele_<lang>",
                    "lape_belebele_ll_<lang>", "lape_xnli_<lang>", "lape_xnli_ll_<lang>", "lape_lang_<lang>"]:
        assert f"`{pattern}`" in readme, pattern
    for name in ["target_rate", "target_rate_clean", "target_rate_diag", "target_rate_offdiag",
                 "target_rate_clean_offdiag", "degenerate_rate", "english_rate", "answer_lang", "chrf_pp",
                 "corpus_bleu", "sentence_bleu", "exact_match", "f1", "exact_match_paper", "f1_paper", "acc",
                 "acc_norm", "unparsable_rate", "fallback_rate", "prediction", "acc_entailment"]:
        assert f"`{name}`" in readme, name


def test_forcing_questions_are_parallel_and_identifiable():
    from lape_eval.languages import PAPER_LANGUAGES
    from lape_eval.evaluation.data import forcing_questions

    rows = forcing_questions()
    assert len(rows) >= 10 and sum(row["paper"] for row in rows) == 6
    assert [row["en"] for row in rows[:6]] == [
        "How are you today?", "What is your name?", "What year is it?", "What is your favorite color?",
        "What is the weather like?", "Where are you from?"]
    for lang in PAPER_LANGUAGES:
        texts = [row[lang] for row in rows]
        assert all(text.strip() for text in texts) and len(set(texts)) == len(texts), lang
        # the oracle's reference (all questions of a language) is identified as that language
        assert identify_language(" ".join(texts)) == lang


# --------------------------------------------------------------------------------------------------
# End to end on a tiny model


def test_every_task_runs_end_to_end_on_a_tiny_model(manager, tiny_model_dir):
    results = evaluate("hf", TASK_NAMES, manager, limit=1, gen_kwargs={"max_gen_toks": 4}, device="cpu",
                       batch_size=4, model_args={"pretrained": str(tiny_model_dir("llama")), "dtype": "float32"})
    assert set(results["results"]) == set(TASK_NAMES)
    for name in TASK_NAMES:
        row = results["results"][name]
        assert row["sample_len"] == 1, name
        assert results["n-samples"][name]["effective"] == 1
        values = [v for k, v in row.items() if "," in k and "_stderr" not in k]
        assert values, name
        for value in values:  # a number (NaN only for the grid's empty off-diagonal), or a label summary
            assert isinstance(value, (int, float, str)), (name, value)
    sample = samples(results, "lape_forcing_de")[0]
    assert sample["answer_lang"] == identify_language(sample["filtered_resps"][0].replace("\n", " ").strip())
    assert sample["arguments"][0][1]["repetition_penalty"] == 1.1
    assert sample["arguments"][0][1]["until"] == ["\nQ:", "\nA:"]


# --------------------------------------------------------------------------------------------------
# The oracle scores perfectly


PERFECT = {
    "forcing": {"target_rate": 100.0, "target_rate_clean": 100.0, "degenerate_rate": 0.0},
    "forcing_grid": {"target_rate": 100.0, "target_rate_diag": 100.0, "target_rate_clean": 100.0},
    "flores": {"chrf_pp": 100.0, "corpus_bleu": 100.0, "sentence_bleu": 100.0, "target_rate": 100.0},
    "udhr_translation": {"chrf_pp": 100.0, "corpus_bleu": 100.0, "sentence_bleu": 100.0, "target_rate": 100.0},
    "xquad": {"exact_match": 1.0, "f1": 1.0, "exact_match_paper": 1.0, "f1_paper": 1.0},
    "belebele": {"acc": 1.0, "unparsable_rate": 0.0, "fallback_rate": 0.0},
    "belebele_ll": {"acc": 1.0, "acc_norm": 1.0},
    "xnli": {"acc": 1.0, "unparsable_rate": 0.0, "acc_entailment": 1.0, "acc_neutral": 1.0, "acc_contradiction": 1.0},
    "xnli_ll": {"acc": 1.0},
}


def test_the_oracle_scores_perfectly(oracle_results):
    for spec in shipped_tasks():
        for name, value in PERFECT[spec.family].items():
            assert metric(oracle_results, spec.name, name) == pytest.approx(value), (spec.name, name)
    for spec in shipped_tasks():
        if spec.family == "forcing":
            assert metric(oracle_results, spec.name, "answer_lang") == f"{spec.dataset_kwargs['lang']} 100.0%"


def test_the_oracles_xquad_output_language_rate_equals_manual_lid(oracle_results):
    for lang in ("ar", "de", "zh", "en", "es", "hi", "vi", "tr", "th", "ru", "ro", "el"):
        task = f"lape_xquad_{lang}"
        golds = [s["doc"]["answers"]["text"][0] for s in samples(oracle_results, task)]
        expected = 100.0 * sum(identify_language(g) == lang for g in golds) / len(golds)
        assert metric(oracle_results, task, "target_rate") == pytest.approx(expected), task


def test_groups_aggregate_their_members(manager):
    results = evaluate(OracleLM(manager), ["lape_offline"], manager, limit=2)
    groups = results["groups"]  # groups with an aggregate_metric_list (lape_offline has none)
    assert {"lape_forcing", "lape_udhr_translation", "lape_udhr_translation_from_en",
            "lape_udhr_translation_to_en"} <= set(groups)
    assert set(results["group_subtasks"]["lape_offline"]) == {"lape_forcing", "lape_udhr_translation"}
    assert groups["lape_forcing"]["target_rate,none"] == pytest.approx(100.0)
    members = [f"lape_udhr_translation_en-{code}" for code in
               ("bo", "mt", "it", "es", "de", "ja", "ar", "zh", "af", "nl", "fr", "pt", "ru", "ko", "hi", "tr",
                "pl", "sv", "da", "no")]
    mean = sum(metric(results, m, "sentence_bleu") for m in members) / len(members)
    assert groups["lape_udhr_translation_from_en"]["sentence_bleu,none"] == pytest.approx(mean)


def test_every_group_lists_known_names_and_the_big_ones_load(manager):
    known = set(manager.all_tasks)
    for group in shipped_groups():
        assert group.tasks and set(group.tasks) <= known, group.name
    assert {g.name for g in shipped_groups() if g.name.startswith("lape_lang_")} >= {
        "lape_lang_de", "lape_lang_bo", "lape_lang_vi", "lape_lang_sw"}
    loaded = manager.load(["lape_paper"])
    assert len(loaded["tasks"]) == 1 + 20 + 21 + 12 + 15
    assert set(manager.load(["lape_lang_de"])["tasks"]) == {
        "lape_forcing_de", "lape_flores_en-de", "lape_flores_de-en", "lape_udhr_translation_en-de",
        "lape_udhr_translation_de-en", "lape_xquad_de", "lape_belebele_de", "lape_belebele_ll_de", "lape_xnli_de",
        "lape_xnli_ll_de"}
    assert set(manager.load(["lape_lang_th"])["tasks"]) == {"lape_xquad_th", "lape_xnli_th", "lape_xnli_ll_th"}


# --------------------------------------------------------------------------------------------------
# Hand-made predictions against independent computations


def test_translation_metrics_equal_sacrebleu_and_manual_lid(manager):
    docs = {task: [d for d in manager.load([task])["tasks"][task].test_docs()]
            for task in ("lape_flores_en-de", "lape_flores_en-ja", "lape_udhr_translation_en-zh")}
    predictions, expected = {}, {}
    for task, task_docs in docs.items():
        refs = [d["reference"] for d in task_docs]
        hyps = [refs[0], refs[1][: len(refs[1]) // 2] + " und so weiter", "", *[d["source_text"] for d in task_docs[3:]]]
        hyps = hyps[: len(refs)]
        predictions.update({(task, i): "  " + h + "\n" for i, h in enumerate(hyps)})
        target = task_docs[0]["target_lang"]
        tokenize = {"de": "13a", "ja": "ja-mecab", "zh": "zh"}[target]
        expected[task] = {
            "chrf_pp": sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score,
            "corpus_bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score,
            "sentence_bleu": sum(sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)) / len(refs),
            "target_rate": 100.0 * sum(identify_language(h) == target for h in hyps) / len(hyps),
        }
    results = evaluate(ScriptedLM(manager, predictions), list(docs), manager)
    for task, values in expected.items():
        for name, value in values.items():
            assert metric(results, task, name) == pytest.approx(value, abs=1e-9), (task, name)


def test_forcing_metrics_equal_manual_lid(manager):
    answers = ["Mir geht es gut, danke. Und dir?", "und - und", "I am fine, thank you.", "",
               "Je m'appelle Marie et j'habite à Paris.", "Es ist 2025, glaube ich.", "ja ja ja ja",
               "Meine Lieblingsfarbe ist Blau, weil sie mich an das Meer erinnert.", "Das Wetter ist heute schön.",
               "Ich komme aus Berlin."]
    predictions = {("lape_forcing_de", i): a for i, a in enumerate(answers)}
    results = evaluate(ScriptedLM(manager, predictions), ["lape_forcing_de"], manager)
    labels = [identify_language(a) for a in answers]
    hit = [label == "de" for label in labels]
    clean = [h and not tm.is_degenerate(a) for h, a in zip(hit, answers)]
    assert metric(results, "lape_forcing_de", "target_rate") == pytest.approx(100 * sum(hit) / 10)
    assert metric(results, "lape_forcing_de", "target_rate_clean") == pytest.approx(100 * sum(clean) / 10)
    assert metric(results, "lape_forcing_de", "english_rate") == pytest.approx(100 * labels.count("en") / 10)
    assert metric(results, "lape_forcing_de", "degenerate_rate") == pytest.approx(
        100 * sum(tm.is_degenerate(a) for a in answers) / 10)
    assert [s["answer_lang"] for s in samples(results, "lape_forcing_de")] == labels
    assert sum(hit) > sum(clean)  # "und - und" is German to LID, not to the clean rate


def test_forcing_grid_reports_the_diagonal_apart(manager):
    task = manager.load(["lape_forcing_grid"])["tasks"]["lape_forcing_grid"]
    docs = list(task.test_docs())
    assert len(docs) == 3 * 3 * 10  # metadata languages en,de,fr
    assert {(d["source_lang"], d["target_lang"]) for d in docs[:9]} == {(s, t) for s in "en de fr".split()
                                                                       for t in ("en", "de", "fr")}
    # Always answer in German: the cells with target de succeed.
    answer = "Mir geht es heute sehr gut, danke der Nachfrage. Und wie geht es dir?"
    predictions = {("lape_forcing_grid", i): answer for i in range(len(docs))}
    results = evaluate(ScriptedLM(manager, predictions), ["lape_forcing_grid"], manager)
    assert identify_language(answer) == "de"
    diag = [d["target_lang"] == "de" for d in docs if d["source_lang"] == d["target_lang"]]
    off = [d["target_lang"] == "de" for d in docs if d["source_lang"] != d["target_lang"]]
    assert metric(results, "lape_forcing_grid", "target_rate") == pytest.approx(100 / 3)
    assert metric(results, "lape_forcing_grid", "target_rate_diag") == pytest.approx(100 * sum(diag) / len(diag))
    assert metric(results, "lape_forcing_grid", "target_rate_offdiag") == pytest.approx(100 * sum(off) / len(off))
    assert metric(results, "lape_forcing_grid", "answer_lang") == "de 100.0%"
    matrix = tm.forcing_matrix(samples(results, "lape_forcing_grid"))
    assert matrix[("en", "de")] == 100.0 and matrix[("de", "en")] == 0.0


def test_grid_languages_from_metadata():
    def count(metadata):
        manager = task_manager(metadata=metadata)
        return len(list(manager.load(["lape_forcing_grid"])["tasks"]["lape_forcing_grid"].test_docs()))

    assert count({}) == 21 * 21 * 10
    assert count({"languages": ["en", "de"]}) == 2 * 2 * 10
    assert count({"source_languages": "en", "target_languages": "de,fr,zh"}) == 1 * 3 * 10


def test_languages_outside_the_21_get_tasks_with_their_flores_codes():
    # hand-written FLORES-200 configs (CLaS-Bench's evaluate_forcing_success.py uses the same ones)
    assert parse_task_name("lape_belebele_sk").metadata["dataset_config"] == "slk_Latn"
    assert parse_task_name("lape_belebele_ll_fa").metadata["dataset_config"] == "pes_Arab"
    assert parse_task_name("lape_flores_en-sw").metadata["dataset_config"] == ["eng_Latn", "swh_Latn"]
    assert parse_task_name("lape_flores_ka-en").metadata["dataset_config"] == ["kat_Geor", "eng_Latn"]
    assert parse_task_name("lape_forcing_el").dataset_kwargs == {"lang": "el"}


def test_the_forcing_grid_takes_any_language_that_the_questions_have(tmp_path):
    from lape_eval.evaluation.data import load_forcing_grid

    with pytest.raises(LapeEvalError) as error:
        load_forcing_grid(languages="en,slk_Latn,el")
    assert "no text in sk, el (Slovak, Greek)" in str(error.value) and "forcing_questions=" in str(error.value)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in [
        {"id": "q1", "en": "How are you today?", "sk": "Ako sa dnes máš?", "el": "Πώς είσαι σήμερα;"},
        {"id": "q2", "en": "What is your name?", "sk": "Ako sa voláš?", "el": "Πώς σε λένε;"},
    ]), encoding="utf-8")
    docs = list(load_forcing_grid(languages="en,slk_Latn,ell", forcing_questions=str(questions))["test"])
    assert len(docs) == 2 * 3 * 3
    first_sk = next(d for d in docs if d["source_lang"] == "sk" and d["target_lang"] == "el")
    assert (first_sk["question"], first_sk["source_name"], first_sk["target_name"]) == (
        "Ako sa dnes máš?", "Slovak", "Greek")
    with pytest.raises(LapeEvalError, match="Unknown language code 'zz'"):
        load_forcing_grid(languages="en,zz", forcing_questions=str(questions))


def test_a_language_the_bundled_udhr_lacks_is_a_clear_error():
    from lape_eval.evaluation.data import load_udhr_translation

    with pytest.raises(LapeEvalError, match=r"No UDHR text for language 'sk': the bundled UDHR .* has bo, mt"):
        load_udhr_translation(source_lang="en", target_lang="sk")


def test_qa_and_choice_metrics_equal_hand_computation(manager):
    predictions = {
        ("lape_xquad_en", 0): "the Black Sea coast",  # gold "the Black Sea": EM 0, F1 0.8
        ("lape_xquad_en", 1): "Ten.",  # gold "ten": EM 1
        ("lape_xquad_zh", 0): "黑海沿岸",  # gold 黑海: character F1 = 2/3
        ("lape_xquad_zh", 1): "十个",  # gold 十个国家: P 1, R 1/2 -> F1 2/3
        ("lape_belebele_de", 0): "A) Niemand",  # gold A
        ("lape_belebele_de", 1): "The answer is C",  # gold B
        ("lape_belebele_de", 2): "Sure!",  # gold C, unparsable
        ("lape_xnli_fr", 0): "1",  # gold entailment
        ("lape_xnli_fr", 1): "Contradiction",  # gold neutral
        ("lape_xnli_fr", 2): "No, it does not follow.",  # gold contradiction
    }
    choices = {("lape_belebele_ll_de", 0): 0, ("lape_belebele_ll_de", 1): 0, ("lape_belebele_ll_de", 2): 2,
               ("lape_xnli_ll_de", 0): 0, ("lape_xnli_ll_de", 1): 2, ("lape_xnli_ll_de", 2): 2}
    names = ["lape_xquad_en", "lape_xquad_zh", "lape_belebele_de", "lape_xnli_fr", "lape_belebele_ll_de",
             "lape_xnli_ll_de"]
    results = evaluate(ScriptedLM(manager, predictions, choices), names, manager)
    assert metric(results, "lape_xquad_en", "exact_match") == pytest.approx(0.5)
    assert metric(results, "lape_xquad_en", "f1") == pytest.approx((0.8 + 1.0) / 2)
    assert metric(results, "lape_xquad_zh", "exact_match") == 0.0
    assert metric(results, "lape_xquad_zh", "f1") == pytest.approx(2 / 3)
    assert metric(results, "lape_xquad_zh", "f1_paper") == 0.0  # whitespace tokens: all or nothing
    assert metric(results, "lape_belebele_de", "acc") == pytest.approx(1 / 3)
    assert metric(results, "lape_belebele_de", "unparsable_rate") == pytest.approx(100 / 3)
    assert metric(results, "lape_belebele_de", "prediction") == "A 33.3% · C 33.3% · none 33.3%"
    assert metric(results, "lape_xnli_fr", "acc") == pytest.approx(2 / 3)
    assert metric(results, "lape_xnli_fr", "acc_neutral") == 0.0
    assert metric(results, "lape_xnli_fr", "acc_contradiction") == 1.0
    assert metric(results, "lape_belebele_ll_de", "acc") == pytest.approx(2 / 3)
    assert metric(results, "lape_xnli_ll_de", "acc") == pytest.approx(2 / 3)


# --------------------------------------------------------------------------------------------------
# Per-document steering of the grid, on-demand pairs, the command line


def test_the_grid_runs_with_per_document_steering(tiny_model_dir, tmp_path):
    from handmade_sets import make_set

    neurons = tmp_path / "tiny.safetensors"
    make_set(width=96).save(neurons)
    manager = task_manager(metadata={"languages": "en,de,fr"})
    results = evaluate("lape", ["lape_forcing_grid"], manager, samples={"lape_forcing_grid": list(range(9))},
                       gen_kwargs={"max_gen_toks": 4}, device="cpu", batch_size=3,
                       model_args={"pretrained": str(tiny_model_dir("llama")), "neurons": str(neurons),
                                   "steer": "doc", "dtype": "float32"})
    assert results["config"]["lape"]["steer"] == "doc"
    cells = {(s["doc"]["source_lang"], s["doc"]["target_lang"]) for s in results["samples"]["lape_forcing_grid"]}
    assert len(cells) == 9
    for name in ("target_rate_diag", "target_rate_offdiag"):
        assert not math.isnan(metric(results, "lape_forcing_grid", name))


def test_pairs_that_are_not_shipped_are_written_on_demand(tmp_path):
    assert parse_task_name("lape_udhr_translation_mt-ko").dataset_kwargs == {"source_lang": "mt", "target_lang": "ko"}
    assert parse_task_name("lape_xnli") is None and parse_task_name("arc_easy") is None
    assert write_task_yamls(["lape_udhr_translation_mt-ko", "lape_forcing_de", "arc_easy"], tmp_path) == [
        "lape_udhr_translation_mt-ko"]
    manager = task_manager(extra_tasks=["lape_udhr_translation_mt-ko", "lape_flores_de-fr"],
                           metadata={"data_dir": str(FIXTURES)})
    results = evaluate(OracleLM(manager), ["lape_udhr_translation_mt-ko", "lape_flores_de-fr"], manager, limit=2)
    for task in ("lape_udhr_translation_mt-ko", "lape_flores_de-fr"):
        assert metric(results, task, "chrf_pp") == pytest.approx(100.0)
    doc = samples(results, "lape_udhr_translation_mt-ko")[0]["doc"]
    assert doc["source_name"] == "Maltese" and doc["target_name"] == "Korean"


def test_udhr_few_shot_examples_come_from_other_articles(manager):
    task = manager.load(["lape_udhr_translation_en-de"])["tasks"]["lape_udhr_translation_en-de"]
    doc = next(iter(task.test_docs()))
    context = task.fewshot_context(doc, num_fewshot=2)
    assert context.count("Translate this English sentence into German:") == 3
    shot_ids = [d["id"] for d in task.fewshot_docs()][:2]
    assert all(int(i.split(".")[0]) < 23 for i in shot_ids)  # heldout articles are 23-30


def _lape_eval(*args, timeout=600):
    executable = os.path.join(os.path.dirname(sys.executable), "lape-eval")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([executable, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_lape_eval_run_writes_on_demand_pairs_and_rejects_unknown_codes(tiny_model_dir, tmp_path):
    bad = _lape_eval("run", "--model", "hf", "--tasks", "lape_udhr_translation_en-xx")
    assert bad.returncode == 2
    assert "Unknown language code 'xx'" in bad.stderr and "lape_udhr_translation_en-xx" in bad.stderr
    good = _lape_eval("run", "--model", "hf", "--model_args", f"pretrained={tiny_model_dir('llama')},dtype=float32",
                      "--tasks", "lape_udhr_translation_mt-ko,lape_forcing_de", "--limit", "1", "--device", "cpu",
                      "--gen_kwargs", "max_gen_toks=2", "--output_path", str(tmp_path / "out"))
    assert good.returncode == 0, good.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert {"lape_udhr_translation_mt-ko", "lape_forcing_de"} <= set(results["results"])


# --------------------------------------------------------------------------------------------------
# Bad input


def test_missing_data_file_is_a_clear_error(tmp_path):
    manager = task_manager(metadata={"data_dir": str(tmp_path)})
    with pytest.raises(LapeEvalError, match=r"Missing data file .*openlanguagedata/flores_plus/eng_Latn/devtest\.jsonl"):
        manager.load(["lape_flores_en-de"])
    with pytest.raises(LapeEvalError, match="does not exist"):
        task_manager(metadata={"data_dir": str(tmp_path / "nowhere")}).load(["lape_xnli_de"])
    with pytest.raises(LapeEvalError, match="Missing data file"):
        task_manager(metadata={"forcing_questions": str(tmp_path / "q.jsonl")}).load(["lape_forcing_de"])


def test_a_row_missing_a_field_is_a_clear_error(tmp_path):
    folder = tmp_path / "facebook" / "xnli" / "de"
    folder.mkdir(parents=True)
    rows = [{"premise": "Die Katze schläft.", "hypothesis": "Ein Tier ruht.", "label": 0},
            {"premise": "Die Katze schläft.", "label": 2}]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    manager = task_manager(metadata={"data_dir": str(tmp_path)})
    with pytest.raises(LapeEvalError, match=r"test\.jsonl: row 2 has no field 'hypothesis'"):
        manager.load(["lape_xnli_de"])
    (folder / "test.jsonl").write_text(json.dumps({**rows[0], "label": 7}) + "\n", encoding="utf-8")
    with pytest.raises(LapeEvalError, match="label=7"):
        task_manager(metadata={"data_dir": str(tmp_path)}).load(["lape_xnli_de"])
    (folder / "test.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(LapeEvalError, match="line 1 is not valid JSON"):
        task_manager(metadata={"data_dir": str(tmp_path)}).load(["lape_xnli_de"])


@pytest.mark.parametrize("name, message", [
    ("lape_flores_en-xx", "Unknown language code 'xx'"),
    ("lape_udhr_translation_qq-de", "Unknown language code 'qq'"),
    ("lape_forcing_klingon", "Unknown language code 'klingon'"),
    ("lape_xquad_fr", "lape_xquad has: ar, de, zh"),  # French is not an XQuAD language
    ("lape_xnli_ll_ja", "Unknown language code 'ja'"),
    ("lape_belebele_zz", "Unknown language code 'zz'"),
    ("lape_belebele_slk", "written 'sk' in lape-eval"),  # any language, by its canonical code
    ("lape_flores_de-de", "source and target must differ"),
])
def test_an_unknown_language_code_in_a_task_name_is_a_clear_error(name, message):
    with pytest.raises(LapeEvalError, match=re.escape(message)) as error:
        parse_task_name(name)
    assert name in str(error.value)
    with pytest.raises(LapeEvalError, match=re.escape(message)):
        task_manager(extra_tasks=[name])


def test_a_hand_written_yaml_with_an_unknown_code_is_a_clear_error(tmp_path):
    template = tasks_folder() / "xquad" / "_xquad_yaml"
    (tmp_path / "my_xquad.yaml").write_text(
        f"include: {template}\ntask: my_xquad_xx\ndataset_kwargs:\n  lang: xx\nmetadata:\n  version: 1.0\n",
        encoding="utf-8")
    manager = task_manager(include_path=str(tmp_path), metadata={"data_dir": str(FIXTURES)})
    with pytest.raises(LapeEvalError, match="Unknown language code 'xx' for the lape_xquad tasks"):
        manager.load(["my_xquad_xx"])


def test_unreachable_hub_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("LAPE_EVAL_DATA_DIR", raising=False)
    with pytest.raises(LapeEvalError, match=r"Could not load google/xquad .*LAPE_EVAL_DATA_DIR"):
        task_manager().load(["lape_xquad_de"])


def test_data_dir_from_the_environment(monkeypatch):
    monkeypatch.setenv("LAPE_EVAL_DATA_DIR", str(FIXTURES))
    task = task_manager().load(["lape_belebele_bo"])["tasks"]["lape_belebele_bo"]
    assert len(list(task.test_docs())) == 3


def test_task_names_are_read_from_an_lm_eval_command_line():
    from lape_eval.evaluation.suite import requested_task_names

    argv = ["--model", "hf", "--tasks", "a,b", "c", "--limit", "2", "--tasks=d", "-t", "e"]
    assert requested_task_names(argv) == ["a", "b", "c", "d", "e"]
