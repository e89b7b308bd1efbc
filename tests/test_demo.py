"""The demo's plumbing: which steering it uses, how its steps skip, re-run and resume, and how the
`lape-eval demo` command turns its options into a plan."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import lape_eval.demo as demo_module
from lape_eval.cli import cli
from lape_eval.demo import FALLBACK, DemoPlan, StepFailed, run_step
from lape_eval.languages import PAPER_LANGUAGES


def test_steering_comes_from_the_calibrations_choice(tmp_path):
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"language_alphas": {"de": 2.0, "zh": 0.5},
                                       "chosen": {"neuron_set": "gemma-3-270m-udhr-5pct", "method": "add",
                                                  "positions": "answer"}}))
    plan = DemoPlan(tmp_path / "out", calibration=str(calibration))
    assert plan.steering_args() == {"neurons": "gemma-3-270m-udhr-5pct", "method": "add", "positions": "answer",
                                    "language_alphas": str(calibration)}


def test_without_calibration_one_alpha_on_the_one_percent_set(tmp_path):
    assert DemoPlan(tmp_path, calibration="none").steering_args() == {**FALLBACK, "neurons": "gemma-3-270m-udhr-1pct"}
    rebuilt = DemoPlan(tmp_path, calibration="none", identify=True).steering_args()["neurons"]
    assert rebuilt == str(tmp_path / "neuron_sets" / "gemma-3-270m-udhr-1pct.safetensors")
    assert DemoPlan(tmp_path, neuron_set="mine.safetensors").steering_args()["neurons"] == "mine.safetensors"


def _writer(target: Path, text: str) -> list[str]:
    """A step command that appends ``text`` to ``target`` (so that a re-run is visible)."""
    return [sys.executable, "-c", f"open({str(target)!r}, 'a').write({text!r})"]


def test_a_step_is_skipped_only_when_its_command_is_unchanged(tmp_path):
    plan = DemoPlan(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    out = tmp_path / "result.txt"
    run_step(plan, "step", _writer(out, "a"), outputs=[out])
    run_step(plan, "step", _writer(out, "a"), outputs=[out])
    assert out.read_text() == "a" and len(plan.log) == 1
    run_step(plan, "step", _writer(out, "b"), outputs=[out])  # options changed: old output removed, step re-run
    assert out.read_text() == "b" and len(plan.log) == 2


def test_an_interrupted_resumable_step_keeps_its_partial_output(tmp_path):
    plan = DemoPlan(tmp_path)
    partial = tmp_path / "stats.txt"
    partial.write_text("partial;")  # left by an interrupted run: no record of a finished command
    run_step(plan, "collect", _writer(partial, "rest"), outputs=[partial], resumable=True)
    assert partial.read_text() == "partial;rest"
    fresh = tmp_path / "table.txt"
    fresh.write_text("stale;")
    run_step(plan, "table", _writer(fresh, "new"), outputs=[fresh])  # not resumable: starts clean
    assert fresh.read_text() == "new"


def test_a_failing_step_stops_the_demo_with_a_clear_message(tmp_path):
    plan = DemoPlan(tmp_path)
    out = tmp_path / "never.txt"
    with pytest.raises(StepFailed, match="step 'broken' failed .* re-run `lape-eval demo`"):
        run_step(plan, "broken", [sys.executable, "-c", "raise SystemExit(3)"], outputs=[out])
    assert not (tmp_path / ".steps" / "never.txt.txt").exists()


def test_the_shipped_calibration_steers_by_default(tmp_path):
    shipped = demo_module.shipped_calibration()
    assert shipped is not None and Path(shipped).name == demo_module.SHIPPED_CALIBRATION
    chosen = json.loads(Path(shipped).read_text(encoding="utf-8"))["chosen"]
    assert DemoPlan(tmp_path).steering_args() == {"neurons": chosen["neuron_set"], "method": chosen["method"],
                                                  "positions": chosen["positions"], "language_alphas": shipped}


def _planned(monkeypatch, *args: str):
    """The plan `lape-eval demo ARGS` would run (the demo itself is not run), and the command's result."""
    plans = []
    monkeypatch.setattr(demo_module, "run_demo", plans.append)
    result = CliRunner().invoke(cli, ["demo", *args], catch_exceptions=False)
    return (plans[0] if plans else None), result


