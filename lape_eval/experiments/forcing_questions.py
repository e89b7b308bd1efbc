"""The forcing experiment's questions: bundled, the reference code's own six per language, or a file.

``bundled``
    The six questions of the paper flagged ``"paper": true`` in ``tasks/forcing/questions.jsonl``
    (this project's translations of the reference's English questions; offline).
``bundled-all``
    All ten bundled questions (the paper's six and four more).
``paper`` / ``paper:PATH``
    The reference code's questions (method spec §6.1): ``get_test_questions()`` in
    ``src/batch_generation.py`` of ``d-gurgurov/Language-Neurons-Manipulation``, read from its raw URL
    (``paper``) or a local copy (``paper:PATH``, or any path ending in ``.py``). The function's
    returned dict literal is parsed with :mod:`ast` (``ast.literal_eval`` on that node: nothing is
    executed), the prompts ``"Q: {question} \\nA:"`` are cut back to the questions, and the parsed
    table is cached as JSON (``$LAPE_EVAL_CACHE``, else ``~/.cache/lape-eval``). The reference's
    quirks are kept, since they are part of the protocol, with a warning: Tibetan asks the weather
    question twice (and never "how are you"); Danish and Norwegian share some strings verbatim.
``FILE.jsonl``
    Parallel questions in the bundled schema (``{"id", "<lang>": question, ...}`` per line).

Every source becomes the same table: rows of parallel questions (row *i* holds question *i* of
every language, as the reference zips them by position), written to the experiment's folder and
passed to the grid task as ``forcing_questions``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.data import forcing_questions as bundled_question_rows
from lape_eval.files import atomic_path, write_json

REFERENCE_REPO = "d-gurgurov/Language-Neurons-Manipulation"
REFERENCE_PATH = "src/batch_generation.py"
REFERENCE_URL = f"https://raw.githubusercontent.com/{REFERENCE_REPO}/main/{REFERENCE_PATH}"
REFERENCE_FUNCTION = "get_test_questions"
PROMPT_PREFIX = "Q: "
PROMPT_SUFFIX = " \nA:"
CACHE_ENV = "LAPE_EVAL_CACHE"
OFFLINE_ENVS = ("LAPE_EVAL_OFFLINE", "HF_HUB_OFFLINE")
SOURCES = ("bundled", "bundled-all", "paper", "paper:PATH", "FILE.jsonl")


@dataclass
class QuestionSet:
    """Parallel forcing questions: ``rows`` as the grid task reads them, where they came from, warnings."""

    rows: list[dict]
    source: str
    warnings: list[str] = field(default_factory=list)

    @property
    def per_language(self) -> int:
        return len(self.rows)

    def languages(self) -> list[str]:
        return [key for key in self.rows[0] if key not in ("id", "paper")] if self.rows else []

    def write(self, path: Path) -> Path:
        """The rows as JSONL (atomically): what ``forcing_questions=PATH`` reads."""
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows), encoding="utf-8")
        return path


def load_questions(spec: str, languages: list[str]) -> QuestionSet:
    """The questions named by ``spec`` (see the module doc), checked to cover ``languages``."""
    spec = str(spec).strip()
    if spec == "bundled":
        rows = [row for row in bundled_question_rows() if row.get("paper")]
        questions = QuestionSet(rows, "bundled: tasks/forcing/questions.jsonl, the paper's 6 (\"paper\": true)")
    elif spec == "bundled-all":
        questions = QuestionSet(bundled_question_rows(), "bundled: tasks/forcing/questions.jsonl, all rows")
    elif spec == "paper":
        questions = reference_questions(None)
    elif spec.startswith("paper:") or spec.endswith(".py"):
        questions = reference_questions(Path(spec.removeprefix("paper:")).expanduser())
    elif spec.endswith(".jsonl"):
        path = Path(spec).expanduser()
        questions = QuestionSet(bundled_question_rows({"forcing_questions": str(path)}), f"file: {path}")
    else:
        raise LapeEvalError(f"--questions {spec!r}: choose bundled (the paper's 6 bundled questions), bundled-all, "
                            "paper (the reference code's questions from GitHub), paper:PATH (a local copy of "
                            f"{REFERENCE_PATH}) or a FILE.jsonl of parallel questions.")
    missing = [lang for lang in languages if any(lang not in row for row in questions.rows)]
    if missing:
        raise LapeEvalError(f"The questions ({questions.source}) have no {', '.join(missing)} version of every "
                            "question. Choose languages they cover or another --questions source.")
    return questions


# --- the reference code's questions ---------------------------------------------------------------


def reference_questions(path: Path | None) -> QuestionSet:
    """The reference's questions from a local copy (``path``) or its raw URL, through the cache."""
    if path is not None:
        if not path.is_file():
            raise LapeEvalError(f"--questions paper:{path}: no such file. Give the path of a copy of "
                                f"{REFERENCE_PATH} from {REFERENCE_REPO}.")
        text, origin = path.read_text(encoding="utf-8"), str(path)
    else:
        text, origin = _download_or_cached()
    per_language = parse_reference_questions(text, origin)
    questions = parallel_rows(per_language, origin)
    if path is not None:
        _write_cache(text, origin)
    return questions


