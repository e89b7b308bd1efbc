"""The task suite's metrics and extraction rules against independent computations (sacrebleu called
directly, SQuAD examples worked out by hand, the language identifier called directly)."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from lape_eval.evaluation import metrics as tm
from lape_eval.evaluation.lid import identify_language

# --------------------------------------------------------------------------------------------------
# Degenerate answers


@pytest.mark.parametrize("text, reason", [
    ("und - und", "repetitive"),  # German to a language identifier, but no answer
    ("ja ja ja", "repetitive"),
    ("好好好好", "repetitive"),
    ("", "empty"),
    ("  ... !!! 123? ", None),  # digits are units: "123" alone is not degenerate
    ("?!…", "empty"),
    ("I am fine. I am fine. I am fine. I am fine.", "loop"),
    ("the the the the the the the the the the", "loop"),
    ("Ich bin heute sehr gut gelaunt, danke der Nachfrage!", None),
    ("我今天很好，谢谢你的关心。", None),
    ("དེ་རིང་ང་བདེ་པོ་ཡིན།", None),
    ("Gut.", None),  # one word is an answer (if a short one)
])
def test_degeneracy_guard(text, reason):
    assert tm.degeneracy(text) == reason
    assert tm.is_degenerate(text) == (reason is not None)


def test_a_natural_long_answer_is_not_a_loop():
    answer = ("I am doing well today, thank you for asking. The weather is sunny and warm, so I went for a "
              "walk in the park this morning and met some friends. Later I will cook dinner for my family, "
              "and after that we will watch a film together before going to bed.")
    assert tm.degeneracy(answer) is None
    looping = answer + " and after that we will watch a film" * 12
    assert tm.degeneracy(looping) == "loop"


def test_units_keep_tibetan_syllables_and_split_han():
    assert tm.text_units("ང་བདེ་པོ།") == ["ང", "བདེ", "པོ"]
    assert tm.text_units("我很好 ok") == ["我", "很", "好", "ok"]


# --------------------------------------------------------------------------------------------------
# Forcing


def test_forcing_scores_equal_a_manual_lid_call():
    doc = {"source_lang": "en", "target_lang": "de"}
    for answer in ["Mir geht es heute sehr gut, danke der Nachfrage.", "I am fine, thank you very much.",
                   "und - und", "Je vais très bien aujourd'hui, merci beaucoup.", ""]:
        label = identify_language(answer)
        scores = tm.process_forcing(doc, [answer])
        assert scores["answer_lang"] == label
        assert scores["target_rate"] == (100.0 if label == "de" else 0.0)
        assert scores["english_rate"] == (100.0 if label == "en" else 0.0)
        assert scores["target_rate_clean"] == (100.0 if label == "de" and not tm.is_degenerate(answer) else 0.0)
    assert identify_language("und - und") == "de"  # why the clean rate exists
    assert tm.process_forcing(doc, ["und - und"])["target_rate_clean"] == 0.0


def test_diagonal_and_off_diagonal_rates():
    items = [(True, True), (True, False), (False, True), (False, True), (False, False), (False, True)]
    assert tm.rate_diagonal(items) == 50.0
    assert tm.rate_off_diagonal(items) == 75.0
    assert math.isnan(tm.rate_off_diagonal([(True, True)]))
    grid = tm.process_forcing_grid({"source_lang": "en", "target_lang": "en"}, ["I am fine, thank you."])
    assert grid["target_rate_diag"] == (True, True) and grid["target_rate_offdiag"] == (True, True)


def test_distribution_summary():
    assert tm.distribution(["en", "de", "en", "unknown", "en"]) == "en 60.0% · de 20.0% · unknown 20.0%"
    assert tm.distribution(["a", "b", "c"], top=2) == "a 33.3% · b 33.3% · other 33.3%"
    assert tm.distribution([]) == ""


def test_forcing_matrix_from_samples():
    samples = [{"doc": {"source_lang": "en", "target_lang": "de"}, "target_rate": 100.0},
               {"doc": {"source_lang": "en", "target_lang": "de"}, "target_rate": 0.0},
               {"doc": {"source_lang": "de", "target_lang": "de"}, "target_rate": 100.0}]
    assert tm.forcing_matrix(samples) == {("de", "de"): 100.0, ("en", "de"): 50.0}


# --------------------------------------------------------------------------------------------------
# Translation

HYPS = ["The cat sat on the mat.", "A dog is barking loudly", "", "Completely unrelated words here."]
REFS = ["The cat is sitting on the mat.", "The dog barks loudly.", "Nothing was produced.", "Some reference."]


def test_corpus_chrf_pp_equals_sacrebleu():
    expected = sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score
    assert tm.corpus_chrf_pp(list(zip(HYPS, REFS))) == pytest.approx(expected, abs=1e-9)
    assert tm.corpus_chrf_pp([(r, r) for r in REFS]) == pytest.approx(100.0)


@pytest.mark.parametrize("lang, tokenize", [("de", "13a"), ("zh", "zh"), ("ja", "ja-mecab"), ("ko", "ko-mecab"),
                                            ("bo", "char")])
def test_corpus_bleu_uses_the_language_tokenizer(lang, tokenize):
    hyps = {"zh": ["猫坐在垫子上。", "今天天气很好"], "ja": ["猫がマットの上に座った。", "今日はいい天気です"],
            "ko": ["고양이가 매트 위에 앉았다.", "오늘은 날씨가 좋다"], "bo": ["ང་བདེ་པོ་ཡིན།", "དེ་རིང་གནམ་གཤིས་ཡག་པོ་འདུག"],
            "de": ["Die Katze saß auf der Matte.", "Heute ist schönes Wetter"]}[lang]
    refs = {"zh": ["猫坐在垫子上了。", "今天天气非常好。"], "ja": ["猫はマットの上に座っていた。", "今日は天気がいいです。"],
            "ko": ["고양이가 매트 위에 앉아 있었다.", "오늘은 날씨가 아주 좋다."], "bo": ["ང་བདེ་པོ་ཡིན་པས།", "དེ་རིང་གནམ་གཤིས་ཡག་པོ་རེད།"],
            "de": ["Die Katze saß auf der Matte.", "Heute ist das Wetter schön."]}[lang]
    assert tm.bleu_tokenizer(lang) == tokenize
    items = [tm.process_translation({"reference": r, "target_lang": lang}, [h])["corpus_bleu"] for h, r in zip(hyps, refs)]
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score
    assert tm.corpus_bleu(items) == pytest.approx(expected, abs=1e-9)


def test_bleu_tokenizer_override(monkeypatch):
    monkeypatch.setenv(tm.BLEU_TOKENIZE_ENV, "intl")
    assert tm.bleu_tokenizer("zh") == "intl"


def test_sentence_bleu_is_the_papers_mean_of_sentence_scores():
    scores = [tm.process_translation({"reference": r, "target_lang": "en"}, [h])["sentence_bleu"]
              for h, r in zip(HYPS, REFS)]
    expected = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(HYPS, REFS)]  # 13a, paper ×100
    assert scores == pytest.approx(expected)


def test_translation_output_language_rate_and_stripping():
    doc = {"reference": "Alle Menschen sind frei.", "target_lang": "de"}
    scores = tm.process_translation(doc, ["  Alle Menschen sind frei und gleich geboren.\n"])
    assert scores["chrf_pp"] == ("Alle Menschen sind frei und gleich geboren.", doc["reference"])
    assert scores["target_rate"] == (100.0 if identify_language("Alle Menschen sind frei und gleich geboren.") == "de"
                                     else 0.0)


# --------------------------------------------------------------------------------------------------
# XQuAD: EM/F1 worked out by hand


def test_squad_f1_english_by_hand():
    # "the Black Sea coast" -> "black sea coast" (3 tokens), gold "Black Sea" -> "black sea" (2 tokens):
    # 2 common tokens, P = 2/3, R = 1, F1 = 2 * 2/3 / (5/3) = 0.8
    assert tm.squad_f1("the Black Sea coast", ["Black Sea"], "en") == pytest.approx(0.8)
    assert tm.squad_exact_match("The Black Sea.", ["Black Sea"], "en") == 1.0
    assert tm.squad_exact_match("Black Sea coast", ["Black Sea", "the Black Sea coast"], "en") == 1.0
    # The paper's version keeps articles and uses token sets: {the, black, sea} vs {black, sea}
    assert tm.paper_exact_match("the Black Sea", ["Black Sea"]) == 0.0
    assert tm.paper_f1("the Black Sea", ["Black Sea"]) == pytest.approx(0.8)
    # Sets, not multisets: "sea sea" vs "sea" -> P = 1/2 (1 common of 2 tokens), R = 1 -> 2/3
    assert tm.paper_f1("sea sea", ["sea"]) == pytest.approx(2 / 3)
    assert tm.squad_f1("sea sea", ["sea"], "en") == pytest.approx(2 / 3)


def test_squad_character_tokens_for_chinese_by_hand():
    # 黑海沿岸 vs 黑海: 4 vs 2 characters, 2 common: P = 1/2, R = 1, F1 = 2/3
    assert tm.squad_f1("黑海沿岸", ["黑海"], "zh") == pytest.approx(2 / 3)
    assert tm.squad_exact_match("黑海。", ["黑海"], "zh") == 1.0  # Unicode punctuation removed
    # whitespace tokens (the paper's) make it all-or-nothing
    assert tm.paper_f1("黑海沿岸", ["黑海"]) == 0.0


def test_squad_language_articles_and_unicode_punctuation():
    assert tm.squad_exact_match("das Schwarze Meer", ["Schwarze Meer"], "de") == 1.0
    assert tm.squad_exact_match("das Schwarze Meer", ["Schwarze Meer"], "fr") == 0.0
    assert tm.squad_exact_match("«Marea Neagră»", ["Marea Neagră"], "ro") == 1.0
    # Thai: character tokens; ทะเลดำ (6 chars) vs ทะเล (4): P = 4/6, R = 1 -> 0.8
    assert tm.squad_f1("ทะเลดำ", ["ทะเล"], "th") == pytest.approx(0.8)


def test_process_xquad_takes_the_best_gold_answer():
    doc = {"answers": {"text": ["ten", "ten countries"], "answer_start": [0, 0]}, "lang": "en"}
    scores = tm.process_xquad(doc, [" ten countries\n"])
    assert scores["exact_match"] == 1.0 and scores["f1"] == 1.0
    assert scores["target_rate"] == (100.0 if identify_language("ten countries") == "en" else 0.0)


# --------------------------------------------------------------------------------------------------
# Belebele / XNLI extraction (the paper's rules, in order)


@pytest.mark.parametrize("output, letter, how", [
    ("B) The second option", "B", "rule"),
    ("c. because", "C", "rule"),
    ("D", "D", "rule"),
    ("(A)", "A", "rule"),
    ("The answer is C", "C", "rule"),
    ("Answer: B", "B", "rule"),
    ("B) ... but the answer: A", "B", "rule"),  # the start-of-text rules come first
    ("A good question indeed", "A", "rule"),  # "A " matches the "X␣" rule
    ("All of them", "A", "first_char"),  # the fallback that favours A
    ("I don't know", None, "none"),
    ("", None, "none"),
])
def test_belebele_extraction(output, letter, how):
    assert tm.extract_belebele(output) == (letter, how)


def test_belebele_scores():
    doc = {"correct_answer_num": "3"}
    assert tm.process_belebele(doc, ["C) yes"]) == {"acc": 1.0, "unparsable_rate": 0.0, "fallback_rate": 0.0,
                                                   "prediction": "C"}
    assert tm.process_belebele(doc, ["Nothing"])["unparsable_rate"] == 100.0
    assert tm.process_belebele({"correct_answer_num": 1}, ["Apples"])["fallback_rate"] == 100.0


@pytest.mark.parametrize("output, label", [
    ("1", "entailment"), ("2", "neutral"), ("3", "contradiction"), ("3. Contradiction", "contradiction"),
    ("٢", "neutral"),  # a Unicode decimal digit, as int() would read it
    ("4", None), ("Neutral", "neutral"), ("entailment or contradiction", "entailment"),
    ("a contradiction, not neutral", "contradiction"), ("Yes, it follows", "entailment"),
    ("No, it does not", "contradiction"), ("That is false", "contradiction"), ("maybe", None), ("", None),
])
def test_xnli_extraction(output, label):
    assert tm.extract_xnli(output) == label


def test_xnli_scores_and_per_class_accuracy():
    docs = [{"label": 0}, {"label": 0}, {"label": 1}, {"label": 2}]
    outputs = ["1", "3", "2. Neutral", "hmm"]
    scores = [tm.process_xnli(d, [o]) for d, o in zip(docs, outputs)]
    assert [s["acc"] for s in scores] == [1.0, 0.0, 1.0, 0.0]
    assert [s["unparsable_rate"] for s in scores] == [0.0, 0.0, 0.0, 100.0]
    pairs = [s["acc_entailment"] for s in scores]
    assert tm.acc_entailment(pairs) == 0.5 and tm.acc_neutral(pairs) == 1.0 and tm.acc_contradiction(pairs) == 0.0
