"""`lape-eval fallback`: the progressive-deactivation study from the recorded fallback runs, its counts
against the sample files. (`fallback-commands` is replaced by `lape-eval experiment fallback`:
tests/experiments/test_fallback_experiment.py.)"""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from recorded_runs import FALLBACK, RUNS, check_png, check_svg, files_under, invoke, samples


class TestFallback:
    def test_study_counts_output_languages_per_step(self):
        from lape_eval.reports.fallback import fallback_study
        from lape_eval.reports.results import load_runs

        study = fallback_study(load_runs([RUNS / name for name in FALLBACK]), min_share=0.0)
        assert [s.number for s in study.steps] == [0, 1, 2, 3, 11]
        assert study.steps[2].deactivated == ["en", "fr"]
        for step, name in zip(study.steps, FALLBACK):
            counts = Counter(s["output_lang"] for s in samples(name, "rep_fallback"))
            total = sum(counts.values())
            assert step.total == total
            for lang, count in counts.items():
                assert step.shares[lang if lang != "unknown" else "unknown"] == pytest.approx(count / total)
        assert study.columns[0] == "en"  # order languages first
        assert "English prompts" in study.title

    def test_cli_table_and_stacked_bars(self, tmp_path):
        chart = tmp_path / "fallback.png"
        out = invoke("fallback", *[RUNS / name for name in FALLBACK], "--plot", chart, "--format", "csv").output
        lines = out.splitlines()
        assert lines[0].startswith("step,deactivated,outputs,en,")
        assert lines[1].startswith("0,none,10,") and lines[3].startswith("2,en fr,10,")
        check_png(chart)
        invoke("fallback", *[RUNS / name for name in FALLBACK], "--plot", tmp_path / "fallback.svg", "--format", "text")
        check_svg(tmp_path / "fallback.svg", "output language")

    def test_golden_text_table(self):
        out = invoke("fallback", *[RUNS / name for name in FALLBACK], "--min-share", "0.15", "--format", "text").output
        assert out.splitlines()[3:9] == [
            "0     none                                   10  50.0*   0.0   0.0   50.0      0.0",
            "1     en                                     10  70.0*   0.0   0.0   30.0      0.0",
            "2     en fr                                  10  50.0*  30.0   0.0   20.0      0.0",
            "3     en fr es                               10  30.0*   0.0  20.0   40.0     10.0",
            "11    en fr es it pt ru de ar zh ko ja       10  50.0*   0.0  20.0   30.0      0.0",
            "",
        ]
        assert out.splitlines()[1].split() == ["step", "deactivated", "outputs", "en", "ru", "bi", "other", "unknown"]

    def test_min_share_merges_rare_languages(self):
        from lape_eval.reports.fallback import fallback_study
        from lape_eval.reports.results import load_runs

        study = fallback_study(load_runs([RUNS / name for name in FALLBACK]), min_share=0.25)
        for step in study.steps:
            assert sum(step.shares.values()) == pytest.approx(1.0)
        assert "other" in study.columns and set(study.columns) <= {"en", "ru", "bi", "other", "unknown", "pt", "ar"}

    def test_runs_that_are_not_steps(self, tmp_path):
        runs = [RUNS / name for name in FALLBACK]
        assert "not the start of the order" in invoke("fallback", *runs, "--order", "fr,en", expect=2).output
        assert "only deactivates" in invoke("fallback", RUNS / "plus-fr", expect=2).output
        shutil.copytree(RUNS / "fallback-1", tmp_path / "again")
        assert "Two runs are step 1" in invoke("fallback", RUNS / "fallback-1", tmp_path / "again", expect=2).output
        assert "no sample file for task rep_mc" in invoke("fallback", RUNS / "fallback-0", "--task", "rep_mc",
                                                          expect=2).output

    def test_bad_options_write_nothing(self, tmp_path):
        out = invoke("fallback", *[RUNS / name for name in FALLBACK], "--output", tmp_path / "study.md",
                     "--plot", tmp_path / "study.pdf", expect=2).output
        assert "--plot" in out and "must end in .png or .svg" in out
        assert files_under(tmp_path) == []