def test_the_command_turns_its_options_into_a_plan(tmp_path, monkeypatch):
    plan, result = _planned(monkeypatch, "--out", str(tmp_path), "--languages", "de,fr", "--pairs", "en-de, de-fr",
                            "--neurons", "mine.safetensors", "--calibration", "none", "--max-gen-toks", "16",
                            "--translation-docs", "3")
    assert result.exit_code == 0, result.output
    assert (plan.out, plan.languages, plan.pairs, plan.neuron_set, plan.calibration) == \
        (tmp_path, ["de", "fr"], ["en-de", "de-fr"], "mine.safetensors", "none")
    assert (plan.max_gen_toks, plan.translation_docs, plan.identify, plan.calibrate) == (16, 3, False, False)
    plan, _ = _planned(monkeypatch, "--out", str(tmp_path), "--all-languages", "--identify", "--calibrate")
    assert plan.languages == list(PAPER_LANGUAGES) and plan.identify and plan.calibrate
    plan, _ = _planned(monkeypatch, "--out", str(tmp_path))
    assert plan.languages == list(demo_module.DEFAULT_LANGUAGES) and plan.pairs == list(demo_module.DEFAULT_PAIRS)


def test_bad_options_stop_the_command_before_anything_runs(tmp_path, monkeypatch):
    plan, result = _planned(monkeypatch, "--out", str(tmp_path / "out"), "--pairs", "en-xx")
    assert plan is None and result.exit_code == 2 and "xx" in result.output
    monkeypatch.undo()

    def no_model(plan):
        raise AssertionError("the demo went on to load the model")

    monkeypatch.setattr(demo_module, "_prepare_model", no_model)
    damaged = tmp_path / "calibration.json"
    damaged.write_text(json.dumps({"language_alphas": {"de": 2.0}}), encoding="utf-8")  # no "chosen" setting
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "out"), "--calibration", str(damaged)])
    assert result.exit_code == 2 and "is not a lape-eval calibration" in result.output
    assert not (tmp_path / "out").exists()


def test_a_failed_step_exits_with_code_1_and_says_how_to_resume(tmp_path, monkeypatch):
    def fail(plan):
        run_step(plan, "broken", [sys.executable, "-c", "raise SystemExit(3)"], outputs=[tmp_path / "never.txt"])

    monkeypatch.setattr(demo_module, "run_demo", fail)
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "Error: step 'broken' failed (exit code 3)" in result.output and "finished steps are skipped" in result.output


def test_the_summary_holds_the_headline_scores_of_the_runs(tmp_path):
    plan = DemoPlan(tmp_path, pairs=["en-de"])
    plan.log.append(("a step", 1.5))
    for name, value in (("forcing-steered", 61.5), ("forcing-unsteered", "N/A"), ("translation-steered", 40.25)):
        folder = plan.results / name / "gemma"
        folder.mkdir(parents=True)
        task = "lape_forcing_grid" if name.startswith("forcing") else "lape_udhr_translation_en-de"
        metric = "target_rate_clean_offdiag" if name.startswith("forcing") else "chrf_pp"
        (folder / "results_2025-01-01T00-00-00.json").write_text(
            json.dumps({"results": {task: {f"{metric},none": value}}, "config": {"model": "lape"}}), encoding="utf-8")
    demo_module.write_summary(plan, {"neurons": "n"}, 12.34)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary == {"languages": list(demo_module.DEFAULT_LANGUAGES), "pairs": ["en-de"], "steering": {"neurons": "n"},
                       "seconds": 12.3, "steps_seconds": {"a step": 1.5},
                       "forcing_offdiag_clean": {"unsteered": None, "steered": 61.5},
                       "translation_chrf_pp": {"en-de": {"unsteered": None, "steered": 40.25}}}
