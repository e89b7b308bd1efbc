"""The forcing experiment's plan: the preset `paper` against method spec §6.1, point by point."""

from __future__ import annotations

import json

import jinja2
import pytest
import torch

from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.data import load_forcing_grid
from lape_eval.experiments import forcing_plan as fp
from lape_eval.experiments.forcing_questions import load_questions
from lape_eval.steering.calibration import Calibration, Setting, write_calibration

# Method spec §6.1 (and §5 for the operators), written out by hand.
SPEC_6_1 = {
    "prompt": "Q: {question} \nA:",  # (space before the newline)
    "until": ["\nQ:", "\nA:"],  # plus EOS, which HFLM always adds
    "max_gen_toks": 256,
    "do_sample": False,  # greedy (temperature 0)
    "repetition_penalty": 1.1,
    "lid": "fasttext",  # fastText lid.176
    "alpha": "1.0",
    "deactivate_value": "0.0",  # c = 0 (2.2-generate.sh)
    "positions": "all",
    "method": "add",
    "english_questions": ["How are you today?", "What is your name?", "What year is it?",
                          "What is your favorite color?", "What is the weather like?", "Where are you from?"],
    # (condition, spec of de->fr, spec of the diagonal fr->fr); activate-only and deactivate + activate are the
    # paper's two modes, replacement (Tang) is g <- mu, with and without deactivating the prompt language.
    "conditions": {"baseline": (None, None), "act": ("+fr", "+fr"), "deact_act": ("-de +fr", "-fr +fr"),
                   "repl": ("-fr:0 +fr", "-fr:0 +fr"), "deact_repl": ("-de -fr:0 +fr", "-fr:0 +fr")},
}


def _load_task(path):
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=False)


def test_preset_paper_writes_the_protocol_of_section_6_1(tmp_path):
    settings = fp.paper_settings(sets=["gemma-3-270m-udhr-1pct"], languages=["de", "fr", "en"])
    paths = fp.write_task_configs(settings, tmp_path / "tasks")
    assert [p.stem for p in paths] == [f"lape_forcing_grid_{name}" for name in SPEC_6_1["conditions"]]
    for path in paths:
        task = _load_task(path)  # as lm-eval reads it: the bundled grid task with this condition's keys on top
        kwargs = task["generation_kwargs"]
        assert kwargs["until"] == SPEC_6_1["until"]
        assert kwargs["max_gen_toks"] == SPEC_6_1["max_gen_toks"]
        assert kwargs["do_sample"] is SPEC_6_1["do_sample"]
        assert kwargs["repetition_penalty"] == SPEC_6_1["repetition_penalty"]
        assert task["output_type"] == "generate_until"
        # The documents of the condition: every source x target, the diagonal included, with its spec.
        docs = load_forcing_grid(languages="de,fr", **task["metadata"], **task.get("dataset_kwargs", {}))["test"]
        # What the model is asked: the task's doc_to_text over each document, as lm-eval renders it.
        assert {jinja2.Template(task["doc_to_text"]).render(**d) for d in docs} == {
            SPEC_6_1["prompt"].format(question=d["question"]) for d in docs}
        cells = {(d["source_lang"], d["target_lang"]) for d in docs}
        assert cells == {("de", "de"), ("de", "fr"), ("fr", "de"), ("fr", "fr")}
        expected_off, expected_diag = SPEC_6_1["conditions"][task["metadata"]["condition"]]
        spec = {(d["source_lang"], d["target_lang"]): d.get("steer") for d in docs}
        assert spec[("de", "fr")] == expected_off and spec[("fr", "fr")] == expected_diag

    runs = fp.planned_runs(settings)
    assert [(r.name, r.conditions) for r in runs] == [
        ("baseline", ("baseline",)),
        ("gemma-3-270m-udhr-1pct", ("act", "deact_act", "repl", "deact_repl"))]  # one model load for the set
    questions = load_questions(settings.questions, settings.languages)
    assert [row["en"] for row in questions.rows] == SPEC_6_1["english_questions"]
    argv = fp.lm_eval_arguments(settings, runs[1], tmp_path, questions.write(tmp_path / "q.jsonl"))
    model_args = dict(item.split("=", 1) for item in argv[argv.index("--model_args") + 1].split(","))
    for key in ("alpha", "deactivate_value", "positions", "method"):
        assert model_args[key] == SPEC_6_1[key], key
    assert model_args["steer"] == "doc" and model_args["neurons"] == "gemma-3-270m-udhr-1pct"
    assert "language_alphas" not in model_args
    assert json.loads(argv[argv.index("--metadata") + 1])["languages"] == "de,fr,en"
    assert "--log_samples" in argv and "--limit" not in argv
    assert fp.lid_environment(settings) == {"LAPE_EVAL_LID_BACKEND": SPEC_6_1["lid"]}
    base_args = fp.lm_eval_arguments(settings, runs[0], tmp_path, tmp_path / "q.jsonl")
    assert "neurons=" not in base_args[base_args.index("--model_args") + 1]


