"""The Vicuna question loader: a local file in the shape of data/mvicuna/en.txt, the download and its
cache (faked), the offline message, and the bundled questions only when asked for."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import pytest

from lape_eval.errors import LapeEvalError
from lape_eval.experiments import vicuna
from lape_eval.resources import tasks_folder

# The real file's shape: one question per line, a trailing newline, literal backslashes before quotes.
LOCAL = ("How can I improve my time management skills?\n"
         "  What are the most effective ways to deal with stress?  \n"
         "\n"
         "How many balloons would it take to lift a house like in the movie \\\"Up\\\"? Try to explain your answer.\n")
EXPECTED = ["How can I improve my time management skills?",
            "What are the most effective ways to deal with stress?",
            'How many balloons would it take to lift a house like in the movie \\"Up\\"? Try to explain your answer.']


def test_local_file_is_read_as_the_reference_reads_it(tmp_path):
    path = tmp_path / "en.txt"
    path.write_text(LOCAL, encoding="utf-8")
    loaded = vicuna.load_questions(path)
    assert loaded.questions == EXPECTED
    assert loaded.source == str(path) and loaded.describe()["count"] == 3


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(LapeEvalError, match="does not exist.*bundled"):
        vicuna.load_questions(tmp_path / "nope.txt")
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(LapeEvalError, match="holds no question"):
        vicuna.load_questions(tmp_path / "blank.txt")


def test_offline_default_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPE_EVAL_CACHE", str(tmp_path))

    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(LapeEvalError) as error:
        vicuna.load_questions()
    message = str(error.value)
    assert vicuna.VICUNA_URL in message and "--questions PATH" in message and "--questions bundled" in message


def test_download_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPE_EVAL_CACHE", str(tmp_path))
    calls = []

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake(url, timeout=None):
        calls.append(url)
        return Response(LOCAL.encode("utf-8"))

    monkeypatch.setattr(urllib.request, "urlopen", fake)
    assert vicuna.load_questions("vicuna").questions == EXPECTED
    assert vicuna.load_questions("vicuna").questions == EXPECTED
    assert calls == [vicuna.VICUNA_URL]  # the second load reads the cache
    assert "RUCAIBox/Language-Specific-Neurons" in vicuna.VICUNA_URL and vicuna.VICUNA_URL.endswith("/data/mvicuna/en.txt")


def test_bundled_only_when_asked(tmp_path):
    rows = [json.loads(line) for line in (tasks_folder() / "forcing" / "questions.jsonl").read_text().splitlines()]
    loaded = vicuna.load_questions("bundled")
    assert loaded.questions == [row["en"] for row in rows]
    assert loaded.source == "bundled"
