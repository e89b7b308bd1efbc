"""The language registry: the paper's 21 hand-written rows, any other code through langcodes.

Expectations are written by hand here (from the FLORES-200 language list and the method spec §3 and
§9.2), never taken from the registry itself.
"""

from __future__ import annotations

import pytest

from lape_eval.errors import LapeEvalError
from lape_eval.languages import (
    CLAS_BENCH_LANGUAGES, FAMILY_ORDER, PAPER_LANGUAGES, Language, UnknownLanguageError, canonical_code,
    get_language, language_order_key, parse_languages, register_language,
)

# code: (English name, script, FLORES-200 code, family). The paper's 21 (method spec §3) ...
PAPER = {
    "bo": ("Tibetan", "Tibetan", "bod_Tibt", "Sino-Tibetan"),
    "mt": ("Maltese", "Latin", "mlt_Latn", "Semitic"),
    "it": ("Italian", "Latin", "ita_Latn", "Romance"),
    "es": ("Spanish", "Latin", "spa_Latn", "Romance"),
    "de": ("German", "Latin", "deu_Latn", "Germanic"),
    "ja": ("Japanese", "Japanese", "jpn_Jpan", "Japonic"),
    "ar": ("Arabic", "Arabic", "arb_Arab", "Semitic"),
    "zh": ("Chinese", "Han", "zho_Hans", "Sino-Tibetan"),
    "af": ("Afrikaans", "Latin", "afr_Latn", "Germanic"),
    "nl": ("Dutch", "Latin", "nld_Latn", "Germanic"),
    "fr": ("French", "Latin", "fra_Latn", "Romance"),
    "pt": ("Portuguese", "Latin", "por_Latn", "Romance"),
    "ru": ("Russian", "Cyrillic", "rus_Cyrl", "Slavic"),
    "ko": ("Korean", "Hangul", "kor_Hang", "Koreanic"),
    "hi": ("Hindi", "Devanagari", "hin_Deva", "Indo-Aryan"),
    "tr": ("Turkish", "Latin", "tur_Latn", "Turkic"),
    "pl": ("Polish", "Latin", "pol_Latn", "Slavic"),
    "sv": ("Swedish", "Latin", "swe_Latn", "Germanic"),
    "da": ("Danish", "Latin", "dan_Latn", "Germanic"),
    "no": ("Norwegian", "Latin", "nob_Latn", "Germanic"),
    "en": ("English", "Latin", "eng_Latn", "Germanic"),
}
# ... and the 12 CLaS-Bench languages outside them (method spec §9.2; FLORES codes as CLaS-Bench's
# evaluate_forcing_success.py maps them).
CLAS_EXTRA = {
    "sk": ("Slovak", "Latin", "slk_Latn", "Slavic"),
    "el": ("Greek", "Greek", "ell_Grek", "Hellenic"),
    "kk": ("Kazakh", "Cyrillic", "kaz_Cyrl", "Turkic"),
    "sw": ("Swahili", "Latin", "swh_Latn", "Niger-Congo"),
    "ka": ("Georgian", "Georgian", "kat_Geor", "Kartvelian"),
    "uk": ("Ukrainian", "Cyrillic", "ukr_Cyrl", "Slavic"),
    "fa": ("Persian", "Arabic", "pes_Arab", "Iranian"),
    "th": ("Thai", "Thai", "tha_Thai", "Tai-Kadai"),
    "id": ("Indonesian", "Latin", "ind_Latn", "Austronesian"),
    "vi": ("Vietnamese", "Latin", "vie_Latn", "Austroasiatic"),
    "cs": ("Czech", "Latin", "ces_Latn", "Slavic"),
    "ro": ("Romanian", "Latin", "ron_Latn", "Romance"),
}
CLAS_ORDER = ("en ar bo da de es fr hi it ja ko mt nl no pl pt ru sv tr zh sk el kk sw ka uk fa th id vi cs ro")
EXPECTED = {**PAPER, **CLAS_EXTRA}


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_each_language_resolves_to_its_hand_written_row(code):
    name, script, flores, family = EXPECTED[code]
    assert get_language(code) == Language(code, flores, name, script, family)
    assert get_language(code).latin_script == (script == "Latin")


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_three_letter_and_flores_spellings_give_the_same_record(code):
    flores = EXPECTED[code][2]
    for spelling in (flores, flores.lower(), flores.upper(), flores.split("_")[0], code.upper()):
        assert get_language(spelling).code == code, spelling


