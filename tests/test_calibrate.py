"""Calibration: the selection rule by hand, the batched sweep against a one-cell-at-a-time loop, the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import lape_eval.calibrate as calibration_module
from handmade_sets import LANGS, make_set
from lape_eval.arch import resolve
from lape_eval.calibrate import Calibration, Setting, best_alpha, calibrate, calibration_questions, generate_answers
from lape_eval.cli import cli
from lape_eval.steering import parse_steer, steer
from tiny_models import build_model, build_tokenizer

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics


def test_best_alpha_is_the_highest_rate_and_on_ties_the_smallest_alpha():
    assert best_alpha({"0.5": 20.0, "1": 60.0, "2": 60.0}) == 1.0
    assert best_alpha({"2": 0.0, "0.5": 0.0}) == 0.5
    assert best_alpha({"0.25": 10.0, "3": 90.0}) == 3.0


def test_the_setting_with_the_best_mean_of_per_target_best_rates_wins():
    first, second, third = Setting("a"), Setting("b", positions="generated"), Setting("c", method="diffmean")
    result = Calibration([first, second, third], ["en"], ["de", "fr"], [1.0, 2.0], 4)
    result.rates = {
        first.key: {"de": {"1": 100.0, "2": 0.0}, "fr": {"1": 0.0, "2": 20.0}},  # (100 + 20) / 2 = 60
        second.key: {"de": {"1": 50.0, "2": 75.0}, "fr": {"1": 25.0, "2": 25.0}},  # (75 + 25) / 2 = 50
        third.key: {"de": {"1": 60.0, "2": 60.0}, "fr": {"1": 60.0, "2": 0.0}},  # 60: ties with the first
    }
    result.choose()
    assert result.chosen == first  # a tie goes to the setting listed first
    assert result.best == {"de": 1.0, "fr": 2.0}
    assert result.to_json()["calibration_rate"] == 60.0


def _judge(answer: str, target: str) -> bool:
    """A deterministic stand-in for LID on a tiny random model's gibberish."""
    return len(answer) % len(LANGS) == LANGS.index(target)


def test_the_batched_sweep_equals_one_steered_cell_at_a_time(monkeypatch):
    monkeypatch.setattr(calibration_module, "forced", _judge)
    model, tokenizer = build_model("llama"), build_tokenizer()
    neuron_set = make_set(resolve(model).width)
    settings = {"methods": ["add", "diffmean"], "positions": ["all", "generated"]}
    alphas = [0.5, 8.0]
    result = calibrate(model, tokenizer, {"tiny": neuron_set}, targets=LANGS, sources=LANGS, alphas=alphas,
                       questions_per_source=3, max_new_tokens=6, batch_size=5, progress=False, **settings)

    questions = calibration_questions()
    for setting in result.settings:
        for target in LANGS:
            for alpha in alphas:
                hits = total = 0
                for source in LANGS:
                    if source == target:
                        continue
                    with steer(model, neuron_set, f"-{source} +{target}", method=setting.method, alpha=alpha,
                               positions=setting.positions):
                        answers = generate_answers(model, tokenizer, questions[source][:3], max_new_tokens=6)
                    hits += sum(_judge(answer, target) for answer in answers)
                    total += len(answers)
                assert result.rates[setting.key][target][f"{alpha:g}"] == pytest.approx(100.0 * hits / total), \
                    (setting, target, alpha)
    all_rates = [rate for by_target in result.rates.values() for by_alpha in by_target.values() for rate in by_alpha.values()]
    assert len(set(all_rates)) > 1, "the sweep should tell settings apart"
    assert result.chosen.key == max(result.settings, key=result.score).key


class _Stop(Exception):
    """Stands for an interruption (Ctrl-C, a killed job)."""


def test_an_interrupted_sweep_resumes_where_it_stopped(monkeypatch, tmp_path):
    monkeypatch.setattr(calibration_module, "forced", _judge)
    model, tokenizer = build_model("llama"), build_tokenizer()
    neuron_set = make_set(resolve(model).width)
    args = dict(targets=["de", "fr"], sources=["en"], alphas=[0.5, 2.0, 8.0], positions=["all", "generated"],
                questions_per_source=2, max_new_tokens=4, progress=False)
    uninterrupted = calibrate(model, tokenizer, {"tiny": neuron_set}, **args)

    real, calls, interrupt = calibration_module.generate_answers, [], {"at": 4}

    def interrupted_on_the_fourth_batch(*a, **k):
        calls.append(1)
        if len(calls) == interrupt["at"]:
            raise _Stop
        return real(*a, **k)

    monkeypatch.setattr(calibration_module, "generate_answers", interrupted_on_the_fourth_batch)
    checkpoint = tmp_path / "calibration.json.partial.json"
    with pytest.raises(_Stop):
        calibrate(model, tokenizer, {"tiny": neuron_set}, checkpoint=checkpoint, **args)
    calls.clear()
    interrupt["at"] = None
    resumed = calibrate(model, tokenizer, {"tiny": neuron_set}, checkpoint=checkpoint, **args)
    assert len(calls) == 6 - 3  # 2 settings × 3 alphas, three measured before the interruption
    assert resumed.rates == uninterrupted.rates and resumed.best == uninterrupted.best
    calls.clear()
    other = calibrate(model, tokenizer, {"tiny": neuron_set}, checkpoint=checkpoint, **{**args, "questions_per_source": 1})
    assert len(calls) == 6 and other.questions_per_source == 1  # another sweep does not reuse the rates


def test_cli_writes_a_calibration_that_the_lape_model_reads(tiny_model_dir, tmp_path):
    set_file = tmp_path / "tiny.safetensors"
    model = build_model("llama")
    make_set(resolve(model).width).save(set_file)
    out = tmp_path / "calibration.json"
    result = CliRunner().invoke(cli, ["calibrate", "--model", str(tiny_model_dir("llama")), "--neurons", str(set_file),
                                      "--targets", "de,fr", "--sources", "en,de", "--alphas", "0.5,2",
                                      "--positions", "all,generated", "--questions", "1", "--max-new-tokens", "4",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert set(written["language_alphas"]) == {"de", "fr"}
    assert written["chosen"]["neuron_set"] == str(set_file)
    assert len(written["settings"]) == 2
    spec = parse_steer("-en +de", language_alphas=str(out))
    assert dict(spec.language_alphas) == written["language_alphas"]


def test_cli_refuses_a_method_without_alpha_before_loading_anything(tmp_path):
    result = CliRunner().invoke(cli, ["calibrate", "--model", str(tmp_path / "absent"), "--neurons",
                                      "gemma-3-270m-udhr-1pct", "--targets", "de", "--methods", "multiply",
                                      "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 2 and "add, diffmean, replace" in result.output
    assert not (tmp_path / "c.json").exists()
    result = CliRunner().invoke(cli, ["calibrate", "--model", str(tmp_path / "absent"), "--neurons",
                                      "gemma-3-270m-udhr-1pct", "--targets", "de", "--alphas", "0.5,big",
                                      "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 2 and "--alphas" in result.output and "Traceback" not in result.output
