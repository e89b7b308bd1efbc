"""Export to lm-eval's `steered` model: which specs export, and the command's checks before any model is read.

That the exported vectors equal the lape model's steering is tested with lm-eval in
tests/evaluation/test_lm.py.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import lape_eval.steering.export as export_module
from handmade_sets import make_set
from lape_eval.cli import cli
from lape_eval.errors import LapeEvalError
from lape_eval.steering.export import check_exportable
from lape_eval.steering.spec import parse_steer


@pytest.mark.parametrize("text, method", [("+de", "add"), ("+de +fr:0.5", "add"), ("+fr", "diffmean")])
def test_additive_specs_export(text, method):
    check_exportable(parse_steer(text, method=method))


@pytest.mark.parametrize("text, method", [("-en +de", "add"), ("+de", "replace"), ("+de", "multiply"), ("-en", "add")])
def test_other_specs_are_refused(text, method):
    with pytest.raises(LapeEvalError, match="purely additive"):
        check_exportable(parse_steer(text, method=method))


def _no_model_read(*args, **kwargs):
    raise AssertionError("the model was read before the inputs were checked")


@pytest.mark.parametrize("options, message", [
    ({"--steer": "-en +de"}, "purely additive"),
    ({"--steer": "+zh"}, "no neurons for 'zh'"),
    ({"--steer": "+xx"}, "Unknown language code 'xx'"),
    ({"--alpha": "-1"}, "alpha must be ≥ 0"),
    ({"--out": "steer.json"}, "reads .pt or .pth files"),
    ({"set": "no-such-set"}, "No neuron set 'no-such-set'"),
])
def test_the_command_checks_every_input_before_reading_the_model_or_writing(tmp_path, monkeypatch, options, message):
    monkeypatch.setattr(export_module, "load_meta_model", _no_model_read)
    set_file = tmp_path / "tiny.safetensors"
    make_set(96).save(set_file)
    out_folder = tmp_path / "out"
    arguments = {"--model": str(tmp_path / "absent"), "--steer": "+de", "--out": "steer.pt", **options}
    arguments["--out"] = str(out_folder / arguments["--out"])
    neuron_set = arguments.pop("set", str(set_file))
    result = CliRunner().invoke(cli, ["export-steered", neuron_set,
                                      *[part for pair in arguments.items() for part in pair]])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out_folder.exists()
