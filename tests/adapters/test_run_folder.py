"""The run folder: looking at it writes nothing; it resumes only the same run."""

from __future__ import annotations

import json

import pytest
from adapter_runs import files_under

from lape_eval.adapters.run_folder import RunFolder
from lape_eval.errors import LapeEvalError


def test_a_folder_is_judged_without_writing_and_recorded_on_start(tmp_path):
    identity = {"method": "lora", "lr": 0.0001}
    folder = RunFolder(tmp_path / "run")
    assert folder.state(identity) == "new" and not (tmp_path / "run").exists()
    folder.start(identity, "new")
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["format"] == "lape-eval/finetune-run" and recorded["identity"] == identity
    assert folder.state(identity) == "new"  # recorded, but no checkpoint yet
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    assert folder.state(identity) == "resume"
    (tmp_path / "run" / "summary.json").write_text("{}")
    assert folder.state(identity) == "finished"
    before = files_under(tmp_path)
    with pytest.raises(LapeEvalError, match=r"holds another fine-tuning run \(lr: 0.0001 there, 0.5 now\)"):
        folder.state({**identity, "lr": 0.5})
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(LapeEvalError, match="is not empty and holds no run.json"):
        RunFolder(other).state(identity)
    assert files_under(tmp_path) == sorted(before + ["other", "other/notes.txt"])


def test_a_resumed_log_keeps_each_step_once(tmp_path):
    folder = RunFolder(tmp_path)
    for step in range(1, 6):
        folder.log({"step": step, "loss": 1.0})
    folder.truncate_log(3)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    folder.start({"method": "lora"}, "new")  # a new run drops the log of one stopped before its first checkpoint
    assert not (tmp_path / "log.jsonl").exists()
