"""Documents for lape-eval's lm-eval tasks (``custom_dataset: !function lape_eval.evaluation.data.load_*``).

lm-eval calls a loader as ``fn(**metadata, **dataset_kwargs)``: the task YAML's ``dataset_kwargs``
say what to load (``lang``, or ``source_lang`` and ``target_lang``), and the run's metadata (the
model_args, plus ``--metadata '{...}'`` on the command line or ``TaskManager(metadata=...)``) may
carry options:

``data_dir``
    Read the benchmark from local files instead of the Hugging Face hub (also ``$LAPE_EVAL_DATA_DIR``;
    metadata wins). Layout: ``<data_dir>/<HF dataset id>/<config>/<split>.jsonl`` (or ``.json``, or
    ``.parquet``, or ``<split>-*.parquet`` as in the hub's own layout), in the dataset's own schema,
    e.g. ``flores/openlanguagedata/flores_plus/deu_Latn/devtest.jsonl``.
``languages`` / ``source_languages`` / ``target_languages``
    Subset of the forcing grid (``"en,de,fr"`` or a list, any spelling of a code; default: the 21 paper
    languages). Languages outside the shipped questions need ``forcing_questions``.
``activated_languages``, ``downstream_baseline``
    The conditions of the ``lape_downstream_*`` tasks (:func:`load_downstream`).
``forcing_questions``
    A JSONL file of other parallel questions for the forcing tasks (same schema as
    ``tasks/forcing/questions.jsonl``).
``prompt_style``
    What a forcing document asks (its ``prompt`` field, the tasks' ``doc_to_text``): ``paper``
    (default, ``"Q: {question} \\nA:"``) or ``clas`` (CLaS-Bench: the bare question, to run with
    lm-eval's ``--apply_chat_template``; :mod:`lape_eval.evaluation.forcing`).
``flores_split`` (``devtest``), ``udhr_split`` (``heldout``), ``udhr_max_words`` (none),
``xnli_max_docs`` (1000)
    Deviations from the defaults.

Every loader returns ``DatasetDict({"test": ...})`` whose documents carry the fields the prompts,
the metrics and per-document steering (``source_lang``/``target_lang``) need. Problems a user can fix
(an unknown language, a missing file, a row without a field, an unreachable hub) raise
:class:`LapeEvalError` naming the file, row or field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.forcing import check_prompt_style, forcing_prompt
from lape_eval.languages import PAPER_LANGUAGES, UnknownLanguageError, get_language

DATA_DIR_ENV = "LAPE_EVAL_DATA_DIR"

FLORES_PLUS = "openlanguagedata/flores_plus"
XQUAD = "google/xquad"
BELEBELE = "facebook/belebele"
XNLI = "facebook/xnli"

XQUAD_LANGUAGES = ("ar", "de", "zh", "en", "es", "hi", "vi", "tr", "th", "ru", "ro", "el")
XNLI_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")

# Languages of XQuAD / XNLI that are not among the 21 of the registry: English names for the prompts.
EXTRA_LANGUAGE_NAMES = {
    "vi": "Vietnamese", "th": "Thai", "ro": "Romanian", "el": "Greek", "bg": "Bulgarian",
    "sw": "Swahili", "ur": "Urdu",
}
# FLORES+ renamed some FLORES-200 configs (method spec pitfall 11).
_FLORES_PLUS_CODES = {"zh": "cmn_Hans"}

REQUIRED_FIELDS = {
    FLORES_PLUS: ("id", "text"),
    XQUAD: ("id", "context", "question", "answers"),
    BELEBELE: ("flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4",
               "correct_answer_num"),
    XNLI: ("premise", "hypothesis", "label"),
}
_FORCING_QUESTIONS = ("forcing", "questions.jsonl")


# --------------------------------------------------------------------------------------------------
# Languages


def language_name(code: str) -> str:
    """English name of a language for the prompts (registry, then the XQuAD/XNLI extras)."""
    if code in EXTRA_LANGUAGE_NAMES:
        return EXTRA_LANGUAGE_NAMES[code]
    return get_language(code).name


def check_language(code: Any, allowed: tuple[str, ...] | None, family: str) -> str:
    """``code`` if the family has it, else a LapeEvalError that lists the family's languages.

    ``allowed=None``: any language of the registry (whether the data has it shows when it is loaded),
    written as its canonical code (``sk``, not ``slk``: task names and documents use that one)."""
    code = str(code).strip() if code is not None else ""
    if allowed is None:
        try:
            canonical = get_language(code).code
        except UnknownLanguageError as error:
            raise LapeEvalError(f"{family} (from the task's name / its YAML's dataset_kwargs): {error}") from None
        if canonical != code:
            raise LapeEvalError(
                f"Language {code!r} of the {family} tasks is written {canonical!r} in lape-eval (the registry's "
                f"canonical code: ISO 639-1 where one exists); use {canonical!r} in task names and dataset_kwargs."
            )
        return code
    if code not in allowed:
        raise LapeEvalError(
            f"Unknown language code {code!r} for the {family} tasks (from the task's name / its YAML's "
            f"dataset_kwargs). {family} has: {', '.join(allowed)}."
        )
    return code


def flores_plus_config(code: str) -> str:
    return _FLORES_PLUS_CODES.get(code) or get_language(code).flores


def _parse_codes(value, what: str) -> list[str] | None:
    if value is None or value == "" or value == "all":
        return None
    items = value.replace(",", " ").split() if isinstance(value, str) else [str(v) for v in value]
    codes = []
    for item in items:
        try:
            item = get_language(item).code  # metadata may spell a language any way (slk_Latn -> sk)
        except UnknownLanguageError as error:
            raise LapeEvalError(f"forcing grid / downstream ({what}): {error}") from None
        if item not in codes:
            codes.append(item)
    return codes or None


# --------------------------------------------------------------------------------------------------
# Reading rows: local files or the hub


def data_dir(options: dict) -> Path | None:
    raw = options.get("data_dir") or os.environ.get(DATA_DIR_ENV)
    if not raw:
        return None
    path = Path(str(raw)).expanduser()
    if not path.is_dir():
        source = "metadata data_dir" if options.get("data_dir") else f"${DATA_DIR_ENV}"
        raise LapeEvalError(f"The data folder {str(path)!r} (from {source}) does not exist.")
    return path


def _local_candidates(root: Path, dataset: str, config: str, split: str) -> list[Path]:
    folder = root / dataset / config
    exact = [folder / f"{split}.{ext}" for ext in ("jsonl", "json", "parquet")]
    sharded = sorted(folder.glob(f"{split}-*.parquet")) if folder.is_dir() else []
    return [p for p in exact if p.is_file()] + sharded


def _read_file(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise LapeEvalError(f"{path}: line {number} is not valid JSON ({error.msg}).") from None
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise LapeEvalError(f"{path}: row {number} is not a JSON object.")
    return rows


def load_rows(dataset: str, config: str, split: str, options: dict) -> tuple[list[dict], str]:
    """Rows of one dataset config and split, and where they came from (a path or ``hf:...``)."""
    root = data_dir(options)
    if root is not None:
        files = _local_candidates(root, dataset, config, split)
        if not files:
            expected = root / dataset / config / f"{split}.jsonl"
            raise LapeEvalError(
                f"Missing data file for {dataset} (config {config!r}, split {split!r}): expected {expected} "
                f"(or {split}.json / {split}.parquet / {split}-*.parquet next to it). The data folder comes "
                f"from metadata data_dir or ${DATA_DIR_ENV}; unset both to download from the Hugging Face hub."
            )
        rows: list[dict] = []
        for path in files:
            rows.extend(_read_file(path))
        return rows, str(files[0] if len(files) == 1 else files[0].parent)
    try:
        import datasets

        loaded = datasets.load_dataset(dataset, config, split=split)
    except Exception as error:  # offline, gated (FLORES+), renamed config, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LapeEvalError(
            f"Could not load {dataset} (config {config!r}, split {split!r}) from the Hugging Face hub: {first}. "
            f"Log in and accept the dataset's terms if it is gated, or point metadata data_dir / ${DATA_DIR_ENV} "
            f"at local files: <data_dir>/{dataset}/{config}/{split}.jsonl."
        ) from None
    return [dict(row) for row in loaded], f"hf:{dataset}/{config}/{split}"


def check_fields(rows: list[dict], fields: tuple[str, ...], source: str) -> None:
    if not rows:
        raise LapeEvalError(f"{source}: no rows.")
    for number, row in enumerate(rows, 1):
        missing = [field for field in fields if field not in row or row[field] is None]
        if missing:
            raise LapeEvalError(
                f"{source}: row {number} has no field {', '.join(repr(m) for m in missing)} "
                f"(it has: {', '.join(sorted(row))}). Rows need: {', '.join(fields)}."
            )


def _dataset(docs: list[dict], fewshot: list[dict] | None = None):
    """``DatasetDict`` with the evaluated documents as "test" (and few-shot examples as "train")."""
    import datasets

    if not docs:
        raise LapeEvalError("The task has no documents.")
    splits = {"test": datasets.Dataset.from_list(docs)}
    if fewshot:
        splits["train"] = datasets.Dataset.from_list(fewshot)
    return datasets.DatasetDict(splits)


def _int_option(options: dict, key: str, default: int) -> int:
    value = options.get(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise LapeEvalError(f"metadata {key} must be a whole number, got {value!r}.") from None
    if number <= 0:
        raise LapeEvalError(f"metadata {key} must be positive, got {number}.")
    return number


# --------------------------------------------------------------------------------------------------
# Language forcing


def forcing_questions(options: dict | None = None) -> list[dict]:
    """The parallel forcing questions: ``[{"id", "paper", "<lang>": question, ...}]``."""
    options = options or {}
    custom = options.get("forcing_questions")
    if custom:
        path = Path(str(custom)).expanduser()
        if not path.is_file():
            raise LapeEvalError(f"Missing data file: forcing_questions={str(path)!r} does not exist.")
    else:
        from lape_eval.resources import tasks_folder

        path = tasks_folder().joinpath(*_FORCING_QUESTIONS)
    rows = _read_file(path)
    check_fields(rows, ("id",), str(path))
    return rows


def _question_table(options: dict, languages: list[str]) -> tuple[list[dict], str]:
    rows = forcing_questions(options)
    source = str(options.get("forcing_questions") or "tasks/forcing/questions.jsonl")
    covered = [lang for lang in languages if all(row.get(lang) for row in rows)]
    missing = [lang for lang in languages if lang not in covered]
    if missing:
        has = [key for key in rows[0] if key not in ("id", "paper") and all(row.get(key) for row in rows)]
        raise LapeEvalError(
            f"The forcing questions ({source}) have no text in {', '.join(missing)} "
            f"({', '.join(get_language(lang).name for lang in missing)}); they cover: {', '.join(has)}. "
            f"Give metadata forcing_questions=FILE.jsonl whose rows carry an 'id' and one field per language "
            f"({', '.join(repr(lang) for lang in missing)}: the same questions, translated)."
        )
    return rows, source


def _forcing_doc(row: dict, source: str, target: str, rows: list[dict], style: str) -> dict:
    return {
        "id": str(row["id"]),
        "question": row[source],
        "prompt": forcing_prompt(row[source], style),  # what the model is asked (doc_to_text)
        "source_lang": source,
        "target_lang": target,
        "source_name": language_name(source),
        "target_name": language_name(target),
        # A fluent text in the target language (its parallel questions): what an oracle would answer.
        "target_reference": " ".join(r[target] for r in rows),
    }


def load_forcing(lang=None, **options) -> Any:
    """One source language; the target is the same language (plain LID of the answers)."""
    lang = check_language(lang, None, "lape_forcing")
    rows, _ = _question_table(options, [lang])
    style = check_prompt_style(options.get("prompt_style"))
    return _dataset([_forcing_doc(row, lang, lang, rows, style) for row in rows])


def load_forcing_grid(**options) -> Any:
    """Every source × target language (source = target included), question by question.

    Subset with metadata ``languages`` (sources and targets), or ``source_languages`` /
    ``target_languages``. Documents carry ``source_lang`` and ``target_lang`` for ``steer=doc``.
    With ``steer_template`` (a task's ``dataset_kwargs``, e.g. ``"-{source_lang} +{target_lang}"``)
    each document also gets a ``steer`` field, the template filled with its fields
    (``steer_template_diagonal`` for the documents whose source is the target, if given)."""
    both = _parse_codes(options.get("languages"), "languages")
    sources = _parse_codes(options.get("source_languages"), "source_languages") or both or list(PAPER_LANGUAGES)
    targets = _parse_codes(options.get("target_languages"), "target_languages") or both or list(PAPER_LANGUAGES)
    rows, _ = _question_table(options, list(dict.fromkeys(sources + targets)))
    style = check_prompt_style(options.get("prompt_style"))
    # Question-major order: --limit 441 (21 x 21) gives every cell of the grid one question.
    docs = [_forcing_doc(row, s, t, rows, style) for row in rows for s in sources for t in targets]
    template = options.get("steer_template")
    if template:  # a per-document spec for steer=doc (lape_eval.experiments: one task per condition)
        diagonal = options.get("steer_template_diagonal") or template
        for doc in docs:
            chosen = diagonal if doc["source_lang"] == doc["target_lang"] else template
            doc["steer"] = str(chosen).format(**doc)
    return _dataset(docs)


# --------------------------------------------------------------------------------------------------
# Translation: FLORES+ and the bundled UDHR


def _translation_doc(doc_id, source: str, target: str, source_text: str, reference: str) -> dict:
    return {
        "id": str(doc_id),
        "source_lang": source,
        "target_lang": target,
        "source_name": language_name(source),
        "target_name": language_name(target),
        "source_text": source_text,
        "reference": reference,
    }


def _pair(source_lang, target_lang, family: str) -> tuple[str, str]:
    source = check_language(source_lang, None, family)
    target = check_language(target_lang, None, family)
    if source == target:
        raise LapeEvalError(f"{family}: source and target language are both {source!r}; translation needs two.")
    return source, target


def load_flores(source_lang=None, target_lang=None, **options) -> Any:
    """FLORES+ (``openlanguagedata/flores_plus``): one config per language, aligned by ``id``."""
    source, target = _pair(source_lang, target_lang, "lape_flores")
    split = str(options.get("flores_split") or "devtest")
    tables = {}
    for lang in (source, target):
        config = flores_plus_config(lang)
        rows, origin = load_rows(FLORES_PLUS, config, split, options)
        check_fields(rows, REQUIRED_FIELDS[FLORES_PLUS], origin)
        tables[lang] = ({str(row["id"]): row["text"] for row in rows}, [str(row["id"]) for row in rows], origin)
    source_rows, order, _ = tables[source]
    target_rows, _, target_origin = tables[target]
    missing = [i for i in order if i not in target_rows]
    if missing:
        raise LapeEvalError(
            f"{target_origin}: no sentence with id {missing[0]!r} (and {len(missing) - 1} more) of the "
            f"{source} side; FLORES+ files of one split must be parallel."
        )
    return _dataset([_translation_doc(i, source, target, source_rows[i], target_rows[i]) for i in order])


def load_udhr_translation(source_lang=None, target_lang=None, **options) -> Any:
    """The bundled UDHR, aligned by (article, paragraph); split ``heldout`` (articles 23-30, not used
    to identify neurons) by default, ``all`` or ``identify`` with metadata ``udhr_split``. Metadata
    ``udhr_max_words`` keeps the sentence-like paragraphs: those whose English version has at most
    that many words (the same paragraphs for every pair)."""
    from lape_eval.udhr import SPLITS, in_split, udhr_aligned

    source, target = _pair(source_lang, target_lang, "lape_udhr_translation")
    split = str(options.get("udhr_split") or "heldout")
    if split not in SPLITS:
        raise LapeEvalError(f"metadata udhr_split={split!r}: use one of {', '.join(SPLITS)}.")
    max_words = options.get("udhr_max_words")
    max_words = None if max_words in (None, "") else _int_option(options, "udhr_max_words", 0)
    try:
        aligned = udhr_aligned(dict.fromkeys([source, target, "en"]))
    except ValueError as error:  # a language the bundled UDHR does not have
        raise LapeEvalError(str(error)) from None
    docs = [
        _translation_doc(f"{article}.{paragraph}", source, target, texts[source], texts[target])
        for (article, paragraph), texts in aligned
        if in_split((article, paragraph), split) and (max_words is None or len(texts["en"].split()) <= max_words)
    ]
    # Few-shot examples (--num_fewshot k, sampler first_n): the shortest paragraphs of the articles
    # that are not evaluated, shortest first (never the evaluated ones).
    shots = sorted(
        (_translation_doc(f"{a}.{p}", source, target, texts[source], texts[target])
         for (a, p), texts in aligned if not in_split((a, p), split)),
        key=lambda doc: (len(doc["source_text"]) + len(doc["reference"]), doc["id"]),
    )
    return _dataset(docs, shots)


# --------------------------------------------------------------------------------------------------
# XQuAD, Belebele, XNLI


def load_xquad(lang=None, **options) -> Any:
    lang = check_language(lang, XQUAD_LANGUAGES, "lape_xquad")
    rows, origin = load_rows(XQUAD, f"xquad.{lang}", "validation", options)
    check_fields(rows, REQUIRED_FIELDS[XQUAD], origin)
    docs = []
    for number, row in enumerate(rows, 1):
        answers = row["answers"]
        if not isinstance(answers, dict) or not answers.get("text"):
            raise LapeEvalError(f"{origin}: row {number} has no answers.text (it has answers={answers!r:.80}).")
        docs.append({
            "id": str(row["id"]), "context": row["context"], "question": row["question"],
            "answers": {"text": list(answers["text"]), "answer_start": list(answers.get("answer_start") or [])},
            "lang": lang, "lang_name": language_name(lang),
        })
    return _dataset(docs)


def load_belebele(lang=None, **options) -> Any:
    lang = check_language(lang, None, "lape_belebele")
    config = get_language(lang).flores
    rows, origin = load_rows(BELEBELE, config, "test", options)
    check_fields(rows, REQUIRED_FIELDS[BELEBELE], origin)
    docs = []
    for row in rows:
        doc = {key: row[key] for key in REQUIRED_FIELDS[BELEBELE]}
        doc["correct_answer_num"] = str(doc["correct_answer_num"]).strip()
        for key in ("link", "question_number", "dialect", "ds"):
            if key in row:
                doc[key] = row[key]
        doc.update(lang=lang, lang_name=language_name(lang))
        docs.append(doc)
    return _dataset(docs)


def load_xnli(lang=None, xnli_split="test", **options) -> Any:
    """XNLI: split ``test``, first ``xnli_max_docs`` (1000) rows for the paper's generative task;
    the log-likelihood variant passes ``xnli_split: validation`` (all rows), like lm-eval's ``xnli_*``."""
    lang = check_language(lang, XNLI_LANGUAGES, "lape_xnli")
    split = str(xnli_split)
    rows, origin = load_rows(XNLI, lang, split, options)
    check_fields(rows, REQUIRED_FIELDS[XNLI], origin)
    if split == "test":
        rows = rows[: _int_option(options, "xnli_max_docs", 1000)]
    docs = []
    for number, row in enumerate(rows, 1):
        try:
            label = int(row["label"])
        except (TypeError, ValueError):
            label = -1
        if label not in (0, 1, 2):
            raise LapeEvalError(f"{origin}: row {number} has label={row['label']!r}; expected 0, 1 or 2.")
        docs.append({"premise": row["premise"], "hypothesis": row["hypothesis"], "label": label,
                     "lang": lang, "lang_name": language_name(lang)})
    return _dataset(docs)


# --------------------------------------------------------------------------------------------------
# Downstream heatmaps: a task's documents once unsteered and once per activated language

DOWNSTREAM_LOADERS = {
    "flores": load_flores, "udhr_translation": load_udhr_translation, "xquad": load_xquad,
    "belebele": load_belebele, "belebele_ll": load_belebele, "xnli": load_xnli, "xnli_ll": load_xnli,
}
BASELINE_CONDITION = "none"  # the activated_lang (and steer) of the unsteered copies


def downstream_condition_docs(docs: list[dict], activated: list[str], baseline: bool = True) -> list[dict]:
    """Each document once unsteered (``activated_lang`` and ``steer`` ``"none"``, if ``baseline``) and once per
    activated language X (``activated_lang`` X, ``steer`` ``"+X"``), document-major (so ``--limit n × conditions``
    keeps n documents of every condition); ``source_doc`` is the document's position in ``docs``."""
    conditions = ([BASELINE_CONDITION] if baseline else []) + list(activated)
    return [{**doc, "source_doc": position, "activated_lang": condition,
             "steer": BASELINE_CONDITION if condition == BASELINE_CONDITION else f"+{condition}"}
            for position, doc in enumerate(docs) for condition in conditions]


def _flag(options: dict, key: str, default: bool) -> bool:
    value = options.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise LapeEvalError(f"metadata {key} must be true or false, got {value!r}.")


def load_downstream(task_family=None, **options) -> Any:
    """The documents of a lape-eval task (``task_family`` and its own dataset_kwargs, e.g. ``lang``) repeated
    per condition by :func:`downstream_condition_docs`, for ``steer=doc``: metadata ``activated_languages``
    (default: the 21 paper languages) and ``downstream_baseline`` (default true). Few-shot examples are the
    inner task's."""
    if task_family not in DOWNSTREAM_LOADERS:
        raise LapeEvalError(f"Downstream task with task_family={task_family!r}: use one of "
                            f"{', '.join(DOWNSTREAM_LOADERS)}.")
    activated = _parse_codes(options.pop("activated_languages", None), "activated_languages") or list(PAPER_LANGUAGES)
    baseline = _flag(options, "downstream_baseline", True)
    options.pop("downstream_baseline", None)
    inner = DOWNSTREAM_LOADERS[task_family](**options)
    fewshot = inner["train"].to_list() if "train" in inner else None
    return _dataset(downstream_condition_docs(inner["test"].to_list(), activated, baseline), fewshot)
