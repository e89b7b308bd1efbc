"""The language of a task: from its metadata, a regex, or its name."""

from __future__ import annotations

import re

import pytest

from lape_eval.errors import LapeEvalError
from lape_eval.reports.task_languages import benchmark_name, compile_language_regex, task_language


def test_language_from_names_metadata_and_regex():
    assert task_language("belebele_deu_Latn")[0] == "de"
    assert task_language("xnli_de")[0] == "de"
    assert task_language("flores_en-fr")[0] == "fr"
    assert task_language("lape_forcing_grid") is None
    assert task_language("it_quiz") is None  # the first part is the benchmark's name
    assert task_language("anything", {"metadata": {"language": "sv"}})[0] == "sv"
    assert task_language("mmlu.fra", None, re.compile(r"\.(\w+)$"))[0] == "fra"
    language, span = task_language("xnli_de_gen")
    assert benchmark_name("xnli_de_gen", span) == "xnli_gen"


def test_a_bad_language_regex_is_a_clear_error():
    assert compile_language_regex(None) is None
    with pytest.raises(LapeEvalError, match=r"--language-regex '\(de' is not a valid regular expression"):
        compile_language_regex("(de")


def test_languages_outside_the_21_are_found_and_sorted_after_them_by_family():
    from lape_eval.reports.task_languages import language_sort_key

    assert task_language("belebele_slk_Latn")[0] == "sk"
    assert task_language("belebele_pes_Arab")[0] == "fa"
    assert task_language("belebele_zzz_Latn") is None  # not a language: no match, no error
    # Germanic, Romance, Slavic (sk joins pl and ru), ..., then families outside the paper's (el, th)
    codes = ["th", "sk", "en", "el", "ro", "pl", "ko"]
    assert sorted(codes, key=language_sort_key) == ["en", "ro", "pl", "sk", "ko", "el", "th"]
