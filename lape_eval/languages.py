"""The language registry: one record per language, shared by every other module.

Any language resolves: :func:`get_language` accepts an ISO 639-1 code (``sk``), an ISO 639-2/3 code
(``slk``), a FLORES-200 style code (``slk_Latn``) or a BCP-47 tag (``sk-SK``), in any case, and
returns one :class:`Language` whose ``code`` is the canonical key used everywhere in lape-eval:

* the ISO 639-1 code where the language has one (``slk`` / ``slk_Latn`` / ``sk`` -> ``sk``),
* else its ISO 639-3 code, lower case (``yue``, ``ckb``, ``ceb``).

This is the label set of :func:`lape_eval.evaluation.lid.normalize_label` too, so a language-ID
answer can be compared with a registry code directly. Like that function, the registry reads the
individual language that FLORES-200 uses for the standard variety of a macrolanguage as the
macrolanguage (``pes``/``pes_Arab`` -> ``fa``, ``swh`` -> ``sw``, ``cmn`` -> ``zh``, ``arb`` -> ``ar``,
``nb``/``nob`` -> ``no``), and keeps Tagalog as ``tl`` (langcodes would say ``fil``). A script or
region in the input selects nothing: one code, one record (register an override to change one).

The paper's 21 languages (``PAPER_LANGUAGES``) are hand-written rows: their order is the language
axis of the reference code's tensors and masks (Gurgurov et al. 2025, method spec §3), and their
names, FLORES codes and families are the reference's; keep that order when exporting to the
reference format. Every other language is resolved through ``langcodes`` (with ``language-data``)
when it is first looked up, and cached: English name (for the prompts) from CLDR, the likely
script, the FLORES-200 code (ISO 639-3 + script, with FLORES's choice for macrolanguages), and a
family from a hand-written table where known (``"Other"`` elsewhere). Families outside the paper's
sort after the paper's ones (:data:`FAMILY_ORDER`), and languages outside the 21 sort after them
(:func:`language_order_key`).

Add or override a language with :func:`register_language` (it wins over the resolved record).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from lape_eval.errors import LapeEvalError


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1 where one exists, else ISO 639-3: the key used everywhere in lape-eval
    flores: str  # FLORES-200 / Belebele code
    name: str  # English name, as used in the paper's prompts
    script: str
    family: str  # grouping used for plots (the reference code's families for the 21)

    @property
    def latin_script(self) -> bool:
        return self.script == "Latin"


_REGISTRY: dict[str, Language] = {}  # the paper's 21 and what users registered, in registration order
_RESOLVED: dict[str, Language] = {}  # cache: canonical code -> record resolved through langcodes


def register_language(language: Language) -> None:
    """Add (or replace) a language, e.g. ``register_language(Language("sk", "slk_Latn", ...))``.

    A registered record wins over the one langcodes would give for the same code."""
    _REGISTRY[language.code] = language
    _RESOLVED.pop(language.code, None)


for _row in [
    ("bo", "bod_Tibt", "Tibetan", "Tibetan", "Sino-Tibetan"),
    ("mt", "mlt_Latn", "Maltese", "Latin", "Semitic"),
    ("it", "ita_Latn", "Italian", "Latin", "Romance"),
    ("es", "spa_Latn", "Spanish", "Latin", "Romance"),
    ("de", "deu_Latn", "German", "Latin", "Germanic"),
    ("ja", "jpn_Jpan", "Japanese", "Japanese", "Japonic"),
    ("ar", "arb_Arab", "Arabic", "Arabic", "Semitic"),
    ("zh", "zho_Hans", "Chinese", "Han", "Sino-Tibetan"),
    ("af", "afr_Latn", "Afrikaans", "Latin", "Germanic"),
    ("nl", "nld_Latn", "Dutch", "Latin", "Germanic"),
    ("fr", "fra_Latn", "French", "Latin", "Romance"),
    ("pt", "por_Latn", "Portuguese", "Latin", "Romance"),
    ("ru", "rus_Cyrl", "Russian", "Cyrillic", "Slavic"),
    ("ko", "kor_Hang", "Korean", "Hangul", "Koreanic"),
    ("hi", "hin_Deva", "Hindi", "Devanagari", "Indo-Aryan"),
    ("tr", "tur_Latn", "Turkish", "Latin", "Turkic"),
    ("pl", "pol_Latn", "Polish", "Latin", "Slavic"),
    ("sv", "swe_Latn", "Swedish", "Latin", "Germanic"),
    ("da", "dan_Latn", "Danish", "Latin", "Germanic"),
    ("no", "nob_Latn", "Norwegian", "Latin", "Germanic"),
    ("en", "eng_Latn", "English", "Latin", "Germanic"),
]:
    register_language(Language(*_row))

PAPER_LANGUAGES: tuple[str, ...] = tuple(_REGISTRY)

# CLaS-Bench (Gurgurov et al. 2026, method spec §9.2): its 32 languages in the order of its masks and
# activation tensors (``identification/lape_identify.py``): the paper's 21 minus af, plus 12.
CLAS_BENCH_LANGUAGES: tuple[str, ...] = (
    "en", "ar", "bo", "da", "de", "es", "fr", "hi", "it", "ja", "ko", "mt", "nl", "no", "pl", "pt",
    "ru", "sv", "tr", "zh", "sk", "el", "kk", "sw", "ka", "uk", "fa", "th", "id", "vi", "cs", "ro",
)

# Named language lists that parse_languages accepts in place of codes.
PRESETS: dict[str, tuple[str, ...]] = {"all": PAPER_LANGUAGES, "paper": PAPER_LANGUAGES,
                                       "clas-bench": CLAS_BENCH_LANGUAGES}

# Family order used to sort heatmaps so that related languages sit next to each other: the paper's
# families first (unchanged), then the others of _FAMILIES; any other family sorts last.
FAMILY_ORDER = (
    "Germanic", "Romance", "Slavic", "Semitic", "Indo-Aryan", "Turkic",
    "Sino-Tibetan", "Japonic", "Koreanic",
    "Baltic", "Celtic", "Hellenic", "Albanian", "Armenian", "Iranian", "Uralic", "Kartvelian",
    "Dravidian", "Austronesian", "Austroasiatic", "Tai-Kadai", "Niger-Congo", "Cushitic", "Chadic",
    "Mongolic", "Other",
)

# Families of languages outside the 21 (hand-written; "Other" for the rest).
_FAMILIES: dict[str, str] = {
    code: family
    for family, codes in {
        "Germanic": "is fo lb yi fy nn nds gsw sco",
        "Romance": "ro ca gl oc co sc lij vec scn ast an wa",
        "Slavic": "sk cs uk bg sr hr bs sl mk be szl",
        "Semitic": "he am ti",
        "Indo-Aryan": "bn ur pa gu mr ne si as or sd mai bho awa mag hne ks sa",
        "Turkic": "kk az uz ky tt tk ug ba crh",
        "Sino-Tibetan": "yue my dz",
        "Baltic": "lt lv ltg",
        "Celtic": "ga cy gd br",
        "Hellenic": "el",
        "Albanian": "sq",
        "Armenian": "hy",
        "Iranian": "fa ps ku ckb tg",
        "Uralic": "fi et hu",
        "Kartvelian": "ka",
        "Dravidian": "ta te kn ml",
        "Austronesian": "id ms tl fil jv su mg ceb ilo war mi sm fj",
        "Austroasiatic": "vi km sat",
        "Tai-Kadai": "th lo shn",
        "Niger-Congo": "sw zu xh yo ig rw sn ny wo ln lg tn st ts ss ak tw ee fon rn kg",
        "Cushitic": "so om",
        "Chadic": "ha",
        "Mongolic": "mn",
    }.items()
    for code in codes.split()
}

# Individual language -> macrolanguage, where FLORES-200 (and GlotLID) name the standard variety of a
# macrolanguage by the individual code; the same table as lape_eval.evaluation.lid uses for labels.
_INDIVIDUAL_TO_MACRO = {
    "arb": "ar", "cmn": "zh", "zsm": "ms", "pes": "fa", "ekk": "et", "lvs": "lv", "khk": "mn", "npi": "ne",
    "ory": "or", "swh": "sw", "uzn": "uz", "azj": "az", "plt": "mg", "gaz": "om", "ydd": "yi", "quy": "qu",
    "kmr": "ku", "pbt": "ps", "nb": "no", "nob": "no",
}
# ... and back: the FLORES-200 language code of those macrolanguages (and of Albanian, Tosk).
_FLORES_LANGUAGE = {
    "ar": "arb", "zh": "zho", "ms": "zsm", "fa": "pes", "et": "est", "lv": "lvs", "mn": "khk", "ne": "npi",
    "or": "ory", "sw": "swh", "uz": "uzn", "az": "azj", "mg": "plt", "om": "gaz", "yi": "ydd", "qu": "quy",
    "ku": "kmr", "ps": "pbt", "no": "nob", "sq": "als", "tl": "tgl", "ay": "ayr", "gn": "grn", "ff": "fuv", "kr": "knc",
}
_FLORES_SCRIPT = {"Kore": "Hang"}  # FLORES-200 writes Korean as Hangul
_SCRIPT_NAMES = {"Hans": "Han", "Hant": "Han (Traditional)", "Kore": "Hangul", "Jpan": "Japanese"}
# Codes langcodes rewrites that lape-eval (and the language-ID backends) keep: Tagalog stays tl.
_KEEP = {"tl": "tl", "tgl": "tl"}
_NOT_LANGUAGES = {"mul", "und", "zxx", "mis"}


class UnknownLanguageError(LapeEvalError):
    """A language code that the registry does not know."""


def get_language(code: str) -> Language:
    """The record of ``code`` (any ISO 639-1/-2/-3 code, FLORES-style code or BCP-47 tag; see the
    module docstring), or :class:`UnknownLanguageError` naming near matches."""
    raw = str(code).strip()
    if raw in _REGISTRY:
        return _REGISTRY[raw]
    if raw in _RESOLVED:
        return _RESOLVED[raw]
    canonical, tag = _canonical(raw)
    if canonical in _REGISTRY:
        return _REGISTRY[canonical]
    if canonical not in _RESOLVED:
        _RESOLVED[canonical] = _resolve(canonical, tag)
    return _RESOLVED[canonical]


def canonical_code(code: str) -> str:
    """The registry key of ``code``: ``canonical_code("slk_Latn") == "sk"``."""
    return get_language(code).code


def _canonical(raw: str):
    """``(canonical code, langcodes Language)`` of a code, or UnknownLanguageError."""
    parts = re.split(r"[-_]", raw.lower())
    base = parts[0]
    if not re.fullmatch(r"[a-z]{2,3}", base) or any(not re.fullmatch(r"[a-z0-9]{1,8}", p) for p in parts[1:]):
        raise _unknown(raw)
    import langcodes

    try:  # the whole tag must be valid (slk_Latn, sk-SK), then its language decides
        valid = langcodes.Language.get("-".join(parts)).is_valid()
        base = _INDIVIDUAL_TO_MACRO.get(base) or _KEEP.get(base) or base
        tag = langcodes.Language.get(base)
        valid = valid and tag.is_valid() and tag.language is not None
    except (ValueError, LookupError):
        valid = False
    if not valid or base in _NOT_LANGUAGES or tag.language in _NOT_LANGUAGES or "qaa" <= base <= "qtz":
        raise _unknown(raw)
    name = tag.language_name("en")
    if name.startswith("Unknown language") or name.endswith(" languages"):  # unassigned, or a collective code
        raise _unknown(raw)
    canonical = _KEEP.get(base) or _INDIVIDUAL_TO_MACRO.get(tag.language) or tag.language
    if canonical == "tl":
        tag = langcodes.Language.get("tl", normalize=False)
    return canonical, tag


def _resolve(canonical: str, tag) -> Language:
    import langcodes

    name = re.sub(r" \((individual language|macrolanguage)\)$", "", tag.language_name("en"))
    if canonical == "tl":
        name = "Tagalog"
    script = langcodes.Language.get(canonical).maximize().script or "Zyyy"
    if canonical == "tl":
        script = "Latn"
    script_name = _SCRIPT_NAMES.get(script) or langcodes.Language.get(f"und-{script}").script_name("en")
    flores_language = _FLORES_LANGUAGE.get(canonical) or langcodes.Language.get(canonical).to_alpha3()
    flores = f"{flores_language}_{_FLORES_SCRIPT.get(script, script)}"
    return Language(canonical, flores, name, script_name, _FAMILIES.get(canonical, "Other"))


def _unknown(raw: str) -> UnknownLanguageError:
    near = near_matches(raw)
    hint = f" Near matches: {', '.join(near)}." if near else ""
    return UnknownLanguageError(
        f"Unknown language code {raw!r}: it is not an ISO 639-1 or ISO 639-3 code (e.g. 'sk' or 'slk'), a "
        f"FLORES-200 code (e.g. 'slk_Latn') or a language tag that langcodes knows.{hint} Use one of those "
        "codes, or add the language with lape_eval.languages.register_language(Language(code, flores, name, "
        "script, family))."
    )


def near_matches(raw: str, limit: int = 5) -> list[str]:
    """``"code (Name)"`` of known languages whose code, FLORES code or name resemble ``raw``."""
    text = str(raw).strip().lower()
    if not text:
        return []
    known = {lang.code: lang for lang in all_languages()}
    for code in CLAS_BENCH_LANGUAGES:
        known.setdefault(code, None)
    found: list[str] = []
    if len(text) > 3:  # maybe a name: "Slovak", "persian"
        try:
            import langcodes

            match = langcodes.find(text)
            if match.language:
                found.append(match.language)
        except LookupError:
            pass
    keys = {code: code for code in known}
    for code, lang in known.items():
        if lang is not None:
            keys[lang.flores.lower()] = code
            keys[lang.name.lower()] = code
    for key in difflib.get_close_matches(text, list(keys), n=limit, cutoff=0.5):
        found.append(keys[key])
    out = []
    for code in dict.fromkeys(found):
        try:
            out.append(f"{code} ({get_language(code).name})")
        except UnknownLanguageError:
            continue
    return out[:limit]


def language_order_key(code: str) -> tuple:
    """Sort key: the paper's 21 in their order, then every other code alphabetically."""
    if code in PAPER_LANGUAGES:
        return (0, PAPER_LANGUAGES.index(code), code)
    return (1, 0, code)


def parse_languages(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Turn ``"en,de fr"``, a list of codes, a preset (``"all"`` or ``"paper"``: the paper's 21;
    ``"clas-bench"``: CLaS-Bench's 32) or ``None`` (the 21) into canonical codes, in order, without
    repeats (``"slk_Latn"`` -> ``"sk"``)."""
    if spec is None:
        return list(PAPER_LANGUAGES)
    items = spec.replace(",", " ").split() if isinstance(spec, str) else [str(item) for item in spec]
    codes: list[str] = []
    for item in items:
        item = item.strip()
        for code in PRESETS.get(item.lower(), (item,)):
            code = get_language(code).code
            if code not in codes:
                codes.append(code)
    if not codes:
        raise UnknownLanguageError("No language given: name at least one ISO 639 code, or 'all'.")
    return codes


def all_languages() -> list[Language]:
    """The registered languages: the paper's 21 and those added with :func:`register_language`
    (not every code langcodes could resolve)."""
    return list(_REGISTRY.values())
