"""`lape-eval table`: golden tables from real lm-eval runs (tests/data/report_runs, written by
tests/data/make_report_fixtures.py), Δ and significance against independent computations, and
clear errors for bad input."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lape_eval.cli import cli

RUNS = Path(__file__).parents[1] / "data" / "report_runs"
TABLE_RUNS = ["base", "minus-en-plus-de", "plus-fr", "plus-en", "lora"]


def invoke(*args, expect: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def runs(*names):
    return [str(RUNS / name) for name in (names or TABLE_RUNS)]


def results_json(name: str) -> dict:
    return json.loads(next((RUNS / name).rglob("results_*.json")).read_text(encoding="utf-8"))


def samples(name: str, task: str) -> list[dict]:
    path = next((RUNS / name).rglob(f"samples_{task}_*.jsonl"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def table_csv(*args) -> dict[str, dict[str, str]]:
    rows = list(csv.reader(io.StringIO(invoke("table", *args, "--format", "csv").output)))
    header = rows[0]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in rows[1:]}


GOLDEN_MARKDOWN = """\
| config | rep_mc | rep_mc_de | rep_mc_en | rep_mc_fr | rep_mt_en_de | rep_qa_de |
|:---|---:|---:|---:|---:|---:|---:|
| base | 0.517 ± 0.066 | 0.500 ± 0.115 | **0.600** ± 0.112 | 0.450 ± 0.114 | 2.86 ± 0.41 | 0.000 ± 0.000 |
| -en +de | 0.533 ± 0.066 (+0.017) | **0.550** ± 0.114 (+0.050) | 0.550 ± 0.114 (−0.050) | **0.500** ± 0.115 (+0.050) | **3.27** ± 0.34 (+0.42) | 0.000 ± 0.000 (+0.000) |
| +fr | 0.533 ± 0.066 (+0.017) | **0.550** ± 0.114 (+0.050) | 0.550 ± 0.114 (−0.050) | **0.500** ± 0.115 (+0.050) | 3.15 ± 0.43 (+0.29) | 0.000 ± 0.000 (+0.000) |
| +en | **0.550** ± 0.066 (+0.033) | **0.550** ± 0.114 (+0.050) | **0.600** ± 0.112 (+0.000) | **0.500** ± 0.115 (+0.050) | — | — |
| peft:lora-de | 0.517 ± 0.066 (+0.000) | 0.500 ± 0.115 (+0.000) | 0.550 ± 0.114 (−0.050) | **0.500** ± 0.115 (+0.050) | 1.61 ± 0.27 (−1.25†) | 0.000 ± 0.000 (+0.000) |

Score (acc,none: rep_mc, rep_mc_de, rep_mc_en, rep_mc_fr; chrf,none: rep_mt_en_de; exact_match,strict-match: \
rep_qa_de) ± standard error (Δ vs base; † p < 0.05, paired bootstrap on per-sample scores, sacrebleu paired bootstrap \
on the hypotheses, z-test on the standard errors). **Bold**: best per column. —: not in the run.
"""

GOLDEN_LANGUAGE_TEXT = """\
language            base                  -en +de                      +en
--------  --------------  -----------------------  -----------------------
de        0.450* ± 0.114   0.400 ± 0.112 (−0.050)  0.450* ± 0.114 (+0.000)
en         0.400 ± 0.112  0.500* ± 0.115 (+0.100)   0.450 ± 0.114 (+0.050)
fr         0.500 ± 0.115   0.400 ± 0.112 (−0.100)  0.550* ± 0.114 (+0.050)
Average    0.450 ± 0.066   0.433 ± 0.065 (−0.017)  0.483* ± 0.066 (+0.033)

