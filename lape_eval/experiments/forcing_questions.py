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
``clas`` / ``clas:PATH``
    CLaS-Bench's questions (method spec §9): the 70 Vicuna questions in its 32 languages, one file per
    language, ``CLaS-Bench/data/<lang>.txt`` of ``d-gurgurov/CLaS-Bench`` with one question per line
    (read as its ``utils.get_test_questions(k=70)`` reads them: stripped, blank lines skipped, the
    first 70). ``clas`` downloads the files of the languages asked from their raw URLs once into the
    cache (``$LAPE_EVAL_CACHE/clas-bench/``); ``clas:PATH`` reads a local copy: that ``data`` folder, or
    a clone of the repository. Ask them with ``--preset clas`` (CLaS-Bench's bare question in the
    model's chat template).
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
from lape_eval.experiments.vicuna import parse_lines
from lape_eval.files import atomic_path, write_json
from lape_eval.languages import CLAS_BENCH_LANGUAGES

REFERENCE_REPO = "d-gurgurov/Language-Neurons-Manipulation"
REFERENCE_PATH = "src/batch_generation.py"
REFERENCE_URL = f"https://raw.githubusercontent.com/{REFERENCE_REPO}/main/{REFERENCE_PATH}"
REFERENCE_FUNCTION = "get_test_questions"
PROMPT_PREFIX = "Q: "
PROMPT_SUFFIX = " \nA:"
CACHE_ENV = "LAPE_EVAL_CACHE"
OFFLINE_ENVS = ("LAPE_EVAL_OFFLINE", "HF_HUB_OFFLINE")
CLAS_REPO = "d-gurgurov/CLaS-Bench"
CLAS_DATA = "CLaS-Bench/data"  # <lang>.txt, one question per line (the repository's utils/utils.py reads it)
CLAS_URL = f"https://raw.githubusercontent.com/{CLAS_REPO}/main/{CLAS_DATA}/{{lang}}.txt"
CLAS_QUESTIONS = 70  # get_test_questions(k=70): the first 70 lines of each file
SOURCES = ("bundled", "bundled-all", "paper", "paper:PATH", "clas", "clas:PATH", "FILE.jsonl")


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
    elif spec == "clas":
        questions = clas_questions(None, languages)
    elif spec.startswith("clas:"):
        questions = clas_questions(Path(spec.removeprefix("clas:")).expanduser(), languages)
    elif spec.endswith(".jsonl"):
        path = Path(spec).expanduser()
        questions = QuestionSet(bundled_question_rows({"forcing_questions": str(path)}), f"file: {path}")
    else:
        raise LapeEvalError(f"--questions {spec!r}: choose bundled (the paper's 6 bundled questions), bundled-all, "
                            "paper (the reference code's questions from GitHub), paper:PATH (a local copy of "
                            f"{REFERENCE_PATH}), clas (CLaS-Bench's 70 questions from GitHub), clas:PATH (a local "
                            f"copy of {CLAS_DATA}) or a FILE.jsonl of parallel questions.")
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
    questions = parallel_rows(per_language, f"paper: {REFERENCE_FUNCTION}() in {origin}", "paper_q", paper=True)
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


def parallel_rows(per_language: dict[str, list[str]], source: str, id_prefix: str, **flags) -> QuestionSet:
    """Rows ``{"id": "<id_prefix>1", **flags, lang: question, ...}`` (question i of every language in row i,
    as the references zip them by position), and warnings for the quirks kept."""
    count = len(next(iter(per_language.values())))
    rows = [{"id": f"{id_prefix}{i + 1}", **flags, **{lang: items[i] for lang, items in per_language.items()}}
            for i in range(count)]
    warnings = []
    for lang, items in per_language.items():
        repeated = sorted({q for q in items if items.count(q) > 1})
        for question in repeated:
            positions = [str(i + 1) for i, q in enumerate(items) if q == question]
            warnings.append(f"{lang}: question {' and '.join(positions)} are the same string {question!r} (kept, as in "
                            "the source: that language is asked one question twice)")
    languages = list(per_language)
    for i, first in enumerate(languages):
        for second in languages[i + 1:]:
            shared = [str(k + 1) for k, (a, b) in enumerate(zip(per_language[first], per_language[second])) if a == b]
            if shared:
                warnings.append(f"{first} and {second} share question {', '.join(shared)} verbatim (kept, as in the "
                                "source: those answers cannot tell the two prompt languages apart)")
    return QuestionSet(rows, source, warnings)


# --- CLaS-Bench's questions -------------------------------------------------------------------------


def clas_questions(path: Path | None, languages: list[str]) -> QuestionSet:
    """CLaS-Bench's questions in ``languages``, from a local copy (``path``) or the raw URLs via the cache."""
    outside = [lang for lang in languages if lang not in CLAS_BENCH_LANGUAGES]
    if outside:
        raise LapeEvalError(f"--questions clas: CLaS-Bench has no {', '.join(outside)} questions; its 32 languages are "
                            f"{' '.join(CLAS_BENCH_LANGUAGES)} (--languages clas-bench). Choose among them, or give "
                            "another --questions source for the others.")
    folder = None if path is None else clas_folder(path)
    per_language, origins = {}, []
    for lang in languages:
        if folder is not None:
            text, origin = _read_text(folder / f"{lang}.txt"), str(folder / f"{lang}.txt")
            _cache_clas_file(lang, text)
        else:
            text, origin = _clas_download_or_cached(lang)
        per_language[lang] = parse_clas_questions(text, origin)
        origins.append(origin)
    counts = {lang: len(items) for lang, items in per_language.items()}
    if len(set(counts.values())) > 1:
        raise LapeEvalError(f"The CLaS-Bench files have different numbers of questions "
                            f"({', '.join(f'{lang} {n}' for lang, n in counts.items())}); the grid pairs question i of "
                            f"every language. Use unmodified copies of {CLAS_DATA}/<lang>.txt from {CLAS_REPO}.")
    where = str(folder) if folder is not None else f"{CLAS_URL.format(lang='<lang>')}"
    return parallel_rows(per_language, f"clas: CLaS-Bench questions, {where}", "clas_q")


def clas_folder(path: Path) -> Path:
    """The folder of ``<lang>.txt`` files: ``path`` itself, or ``CLaS-Bench/data`` (or ``data``) under a clone."""
    for folder in (path, path / CLAS_DATA, path / "data"):
        if folder.is_dir() and any(folder.glob("*.txt")):
            return folder
    raise LapeEvalError(f"--questions clas:{path}: no folder of CLaS-Bench question files there. Give the folder "
                        f"{CLAS_DATA} of a copy of {CLAS_REPO} (one <lang>.txt per language, one question per line), "
                        "or the repository's root.")


def parse_clas_questions(text: str, origin: str) -> list[str]:
    """One file's questions as CLaS-Bench reads them: stripped lines, blank ones skipped, the first 70."""
    questions = parse_lines(text)[:CLAS_QUESTIONS]
    if not questions:
        raise LapeEvalError(f"{origin} holds no question (every line is blank); it should be a copy of "
                            f"{CLAS_DATA}/<lang>.txt from {CLAS_REPO}.")
    return questions


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise LapeEvalError(f"--questions clas: {path} does not exist; the folder holds CLaS-Bench's files of other "
                            f"languages only. Copy {CLAS_DATA}/{path.name} of {CLAS_REPO} there, or leave that "
                            "language out of --languages.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise LapeEvalError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); give an unmodified "
                            f"copy of {CLAS_DATA}/{path.name} of {CLAS_REPO}.") from None


def clas_cache_file(lang: str) -> Path:
    return cache_folder() / "clas-bench" / f"{lang}.txt"


def _cache_clas_file(lang: str, text: str) -> None:
    with atomic_path(clas_cache_file(lang)) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _clas_download_or_cached(lang: str) -> tuple[str, str]:
    cached = clas_cache_file(lang)
    url = CLAS_URL.format(lang=lang)
    if cached.is_file():
        return cached.read_text(encoding="utf-8"), f"{url} (cached in {cached})"
    how = (f"Clone {CLAS_REPO} (or download its folder {CLAS_DATA}) on a machine with internet and pass "
           f"--questions clas:PATH (that data folder, or the clone); or use --questions bundled.")
    text = _fetch(url, "--questions clas", how)
    _cache_clas_file(lang, text)
    return text, url



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
    text = _fetch(REFERENCE_URL, "--questions paper", how)
    _write_cache(text, REFERENCE_URL)
    return text, REFERENCE_URL


def _fetch(url: str, option: str, how: str) -> str:
    """The text at ``url``; offline (``$LAPE_EVAL_OFFLINE`` / ``$HF_HUB_OFFLINE``) or unreachable, an error
    that says ``how`` to do without it."""
    offline = [name for name in OFFLINE_ENVS if os.environ.get(name, "").strip() not in ("", "0")]
    if offline:
        raise LapeEvalError(f"{option} needs {url}, which is not in the cache, and this session is offline "
                            f"(${offline[0]} is set). {how}")
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (a fixed GitHub URL)
            return response.read().decode("utf-8")
    except (urllib.error.URLError, TimeoutError, OSError, UnicodeDecodeError) as error:
        raise LapeEvalError(f"{option}: could not download {url} ({error}). {how}") from None