def test_the_paper_21_keep_their_order_and_clas_bench_lists_its_32_in_its_mask_order():
    assert PAPER_LANGUAGES == tuple(PAPER)
    assert CLAS_BENCH_LANGUAGES == tuple(CLAS_ORDER.split())
    assert set(CLAS_BENCH_LANGUAGES) == (set(PAPER) - {"af"}) | set(CLAS_EXTRA)
    assert parse_languages("all") == list(PAPER) == parse_languages(None) == parse_languages("paper")
    assert parse_languages("clas-bench") == CLAS_ORDER.split()


@pytest.mark.parametrize("spelling, code", [
    ("slk", "sk"), ("slk_Latn", "sk"), ("sk-SK", "sk"), ("SK", "sk"), (" sk ", "sk"),
    ("pes", "fa"), ("fas", "fa"), ("swh_Latn", "sw"), ("cmn_Hans", "zh"), ("zho_Hans", "zh"), ("arb", "ar"),
    ("nob", "no"), ("nb", "no"), ("nor", "no"), ("eng", "en"), ("ger", "de"), ("cze", "cs"), ("tgl", "tl"),
    ("iw", "he"), ("yue", "yue"), ("ckb_Arab", "ckb"),
])
def test_aliases_canonicalise_to_iso_639_1_where_one_exists(spelling, code):
    assert canonical_code(spelling) == code


def test_languages_without_iso_639_1_code_keep_their_639_3_code():
    assert get_language("yue") == Language("yue", "yue_Hant", "Cantonese", "Han (Traditional)", "Sino-Tibetan")
    assert get_language("ceb") == Language("ceb", "ceb_Latn", "Cebuano", "Latin", "Austronesian")
    unknown_family = get_language("haw")  # Hawaiian: no family in the table
    assert (unknown_family.code, unknown_family.flores, unknown_family.family) == ("haw", "haw_Latn", "Other")


def test_macrolanguages_get_flores_200_individual_codes():
    assert [get_language(c).flores for c in ("sq", "et", "lv", "uz", "ms", "tl")] == [
        "als_Latn", "est_Latn", "lvs_Latn", "uzn_Latn", "zsm_Latn", "tgl_Latn"]


@pytest.mark.parametrize("bad", ["xx", "zz", "qaa", "mul", "und", "sgn", "e", "toolong", "sk-", "en_XX_1", "",
                                 "Slovak", "x-foo", "12"])
def test_unknown_codes_are_user_errors_naming_the_fix(bad):
    with pytest.raises(UnknownLanguageError) as caught:
        get_language(bad)
    assert isinstance(caught.value, LapeEvalError)
    message = str(caught.value)
    assert message.startswith(f"Unknown language code {bad!r}") and "register_language" in message
    assert "\n" not in message


def test_unknown_codes_list_near_matches():
    assert "Near matches: sk (Slovak)" in str(pytest.raises(UnknownLanguageError, get_language, "Slovak").value)
    assert "zh (Chinese)" in str(pytest.raises(UnknownLanguageError, get_language, "zz").value)
    assert "fa (Persian)" in str(pytest.raises(UnknownLanguageError, get_language, "persian").value)


def test_parse_languages_canonicalises_and_drops_repeats():
    assert parse_languages("en, slk_Latn sk,fa pes") == ["en", "sk", "fa"]
    assert parse_languages(["de", "ell_Grek"]) == ["de", "el"]
    with pytest.raises(UnknownLanguageError, match="'xx'"):
        parse_languages("en,xx")
    with pytest.raises(UnknownLanguageError, match="No language given"):
        parse_languages(" , ")


def test_register_language_overrides_a_resolved_record():
    original = get_language("kk")
    try:
        register_language(Language("kk", "kaz_Latn", "Kazakh (Latin)", "Latin", "Turkic"))
        assert get_language("kaz").flores == "kaz_Latn" and get_language("kk").name == "Kazakh (Latin)"
    finally:
        from lape_eval import languages

        languages._REGISTRY.pop("kk")
    assert get_language("kk") == original


def test_order_keys_put_the_paper_21_first_and_new_families_after_theirs():
    codes = ["sk", "en", "bo", "el", "af"]
    assert sorted(codes, key=language_order_key) == ["bo", "af", "en", "el", "sk"]
    assert FAMILY_ORDER[:9] == ("Germanic", "Romance", "Slavic", "Semitic", "Indo-Aryan", "Turkic",
                                "Sino-Tibetan", "Japonic", "Koreanic")
    for code in CLAS_EXTRA:
        assert get_language(code).family in FAMILY_ORDER