Score (acc_norm,none) ± standard error (Δ vs base; † p < 0.05, paired bootstrap on per-sample scores, z-test on the \
standard errors). *: best per row. —: not in the run. Average: mean over the tasks of the line (groups left out); \
missing where a task is missing or the metrics differ.
"""


class TestGolden:
    def test_markdown_table_of_five_configurations(self):
        assert invoke("table", *runs(), "--baseline", "base").output == GOLDEN_MARKDOWN

    def test_language_rows_configuration_columns_with_average_row(self):
        out = invoke("table", *runs("base", "minus-en-plus-de", "plus-en"), "--baseline", "base", "--tasks", "rep_mc_*",
                     "--metric", "acc_norm", "--rows", "language", "--columns", "config", "--format", "text").output
        assert out == GOLDEN_LANGUAGE_TEXT

    def test_csv_holds_the_recorded_values_and_missing_cells_stay_empty(self):
        table = table_csv(*runs(), "--baseline", "base")
        for label, name in [("base", "base"), ("-en +de", "minus-en-plus-de"), ("+en", "plus-en"), ("peft:lora-de", "lora")]:
            recorded = results_json(name)["results"]
            for task, key in [("rep_mc", "acc,none"), ("rep_mc_en", "acc,none"), ("rep_mt_en_de", "chrf,none"),
                              ("rep_qa_de", "exact_match,strict-match")]:
                cell = table[label]
                if task not in recorded:
                    assert cell[task] == cell[f"{task} stderr"] == cell[f"{task} delta"] == "", (label, task)
                    continue
                metric, _, filter_name = key.partition(",")
                assert float(cell[task]) == recorded[task][key]
                assert float(cell[f"{task} stderr"]) == recorded[task][f"{metric}_stderr,{filter_name}"]
                base = results_json("base")["results"][task][key]
                if label == "base":
                    assert cell[f"{task} delta"] == ""
                else:
                    assert float(cell[f"{task} delta"]) == pytest.approx(recorded[task][key] - base, abs=1e-15)

    def test_filters_are_metric_keys(self):
        strict = table_csv(*runs("base", "lora"), "--metric", "exact_match,flexible-extract", "--tasks", "rep_qa_de")
        recorded = results_json("lora")["results"]["rep_qa_de"]
        assert float(strict["peft:lora-de"]["rep_qa_de"]) == recorded["exact_match,flexible-extract"]

    def test_html_and_latex(self):
        html = invoke("table", *runs(), "--baseline", "base", "--format", "html").output
        assert "<th>rep_mt_en_de</th>" in html and "<b>3.27</b> ± 0.34 (+0.42)" in html and "<td>—</td>" in html
        latex = invoke("table", *runs(), "--baseline", "base", "--format", "latex").output
        assert r"rep\_mt\_en\_de" in latex and r"\textbf{3.27} $\pm$ 0.34 (+0.42)" in latex
        assert r"(−1.25$^\dagger$)" in latex.replace("-1.25", "−1.25") and " & -- & -- " in latex
        assert latex.startswith(r"\begin{table}") and r"\toprule" in latex

    def test_output_file_is_written(self, tmp_path):
        target = tmp_path / "sub" / "table.md"
        invoke("table", *runs(), "--baseline", "base", "--output", target)
        assert target.read_text(encoding="utf-8") == GOLDEN_MARKDOWN
        assert [p.name for p in target.parent.iterdir()] == ["table.md"]  # no temporary file left


class TestSignificance:
    """Δ and p of the table against computations made here from the files themselves."""

    def test_paired_bootstrap_matches_numpy(self):
        from lape_eval.reports.significance import DEFAULT_RESAMPLES, DEFAULT_SEED

        table = table_csv(*runs("base", "minus-en-plus-de"), "--baseline", "base", "--metric", "acc_norm",
                          "--tasks", "rep_mc_en")
        run = {s["doc_id"]: s["acc_norm"] for s in samples("minus-en-plus-de", "rep_mc_en")}
        base = {s["doc_id"]: s["acc_norm"] for s in samples("base", "rep_mc_en")}
        diffs = np.array([run[d] - base[d] for d in sorted(base)])
        rng = np.random.default_rng(DEFAULT_SEED)
        means = diffs[rng.integers(0, len(diffs), size=(DEFAULT_RESAMPLES, len(diffs)))].mean(axis=1)
        p = (1 + np.sum(np.abs(means - diffs.mean()) >= abs(diffs.mean()))) / (DEFAULT_RESAMPLES + 1)
        cell = table["-en +de"]
        assert cell["rep_mc_en test"] == "paired-bootstrap"
        assert float(cell["rep_mc_en delta"]) == pytest.approx(diffs.mean(), abs=1e-12)
        assert float(cell["rep_mc_en p"]) == pytest.approx(p, abs=1e-12)

    def test_group_without_samples_uses_a_z_test(self):
        table = table_csv(*runs("base", "plus-en"), "--baseline", "base", "--tasks", "rep_mc")
        a, b = results_json("plus-en")["results"]["rep_mc"], results_json("base")["results"]["rep_mc"]
        z = (a["acc,none"] - b["acc,none"]) / math.sqrt(a["acc_stderr,none"] ** 2 + b["acc_stderr,none"] ** 2)
        p = 2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2))))
        assert table["+en"]["rep_mc test"] == "z-test"
        assert float(table["+en"]["rep_mc p"]) == pytest.approx(p, rel=1e-9)

    def test_chrf_uses_sacrebleu_paired_bootstrap(self, monkeypatch):
        from sacrebleu.metrics import CHRF
        from sacrebleu.significance import PairedTest

        table = table_csv(*runs("base", "lora"), "--baseline", "base", "--tasks", "rep_mt_en_de")
        base, lora = samples("base", "rep_mt_en_de"), samples("lora", "rep_mt_en_de")
        references = [[s["chrf"][0] for s in base]]
        monkeypatch.setenv("SACREBLEU_SEED", "12345")
        _, scores = PairedTest([("base", [s["chrf"][1] for s in base]), ("lora", [s["chrf"][1] for s in lora])],
                               {"chrF2": CHRF()}, references, test_type="bs", n_samples=1000)()
        cell = table["peft:lora-de"]
        assert cell["rep_mt_en_de test"] == "sacrebleu"
        assert float(cell["rep_mt_en_de p"]) == pytest.approx(scores["chrF2"][1].p_value)
        assert float(cell["rep_mt_en_de p"]) < 0.05  # LoRA's drop is significant: the † in the golden table

    def test_z_test_when_asked(self):
        table = table_csv(*runs("base", "lora"), "--baseline", "base", "--tasks", "rep_mt_en_de", "--test", "z")
        a, b = results_json("lora")["results"]["rep_mt_en_de"], results_json("base")["results"]["rep_mt_en_de"]
        se = math.hypot(a["chrf_stderr,none"], b["chrf_stderr,none"])
        assert float(table["peft:lora-de"]["rep_mt_en_de p"]) == pytest.approx(
            math.erfc(abs(a["chrf,none"] - b["chrf,none"]) / se / math.sqrt(2)))

    def test_bootstrap_in_blocks_equals_one_draw(self):
        from lape_eval.reports.significance import paired_bootstrap

        rng = np.random.default_rng(0)
        a, b = rng.random(5000), rng.random(5000) + 0.01
        diffs = a - b
        means = diffs[np.random.default_rng(7).integers(0, 5000, size=(2000, 5000))].mean(axis=1)
        expected = (1 + np.sum(np.abs(means - diffs.mean()) >= abs(diffs.mean()))) / 2001
        assert paired_bootstrap(a, b, 2000, 7) == pytest.approx(expected)

    def test_hypothesis_first_pairs_are_recognised(self):
        """lape-eval's own chrf_pp samples are (hypothesis, reference): the test finds the order."""
        from lape_eval.reports.significance import _sacrebleu_test
        from sacrebleu.metrics import CHRF

        refs = ["Der Hund schläft unter dem Tisch.", "Wo ist der Bahnhof?", "Ich hätte gern Kaffee."]
        hyp_a = ["Der Hund schläft.", "Wo ist Bahnhof?", "Kaffee bitte."]
        hyp_b = ["Hund Tisch", "Bahnhof", "Ich Kaffee."]
        score = lambda hyps: CHRF(word_order=2).corpus_score(hyps, [refs]).score  # noqa: E731
        pairs = lambda hyps: [((h,), (r,), None) for h, r in zip(hyps, refs)]  # noqa: E731
        p = _sacrebleu_test("chrf++", pairs(hyp_a), pairs(hyp_b), score(hyp_a), score(hyp_b), 200, 3)
        assert p is not None and 0 < p <= 1
        assert _sacrebleu_test("chrf++", pairs(hyp_a), pairs(hyp_b), score(hyp_a) + 1, score(hyp_b), 200, 3) is None


