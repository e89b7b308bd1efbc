"""Metrics, answer extraction and ``process_results`` functions of lape-eval's lm-eval tasks.

Everything here is plain Python over strings, so it can be tested without a model. The task YAMLs
(``tasks/``) refer to the ``process_*`` functions and the aggregations with ``!function
lape_eval.evaluation.metrics.NAME``, which needs no registration (works with the stock ``lm_eval``).

Scales (documented in tasks/README.md):

* ``*_rate`` metrics are percentages (0-100): every document contributes 100.0 or 0.0 and lm-eval's
  ``mean`` averages them (so lm-eval computes their standard error);
* ``chrf_pp``, ``corpus_bleu`` and ``sentence_bleu`` are on sacrebleu's 0-100 scale;
* ``acc``, ``exact_match`` and ``f1`` are 0-1 fractions, as in lm-eval's own tasks;
* ``answer_lang`` and ``prediction`` are per-document labels (logged in the samples); their aggregate
  is a text summary of the distribution, e.g. ``"en 60.0% · de 30.0% · unknown 10.0%"``.

Language identification uses :func:`lape_eval.evaluation.lid.identify_languages` with the backend from
``$LAPE_EVAL_LID_BACKEND`` (default ``cld2``).
"""

from __future__ import annotations

import os
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.lid import identify_language

METRIC_VERSION = 1  # bump when a metric's definition changes (recorded in every task's metadata)

# --------------------------------------------------------------------------------------------------
# Degenerate answers ("und - und" is German to a language identifier)

_CHAR_SCRIPTS = (  # scripts written without spaces between words: every character is one unit
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x2FA1F),  # CJK extensions B-F, compatibility supplement
    (0x0E00, 0x0E7F),  # Thai
)
SHORT_ANSWER_UNITS = 8  # below this many units the distinct-1 rule applies, from it the distinct-3 rule
MAX_REPEAT_SHARE_SHORT = 0.5  # short answers: degenerate if distinct units / units <= this
MIN_DISTINCT_TRIGRAMS = 0.5  # long answers: degenerate if distinct 3-grams / 3-grams < this
MIN_DISTINCT_UNITS_LONG = 0.25  # long answers: degenerate if distinct units / units < this


def _char_unit(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in _CHAR_SCRIPTS)


def text_units(text: str) -> list[str]:
    """Lower-cased word units: runs of letters, marks and digits; one unit per character for Han,
    Kana and Thai, which have no spaces between words. Tibetan splits at the tsheg (punctuation)."""
    units: list[str] = []
    word: list[str] = []
    for ch in str(text).lower():
        if unicodedata.category(ch)[0] in "LMN":
            if _char_unit(ch):
                if word:
                    units.append("".join(word))
                    word = []
                units.append(ch)
            else:
                word.append(ch)
        elif word:
            units.append("".join(word))
            word = []
    if word:
        units.append("".join(word))
    return units


def degeneracy(text: str) -> str | None:
    """Why an answer is degenerate, or ``None`` when it is not.

    * ``"empty"``: no letter or digit at all;
    * ``"repetitive"``: fewer than :data:`SHORT_ANSWER_UNITS` units and at most half of them distinct
      (``"und - und"``, ``"ja ja ja"``, ``"好好好"``);
    * ``"loop"``: longer, and fewer than half of its word 3-grams distinct or fewer than a quarter of
      its units distinct (generation stuck in a loop).
    A one-word answer is not degenerate (but language identification of one word is unreliable).
    """
    units = text_units(text)
    if not units:
        return "empty"
    n = len(units)
    if n < SHORT_ANSWER_UNITS:
        if n >= 2 and len(set(units)) / n <= MAX_REPEAT_SHARE_SHORT:
            return "repetitive"
        return None
    trigrams = list(zip(units, units[1:], units[2:]))
    if len(set(trigrams)) / len(trigrams) < MIN_DISTINCT_TRIGRAMS or len(set(units)) / n < MIN_DISTINCT_UNITS_LONG:
        return "loop"
    return None


def is_degenerate(text: str) -> bool:
    return degeneracy(text) is not None


# --------------------------------------------------------------------------------------------------
# Aggregations


def _nan() -> float:
    return float("nan")


def percent(items: Sequence) -> float:
    """Share of truthy items, in percent (NaN for no items)."""
    items = list(items)
    return 100.0 * sum(1 for item in items if item) / len(items) if items else _nan()


def rate_diagonal(items: Sequence[tuple[bool, bool]]) -> float:
    """``items`` = (source == target, success) per document: the success rate on the diagonal (%)."""
    return percent([ok for diagonal, ok in items if diagonal])


