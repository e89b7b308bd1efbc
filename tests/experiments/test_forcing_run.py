"""`lape-eval experiment forcing` end to end on the real Gemma-3-270M, offline (slow: about 6 min on 2 cores)."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from lape_eval.cli import cli
from lape_eval.experiments.forcing_plan import CONDITIONS

ARGS = ["experiment", "forcing", "--preset", "paper", "--languages", "en,de,fr", "--sets", "gemma-3-270m-udhr-1pct",
        "--max-gen-toks", "16"]


@pytest.mark.slow
def test_the_paper_preset_runs_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "forcing"
    result = CliRunner().invoke(cli, [*ARGS, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text(encoding="utf-8")
    for item in CONDITIONS:  # every condition has its row of rates and its heatmap
        assert f"| {item.label} |" in report, item.name
        stem = f"heatmap_{item.name}" + ("" if item.name == "baseline" else "_gemma-3-270m-udhr-1pct")
        assert (out / "figures" / f"{stem}.png").stat().st_size > 0
    assert "deactivate + activate ≥ activate-only** (gemma-3-270m-udhr-1pct): " in report
    assert "| max_gen_toks | 16 |" in report and "| lid | fasttext |" in report
    with open(out / "csv" / "rates.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["condition"] for row in rows] == [c.name for c in CONDITIONS]
    assert all(row["pooled_n"] == str(3 * 3 * 6) for row in rows)  # 3 x 3 cells x the paper's 6 questions
    assert all(row["offdiag_n"] == str(3 * 2 * 6) for row in rows)
    # Re-running resumes: both runs are found finished, only the report is written again.
    again = CliRunner().invoke(cli, [*ARGS, "--out", str(out)], catch_exceptions=False)
    assert again.exit_code == 0 and again.output.count("(already done)") == 2, again.output