class TestLayout:
    def test_groups_and_tasks(self):
        only_tasks = table_csv(*runs("base"), "--groups", "tasks")
        assert "rep_mc" not in only_tasks["base"] and "rep_mc_de" in only_tasks["base"]
        only_groups = table_csv(*runs("base"), "--groups", "groups")
        assert {k for k in only_groups["base"] if " " not in k} == {"rep_mc"}

    def test_average_column_mean_and_stderr(self):
        table = table_csv(*runs("base", "plus-fr"), "--tasks", "rep_mc_*", "--baseline", "base")
        recorded = results_json("plus-fr")["results"]
        tasks = ["rep_mc_de", "rep_mc_en", "rep_mc_fr"]
        assert float(table["+fr"]["Average"]) == pytest.approx(np.mean([recorded[t]["acc,none"] for t in tasks]))
        assert float(table["+fr"]["Average stderr"]) == pytest.approx(
            math.sqrt(sum(recorded[t]["acc_stderr,none"] ** 2 for t in tasks)) / 3)

    def test_average_is_missing_where_a_task_is_missing(self, tmp_path):
        shutil.copytree(RUNS / "plus-fr", tmp_path / "plus-fr")
        path = next((tmp_path / "plus-fr").rglob("results_*.json"))
        data = json.loads(path.read_text(encoding="utf-8"))
        del data["results"]["rep_mc_fr"]
        path.write_text(json.dumps(data), encoding="utf-8")
        table = table_csv(str(RUNS / "base"), str(tmp_path / "plus-fr"), "--tasks", "rep_mc_*")
        assert table["+fr"]["rep_mc_fr"] == "" and table["+fr"]["Average"] == ""
        assert float(table["base"]["Average"]) == pytest.approx(np.mean([0.5, 0.6, 0.45]))

    def test_no_average_over_different_metrics(self):
        table = table_csv(*runs("base"), "--groups", "tasks")
        assert "Average" not in table["base"]  # acc, chrF and exact match do not average

    def test_benchmark_dimension(self):
        table = table_csv(*runs("base", "plus-fr"), "--rows", "language", "--columns", "config,benchmark",
                          "--groups", "tasks")
        assert "+fr · rep_mc" in table["de"] and "+fr · rep_qa" in table["de"] and table["en"]["+fr · rep_qa"] == ""

    def test_labels_from_the_recorded_config(self):
        from lape_eval.reports.results import load_runs

        loaded = load_runs(runs())
        assert [r.label for r in loaded] == ["base", "-en +de", "+fr", "+en", "peft:lora-de"]
        steered = loaded[1].identity
        assert steered.model == "tiny-llama" and steered.lm == "lape" and steered.adapter is None
        assert steered.neuron_set.startswith("tiny-llama-udhr-25pct@") and dict(steered.steer_options)["alpha"] == 8.0
        assert loaded[4].identity.adapter == "lora-de"

    def test_labels_show_what_differs(self):
        from lape_eval.reports.results import load_runs

        loaded = load_runs(runs("fallback-0", "grid", "fallback-1"))
        assert [r.label for r in loaded] == ["base", "per-doc", "-en"]

    def test_identity_from_a_command_line_model_args_string(self):
        from lape_eval.reports.results import identify_run

        identity = identify_run({"config": {"model": "lape", "model_args":
                                            "pretrained=/data/models/Llama-3.1-8B,neurons=sets/llama-1pct.safetensors,"
                                            "steer=-en +zh,method=diffmean,peft=/ckpt/lora-zh/"}})
        assert (identity.model, identity.steer, identity.neuron_set, identity.adapter) == \
            ("Llama-3.1-8B", "-en +zh", "llama-1pct", "lora-zh")
        assert dict(identity.steer_options)["method"] == "diffmean"
        hub = identify_run({"config": {"model": "steered", "model_args": {"pretrained": "google/gemma-3-270m",
                                                                          "steer_path": "/x/steer.pt"}}})
        assert (hub.model, hub.steer) == ("google/gemma-3-270m", "steered:steer.pt")

    def test_label_override_and_baseline_by_number(self):
        table = table_csv(*runs("base", "lora"), "--label", "B", "--label", "L", "--baseline", "1", "--tasks", "rep_mc")
        assert set(table) == {"B", "L"} and table["L"]["rep_mc delta"] != ""

    def test_language_from_names_metadata_and_regex(self):
        import re

        from lape_eval.reports.table import _benchmark, task_language

        assert task_language("belebele_deu_Latn")[0] == "de"
        assert task_language("xnli_de")[0] == "de"
        assert task_language("flores_en-fr")[0] == "fr"
        assert task_language("lape_forcing_grid") is None
        assert task_language("it_quiz") is None  # the first part is the benchmark's name
        assert task_language("anything", {"metadata": {"language": "sv"}})[0] == "sv"
        assert task_language("mmlu.fra", None, re.compile(r"\.(\w+)$"))[0] == "fra"
        language, span = task_language("xnli_de_gen")
        assert _benchmark("xnli_de_gen", span) == "xnli_gen"


