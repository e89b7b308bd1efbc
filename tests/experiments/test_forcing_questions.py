"""The forcing experiment's question sources; the reference file is parsed with ast, never executed."""

from __future__ import annotations

import pytest

from lape_eval.errors import LapeEvalError
from lape_eval.experiments import forcing_questions as fq

# A copy in the shape of the reference's src/batch_generation.py (d-gurgurov/Language-Neurons-Manipulation):
# imports and code that must never run, then get_test_questions() returning {lang: ["Q: ... \nA:", ...]}.
# Kept quirks: Tibetan asks the weather question twice (1st and 5th) and never "how are you"; Danish and
# Norwegian share strings verbatim (here questions 1, 3 and 6, as in the reference).
REFERENCE_SHAPE = '''import argparse
import this_module_does_not_exist_so_executing_this_file_fails
from vllm import LLM, SamplingParams

def get_test_questions():
    """Return test questions for each language"""
    return {
        "bo": ["Q: གནམ་གཤིས་ཇི་འདྲ་འདུག \\nA:", "Q: ཁྱེད་རང་གི་མིང་ལ་ག་རེ་ཟེར་གྱི་འདུག \\nA:", "Q: ད་རེས་ལོ་ཙམ་ག་ཚེས་རེད \\nA:", "Q: ཁྱེད་རང་གི་དགའ་པོའི་ཁ་དོག་ག་རེ་རེད \\nA:", "Q: གནམ་གཤིས་ཇི་འདྲ་འདུག \\nA:", "Q: ཁྱེད་རང་གང་ནས་ཡིན \\nA:"],
        "da": ["Q: Hvordan har du det i dag? \\nA:", "Q: Hvad hedder du? \\nA:", "Q: Hvilket år er det? \\nA:", "Q: Hvad er din yndlingsfarve? \\nA:", "Q: Hvordan er vejret? \\nA:", "Q: Hvor kommer du fra? \\nA:"],
        "no": ["Q: Hvordan har du det i dag? \\nA:", "Q: Hva heter du? \\nA:", "Q: Hvilket år er det? \\nA:", "Q: Hva er favorittfargen din? \\nA:", "Q: Hvordan er været? \\nA:", "Q: Hvor kommer du fra? \\nA:"],
        "en": ["Q: How are you today? \\nA:", "Q: What is your name? \\nA:", "Q: What year is it? \\nA:", "Q: What is your favorite color? \\nA:", "Q: What is the weather like? \\nA:", "Q: Where are you from? \\nA:"],
    }

def main():
    raise SystemExit("never called")

if __name__ == "__main__":
    main()
'''
# Method spec §6.1: the six English questions of the paper.
PAPER_ENGLISH = ["How are you today?", "What is your name?", "What year is it?", "What is your favorite color?",
                 "What is the weather like?", "Where are you from?"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(fq.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_reference(tmp_path, text=REFERENCE_SHAPE):
    path = tmp_path / "batch_generation.py"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_reference_questions_are_read_from_a_local_copy_without_running_it(tmp_path):
    questions = fq.load_questions(f"paper:{write_reference(tmp_path)}", ["en", "da", "no", "bo"])
    assert questions.per_language == 6
    assert [row["en"] for row in questions.rows] == PAPER_ENGLISH
    assert [row["id"] for row in questions.rows] == [f"paper_q{i}" for i in range(1, 7)]
    assert questions.rows[4]["no"] == "Hvordan er været?"
    # The prompt the grid task builds ("Q: {question} \nA:") is the reference's prompt, character for character.
    assert "Q: " + questions.rows[0]["bo"] + " \nA:" == "Q: གནམ་གཤིས་ཇི་འདྲ་འདུག \nA:"


def test_the_reference_quirks_are_kept_with_a_warning(tmp_path):
    questions = fq.load_questions(str(write_reference(tmp_path)), ["bo"])
    assert questions.rows[0]["bo"] == questions.rows[4]["bo"]  # Tibetan: the weather question twice
    assert any(w.startswith("bo: question 1 and 5 are the same string") for w in questions.warnings)
    assert any(w.startswith("da and no share question 1, 3, 6 verbatim") for w in questions.warnings)
    assert not any(w.startswith("da and en") for w in questions.warnings)


@pytest.mark.parametrize("returned, expected", [
    ('{"en": [make_prompt("How are you today?")]}', "does not return a plain literal"),
    ('{"en": ["Q: How are you today? \\nA:"] + EXTRA}', "does not return a plain literal"),
    ('["Q: How are you today? \\nA:"]', "not a dict"),
    ('{"en": ["How are you today?"]}', "is not of the form 'Q: {question} \\nA:'"),
    ('{"en": ["Q: a \\nA:", "Q: b \\nA:"], "de": ["Q: a \\nA:"]}', "different numbers of questions"),
])
def test_malformed_literals_are_a_clear_error(tmp_path, returned, expected):
    text = f"import nothing_here\n\ndef get_test_questions():\n    return {returned}\n"
    with pytest.raises(LapeEvalError, match="batch_generation.py") as error:
        fq.load_questions(f"paper:{write_reference(tmp_path, text)}", ["en"])
    assert expected in str(error.value)


def test_a_file_that_is_not_the_reference_is_a_clear_error(tmp_path):
    with pytest.raises(LapeEvalError, match="not valid Python"):
        fq.load_questions(f"paper:{write_reference(tmp_path, 'def (:')}", ["en"])
    with pytest.raises(LapeEvalError, match="no function get_test_questions"):
        fq.load_questions(f"paper:{write_reference(tmp_path, 'x = 1')}", ["en"])
    with pytest.raises(LapeEvalError, match="no such file"):
        fq.load_questions(f"paper:{tmp_path / 'missing.py'}", ["en"])


def test_offline_paper_without_a_cache_says_how_to_pass_the_file():
    with pytest.raises(LapeEvalError) as error:
        fq.load_questions("paper", ["en"])
    message = str(error.value)
    assert "offline" in message and "--questions paper:PATH/batch_generation.py" in message
    assert fq.REFERENCE_URL in message


def test_a_local_copy_fills_the_cache_that_paper_then_reads_offline(tmp_path):
    fq.load_questions(f"paper:{write_reference(tmp_path)}", ["en"])
    cached = fq.load_questions("paper", ["en", "bo"])
    assert [row["en"] for row in cached.rows] == PAPER_ENGLISH
    assert "cached" in cached.source and cached.warnings  # the quirks are still reported


def test_bundled_is_the_papers_six_and_bundled_all_adds_four():
    bundled = fq.load_questions("bundled", ["en", "de"])
    assert [row["en"] for row in bundled.rows] == PAPER_ENGLISH
    assert len(fq.load_questions("bundled-all", ["en"]).rows) == 10


def test_a_jsonl_file_and_missing_languages(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "a", "en": "Hi?", "de": "Hallo?"}\n', encoding="utf-8")
    assert fq.load_questions(str(path), ["en", "de"]).rows == [{"id": "a", "en": "Hi?", "de": "Hallo?"}]
    with pytest.raises(LapeEvalError, match="no fr version"):
        fq.load_questions(str(path), ["en", "fr"])
    with pytest.raises(LapeEvalError, match="choose bundled"):
        fq.load_questions("papers", ["en"])
