"""The committed report fixtures (tests/data/report_runs) are what tests/data/make_report_fixtures.py
writes: re-run two of its runs (the neuron set, an unsteered and a steered run) and compare."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

DATA = Path(__file__).parents[1] / "data"
COMMITTED = DATA / "report_runs"


def _script():
    spec = importlib.util.spec_from_file_location("make_report_fixtures", DATA / "make_report_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(folder: Path) -> dict:
    files = list(folder.rglob("results_*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text(encoding="utf-8"))


def _samples(folder: Path) -> dict[str, list[dict]]:
    out = {}
    for path in folder.rglob("samples_*.jsonl"):
        task = path.name[len("samples_"):].rsplit("_", 1)[0]
        out[task] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return out


def _same_numbers(a, b, where: str) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same_numbers(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_numbers(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_the_script_reproduces_the_committed_fixtures(tmp_path):
    from lape_eval.neurons.neuron_set import NeuronSet

    names = ["base", "minus-en-plus-de"]
    made = _script().make_fixtures(tmp_path, names)
    hint = "regenerate with: .venv/bin/python tests/data/make_report_fixtures.py"
    assert NeuronSet.load(tmp_path / "tiny-llama-udhr-25pct.safetensors").content_hash == \
        NeuronSet.load(COMMITTED / "tiny-llama-udhr-25pct.safetensors").content_hash, hint
    for name in names:
        new, old = _results(made[name]), _results(COMMITTED / name)
        for section in ("results", "groups", "group_subtasks", "n-samples", "higher_is_better", "versions"):
            _same_numbers(new.get(section), old.get(section), f"{name}:{section}")
        assert new["config"].get("lape") == old["config"].get("lape") and new["config"]["model_args"] == old["config"]["model_args"]
        new_samples, old_samples = _samples(made[name]), _samples(COMMITTED / name)
        assert new_samples.keys() == old_samples.keys()
        for task in new_samples:
            strip = lambda records: [{k: v for k, v in r.items() if k not in ("resps",)} for r in records]  # noqa: E731
            _same_numbers(strip(new_samples[task]), strip(old_samples[task]), f"{name}:{task}")


@pytest.mark.parametrize("name", ["base", "grid", "fallback-11"])
def test_fixtures_are_plain_lm_eval_output(name):
    data = _results(COMMITTED / name)
    assert data["lm_eval_version"] and data["config"]["model_args"]["pretrained"] == "tiny-llama"
    assert "pretty_env_info" not in data  # the one key the script drops
    assert not any(str(value).startswith("/") for value in data["config"]["model_args"].values())
