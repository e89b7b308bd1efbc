"""The demo's plumbing: which steering it uses, and how its steps skip, re-run and resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pytest

from lape_eval.demo import FALLBACK, DemoPlan, _run


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
    _run(plan, "step", _writer(out, "a"), outputs=[out])
    _run(plan, "step", _writer(out, "a"), outputs=[out])
    assert out.read_text() == "a" and len(plan.log) == 1
    _run(plan, "step", _writer(out, "b"), outputs=[out])  # options changed: old output removed, step re-run
    assert out.read_text() == "b" and len(plan.log) == 2


def test_an_interrupted_resumable_step_keeps_its_partial_output(tmp_path):
    plan = DemoPlan(tmp_path)
    partial = tmp_path / "stats.txt"
    partial.write_text("partial;")  # left by an interrupted run: no record of a finished command
    _run(plan, "collect", _writer(partial, "rest"), outputs=[partial], resumable=True)
    assert partial.read_text() == "partial;rest"
    fresh = tmp_path / "table.txt"
    fresh.write_text("stale;")
    _run(plan, "table", _writer(fresh, "new"), outputs=[fresh])  # not resumable: starts clean
    assert fresh.read_text() == "new"


def test_a_failing_step_stops_the_demo_with_a_clear_message(tmp_path):
    plan = DemoPlan(tmp_path)
    out = tmp_path / "never.txt"
    with pytest.raises(click.ClickException, match="step 'broken' failed .* re-run `lape-eval demo`"):
        _run(plan, "broken", [sys.executable, "-c", "raise SystemExit(3)"], outputs=[out])
    assert not (tmp_path / ".steps" / "never.txt.txt").exists()
