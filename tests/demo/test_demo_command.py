"""`lape-eval demo`: options turned into a plan, bad options stopped early, a failed step's exit code."""

from __future__ import annotations

import json
import sys

from click.testing import CliRunner

import lape_eval.demo as demo_package
import lape_eval.demo.pipeline as pipeline
from lape_eval.cli import cli
from lape_eval.demo import DEFAULT_LANGUAGES, DEFAULT_PAIRS, run_step
from lape_eval.demo.plan import BATCH_SIZE
from lape_eval.languages import PAPER_LANGUAGES


def _planned(monkeypatch, *args: str):
    """The plan `lape-eval demo ARGS` would run (the demo itself is not run), and the command's result."""
    plans = []
    monkeypatch.setattr(demo_package, "run_demo", plans.append)
    result = CliRunner().invoke(cli, ["demo", *args], catch_exceptions=False)
    return (plans[0] if plans else None), result


def test_the_command_turns_its_options_into_a_plan(tmp_path, monkeypatch):
    plan, result = _planned(monkeypatch, "--out", str(tmp_path), "--languages", "de,fr", "--pairs", "en-de, de-fr",
                            "--neurons", "mine.safetensors", "--calibration", "none", "--max-gen-toks", "16",
                            "--translation-docs", "3", "--batch-size", "4", "--verbose", "--paper-condition")
    assert result.exit_code == 0, result.output
    assert (plan.out, plan.languages, plan.pairs, plan.neuron_set, plan.calibration) == \
        (tmp_path, ["de", "fr"], ["en-de", "de-fr"], "mine.safetensors", "none")
    assert (plan.max_gen_toks, plan.translation_docs, plan.identify, plan.calibrate) == (16, 3, False, False)
    assert (plan.batch_size, plan.verbose, plan.paper_condition) == (4, True, True)
    plan, _ = _planned(monkeypatch, "--out", str(tmp_path), "--all-languages", "--identify", "--calibrate")
    assert plan.languages == list(PAPER_LANGUAGES) and plan.identify and plan.calibrate
    plan, _ = _planned(monkeypatch, "--out", str(tmp_path))
    assert plan.languages == list(DEFAULT_LANGUAGES) and plan.pairs == list(DEFAULT_PAIRS)
    assert (plan.batch_size, plan.verbose, plan.paper_condition) == (BATCH_SIZE, False, False)


def test_bad_options_stop_the_command_before_anything_runs(tmp_path, monkeypatch):
    plan, result = _planned(monkeypatch, "--out", str(tmp_path / "out"), "--pairs", "en-xx")
    assert plan is None and result.exit_code == 2 and "xx" in result.output
    monkeypatch.undo()

    def no_model(plan):
        raise AssertionError("the demo went on to load the model")

    monkeypatch.setattr(pipeline, "_prepare_model", no_model)
    damaged = tmp_path / "calibration.json"
    damaged.write_text(json.dumps({"language_alphas": {"de": 2.0}}), encoding="utf-8")  # no "chosen" setting
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "out"), "--calibration", str(damaged)])
    assert result.exit_code == 2 and "is not a lape-eval calibration" in result.output
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "out"), "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.output


def test_a_failed_step_exits_with_code_1_and_says_how_to_resume(tmp_path, monkeypatch):
    def fail(plan):
        run_step(plan, "broken", [sys.executable, "-c", "raise SystemExit(3)"], outputs=[tmp_path / "never.txt"])

    monkeypatch.setattr(demo_package, "run_demo", fail)
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "Error: step 'broken' failed (exit code 3)" in result.output and "finished steps are skipped" in result.output
    assert f"its output is in {tmp_path / 'logs' / 'never.log'}" in result.output
