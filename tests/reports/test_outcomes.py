"""Per-sample outcomes of forcing-style runs: label and success from logged fields or from language
identification of the output."""

from __future__ import annotations

from recorded_runs import RUNS, samples


def test_success_from_lid_when_no_field_is_logged(monkeypatch):
    """Without per-sample label and success fields, the outputs go through language identification."""
    from lape_eval.reports import outcomes as outcomes_module
    from lape_eval.evaluation.lid import identify_languages
    from lape_eval.reports.results import load_runs

    monkeypatch.setattr(outcomes_module, "LABEL_FIELDS", ())
    monkeypatch.setattr(outcomes_module, "SUCCESS_FIELDS", ())
    run = load_runs([RUNS / "grid"])[0]
    items, how = outcomes_module.outcomes(run, "rep_force")
    records = samples("grid", "rep_force")
    expected = identify_languages([r["filtered_resps"][0] for r in records])
    assert [o.label for o in items] == expected
    assert [o.success for o in items] == [label == r["doc"]["target_lang"] for label, r in zip(expected, records)]
    assert how == {"label": "LID (default backend) on the output", "success": "output language = target language"}