class TestBadInput:
    def test_folder_without_results(self, tmp_path):
        (tmp_path / "empty").mkdir()
        out = invoke("table", tmp_path / "empty", expect=2).output
        assert "No lm-eval results in the folder" in out and "Traceback" not in out

    def test_missing_path(self, tmp_path):
        assert "No such file or folder" in invoke("table", tmp_path / "nope", expect=2).output

    @pytest.mark.parametrize("content", ['{"accuracy": 0.5, "model": "x"}', "[1, 2, 3]",
                                        '{"results": {"t": 0.5}, "config": {}}', "not json at all"])
    def test_results_file_from_another_tool(self, tmp_path, content):
        path = tmp_path / "results_2024-01-01T00-00-00.json"
        path.write_text(content, encoding="utf-8")
        assert "is not an lm-eval results file" in invoke("table", path, expect=2).output

    def test_runs_with_no_common_task(self):
        out = invoke("table", *runs("base", "grid"), expect=2).output
        assert "no task in common" in out and "rep_force" in out

    @pytest.mark.parametrize("option", ["--rows", "--columns"])
    def test_unknown_row_or_column_key(self, option):
        out = invoke("table", *runs("base"), option, "model", expect=2).output
        assert f"Unknown {option} key 'model'" in out and "config, task, language, benchmark" in out

    def test_same_key_on_both_axes(self):
        assert "both use task" in invoke("table", *runs("base"), "--rows", "task", "--columns", "task", expect=2).output

    def test_ambiguous_cells(self):
        out = invoke("table", *runs("base", "lora"), "--rows", "language", "--columns", "config", expect=2).output
        assert "Two scores fall into one cell" in out and "--tasks" in out

    def test_unknown_metric_and_baseline(self):
        out = invoke("table", *runs("base"), "--metric", "rouge", expect=2).output
        assert "--metric rouge" in out and "acc" in out
        out = invoke("table", *runs("base", "lora"), "--baseline", "nobody", expect=2).output
        assert "--baseline 'nobody' names none of the runs" in out and "peft:lora-de" in out

    def test_wrong_number_of_labels(self):
        assert "one --label per run" in invoke("table", *runs("base", "lora"), "--label", "x", expect=2).output

    def test_damaged_sample_file(self, tmp_path):
        for name in ("base", "lora"):
            shutil.copytree(RUNS / name, tmp_path / name)
        sample = next((tmp_path / "lora").rglob("samples_rep_mc_en_*.jsonl"))
        sample.write_text(sample.read_text(encoding="utf-8")[:200], encoding="utf-8")
        out = invoke("table", tmp_path / "base", tmp_path / "lora", "--baseline", "base", expect=2).output
        assert "is damaged at line 1" in out
