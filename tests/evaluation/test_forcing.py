"""The forcing protocol: the task template and the calibration sweep ask and cut answers the same way."""

from __future__ import annotations

import jinja2
import yaml

from lape_eval.evaluation.forcing import (
    DO_SAMPLE, MAX_NEW_TOKENS, REPETITION_PENALTY, STOP_STRINGS, cut_at_stop_strings, forcing_prompt,
)
from lape_eval.evaluation.data import load_forcing
from lape_eval.resources import tasks_folder


class _Loader(yaml.SafeLoader):
    """Reads lm-eval YAMLs without importing the functions they name."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def _template() -> dict:
    return yaml.load((tasks_folder() / "forcing" / "_forcing_yaml").read_text(encoding="utf-8"), Loader=_Loader)


def test_the_paper_protocol():
    assert forcing_prompt("Wie heißt du?") == "Q: Wie heißt du? \nA:"
    assert STOP_STRINGS == ("\nQ:", "\nA:")
    assert (DO_SAMPLE, REPETITION_PENALTY, MAX_NEW_TOKENS) == (False, 1.1, 256)


def test_the_task_template_carries_the_protocol():
    template = _template()
    doc = load_forcing("de")["test"][0]  # the paper's prompt by default
    assert jinja2.Template(template["doc_to_text"]).render(**doc) == f"Q: {doc['question']} \nA:"
    assert template["generation_kwargs"] == {"until": ["\nQ:", "\nA:"], "max_gen_toks": 256, "do_sample": False,
                                             "repetition_penalty": 1.1}
    assert template["custom_dataset"] == "!function lape_eval.evaluation.data.load_forcing"
    assert template["process_results"] == "!function lape_eval.evaluation.metrics.process_forcing"


def test_answers_are_cut_at_the_first_stop_string():
    assert cut_at_stop_strings(" Berlin.\nQ: and Paris?\nA: France") == " Berlin."
    assert cut_at_stop_strings(" Berlin.\nA: no") == " Berlin."
    assert cut_at_stop_strings(" Berlin. A: Q: inline") == " Berlin. A: Q: inline"  # only at a line start
