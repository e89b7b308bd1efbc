"""The bundled UDHR parallel corpus (``lape_eval/data/udhr.jsonl``; see ``data/UDHR_SOURCE.md``).

Each unit is ``{"lang", "article", "paragraph", "heading", "text"}``; ``article`` 0 is the
preamble, 1..30 the articles.  The key ``(article, paragraph)`` means the same content in every
language.  Rebuild the file with ``scripts/build_udhr.py``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable

from lape_eval.resources import shipped_data_file

UDHR_LANGUAGES: tuple[str, ...] = (
    "bo", "mt", "it", "es", "de", "ja", "ar", "zh", "af", "nl", "fr",
    "pt", "ru", "ko", "hi", "tr", "pl", "sv", "da", "no", "en",
)

UdhrKey = tuple[int, int]  # (article, paragraph)


@functools.cache
def load_udhr() -> list[dict]:
    """All units, in file order (language, article, paragraph).  Cached: do not mutate."""
    text = shipped_data_file("udhr.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@functools.cache
def _by_lang() -> dict[str, dict[UdhrKey, str]]:
    out: dict[str, dict[UdhrKey, str]] = {}
    for unit in load_udhr():
        out.setdefault(unit["lang"], {})[(unit["article"], unit["paragraph"])] = unit["text"]
    return out


class UnknownUdhrLanguageError(KeyError, ValueError):
    """A language the bundled UDHR file does not contain."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def _units(lang: str) -> dict[UdhrKey, str]:
    try:
        return _by_lang()[lang]
    except KeyError:
        raise UnknownUdhrLanguageError(
            f"No UDHR text for language {lang!r}: the bundled UDHR (lape_eval/data/udhr.jsonl) has "
            f"{', '.join(_by_lang())}. Use another corpus for it (a folder of <lang>.txt files, "
            "'jsonl:PATH/{lang}.jsonl', or a hub dataset such as culturax), or other tasks than the UDHR ones."
        ) from None


# Articles 23-30 (about a quarter of the text) are held out: neuron sets are identified on the rest
# ("identify" split), and held-out losses / translation checks use these.
HELDOUT_FROM_ARTICLE = 23
SPLITS = ("all", "identify", "heldout")


def in_split(key: UdhrKey, split: str) -> bool:
    if split not in SPLITS:
        raise ValueError(f"Unknown UDHR split {split!r}: use one of {', '.join(SPLITS)}.")
    heldout = key[0] >= HELDOUT_FROM_ARTICLE
    return split == "all" or (split == "heldout") == heldout


def udhr_paragraphs(lang: str, split: str = "all") -> list[str]:
    """The texts of one language, preamble first, in (article, paragraph) order."""
    units = _units(lang)
    return [units[key] for key in sorted(units) if in_split(key, split)]


def udhr_aligned(langs: Iterable[str]) -> list[tuple[UdhrKey, dict[str, str]]]:
    """``[((article, paragraph), {lang: text})]`` for the units present in every one of ``langs``."""
    langs = list(dict.fromkeys(langs))
    if not langs:
        raise ValueError("udhr_aligned needs at least one language.")
    tables = {lang: _units(lang) for lang in langs}
    shared = set.intersection(*(set(t) for t in tables.values()))
    return [(key, {lang: tables[lang][key] for lang in langs}) for key in sorted(shared)]
