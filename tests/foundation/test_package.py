"""The package root: light to import, and the few names a notebook reaches for."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_importing_the_package_loads_no_torch_transformers_or_lm_eval():
    loaded = _modules_after("import lape_eval")
    assert not loaded & {"torch", "transformers", "lm_eval", "click", "safetensors"}


def test_the_spec_language_and_reports_load_no_torch():
    loaded = _modules_after("import lape_eval.steering.spec, lape_eval.steering.calibration, lape_eval.reports.table")
    assert "torch" not in loaded and "safetensors" not in loaded


def test_notebook_names_come_from_their_stage_modules():
    import lape_eval
    from lape_eval.models import load_model
    from lape_eval.neurons.neuron_set import NeuronSet
    from lape_eval.neurons.shipped import resolve_neuron_set
    from lape_eval.steering.hooks import steer
    from lape_eval.steering.spec import parse_steer

    assert lape_eval.load_model is load_model and lape_eval.NeuronSet is NeuronSet
    assert lape_eval.resolve_neuron_set is resolve_neuron_set and lape_eval.steer is steer
    assert lape_eval.parse_steer is parse_steer
    assert str(lape_eval.parse_steer("-en +de:0.5")) == "-en +de:0.5"
    assert set(lape_eval.__all__) >= {"load_model", "NeuronSet", "resolve_neuron_set", "steer", "parse_steer"}