def rate_off_diagonal(items: Sequence[tuple[bool, bool]]) -> float:
    """The success rate over documents whose target language differs from the source (%)."""
    return percent([ok for diagonal, ok in items if not diagonal])


def distribution(items: Iterable, top: int = 8) -> str:
    """``"en 60.0% · de 30.0% · unknown 10.0%"``: the labels by share, most frequent first."""
    labels = ["none" if item is None or item == "" else str(item) for item in items]
    if not labels:
        return ""
    counts = Counter(labels).most_common()
    shown = [f"{label} {100.0 * count / len(labels):.1f}%" for label, count in counts[:top]]
    if len(counts) > top:
        rest = sum(count for _, count in counts[top:])
        shown.append(f"other {100.0 * rest / len(labels):.1f}%")
    return " · ".join(shown)


# --------------------------------------------------------------------------------------------------
# Language identification of outputs


def output_language(text: str) -> str:
    """LID label of a generated answer (newlines become spaces, as in the paper's scoring)."""
    return identify_language(str(text).replace("\n", " ").strip())


# --------------------------------------------------------------------------------------------------
# Language forcing (method spec §6.1)


def _forcing_scores(doc: dict, answer: str) -> dict:
    label = output_language(answer)
    hit = label == doc["target_lang"]
    degenerate = is_degenerate(answer)
    return {
        "target_rate": 100.0 * hit,
        "target_rate_clean": 100.0 * (hit and not degenerate),
        "degenerate_rate": 100.0 * degenerate,
        "english_rate": 100.0 * (label == "en"),
        "answer_lang": label,
    }


def process_forcing(doc: dict, results: list[str]) -> dict:
    """Per document: was the answer in the target language (LID), degenerate, English; its label."""
    return _forcing_scores(doc, results[0])


def process_forcing_grid(doc: dict, results: list[str]) -> dict:
    """As :func:`process_forcing`, plus (diagonal, success) pairs for the diagonal / off-diagonal rates."""
    scores = _forcing_scores(doc, results[0])
    diagonal = doc["source_lang"] == doc["target_lang"]
    hit = scores["target_rate"] > 0
    clean = scores["target_rate_clean"] > 0
    scores["target_rate_diag"] = (diagonal, hit)
    scores["target_rate_offdiag"] = (diagonal, hit)
    scores["target_rate_clean_offdiag"] = (diagonal, clean)
    return scores


def forcing_matrix(samples: Iterable[dict], metric: str = "target_rate") -> dict[tuple[str, str], float]:
    """``{(source, target): rate %}`` from the logged samples of ``lape_forcing_grid`` (a heatmap)."""
    cells: dict[tuple[str, str], list[float]] = {}
    for sample in samples:
        doc = sample["doc"]
        cells.setdefault((doc["source_lang"], doc["target_lang"]), []).append(float(sample[metric]))
    return {key: sum(values) / len(values) for key, values in sorted(cells.items())}


# --------------------------------------------------------------------------------------------------
# Translation (method spec §6.2, pitfall 12)

BLEU_TOKENIZE_ENV = "LAPE_EVAL_BLEU_TOKENIZE"
_BLEU_TOKENIZERS = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab", "bo": "char", "th": "char"}


def bleu_tokenizer(lang: str) -> str:
    """sacrebleu tokenizer for corpus BLEU into ``lang``: 13a, except zh (zh), ja (ja-mecab),
    ko (ko-mecab), bo and th (char). ``$LAPE_EVAL_BLEU_TOKENIZE`` (e.g. ``flores200`` for spBLEU, once
    its SentencePiece model is in ``~/.sacrebleu/models``) overrides it for every language."""
    return os.environ.get(BLEU_TOKENIZE_ENV) or _BLEU_TOKENIZERS.get(lang, "13a")


def clean_translation(text: str) -> str:
    """The hypothesis scored: the generation with surrounding whitespace removed."""
    return str(text).strip()


def process_translation(doc: dict, results: list[str]) -> dict:
    import sacrebleu

    hypothesis = clean_translation(results[0])
    reference = doc["reference"]
    target = doc["target_lang"]
    return {
        "chrf_pp": (hypothesis, reference),
        "corpus_bleu": (hypothesis, reference, bleu_tokenizer(target)),
        "sentence_bleu": sacrebleu.sentence_bleu(hypothesis, [reference]).score,
        "target_rate": 100.0 * (output_language(hypothesis) == target),
    }


