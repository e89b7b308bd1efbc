"""Fixtures of the adapter tests: a small corpus folder, the hand-made neuron set, the lm_eval tasks."""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_runs import WIDTH
from handmade_sets import make_set
from tiny_models import CORPUS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for lang, sentences in CORPUS.items():
        (folder / f"{lang}.txt").write_text("\n\n".join(sentences * 8), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def neurons(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sets") / "tiny.safetensors"
    make_set(width=WIDTH).save(path)
    return path


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    from lm_eval.tasks import TaskManager
    from lm_tasks import write_tasks

    folder = write_tasks(tmp_path_factory.mktemp("tasks"))
    return TaskManager(include_path=str(folder), include_defaults=False)
