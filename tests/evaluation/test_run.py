"""`lape-eval run`: lm-eval's command line with lape-eval's tasks indexed, and bad input refused before a model loads."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from lm_eval.tasks import TaskManager

from lm_tasks import write_tasks
from lape_eval.cli import cli
from lape_eval.evaluation.run import index_task_folder


@pytest.fixture
def restored_task_manager(monkeypatch):
    """Undo index_task_folder's patch of TaskManager.__init__ after the test."""
    monkeypatch.setattr(TaskManager, "__init__", TaskManager.__init__)


def test_indexed_folders_add_to_the_users_include_path(tmp_path, restored_task_manager):
    ours = write_tasks(tmp_path / "ours")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "their_task.yaml").write_text((ours / "tiny_mc.yaml").read_text().replace("tiny_mc", "their_task"))
    index_task_folder(ours)
    known = set(TaskManager(include_path=str(theirs), include_defaults=False).all_tasks)
    assert {"tiny_mc", "tiny_gen", "tiny_grid", "their_task"} <= known
    assert {"tiny_mc", "tiny_gen", "tiny_grid"} <= set(TaskManager(include_defaults=False).all_tasks)


def _no_model_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the inputs were checked")


@pytest.mark.parametrize("arguments, message", [
    (["--model", "hf", "--model_args", "pretrained=unused", "--tasks", "lape_udhr_translation_en-xx"],
     "Unknown language code 'xx'"),
    (["--model", "lape", "--model_args", "pretrained=unused,neurons=no-such-set,steer=+de", "--tasks", "lape_forcing_de"],
     "No neuron set 'no-such-set'"),
    (["--model", "lape", "--model_args", "pretrained=unused,steer=+de", "--tasks", "lape_forcing_de"],
     "steer= needs a neuron set"),
    (["--model", "lape", "--model_args", "pretrained=unused,neurons=gemma-3-270m-udhr-1pct,steer=+de,method=boost",
      "--tasks", "lape_forcing_de"], "Unknown steering method 'boost'"),
])
def test_bad_input_fails_before_a_model_loads_and_writes_nothing(tmp_path, monkeypatch, restored_task_manager,
                                                                 arguments, message):
    from lm_eval.models.huggingface import HFLM

    monkeypatch.setattr(HFLM, "__init__", _no_model_load)
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, ["run", *arguments, "--device", "cpu", "--output_path", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()