def test_every_preset_setting_can_be_overridden(tmp_path):
    settings = fp.paper_settings(sets=["a.safetensors"], max_gen_toks=16, lid="cld2", alpha=2.0, positions="answer",
                                 conditions=["baseline", "deact_act"], languages=["en", "de"])
    task = _load_task(fp.write_task_configs(settings, tmp_path)[0])
    assert task["generation_kwargs"]["max_gen_toks"] == 16
    assert fp.lid_environment(settings) == {"LAPE_EVAL_LID_BACKEND": "cld2"}
    assert [r.conditions for r in fp.planned_runs(settings)] == [("baseline",), ("deact_act",)]
    with pytest.raises(LapeEvalError, match="--sets"):
        fp.paper_settings(languages=["en"])
    with pytest.raises(LapeEvalError, match="Unknown condition"):
        fp.paper_settings(sets=["x"], conditions=["act", "swap"])


def test_preset_calibrated_takes_the_calibration_files_settings(tmp_path):
    calibration = Calibration([Setting("gemma-3-270m-udhr-5pct", "diffmean", "answer")], ["en"], ["de"], [1.0, 2.0], 8,
                              rates={"gemma-3-270m-udhr-5pct method=diffmean positions=answer": {"de": {"1": 10.0, "2": 50.0}}})
    calibration.choose()
    path = tmp_path / "calibration.json"
    write_calibration(path, calibration)
    settings = fp.calibrated_settings(str(path), languages=["en", "de"])
    assert (settings.sets, settings.method, settings.positions) == (["gemma-3-270m-udhr-5pct"], "diffmean", "answer")
    assert settings.language_alphas == str(path) and settings.max_gen_toks == 32
    runs = fp.planned_runs(settings)
    # The activations use the calibrated operator; replacement stays "zero, then add α·μ": two model loads.
    assert [(r.name, r.method, r.conditions) for r in runs] == [
        ("baseline", "add", ("baseline",)),
        ("gemma-3-270m-udhr-5pct-diffmean", "diffmean", ("act", "deact_act")),
        ("gemma-3-270m-udhr-5pct-add", "add", ("repl", "deact_repl"))]
    argv = fp.lm_eval_arguments(settings, runs[1], tmp_path, tmp_path / "q.jsonl")
    assert f"language_alphas={path}" in argv[argv.index("--model_args") + 1]


def test_replacement_written_as_zero_then_add_equals_the_replace_operator():
    from handmade_sets import make_set
    from tiny_models import build_model

    from lape_eval.steering.hooks import steer

    model = build_model("llama").eval()
    neuron_set = make_set(model.config.intermediate_size, model.config.num_hidden_layers)
    ids = torch.tensor([[5, 17, 33, 2, 8, 41]])
    with torch.no_grad():
        with steer(model, neuron_set, "+de", method="replace"):
            replaced = model(ids).logits
        with steer(model, neuron_set, "-de:0 +de", method="add", deactivate_value=-1.0):
            written = model(ids).logits
        with steer(model, neuron_set, "-en +de", method="replace", deactivate_value=-1.0):
            replaced_deact = model(ids).logits
        with steer(model, neuron_set, "-en -de:0 +de", method="add", deactivate_value=-1.0):
            written_deact = model(ids).logits
        plain = model(ids).logits
    # Exact: 0 + 1.0·μ is μ in floating point, so both write the same g.
    assert torch.equal(replaced, written) and torch.equal(replaced_deact, written_deact)
    assert not torch.equal(replaced, plain) and not torch.equal(replaced, replaced_deact)
