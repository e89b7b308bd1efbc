"""The language registry: one record per language, shared by every other module.

The order of ``PAPER_LANGUAGES`` is the language axis of the reference code's tensors and masks
(Gurgurov et al. 2025, method spec §3); keep it when exporting to the reference format.
Add a language with :func:`register_language`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lape_eval.errors import LapeEvalError


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1, the key used everywhere in lape-eval
    flores: str  # FLORES-200 / Belebele code
    name: str  # English name, as used in the paper's prompts
    script: str
    family: str  # grouping used for plots (the reference code's families)

    @property
    def latin_script(self) -> bool:
        return self.script == "Latin"


_REGISTRY: dict[str, Language] = {}


def register_language(language: Language) -> None:
    """Add (or replace) a language, e.g. ``register_language(Language("sk", "slk_Latn", ...))``."""
    _REGISTRY[language.code] = language


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

# Family order used to sort heatmaps so that related languages sit next to each other.
FAMILY_ORDER = (
    "Germanic", "Romance", "Slavic", "Semitic", "Indo-Aryan", "Turkic",
    "Sino-Tibetan", "Japonic", "Koreanic",
)


class UnknownLanguageError(LapeEvalError):
    """A language code that the registry does not know."""


def get_language(code: str) -> Language:
    try:
        return _REGISTRY[code]
    except KeyError:
        raise UnknownLanguageError(
            f"Unknown language code {code!r}. Use an ISO 639-1 code from the registry "
            f"({', '.join(sorted(_REGISTRY))}), or add the language with "
            "lape_eval.languages.register_language(...)."
        ) from None


def parse_languages(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Turn ``"en,de fr"``, a list of codes, ``"all"`` or ``None`` into validated codes, in order."""
    if spec is None or spec == "all" or spec == ["all"]:
        return list(PAPER_LANGUAGES)
    items = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec)
    codes: list[str] = []
    for item in items:
        code = get_language(item.strip()).code
        if code not in codes:
            codes.append(code)
    if not codes:
        raise UnknownLanguageError("No language given: name at least one ISO 639-1 code, or 'all'.")
    return codes


def all_languages() -> list[Language]:
    return list(_REGISTRY.values())