def corpus_chrf_pp(items: Sequence[tuple[str, str]]) -> float:
    """Corpus chrF++ (sacrebleu ``CHRF(word_order=2)``) over (hypothesis, reference) pairs."""
    from sacrebleu.metrics import CHRF

    if not items:
        return _nan()
    hypotheses = [hyp for hyp, _ in items]
    references = [ref for _, ref in items]
    return CHRF(word_order=2).corpus_score(hypotheses, [references]).score


def _bleu(tokenize: str):
    from sacrebleu.metrics import BLEU

    try:
        return BLEU(tokenize=tokenize)
    except (ImportError, ModuleNotFoundError, RuntimeError) as error:
        extra = {"ja-mecab": "ja", "ko-mecab": "ko"}.get(tokenize)
        fix = f"pip install 'sacrebleu[{extra}]'" if extra else f"choose another tokenizer in ${BLEU_TOKENIZE_ENV}"
        raise LapeEvalError(f"sacrebleu's {tokenize!r} BLEU tokenizer is not available ({error}); {fix}.") from None


def corpus_bleu(items: Sequence[tuple[str, str, str]]) -> float:
    """Corpus BLEU over (hypothesis, reference, tokenizer) triples (one tokenizer per task)."""
    if not items:
        return _nan()
    tokenizers = {tok for _, _, tok in items}
    if len(tokenizers) != 1:
        raise LapeEvalError(f"corpus_bleu got several tokenizers in one task: {sorted(tokenizers)}.")
    hypotheses = [hyp for hyp, _, _ in items]
    references = [ref for _, ref, _ in items]
    return _bleu(tokenizers.pop()).corpus_score(hypotheses, [references]).score


# --------------------------------------------------------------------------------------------------
# Extractive QA: XQuAD (method spec §6.4, pitfall 13)

CHAR_TOKEN_LANGS = frozenset({"zh", "ja", "ko", "th", "bo"})
# Articles removed per language, as in the MLQA evaluation script; other languages keep their words.
_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
}
_ASCII_PUNCT = set(string.punctuation)


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str, lang: str) -> str:
    """SQuAD normalisation made multilingual: lower case, drop every Unicode punctuation mark,
    drop the language's articles (en, es, de, vi), collapse whitespace."""
    text = "".join(ch for ch in str(text).lower() if not _is_punct(ch))
    if lang in _ARTICLES:
        text = re.sub(_ARTICLES[lang], " ", text)
    return " ".join(text.split())


def answer_tokens(text: str, lang: str) -> list[str]:
    """F1 tokens: characters (spaces dropped) for zh, ja, ko, th, bo; whitespace words otherwise."""
    normalized = normalize_answer(text, lang)
    if lang in CHAR_TOKEN_LANGS:
        return [ch for ch in normalized if not ch.isspace()]
    return normalized.split()


