"""Helpers of the adapter tests: tiny runs, the selected-entries mask, the CLI."""

from __future__ import annotations

from pathlib import Path

import torch

from lape_eval.adapters.settings import FinetuneSettings
from lape_eval.adapters.train import finetune
from lape_eval.neurons.corpus import CorpusSpec

REPO = Path(__file__).resolve().parents[2]
WIDTH = 96  # MLP width of the tiny llama / phi3 / gpt2 models
D_MODEL = 32


def load(model_dir):
    from lape_eval.models import load_model

    return load_model(str(model_dir))


def settings(corpus, neurons, **overrides) -> FinetuneSettings:
    base = dict(method="subnetwork", language="de", corpus=CorpusSpec(str(corpus)), neurons=str(neurons),
                seq_len=24, batch_size=2, lr=1e-2, eval_every=4, heldout_fraction=0.2, progress=False)
    base.update(overrides)
    return FinetuneSettings(**base)


def train(model_dir, out, corpus, neurons, **overrides):
    from lape_eval.neurons.neuron_set import NeuronSet

    loaded = load(model_dir)
    s = settings(corpus, neurons, **overrides)
    neuron_set = NeuronSet.load(neurons) if s.neurons else None
    result = finetune(loaded.model, loaded.tokenizer, out, s, model_name=str(model_dir), neuron_set=neuron_set)
    return loaded, result


def selected_mask(weight_name: str, shape, arch: str, indices: list[torch.Tensor]) -> torch.Tensor | None:
    """True at the entries of ``weight_name`` that belong to the neurons ``indices`` (None: no such entries)."""
    mask = torch.zeros(shape, dtype=torch.bool)
    parts = weight_name.split(".")
    if "layers" in parts:
        layer = int(parts[parts.index("layers") + 1])
    elif "h" in parts:
        layer = int(parts[parts.index("h") + 1])
    else:
        return mask
    idx = indices[layer]
    if weight_name.endswith("gate_up_proj.weight"):  # before "up_proj.weight", which it also ends with
        mask[idx] = True
        mask[idx + WIDTH] = True
    elif weight_name.endswith(("gate_proj.weight", "up_proj.weight")):
        mask[idx] = True
    elif weight_name.endswith("down_proj.weight"):
        mask[:, idx] = True
    elif weight_name.endswith("c_fc.weight"):  # Conv1D [d, I]
        mask[:, idx] = True
    elif weight_name.endswith("mlp.c_proj.weight"):  # Conv1D [I, d]
        mask[idx] = True
    return mask


def invoke(*args):
    """``lape-eval ARGS`` in-process (click's runner)."""
    from click.testing import CliRunner

    from lape_eval.cli import cli

    return CliRunner().invoke(cli, [str(arg) for arg in args])


def assert_usage_error(result, *fragments) -> None:
    """A bad-input error: exit code 2, no traceback, the message holding every fragment."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    for fragment in fragments:
        assert fragment in result.output, result.output


def forbid_model_loading(monkeypatch) -> None:
    """Make any model load fail the test (for commands that must refuse bad input before loading)."""

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded although the input was bad")

    monkeypatch.setattr("lape_eval.models.load_model", load_model)


def files_under(folder: Path) -> list[str]:
    """Every path under ``folder`` (hidden staging folders included), relative to it."""
    return sorted(str(path.relative_to(folder)) for path in Path(folder).rglob("*"))
