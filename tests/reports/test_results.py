"""Reading lm-eval runs: labels and identities from the recorded configs, and clear errors for what
is not a finished lm-eval run."""

from __future__ import annotations

import shutil

import pytest

from recorded_runs import RUNS, invoke, runs


class TestLabels:
    def test_labels_from_the_recorded_config(self):
        from lape_eval.reports.results import load_runs

        loaded = load_runs(runs())
        assert [r.label for r in loaded] == ["base", "-en +de", "+fr", "+en", "peft:lora-de"]
        steered = loaded[1].identity
        assert steered.model == "tiny-llama" and steered.lm == "lape" and steered.adapter is None
        assert steered.neuron_set.startswith("tiny-llama-udhr-25pct@") and dict(steered.steer_options)["alpha"] == 8.0
        assert loaded[4].identity.adapter == "lora-de"

    def test_labels_show_what_differs(self):
        from lape_eval.reports.results import load_runs

        loaded = load_runs(runs("fallback-0", "grid", "fallback-1"))
        assert [r.label for r in loaded] == ["base", "per-doc", "-en"]

    def test_identity_from_a_command_line_model_args_string(self):
        from lape_eval.reports.results import identify_run

        identity = identify_run({"config": {"model": "lape", "model_args":
                                            "pretrained=/data/models/Llama-3.1-8B,neurons=sets/llama-1pct.safetensors,"
                                            "steer=-en +zh,method=diffmean,peft=/ckpt/lora-zh/"}})
        assert (identity.model, identity.steer, identity.neuron_set, identity.adapter) == \
            ("Llama-3.1-8B", "-en +zh", "llama-1pct", "lora-zh")
        assert dict(identity.steer_options)["method"] == "diffmean"
        hub = identify_run({"config": {"model": "steered", "model_args": {"pretrained": "google/gemma-3-270m",
                                                                          "steer_path": "/x/steer.pt"}}})
        assert (hub.model, hub.steer) == ("google/gemma-3-270m", "steered:steer.pt")


class TestBadRuns:
    def test_folder_without_results(self, tmp_path):
        (tmp_path / "empty").mkdir()
        out = invoke("table", tmp_path / "empty", expect=2).output
        assert "No lm-eval results in the folder" in out and "Traceback" not in out

    def test_missing_path(self, tmp_path):
        assert "No such file or folder" in invoke("table", tmp_path / "nope", expect=2).output

    @pytest.mark.parametrize("content", ['{"accuracy": 0.5, "model": "x"}', "[1, 2, 3]",
                                        '{"results": {"t": 0.5}, "config": {}}', "not json at all"])
    def test_results_file_from_another_tool(self, tmp_path, content):
        path = tmp_path / "results_2024-01-01T00-00-00.json"
        path.write_text(content, encoding="utf-8")
        assert "is not an lm-eval results file" in invoke("table", path, expect=2).output

    def test_wrong_number_of_labels(self):
        assert "one --label per run" in invoke("table", *runs("base", "lora"), "--label", "x", expect=2).output

    def test_damaged_sample_file(self, tmp_path):
        for name in ("base", "lora"):
            shutil.copytree(RUNS / name, tmp_path / name)
        sample = next((tmp_path / "lora").rglob("samples_rep_mc_en_*.jsonl"))
        sample.write_text(sample.read_text(encoding="utf-8")[:200], encoding="utf-8")
        out = invoke("table", tmp_path / "base", tmp_path / "lora", "--baseline", "base", expect=2).output
        assert "is damaged at line 1" in out
