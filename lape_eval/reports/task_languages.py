"""The language of an lm-eval task, and the order languages are shown in.

A task's language comes from its config's metadata, else from a regex the user gives, else from its
name (the last part that is a registered language or FLORES code). Tables and figures order
languages by family (:data:`lape_eval.languages.FAMILY_ORDER`), so related languages sit together.
"""

from __future__ import annotations

import re

from lape_eval.errors import LapeEvalError
from lape_eval.languages import FAMILY_ORDER, all_languages, get_language

LANGUAGE_METADATA_KEYS = ("language", "lang", "target_lang")


def _language_tokens() -> tuple[dict[str, str], dict[str, str]]:
    languages = all_languages()
    key = tuple((lang.code, lang.flores) for lang in languages)
    if _TOKENS.get("key") != key:  # the registry can grow (register_language)
        _TOKENS.update(key=key, value=({lang.code: lang.code for lang in languages},
                                       {lang.flores.lower(): lang.code for lang in languages}))
    return _TOKENS["value"]


_TOKENS: dict = {}


def task_language(task: str, config: dict | None = None,
                  regex: re.Pattern | None = None) -> tuple[str, tuple[int, int]] | None:
    """``(language, span of it in the task name)`` or None.

    Order: the task's metadata (``language``, ``lang`` or ``target_lang``), then ``regex`` (its
    first group, or the whole match), else the last ``_``/``-``/``.``-separated part of the name that
    is a registered language code or FLORES code (``belebele_deu_Latn`` → de, ``xnli_de`` → de,
    ``flores_en-de`` → de: the target of a pair).
    """
    metadata = (config or {}).get("metadata") or {}
    for key in LANGUAGE_METADATA_KEYS:
        if isinstance(metadata.get(key), str) and metadata[key]:
            return metadata[key], (len(task), len(task))
    if regex is not None:
        match = regex.search(task)
        if not match:
            return None
        group = 1 if match.re.groups else 0
        return match.group(group), match.span(group)
    iso, flores = _language_tokens()
    parts = [(m.group(0), m.start(), m.end()) for m in re.finditer(r"[^_\-.\s/]+", task)]
    found = None
    for i, (text, start, end) in enumerate(parts):
        pair = f"{text}_{parts[i + 1][0]}".lower() if i + 1 < len(parts) else ""
        if pair and pair not in flores and re.fullmatch(r"[a-z]{3}_[a-z]{4}", pair):
            flores[pair] = _flores_language(pair)  # any FLORES-200 code (belebele_slk_Latn -> sk)
        if pair and flores.get(pair):
            found = (flores[pair], (start, parts[i + 1][2]))
        elif text.lower() in iso and i > 0:  # never the first part: "it_..." is a benchmark name
            found = (iso[text.lower()], (start, end))
    return found


def benchmark_name(task: str, span: tuple[int, int] | None) -> str:
    """The task name without its language (at ``span``): ``xnli_de_gen`` → ``xnli_gen``."""
    if span is None or span[0] >= len(task):
        return task
    name = task[:span[0]].rstrip("_-. ") + (task[span[1]:] if span[1] < len(task) else "")
    return name or task


def _flores_language(code: str) -> str | None:
    try:
        return get_language(code).code
    except LapeEvalError:
        return None


def language_sort_key(code: str) -> tuple:
    families = {lang.code: lang.family for lang in all_languages()}
    family = families.get(code)
    if family is None:  # a language outside the registered ones: its resolved family, if any
        try:
            family = get_language(code).family
        except LapeEvalError:
            family = None
    rank = FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)
    return (rank, family or "~", code)


def compile_language_regex(pattern: str | None) -> re.Pattern | None:
    """The user's ``--language-regex``, compiled; a clear error when it is not a regular expression."""
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        raise LapeEvalError(f"--language-regex {pattern!r} is not a valid regular expression: {error}.") from None
