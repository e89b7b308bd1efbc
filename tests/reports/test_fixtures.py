"""The committed report fixtures (tests/data/report_runs) are what tests/data/make_report_fixtures.py
writes: re-run two of its runs (the neuron set, an unsteered and a steered run) and compare."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

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


# Log-likelihoods (lm-eval writes them into the samples as strings) are float32 sums over the
# continuation's tokens of log-softmax values over the vocabulary; another CPU's kernels (scalar, AVX2,
# AVX-512) sum in another order, so they may differ in the last bits: measured up to 2.9e-7 relative
# between the three. 1e-5 relative is ~170 units in the last place (u = 2^-24 ≈ 6e-8): the bound of a
# float32 reduction over the 96-wide MLP, far below any change of the model or the steering (which
# moves them by whole units). Everything else (metrics, which come from argmax decisions and
# generated text; prompts; targets; counts) must be identical.
LOGLIKELIHOOD_RTOL = 1e-5


def _as_float(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _same_numbers(a, b, where: str, rel_tol: float = 1e-9) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same_numbers(a[key], b[key], f"{where}.{key}", rel_tol)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_numbers(x, y, f"{where}[{i}]", rel_tol)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _same_responses(a, b, where: str) -> None:
    """``resps`` / ``filtered_resps``: log-likelihood strings within LOGLIKELIHOOD_RTOL, text exactly."""
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_responses(x, y, f"{where}[{i}]")
    elif _as_float(a) is not None and _as_float(b) is not None and not isinstance(a, bool):
        assert math.isclose(_as_float(a), _as_float(b), rel_tol=LOGLIKELIHOOD_RTOL), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# A regenerated neuron set: indices, languages and metadata are exact (the selection is made from
# integer counts of g > 0; its thresholds are quantiles of probabilities of those counts). The mean
# activations μ are float32 means of float32 activations: each activation passes through float32
# matrix products whose reduction order depends on the CPU's kernels, bounded by n·u relative with n
# = 96 (the widest reduction, the MLP width) ≈ 6e-6; 2e-5 relative (plus 1e-6 absolute for means near
# zero) covers that. Measured: ≤ 4.2e-7 absolute on means of magnitude ≤ 1.45 (scalar kernels).
# The content hash hashes the float bytes, so it is compared only for the committed file that is read.
MEANS_RTOL, MEANS_ATOL = 2e-5, 1e-6


def _same_neuron_set(new, old) -> None:
    assert new.languages == old.languages and new.shape == old.shape
    assert torch.equal(new.selected, old.selected)
    for lang in old.languages:
        assert torch.equal(new.flat_indices(lang), old.flat_indices(lang)), lang
    torch.testing.assert_close(new.means_table, old.means_table, rtol=MEANS_RTOL, atol=MEANS_ATOL)
    assert new.info == old.info


def _without_set_hash(lape_config: dict | None, neuron_set) -> dict | None:
    if not lape_config or "neuron_set" not in lape_config:
        return lape_config
    recorded = dict(lape_config["neuron_set"])
    assert recorded.pop("content_hash") == neuron_set.content_hash
    return {**lape_config, "neuron_set": recorded}


def test_the_script_reproduces_the_committed_fixtures(tmp_path):
    from lape_eval.neurons.neuron_set import NeuronSet

    names = ["base", "minus-en-plus-de"]
    made = _script().make_fixtures(tmp_path, names)
    hint = "regenerate with: .venv/bin/python tests/data/make_report_fixtures.py"
    committed = NeuronSet.load(COMMITTED / "tiny-llama-udhr-25pct.safetensors")  # a read file: hash checked
    regenerated = NeuronSet.load(tmp_path / "tiny-llama-udhr-25pct.safetensors")
    _same_neuron_set(regenerated, committed)
    for name in names:
        new, old = _results(made[name]), _results(COMMITTED / name)
        for section in ("results", "groups", "group_subtasks", "n-samples", "higher_is_better", "versions"):
            _same_numbers(new.get(section), old.get(section), f"{name}:{section}")
        assert new["config"]["model_args"] == old["config"]["model_args"], hint
        # A steered run records the hash of the set it used: each run names its own set, the rest is equal.
        new_lape, old_lape = _without_set_hash(new["config"].get("lape"), regenerated), \
            _without_set_hash(old["config"].get("lape"), committed)
        assert new_lape == old_lape, hint
        new_samples, old_samples = _samples(made[name]), _samples(COMMITTED / name)
        assert new_samples.keys() == old_samples.keys()
        for task in new_samples:
            assert len(new_samples[task]) == len(old_samples[task]), task
            for i, (n, o) in enumerate(zip(new_samples[task], old_samples[task])):
                where = f"{name}:{task}[{i}]"
                assert n.keys() == o.keys(), where
                for key in n:
                    if key in ("resps", "filtered_resps"):
                        _same_responses(n[key], o[key], f"{where}.{key}")
                    else:
                        _same_numbers(n[key], o[key], f"{where}.{key}")


@pytest.mark.parametrize("name", ["base", "grid", "fallback-11"])
def test_fixtures_are_plain_lm_eval_output(name):
    data = _results(COMMITTED / name)
    assert data["lm_eval_version"] and data["config"]["model_args"]["pretrained"] == "tiny-llama"
    assert "pretty_env_info" not in data  # the one key the script drops
    assert not any(str(value).startswith("/") for value in data["config"]["model_args"].values())
