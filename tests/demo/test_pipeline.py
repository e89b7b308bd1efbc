"""The demo's summary: the headline scores of its runs and the time of each step."""

from __future__ import annotations

import json

from lape_eval.demo import DEFAULT_LANGUAGES, DemoPlan, write_summary


def test_the_summary_holds_the_headline_scores_of_the_runs(tmp_path):
    plan = DemoPlan(tmp_path, pairs=["en-de"], calibration="none", paper_condition=True)  # the fallback set: 1 %
    plan.log.append(("a step", 1.5))
    for name, value in (("forcing-steered", 61.5), ("forcing-unsteered", "N/A"), ("translation-steered", 40.25)):
        folder = plan.results / name / "gemma"
        folder.mkdir(parents=True)
        task = "lape_forcing_grid" if name.startswith("forcing") else "lape_udhr_translation_en-de"
        metric = "target_rate_clean_offdiag" if name.startswith("forcing") else "chrf_pp"
        (folder / "results_2025-01-01T00-00-00.json").write_text(
            json.dumps({"results": {task: {f"{metric},none": value}}, "config": {"model": "lape"}}), encoding="utf-8")
    write_summary(plan, {"neurons": "n"}, 12.34)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary == {"languages": list(DEFAULT_LANGUAGES), "pairs": ["en-de"], "steering": {"neurons": "n"},
                       "seconds": 12.3, "steps_seconds": {"a step": 1.5},
                       "forcing_offdiag_clean": {"unsteered": None, "steered": 61.5, "paper": None},
                       "forcing_headline": {"unsteered": None, "steered": None, "paper": None},  # no samples logged
                       "paper_condition": {"neurons": "gemma-3-270m-udhr-1pct", "method": "add", "positions": "all",
                                           "alpha": 1.0},
                       "translation_chrf_pp": {"en-de": {"unsteered": None, "steered": 40.25}}}
