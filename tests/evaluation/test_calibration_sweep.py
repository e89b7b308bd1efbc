"""The calibration sweep: the batched sweep against a one-cell-at-a-time loop, resuming, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import lape_eval.evaluation.calibration_sweep as calibration_module
from handmade_sets import LANGS, make_set
from lape_eval.arch import resolve
from lape_eval.evaluation.calibration_sweep import calibration_questions, generate_answers, sweep
from lape_eval.cli import cli
from lape_eval.steering.spec import parse_steer
from lape_eval.steering.hooks import steer
from tiny_models import build_model, build_tokenizer

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics


def _judge(answer: str, target: str) -> bool:
    """A deterministic stand-in for LID on a tiny random model's gibberish."""
    return len(answer) % len(LANGS) == LANGS.index(target)


def test_the_batched_sweep_equals_one_steered_cell_at_a_time(monkeypatch):
    monkeypatch.setattr(calibration_module, "forced", _judge)
    model, tokenizer = build_model("llama"), build_tokenizer()
    neuron_set = make_set(resolve(model).width)
    settings = {"methods": ["add", "diffmean"], "positions": ["all", "generated"]}
    alphas = [0.5, 8.0]
    result = sweep(model, tokenizer, {"tiny": neuron_set}, targets=LANGS, sources=LANGS, alphas=alphas,
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
                # Rates of discrete judgements: integer counts, one float64 division. The batched sweep
                # generates in other batch shapes (left padding, mixed specs), which changes the logits in
                # rounding only; a greedy choice could flip only at a near-tie of the two best tokens.
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
    uninterrupted = sweep(model, tokenizer, {"tiny": neuron_set}, **args)

    real, calls, interrupt = calibration_module.generate_answers, [], {"at": 4}

    def interrupted_on_the_fourth_batch(*a, **k):
        calls.append(1)
        if len(calls) == interrupt["at"]:
            raise _Stop
        return real(*a, **k)

    monkeypatch.setattr(calibration_module, "generate_answers", interrupted_on_the_fourth_batch)
    checkpoint = tmp_path / "calibration.json.partial.json"
    with pytest.raises(_Stop):
        sweep(model, tokenizer, {"tiny": neuron_set}, checkpoint=checkpoint, **args)
    calls.clear()
    interrupt["at"] = None
    resumed = sweep(model, tokenizer, {"tiny": neuron_set}, checkpoint=checkpoint, **args)
    assert len(calls) == 6 - 3  # 2 settings × 3 alphas, three measured before the interruption
    assert resumed.rates == uninterrupted.rates and resumed.language_alphas == uninterrupted.language_alphas
    calls.clear()
    other = sweep(model, tokenizer, {"tiny": neuron_set}, checkpoint=checkpoint, **{**args, "questions_per_source": 1})
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


def test_answers_follow_the_forcing_protocol():
    model, tokenizer = build_model("llama"), build_tokenizer()
    questions = calibration_questions()["de"][:2] + calibration_questions()["zh"][:1]
    answers = generate_answers(model, tokenizer, questions, max_new_tokens=6, batch_size=1)
    for question, answer in zip(questions, answers):
        batch = tokenizer([f"Q: {question} \nA:"], return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**batch, max_new_tokens=6, do_sample=False, repetition_penalty=1.1,
                                    pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(output[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        assert answer == text.split("\nQ:")[0].split("\nA:")[0].strip()


def _no_model_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the inputs were checked")


@pytest.mark.parametrize("options, message", [
    ({"--targets": "de,xx"}, "Unknown language code 'xx'"),
    ({"--targets": "zh"}, "no neurons for 'zh'"),
    ({"--targets": "slk"}, "no neurons for 'sk'"),  # any language may be a target (no questions needed)
    ({"--sources": "en,sk"}, "No calibration questions in sk: choose source languages"),
    ({"--sources": "ja"}, "no neurons for 'ja'"),
    ({"--neurons": "no-such-set"}, "No neuron set 'no-such-set'"),
    ({"--positions": "all,middle"}, "Unknown positions 'middle'"),
    ({"--alphas": "0.5,-1"}, "alpha must be ≥ 0"),
    ({"--methods": "add,boost"}, "Unknown steering method 'boost'"),
    ({"--methods": "multiply"}, "add, diffmean, replace"),
    ({"--questions": "0"}, "--questions must be at least 1"),
    ({"--max-new-tokens": "0"}, "--max-new-tokens must be at least 1"),
    ({"--targets": "de", "--sources": "de"}, "at least one source language different from a target"),
])
def test_cli_checks_every_input_before_loading_the_model_or_writing(tmp_path, monkeypatch, options, message):
    monkeypatch.setattr(calibration_module, "load_model", _no_model_load)
    set_file = tmp_path / "tiny.safetensors"
    make_set(96).save(set_file)
    out = tmp_path / "out" / "calibration.json"
    arguments = {"--model": str(tmp_path / "absent"), "--neurons": str(set_file), "--targets": "de,fr",
                 "--sources": "en", "--out": str(out), **options}
    result = CliRunner().invoke(cli, ["calibrate", *[part for pair in arguments.items() for part in pair]])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder


# --- residual DiffMean: a direction artifact swept over layers -----------------------------------


def _random_directions(model):
    from lape_eval.arch import residual_width
    from lape_eval.neurons.directions import ResidualDirections

    generator = torch.Generator().manual_seed(7)
    means = 3 * torch.randn(len(LANGS), resolve(model).num_layers, residual_width(model), generator=generator,
                            dtype=torch.float64)
    return ResidualDirections(list(LANGS), means, {"model": {"id": "tiny llama"}})


def _hand_steered_answers(model, tokenizer, questions, vector: torch.Tensor, layer: int) -> list[str]:
    """Answers with ``vector`` added by a hand-written hook to decoder layer ``layer``'s output, everywhere."""
    def add(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + vector, *output[1:])
        return output + vector

    handle = resolve(model).layers[layer].register_forward_hook(add)
    try:
        return generate_answers(model, tokenizer, questions, max_new_tokens=5)
    finally:
        handle.remove()


def test_a_direction_artifact_is_swept_over_layers_and_alphas(monkeypatch):
    """Each (layer, α, target) rate equals the rate of answers steered by a hand-made hook adding
    α · (m(tgt) − m(src)) / ‖m(tgt) − m(src)‖ at that layer, one source at a time."""
    monkeypatch.setattr(calibration_module, "forced", _judge)
    model, tokenizer = build_model("llama"), build_tokenizer()
    directions = _random_directions(model)
    targets, sources, alphas, layers = ["de", "fr"], ["en", "de"], [1.0, 6.0], [0, 1]
    result = sweep(model, tokenizer, {"dirs": directions}, targets=targets, sources=sources, alphas=alphas,
                   layers=layers, questions_per_source=2, max_new_tokens=5, batch_size=3, progress=False)
    assert [s.key for s in result.settings] == [f"dirs method=residual_diffmean positions=all layer={layer}"
                                                for layer in layers]
    questions = calibration_questions()
    for setting in result.settings:
        for target in targets:
            for alpha in alphas:
                hits = total = 0
                for source in sources:
                    if source == target:
                        continue
                    means = directions.means_table[:, setting.layer]
                    difference = means[LANGS.index(target)] - means[LANGS.index(source)]
                    vector = (alpha * difference / difference.norm()).to(torch.float32)
                    answers = _hand_steered_answers(model, tokenizer, questions[source][:2], vector, setting.layer)
                    hits += sum(_judge(answer, target) for answer in answers)
                    total += len(answers)
                assert result.rates[setting.key][target][f"{alpha:g}"] == pytest.approx(100.0 * hits / total), \
                    (setting, target, alpha)
    assert result.chosen.layer in layers and result.chosen.method == "residual_diffmean"


def test_cli_calibrates_a_direction_artifact_and_the_file_names_its_layer(tiny_model_dir, tmp_path):
    from lape_eval.steering.calibration import read_calibration

    model = build_model("llama")
    artifact = tmp_path / "dirs.safetensors"
    _random_directions(model).save(artifact)
    out = tmp_path / "calibration.json"
    result = CliRunner().invoke(cli, ["calibrate", "--model", str(tiny_model_dir("llama")), "--directions", str(artifact),
                                      "--layers", "0,1", "--targets", "de,fr", "--sources", "en,de", "--alphas", "1,4",
                                      "--questions", "1", "--max-new-tokens", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert [s["layer"] for s in written["settings"]] == [0, 1]
    assert written["chosen"]["neuron_set"] == str(artifact) and written["chosen"]["layer"] in (0, 1)
    read = read_calibration(out)
    assert read.chosen.layer == written["chosen"]["layer"] and read.language_alphas == written["language_alphas"]


@pytest.mark.parametrize("arguments, message", [
    (["--directions", "DIRS"], "give them with --layers"),
    (["--neurons", "gemma-3-270m-udhr-1pct", "--layers", "3"], "--layers applies to direction artifacts"),
    (["--directions", "DIRS", "--layers", "9"], "Layer 9 is out of range"),
    (["--directions", "DIRS", "--layers", "1", "--targets", "zh"], "has no language 'zh'"),
    ([], "at least one neuron set"),
])
def test_cli_refuses_bad_direction_sweeps_before_loading_the_model(tmp_path, monkeypatch, arguments, message):
    monkeypatch.setattr(calibration_module, "load_model", _no_model_load)
    artifact = tmp_path / "dirs.safetensors"
    _random_directions(build_model("llama")).save(artifact)
    arguments = [str(artifact) if a == "DIRS" else a for a in arguments]
    targets = [] if "--targets" in arguments else ["--targets", "de"]
    result = CliRunner().invoke(cli, ["calibrate", "--model", str(tmp_path / "absent"), *arguments, *targets,
                                      "--sources", "en", "--out", str(tmp_path / "c.json")])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "c.json").exists()