def parse_reference_questions(text: str, origin: str = REFERENCE_PATH) -> dict[str, list[str]]:
    """``{lang: [question, ...]}`` from the source of ``batch_generation.py``, read with :mod:`ast`.

    Only the dict literal returned by ``get_test_questions()`` is evaluated (``ast.literal_eval``);
    a missing function, a non-literal or a prompt not of the form ``"Q: ... \\nA:"`` is a clear error."""
    try:
        tree = ast.parse(text, filename=origin)
    except SyntaxError as error:
        raise LapeEvalError(f"{origin} is not valid Python ({error.msg}, line {error.lineno}); it should be a copy of "
                            f"{REFERENCE_PATH} from {REFERENCE_REPO}.") from None
    function = next((node for node in ast.walk(tree)
                     if isinstance(node, ast.FunctionDef) and node.name == REFERENCE_FUNCTION), None)
    returned = next((node.value for node in ast.walk(function) if isinstance(node, ast.Return)), None) if function else None
    if returned is None:
        raise LapeEvalError(f"{origin} has no function {REFERENCE_FUNCTION}() returning the questions; it should be a "
                            f"copy of {REFERENCE_PATH} from {REFERENCE_REPO}.")
    try:
        table = ast.literal_eval(returned)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise LapeEvalError(f"{origin}, line {returned.lineno}: {REFERENCE_FUNCTION}() does not return a plain literal "
                            "(a dict of lists of strings); the questions cannot be read without running code, which "
                            "lape-eval never does. Use an unmodified copy of the reference file.") from None
    if not isinstance(table, dict) or not table:
        raise LapeEvalError(f"{origin}: {REFERENCE_FUNCTION}() returns {type(table).__name__}, not a dict "
                            "{language: [prompt, ...]}.")
    questions = {}
    for lang, prompts in table.items():
        if not isinstance(lang, str) or not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise LapeEvalError(f"{origin}: entry {lang!r} of {REFERENCE_FUNCTION}() is not a language code with a "
                                "list of prompt strings.")
        questions[lang] = [_question_of(prompt, lang, origin) for prompt in prompts]
    counts = {len(items) for items in questions.values()}
    if len(counts) != 1:
        raise LapeEvalError(f"{origin}: the languages have different numbers of questions "
                            f"({', '.join(f'{lang} {len(items)}' for lang, items in questions.items())}); the grid "
                            "pairs question i of every language.")
    return questions


def _question_of(prompt: str, lang: str, origin: str) -> str:
    if not (prompt.startswith(PROMPT_PREFIX) and prompt.endswith(PROMPT_SUFFIX)):
        raise LapeEvalError(f"{origin}: the {lang} prompt {prompt!r} is not of the form 'Q: {{question}} \\nA:' "
                            "(method spec §6.1).")
    return prompt[len(PROMPT_PREFIX):-len(PROMPT_SUFFIX)]


def parallel_rows(per_language: dict[str, list[str]], origin: str) -> QuestionSet:
    """Rows ``{"id": "paper_q1", "paper": true, lang: question, ...}``, and warnings for the quirks kept."""
    count = len(next(iter(per_language.values())))
    rows = [{"id": f"paper_q{i + 1}", "paper": True, **{lang: items[i] for lang, items in per_language.items()}}
            for i in range(count)]
    warnings = []
    for lang, items in per_language.items():
        repeated = sorted({q for q in items if items.count(q) > 1})
        for question in repeated:
            positions = [str(i + 1) for i, q in enumerate(items) if q == question]
            warnings.append(f"{lang}: question {' and '.join(positions)} are the same string {question!r} (kept, as in "
                            "the reference: that language is asked one question twice)")
    languages = list(per_language)
    for i, first in enumerate(languages):
        for second in languages[i + 1:]:
            shared = [str(k + 1) for k, (a, b) in enumerate(zip(per_language[first], per_language[second])) if a == b]
            if shared:
                warnings.append(f"{first} and {second} share question {', '.join(shared)} verbatim (kept, as in the "
                                "reference: those answers cannot tell the two prompt languages apart)")
    return QuestionSet(rows, f"paper: {REFERENCE_FUNCTION}() in {origin}", warnings)


# --- download and cache ---------------------------------------------------------------------------


def cache_folder() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lape-eval").expanduser()


def cache_file() -> Path:
    return cache_folder() / "reference-forcing-questions.json"


def _write_cache(text: str, origin: str) -> None:
    """The reference file's parsed source text (no code is kept apart from its questions' literal)."""
    per_language = parse_reference_questions(text, origin)
    write_json(cache_file(), {"origin": origin, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                              "questions": per_language})


def _download_or_cached() -> tuple[str, str]:
    cached = cache_file()
    if cached.is_file():
        data = json.loads(cached.read_text(encoding="utf-8"))
        prompts = {lang: [f"{PROMPT_PREFIX}{q}{PROMPT_SUFFIX}" for q in items] for lang, items in data["questions"].items()}
        return f"def {REFERENCE_FUNCTION}():\n    return {prompts!r}\n", f"{data['origin']} (cached in {cached})"
    how = (f"Download {REFERENCE_PATH} of {REFERENCE_REPO} (from {REFERENCE_URL}) on a machine with internet "
           "and pass it as --questions paper:PATH/batch_generation.py; or use --questions bundled (the paper's six "
           "questions in this project's translations).")
    offline = [name for name in OFFLINE_ENVS if os.environ.get(name, "").strip() not in ("", "0")]
    if offline:
        raise LapeEvalError(f"--questions paper needs the reference file, and this session is offline "
                            f"(${offline[0]} is set). {how}")
    try:
        with urllib.request.urlopen(REFERENCE_URL, timeout=30) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise LapeEvalError(f"--questions paper: could not download {REFERENCE_URL} ({error}). {how}") from None
    _write_cache(text, REFERENCE_URL)
    return text, REFERENCE_URL