def _f1(prediction: list[str], gold: list[str]) -> float:
    if not prediction or not gold:
        return float(prediction == gold)
    same = sum((Counter(prediction) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_exact_match(prediction: str, golds: Sequence[str], lang: str) -> float:
    return max(float(normalize_answer(prediction, lang) == normalize_answer(g, lang)) for g in golds)


def squad_f1(prediction: str, golds: Sequence[str], lang: str) -> float:
    tokens = answer_tokens(prediction, lang)
    return max(_f1(tokens, answer_tokens(g, lang)) for g in golds)


def _paper_normalize(text: str) -> str:
    # The reference code: lower case, ASCII punctuation removed, whitespace collapsed (no articles).
    return " ".join("".join(ch for ch in str(text).lower() if ch not in _ASCII_PUNCT).split())


def paper_exact_match(prediction: str, golds: Sequence[str]) -> float:
    """The paper's EM (English-centric normalisation, whitespace tokens)."""
    return max(float(_paper_normalize(prediction) == _paper_normalize(g)) for g in golds)


def paper_f1(prediction: str, golds: Sequence[str]) -> float:
    """The paper's F1: over token *sets*, whitespace tokens (so zh/th are all-or-nothing)."""
    def one(gold: str) -> float:
        p, g = _paper_normalize(prediction).split(), _paper_normalize(gold).split()
        if not p or not g:
            return float(p == g)
        common = set(p) & set(g)
        if not common:
            return 0.0
        precision, recall = len(common) / len(p), len(common) / len(g)
        return 2 * precision * recall / (precision + recall)

    return max(one(g) for g in golds)


def gold_answers(doc: dict) -> list[str]:
    answers = doc["answers"]
    texts = answers["text"] if isinstance(answers, dict) else answers
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise LapeEvalError(f"XQuAD document {doc.get('id')!r} has no gold answer.")
    return texts


def process_xquad(doc: dict, results: list[str]) -> dict:
    prediction = str(results[0]).strip()
    golds = gold_answers(doc)
    lang = doc["lang"]
    return {
        "exact_match": squad_exact_match(prediction, golds, lang),
        "f1": squad_f1(prediction, golds, lang),
        "exact_match_paper": paper_exact_match(prediction, golds),
        "f1_paper": paper_f1(prediction, golds),
        "target_rate": 100.0 * (output_language(prediction) == lang),
    }


# --------------------------------------------------------------------------------------------------
# Belebele, generative (method spec §6.3, pitfall 14)

LETTERS = "ABCD"
_BELEBELE_RULES = (
    re.compile(r"^([ABCD])\)"),
    re.compile(r"^([ABCD])\."),
    re.compile(r"^([ABCD])\s"),
    re.compile(r"^\(([ABCD])\)"),
    re.compile(r"^([ABCD])$"),
    re.compile(r"ANSWER:\s*([ABCD])"),
    re.compile(r"THE ANSWER IS\s*([ABCD])"),
)


def extract_belebele(output: str) -> tuple[str | None, str]:
    """The paper's letter extraction: ``(letter or None, how)`` with how = ``"rule"``,
    ``"first_char"`` (the fallback that favours "A" for outputs starting with "A ...") or ``"none"``."""
    text = str(output).strip().upper()
    for rule in _BELEBELE_RULES:
        match = rule.search(text)
        if match:
            return match.group(1), "rule"
    if text and text[0] in LETTERS:
        return text[0], "first_char"
    return None, "none"


def belebele_gold(doc: dict) -> str:
    value = doc["correct_answer_num"]
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if not 1 <= number <= 4:
        raise LapeEvalError(f"Belebele document has correct_answer_num={value!r}; expected 1-4.")
    return LETTERS[number - 1]


def process_belebele(doc: dict, results: list[str]) -> dict:
    letter, how = extract_belebele(results[0])
    return {
        "acc": float(letter is not None and letter == belebele_gold(doc)),
        "unparsable_rate": 100.0 * (letter is None),
        "fallback_rate": 100.0 * (how == "first_char"),
        "prediction": letter or "none",
    }


# --------------------------------------------------------------------------------------------------
# XNLI, generative (method spec §6.5, pitfall 14)

NLI_LABELS = ("entailment", "neutral", "contradiction")  # gold labels 0, 1, 2
_DIGIT_LABELS = {1: "entailment", 2: "neutral", 3: "contradiction"}


def _digit(ch: str) -> int | None:
    return unicodedata.decimal(ch, None) if ch.isdigit() else None


def extract_xnli(output: str) -> str | None:
    """The paper's label extraction, in order: the whole output is 1/2/3; the first character is
    1/2/3; "entailment", then "contradiction", then "neutral" as substrings; the words yes/true/correct
    (entailment), then no/false/incorrect (contradiction); else ``None``."""
    text = str(output).strip()
    if text.isdigit() and len(text) == 1 and _digit(text) in _DIGIT_LABELS:
        return _DIGIT_LABELS[_digit(text)]
    if text and _digit(text[0]) in _DIGIT_LABELS:
        return _DIGIT_LABELS[_digit(text[0])]
    lower = text.lower()
    for label in ("entailment", "contradiction", "neutral"):
        if label in lower:
            return label
    if re.search(r"\byes\b|\btrue\b|\bcorrect\b", lower):
        return "entailment"
    if re.search(r"\bno\b|\bfalse\b|\bincorrect\b", lower):
        return "contradiction"
    return None


def xnli_gold(doc: dict) -> str:
    label = doc["label"]
    try:
        return NLI_LABELS[int(label)]
    except (ValueError, TypeError, IndexError):
        raise LapeEvalError(f"XNLI document has label={label!r}; expected 0, 1 or 2.") from None


def process_xnli(doc: dict, results: list[str]) -> dict:
    predicted = extract_xnli(results[0])
    gold = xnli_gold(doc)
    correct = predicted == gold
    return {
        "acc": float(correct),
        "acc_entailment": (gold, correct),
        "acc_neutral": (gold, correct),
        "acc_contradiction": (gold, correct),
        "unparsable_rate": 100.0 * (predicted is None),
        "prediction": predicted or "none",
    }


def _class_accuracy(items: Sequence[tuple[str, bool]], label: str) -> float:
    hits = [correct for gold, correct in items if gold == label]
    return sum(hits) / len(hits) if hits else _nan()


def acc_entailment(items) -> float:
    return _class_accuracy(items, "entailment")


def acc_neutral(items) -> float:
    return _class_accuracy(items, "neutral")


def acc_contradiction(items) -> float:
    return _class_accuracy(items, "contradiction")
