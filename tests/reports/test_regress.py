"""`lape-eval regress`: the CI gate on task scores, on real lm-eval runs (tests/data/report_runs).

Baseline files are read with :func:`lape_eval.reports.regress.read_baseline`, the one reader of the format
(which also checks the format); the values in them are compared with the recorded results files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from recorded_runs import RUNS, files_under, invoke
from lape_eval.reports.regress import read_baseline


@pytest.fixture
def baseline(tmp_path):
    """A baseline written by --update from the base run."""
    path = tmp_path / "ci" / "baseline.json"
    invoke("regress", "--baseline", path, "--update", RUNS / "base", expect=0)
    return path


def edited_copy(tmp_path, name: str, edit) -> Path:
    """A copy of a real run whose results JSON went through ``edit(data)``."""
    target = tmp_path / f"{name}-edited"
    shutil.copytree(RUNS / name, target)
    path = next(target.rglob("results_*.json"))
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    return target


def test_update_writes_a_baseline_of_every_score(baseline):
    data = read_baseline(baseline)
    recorded = json.loads(next((RUNS / "base").rglob("results_*.json")).read_text(encoding="utf-8"))["results"]
    assert data["format"] == "lape-eval/score-baseline" and data["version"] == 1
    assert data["runs"][0]["model"] == "tiny-llama" and data["runs"][0]["label"] == "base"
    assert data["tasks"]["rep_mt_en_de"]["chrf,none"] == {
        "value": recorded["rep_mt_en_de"]["chrf,none"], "stderr": recorded["rep_mt_en_de"]["chrf_stderr,none"],
        "higher_is_better": True}
    assert set(data["tasks"]["rep_qa_de"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert [p.name for p in baseline.parent.iterdir()] == ["baseline.json"]


def test_equal_scores_pass(baseline):
    result = invoke("regress", "--baseline", baseline, RUNS / "base", expect=0)
    assert "PASS: 0 worse, 0 missing, 0 new, 0 better, 11 unchanged." in result.output


def test_a_drop_beyond_the_tolerance_fails(baseline):
    result = invoke("regress", "--baseline", baseline, RUNS / "lora", expect=1)
    line = next(line for line in result.output.splitlines() if line.startswith("WORSE"))
    assert "rep_mt_en_de" in line and "chrf,none" in line
    assert "FAIL: 1 worse" in result.output
    # chrF fell by 1.25 with a standard error of the difference of 0.49: within 3 SE, or 1.3 points, it passes
    invoke("regress", "--baseline", baseline, RUNS / "lora", "--tolerance-se", "3", expect=0)
    invoke("regress", "--baseline", baseline, RUNS / "lora", "--tolerance-se", "0", "--tolerance", "1.3", expect=0)


def test_tolerance_in_standard_errors_and_absolute_points(tmp_path, baseline):
    base = read_baseline(baseline)["tasks"]["rep_mc_en"]["acc,none"]
    se = math.hypot(base["stderr"], base["stderr"])

    def drop(amount):
        def edit(data):
            data["results"]["rep_mc_en"]["acc,none"] -= amount
        return edited_copy(tmp_path / str(amount), "base", edit)

    invoke("regress", "--baseline", baseline, drop(1.9 * se), expect=0)  # within 2 SE
    invoke("regress", "--baseline", baseline, drop(2.1 * se), expect=1)
    invoke("regress", "--baseline", baseline, drop(0.02), "--tolerance-se", "0", "--tolerance", "0.01", expect=1)
    invoke("regress", "--baseline", baseline, drop(0.005), "--tolerance-se", "0", "--tolerance", "0.01", expect=0)


def test_improvements_pass_and_direction_comes_from_the_results(tmp_path, baseline):
    def better(data):
        data["results"]["rep_mc_en"]["acc,none"] += 0.5

    result = invoke("regress", "--baseline", baseline, edited_copy(tmp_path, "base", better), expect=0)
    assert "better" in result.output

    def lower_is_better(data):
        data["results"]["rep_mc_en"]["acc,none"] += 0.5
        data["higher_is_better"]["rep_mc_en"]["acc"] = False

    result = invoke("regress", "--baseline", baseline, edited_copy(tmp_path / "x", "base", lower_is_better), expect=1)
    assert "acc,none (lower is better)" in result.output


def test_missing_and_new_tasks(baseline):
    result = invoke("regress", "--baseline", baseline, RUNS / "plus-en", expect=0)  # rep_mc only
    statuses = [line.split()[:2] for line in result.output.splitlines() if line.startswith(("missing", "new"))]
    assert ["missing", "rep_mt_en_de"] in statuses and ["missing", "rep_qa_de"] in statuses
    assert "4 missing" in result.output
    invoke("regress", "--baseline", baseline, RUNS / "plus-en", "--fail-on-missing", expect=1)
    result = invoke("regress", "--baseline", baseline, RUNS / "base", RUNS / "grid", expect=0)  # different task sets
    assert ["new", "rep_force"] in [line.split()[:2] for line in result.output.splitlines()]
    assert "0 missing, 2 new" in result.output


def test_a_task_in_two_runs_is_an_error(baseline):
    result = invoke("regress", "--baseline", baseline, RUNS / "base", RUNS / "lora", expect=2)
    assert "is in two runs" in result.output


def test_markdown_report_and_only_changes(tmp_path, baseline):
    report = tmp_path / "report.md"
    result = invoke("regress", "--baseline", baseline, RUNS / "lora", "--format", "markdown", "--only-changes",
                    "--output", report, expect=1)
    text = report.read_text(encoding="utf-8")
    assert text.startswith("| status | task | metric |") and "| WORSE | rep_mt_en_de | chrf,none |" in text
    assert "unchanged scores not shown" in text and text in result.output


def test_subsets_of_tasks_and_metrics(tmp_path):
    path = tmp_path / "b.json"
    invoke("regress", "--baseline", path, "--update", RUNS / "base", "--tasks", "rep_mc*", "--metric", "acc", expect=0)
    assert set(read_baseline(path)["tasks"]) == {"rep_mc", "rep_mc_de", "rep_mc_en", "rep_mc_fr"}
    invoke("regress", "--baseline", path, RUNS / "lora", "--tasks", "rep_mc*", "--metric", "acc", expect=0)


def test_update_over_an_existing_baseline_reports_then_replaces(baseline):
    result = invoke("regress", "--baseline", baseline, "--update", RUNS / "lora", expect=0)
    assert "WORSE" in result.output and "wrote baseline" in result.output
    invoke("regress", "--baseline", baseline, RUNS / "lora", expect=0)


class TestBadBaselines:
    def test_missing_file(self, tmp_path):
        result = invoke("regress", "--baseline", tmp_path / "none.json", RUNS / "base", expect=2)
        assert "does not exist" in result.output and "--update" in result.output

    def test_not_a_baseline(self, tmp_path):
        path = tmp_path / "b.json"
        path.write_text(json.dumps({"rep_mc": {"acc": 0.5}}), encoding="utf-8")
        assert "is not a lape-eval score baseline" in invoke("regress", "--baseline", path, RUNS / "base", expect=2).output
        path.write_text("{", encoding="utf-8")
        assert "is not valid JSON" in invoke("regress", "--baseline", path, RUNS / "base", expect=2).output

    def test_runs_that_are_not_results(self, tmp_path, baseline):
        (tmp_path / "empty").mkdir()
        assert "No lm-eval results" in invoke("regress", "--baseline", baseline, tmp_path / "empty", expect=2).output

    def test_bad_options_write_nothing(self, tmp_path):
        result = invoke("regress", "--baseline", tmp_path / "b.json", "--update", RUNS / "base", "--tolerance", "-1",
                        expect=2)
        assert "--tolerance and --tolerance-se must be ≥ 0" in result.output
        assert files_under(tmp_path) == []
