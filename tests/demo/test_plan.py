"""Which steering the demo uses: the calibration's choice, the shipped calibration, or the fallback."""

from __future__ import annotations

import json
from pathlib import Path

from lape_eval.demo import FALLBACK, SHIPPED_CALIBRATION, DemoPlan, shipped_calibration


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


def test_the_shipped_calibration_steers_by_default(tmp_path):
    shipped = shipped_calibration()
    assert shipped is not None and Path(shipped).name == SHIPPED_CALIBRATION
    chosen = json.loads(Path(shipped).read_text(encoding="utf-8"))["chosen"]
    assert DemoPlan(tmp_path).steering_args() == {"neurons": chosen["neuron_set"], "method": chosen["method"],
                                                  "positions": chosen["positions"], "language_alphas": shipped}
