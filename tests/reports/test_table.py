"""`lape-eval table`: golden tables from real lm-eval runs (tests/data/report_runs, written by
tests/data/make_report_fixtures.py), averages and best values against computations made here from the
files, and clear errors for bad input (nothing written)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from recorded_runs import RUNS, files_under, invoke, results_json, runs, table_csv


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

    def test_label_override_and_baseline_by_number(self):
        table = table_csv(*runs("base", "lora"), "--label", "B", "--label", "L", "--baseline", "1", "--tasks", "rep_mc")
        assert set(table) == {"B", "L"} and table["L"]["rep_mc delta"] != ""


class TestBadInput:

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

    def test_bad_options_write_nothing(self, tmp_path):
        target = tmp_path / "table.md"
        out = invoke("table", *runs("base"), "--rows", "model", "--output", target, expect=2).output
        assert "Unknown --rows key 'model'" in out
        out = invoke("table", *runs("base"), "--language-regex", "(de", "--output", target, expect=2).output
        assert "--language-regex '(de' is not a valid regular expression" in out
        assert files_under(tmp_path) == []
