"""The ``lape`` model with method=residual_diffmean: identical log-likelihoods to lm-eval's built-in
``steered`` model on the file `export-steered` writes, per-document grids, provenance and bad arguments."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from handmade_sets import make_directions
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
def directions(tmp_path_factory):
    path = tmp_path_factory.mktemp("directions") / "tiny.safetensors"
    make_directions().save(path)
    return str(path)


@pytest.mark.parametrize("spec, layer, strength", [
    ("-en +de", 1, ["--alpha", "4"]),
    ("+fr", 0, ["--language-alphas", "fr:3 de:1"]),
])
def test_lape_equals_the_builtin_steered_model_on_the_exported_file(tasks, tiny_model_dir, directions, tmp_path,
                                                                    spec, layer, strength):
    from lape_eval.cli import cli

    model_dir = str(tiny_model_dir("llama"))
    out = tmp_path / "steer.pt"
    written = CliRunner().invoke(cli, ["export-steered", directions, "--model", model_dir, "--method",
                                       "residual_diffmean", "--steer", spec, "--layer", str(layer), *strength,
                                       "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert list(torch.load(out, weights_only=True)) == [f"layers.{layer}"]  # the decoder layer's output
    stock = evaluate("steered", {"pretrained": model_dir, "steer_path": str(out)}, ["tiny_mc"], tasks)
    args = {"alpha": 4.0} if strength[0] == "--alpha" else {"language_alphas": strength[1]}
    lape = evaluate("lape", {"pretrained": model_dir, "directions": directions, "layer": layer,
                             "method": "residual_diffmean", "steer": spec, **args}, ["tiny_mc"], tasks)
    plain = evaluate("hf", {"pretrained": model_dir}, ["tiny_mc"], tasks)
    # Both add the same float32 vector to the same layer's output at every position.
    assert (loglikelihoods(lape, "tiny_mc") - loglikelihoods(stock, "tiny_mc")).abs().max() <= 1e-5
    assert (loglikelihoods(lape, "tiny_mc") - loglikelihoods(plain, "tiny_mc")).abs().max() > 1e-3


def test_per_document_grid_equals_separate_runs_per_cell(tasks, tiny_model_dir, directions):
    args = {"pretrained": str(tiny_model_dir("llama")), "directions": directions, "layer": 1,
            "method": "residual_diffmean", "alpha": 8.0}
    grid = evaluate("lape", {**args, "steer": "doc"}, ["tiny_grid"], tasks, batch_size=4)
    outputs = responses(grid, "tiny_grid")
    seen = set()
    for doc_id, row in enumerate(GRID_ROWS):
        spec = f"-{row['source_lang']} +{row['target_lang']}"
        single = evaluate("lape", {**args, "steer": spec}, ["tiny_grid"], tasks, batch_size=1)
        assert responses(single, "tiny_grid")[doc_id] == outputs[doc_id], spec
        seen.add(outputs[doc_id][0][0])
    assert len(seen) > 1, "steering should change some generations"


def test_results_record_the_artifact_hash_and_the_layer(tasks, tiny_model_dir, directions):
    from lape_eval.neurons.directions import ResidualDirections

    result = evaluate("lape", {"pretrained": str(tiny_model_dir("llama")), "directions": directions, "layer": 1,
                               "method": "residual_diffmean", "steer": "-en +de"}, ["tiny_mc"], tasks)
    recorded = result["config"]["lape"]
    assert recorded["method"] == "residual_diffmean" and recorded["steer"] == "-en +de"
    assert recorded["directions"]["content_hash"] == ResidualDirections.load(directions).content_hash
    assert recorded["directions"]["layer"] == 1


class TestBadModelArgs:
    @pytest.mark.parametrize("args, message", [
        ({"method": "residual_diffmean", "steer": "-en +de"}, "give directions=PATH .* and layer=N"),
        ({"method": "residual_diffmean", "steer": "-en +de", "layer": 1}, "give directions=PATH"),
        ({"steer": "-en +de", "layer": 1, "directions": "D"}, "used by method=residual_diffmean only"),
        ({"method": "residual_diffmean", "steer": "-en +de", "layer": 1, "directions": "D", "neurons": "x"},
         "drop neurons="),
        ({"method": "residual_diffmean", "steer": "-en +zh", "layer": 1, "directions": "D"}, "no language 'zh'"),
        ({"method": "residual_diffmean", "steer": "-en +de", "layer": 2, "directions": "D"}, "Layer 2 is out of range"),
        ({"method": "residual_diffmean", "steer": "-en +de", "layer": "top", "directions": "D"}, "whole number"),
        ({"method": "residual_diffmean", "steer": "+de +fr", "layer": 0, "directions": "D"}, "one '\\+' term"),
        ({"method": "residual_diffmean", "steer": "-en +de", "layer": 0, "directions": "absent.safetensors"},
         "does not exist"),
    ])
    def test_errors_come_before_the_model_loads(self, args, message, directions, monkeypatch):
        from lm_eval.models.huggingface import HFLM

        from lape_eval.errors import LapeEvalError
        from lape_eval.evaluation.lm import LapeLM

        def no_model_load(*a, **k):
            raise AssertionError("the model was loaded before the arguments were checked")

        monkeypatch.setattr(HFLM, "__init__", no_model_load)
        args = {key: directions if value == "D" else value for key, value in args.items()}
        with pytest.raises(LapeEvalError, match=message):
            LapeLM(pretrained="unused", **args)

    def test_an_artifact_of_another_model(self, tiny_model_dir, tmp_path):
        from lape_eval.errors import LapeEvalError
        from lape_eval.evaluation.lm import LapeLM

        path = tmp_path / "wide.safetensors"
        make_directions(hidden_size=64).save(path)
        with pytest.raises(LapeEvalError, match="hidden size 64 .*the model has 2 layers × hidden size 32"):
            LapeLM(pretrained=str(tiny_model_dir("llama")), directions=str(path), layer=0,
                   method="residual_diffmean", steer="-en +de", device="cpu")


def test_export_checks_its_inputs_before_reading_the_model(tmp_path, directions, monkeypatch):
    import lape_eval.steering.export as export_module
    from lape_eval.cli import cli

    def no_model_read(*args, **kwargs):
        raise AssertionError("the model was read before the inputs were checked")

    monkeypatch.setattr(export_module, "load_meta_model", no_model_read)
    base = ["export-steered", directions, "--model", str(tmp_path / "absent"), "--method", "residual_diffmean",
            "--out", str(tmp_path / "s.pt")]
    for extra, message in ([["--steer", "-en +de"], "give --layer N"],
                           [["--steer", "-en +de", "--layer", "5"], "Layer 5 is out of range"],
                           [["--steer", "-en +xx", "--layer", "0"], "Unknown language code 'xx'"]):
        result = CliRunner().invoke(cli, [*base, *extra])
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s.pt").exists()
