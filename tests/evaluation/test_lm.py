"""The ``lape`` lm-eval model: identical to ``hf`` without steering, identical to ``steered`` for
additive specs, per-document grids, and the stock ``lm_eval`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from handmade_sets import make_set
from lm_tasks import GRID_ROWS, evaluate, loglikelihoods, responses, write_tasks

import lape_eval.evaluation.lm  # noqa: F401  registers the model

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    from lm_eval.tasks import TaskManager

    folder = write_tasks(tmp_path_factory.mktemp("tasks"))
    return TaskManager(include_path=str(folder), include_defaults=False)


@pytest.fixture(scope="module")
def neurons(tmp_path_factory):
    path = tmp_path_factory.mktemp("sets") / "tiny.safetensors"
    make_set(width=96).save(path)
    return str(path)


def test_without_steering_lape_equals_hf_exactly(tasks, tiny_model_dir, neurons):
    args = {"pretrained": str(tiny_model_dir("llama"))}
    hf = evaluate("hf", args, ["tiny_mc", "tiny_gen"], tasks)
    lape = evaluate("lape", {**args, "neurons": neurons}, ["tiny_mc", "tiny_gen"], tasks)
    for task in ("tiny_mc", "tiny_gen"):
        assert responses(lape, task) == responses(hf, task)
    assert lape["config"]["lape"]["steer"] == "none"


def _lora_adapter(model_dir, out):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "gate_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("with_peft", [False, True])
@pytest.mark.parametrize("text, method", [("+de", "add"), ("+de +fr:0.5", "add"), ("+fr", "diffmean")])
def test_additive_steering_equals_the_builtin_steered_model(tasks, tiny_model_dir, neurons, tmp_path, with_peft,
                                                             text, method):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lape_eval.neurons.neuron_set import NeuronSet
    from lape_eval.steering.export import save_steered
    from lape_eval.steering.spec import parse_steer

    model_dir = str(tiny_model_dir("llama"))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    extra = {}
    if with_peft:
        extra["peft"] = _lora_adapter(model_dir, tmp_path / "lora")
        model = PeftModel.from_pretrained(model, extra["peft"])
    spec = parse_steer(text, method=method, alpha=3.0)
    steer_path = save_steered(model, NeuronSet.load(neurons), spec, tmp_path / "steer.pt")
    stock = evaluate("steered", {"pretrained": model_dir, "steer_path": str(steer_path), **extra}, ["tiny_mc"], tasks)
    lape = evaluate("lape", {"pretrained": model_dir, "neurons": neurons, "steer": text, "method": method,
                             "alpha": 3.0, **extra}, ["tiny_mc"], tasks)
    plain = evaluate("hf", {"pretrained": model_dir, **extra}, ["tiny_mc"], tasks)
    # Both add the same float32 values α·μ (α·(μ - mean of the others) for diffmean) to g at the same
    # module, lm-eval's steered model as a vector that is 0.0 elsewhere; no two terms add to one neuron.
    # The same computation, so bit-identical (measured under scalar, AVX2 and AVX-512 kernels).
    assert torch.equal(loglikelihoods(lape, "tiny_mc"), loglikelihoods(stock, "tiny_mc"))
    assert (loglikelihoods(lape, "tiny_mc") - loglikelihoods(plain, "tiny_mc")).abs().max() > 1e-3


def test_per_document_grid_equals_separate_runs_per_cell(tasks, tiny_model_dir, neurons):
    args = {"pretrained": str(tiny_model_dir("llama")), "neurons": neurons, "alpha": 8.0}
    grid = evaluate("lape", {**args, "steer": "doc"}, ["tiny_grid"], tasks, batch_size=1)
    outputs = responses(grid, "tiny_grid")
    assert grid["config"]["lape"]["steer"] == "doc"
    seen = set()
    for doc_id, row in enumerate(GRID_ROWS):
        spec = f"-{row['source_lang']} +{row['target_lang']}"
        single = evaluate("lape", {**args, "steer": spec}, ["tiny_grid"], tasks, batch_size=1)
        assert responses(single, "tiny_grid")[doc_id] == outputs[doc_id], spec
        seen.add(outputs[doc_id][0][0])
    assert len(seen) > 1, "steering should change some generations"


def test_results_record_the_steer_spec_and_the_neuron_set_hash(tasks, tiny_model_dir, neurons):
    from lape_eval.neurons.neuron_set import NeuronSet

    result = evaluate("lape", {"pretrained": str(tiny_model_dir("llama")), "neurons": neurons, "steer": "-en +de",
                               "alpha": 2.0}, ["tiny_mc"], tasks)
    recorded = result["config"]["lape"]
    assert recorded["steer"] == "-en +de" and recorded["alpha"] == 2.0 and recorded["method"] == "add"
    assert recorded["neuron_set"]["content_hash"] == NeuronSet.load(neurons).content_hash


class TestBadModelArgs:
    @pytest.mark.parametrize(
        "args, message",
        [
            ({"steer": "+de"}, "steer= needs a neuron set"),
            ({"steer": "+zh"}, "no neurons for 'zh'"),
            ({"steer": "+xx"}, "Unknown language code 'xx'"),
            ({"steer": "de"}, "a language needs a sign"),
            ({"steer": "+de", "method": "boost"}, "Unknown steering method"),
            ({"steer": "+de", "positions": "end"}, "Unknown positions"),
            ({"steer": "+de", "alpha": -2}, "alpha must be ≥ 0"),
            ({"steer": "+de", "alpha": "lots"}, "alpha must be a number"),
            ({"neurons": "no-such-set"}, "No neuron set 'no-such-set'"),
        ],
    )
    def test_errors_come_before_the_model_loads(self, args, message, neurons, monkeypatch):
        from lm_eval.models.huggingface import HFLM

        from lape_eval.errors import LapeEvalError
        from lape_eval.evaluation.lm import LapeLM

        def no_model_load(*a, **k):
            raise AssertionError("the model was loaded before the arguments were checked")

        monkeypatch.setattr(HFLM, "__init__", no_model_load)
        kwargs = {"neurons": neurons, **args} if "steer" in args and args != {"steer": "+de"} else args
        with pytest.raises(LapeEvalError, match=message):
            LapeLM(pretrained="unused", **kwargs)

    def test_neuron_set_of_another_shape(self, tiny_model_dir, tmp_path):
        from lape_eval.errors import LapeEvalError
        from lape_eval.evaluation.lm import LapeLM

        path = tmp_path / "wide.safetensors"
        make_set(width=4096).save(path)
        with pytest.raises(LapeEvalError, match="4096 neurons"):
            LapeLM(pretrained=str(tiny_model_dir("llama")), neurons=str(path), steer="+de", device="cpu")


def _lm_eval_cli(executable, model, model_args, include_path, out):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [executable, "--model", model, "--model_args", model_args, "--tasks", "tiny_mc",
               "--include_path", str(include_path), "--device", "cpu", "--batch_size", "2", "--output_path", str(out)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def _bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def test_stock_lm_eval_command_finds_lape_and_keeps_hf(tmp_path, tiny_model_dir, neurons):
    folder = write_tasks(tmp_path / "tasks")
    model = tiny_model_dir("llama")
    steered = _lm_eval_cli(_bin("lm_eval"), "lape", f"pretrained={model},neurons={neurons},steer=-en +de,dtype=float32",
                           folder, tmp_path / "lape")
    assert steered.returncode == 0, steered.stderr[-3000:]
    assert "tiny_mc" in steered.stdout
    results = json.loads(next((tmp_path / "lape").rglob("results_*.json")).read_text())
    assert results["config"]["lape"]["steer"] == "-en +de"
    plain = _lm_eval_cli(_bin("lm_eval"), "hf", f"pretrained={model},dtype=float32", folder, tmp_path / "hf")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "tiny_mc" in plain.stdout


def test_lape_eval_run_passes_through_to_lm_eval(tmp_path, tiny_model_dir, neurons):
    folder = write_tasks(tmp_path / "tasks")
    command = [_bin("lape-eval"), "run", "--model", "lape", "--model_args",
               f"pretrained={tiny_model_dir('llama')},neurons={neurons},steer=+fr,dtype=float32", "--tasks", "tiny_mc",
               "--include_path", str(folder), "--device", "cpu", "--batch_size", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tiny_mc" in result.stdout


def test_identical_greedy_requests_are_generated_once(tasks, tiny_model_dir, neurons, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    calls = []
    original = HFLM.generate_until

    def counting(self, requests, disable_tqdm=False):
        calls.append(len(requests))
        return original(self, requests, disable_tqdm=disable_tqdm)

    monkeypatch.setattr(HFLM, "generate_until", counting)
    result = evaluate("lape", {"pretrained": str(tiny_model_dir("llama")), "neurons": neurons}, ["tiny_grid"], tasks)
    assert calls == [2]  # 6 documents, 2 distinct questions, one spec (unsteered)
    by_question = {}
    for sample in result["samples"]["tiny_grid"]:
        by_question.setdefault(sample["doc"]["question"], set()).add(sample["resps"][0][0])
    assert all(len(answers) == 1 for answers in by_question.values())


@pytest.mark.parametrize("for_peft", [False, True])
def test_export_steered_command_matches_the_vectors_of_the_loaded_model(tmp_path, tiny_model_dir, neurons, for_peft):
    from click.testing import CliRunner
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lape_eval.cli import cli
    from lape_eval.neurons.neuron_set import NeuronSet
    from lape_eval.steering.export import steered_vectors
    from lape_eval.steering.spec import parse_steer

    model_dir = str(tiny_model_dir("llama"))
    out = tmp_path / "steer.pt"
    args = ["export-steered", neurons, "--model", model_dir, "--steer", "+de +fr:0.5", "--alpha", "2", "--out", str(out)]
    result = CliRunner().invoke(cli, args + (["--peft"] if for_peft else []))
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if for_peft:
        model = PeftModel.from_pretrained(model, _lora_adapter(model_dir, tmp_path / "lora"))
    expected = steered_vectors(model, NeuronSet.load(neurons), parse_steer("+de +fr:0.5", alpha=2.0))
    written = torch.load(out, weights_only=True)
    assert sorted(written) == sorted(expected)
    for name in expected:
        assert torch.equal(written[name]["steering_vector"], expected[name]["steering_vector"])
    refused = CliRunner().invoke(cli, ["export-steered", neurons, "--model", model_dir, "--steer", "-en +de",
                                       "--out", str(tmp_path / "x.pt")])
    assert refused.exit_code == 2 and "purely additive" in refused.output
