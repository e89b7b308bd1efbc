"""The steer-spec language: terms, strengths, methods, positions, language_alphas; no torch needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from lape_eval.errors import LapeEvalError
from lape_eval.steering.spec import SteerTerm, parse_steer


class TestBadSpecs:
    @pytest.mark.parametrize(
        "text, args, message",
        [
            ("-xx", {}, "Unknown language code 'xx'"),
            ("en +de", {}, "a language needs a sign: '-en' deactivates"),
            ("-en +de:abc", {}, "optionally with a strength"),
            ("+de", {"method": "subtract"}, "Unknown steering method 'subtract'"),
            ("+de", {"positions": "middle"}, "Unknown positions 'middle'"),
            ("+de", {"alpha": -1}, "alpha must be ≥ 0"),
            ("+de", {"alpha": "strong"}, "alpha must be a number"),
            ("+de:-2", {}, "the strength of +de must be ≥ 0"),
            ("+de", {"beta": "nan"}, "beta must be a finite number"),
            ("-en -en", {}, "names '-en' twice"),
        ],
    )
    def test_parse_errors(self, text, args, message):
        with pytest.raises(LapeEvalError, match=re.escape(message)):
            parse_steer(text, **args)


def test_terms_take_any_spelling_of_a_code_and_store_the_canonical_one():
    spec = parse_steer("-eng +slk:2 +EL", language_alphas="fas:0.5")
    assert spec.terms == (SteerTerm("-", "en"), SteerTerm("+", "sk", 2.0), SteerTerm("+", "el"))
    assert spec.language_alphas == (("fa", 0.5),)
    with pytest.raises(LapeEvalError, match=re.escape("names '+sk' twice")):
        parse_steer("+sk +slk")


def test_terms_read_in_order_with_their_strengths():
    spec = parse_steer("-en, +de +zh:0.5 -fr:-1.5", method="diffmean", alpha="2")
    assert spec.terms == (SteerTerm("-", "en"), SteerTerm("+", "de"), SteerTerm("+", "zh", 0.5),
                          SteerTerm("-", "fr", -1.5))
    assert (spec.deactivated, spec.activated) == (["en", "fr"], ["de", "zh"])
    assert (spec.method, spec.alpha) == ("diffmean", 2.0)
    assert str(spec) == "-en +de +zh:0.5 -fr:-1.5"
    assert parse_steer("none").is_identity and parse_steer(None).is_identity and parse_steer("").is_identity


def test_language_alphas_set_per_language_defaults_and_terms_override_them(tmp_path):
    spec = parse_steer("-en +de +fr:0.25", alpha=1.0, language_alphas="de:2.5 fr:9")
    strengths = {str(t): spec.strength_of(t) for t in spec.terms}
    assert strengths == {"-en": 0.0, "+de": 2.5, "+fr:0.25": 0.25}
    path = tmp_path / "alphas.json"
    path.write_text(json.dumps({"de": 3}))
    assert parse_steer("+de", language_alphas=str(path)).strength_of(SteerTerm("+", "de")) == 3.0
    with pytest.raises(LapeEvalError, match="LANG:ALPHA"):
        parse_steer("+de", language_alphas="de=2")


def test_language_alphas_from_a_calibration_file(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"model": "m", "language_alphas": {"de": 1.5, "zh": 0.25},
                                "chosen": {"neuron_set": "s", "method": "add", "positions": "answer"}}))
    spec = parse_steer("-en +de +zh", language_alphas=str(path))
    assert [spec.strength_of(t) for t in spec.terms] == [0.0, 1.5, 0.25]
    with pytest.raises(LapeEvalError, match="does not exist"):
        parse_steer("+de", language_alphas=str(tmp_path / "absent.json"))
    (tmp_path / "bad.json").write_text('{"de": ')
    with pytest.raises(LapeEvalError, match="not valid JSON"):
        parse_steer("+de", language_alphas=str(tmp_path / "bad.json"))


@pytest.mark.parametrize("module", ["lape_eval.steering.spec", "lape_eval.steering.calibration"])
def test_reading_specs_and_calibrations_needs_no_torch(module):
    code = f"import {module}, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
