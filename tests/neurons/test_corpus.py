"""Corpus sources and token packing."""

from __future__ import annotations

import json

import pytest

from lape_eval.neurons.corpus import CorpusSpec, make_batch, packed_sequences, token_stream
from lape_eval.errors import LapeEvalError
from tiny_models import build_tokenizer


def test_udhr_has_all_21_languages_aligned():
    from lape_eval.languages import PAPER_LANGUAGES
    from lape_eval.udhr import udhr_aligned

    aligned = udhr_aligned(PAPER_LANGUAGES)
    assert len(aligned) >= 55
    key, texts = aligned[0]
    assert set(texts) == set(PAPER_LANGUAGES)
    article_1 = dict(udhr_aligned(["en", "de"]))[(1, 1)]
    assert article_1["en"].startswith("All human beings are born free")
    assert "frei" in article_1["de"]


def test_token_stream_counts_exactly_and_cuts_the_last_document():
    tokenizer = build_tokenizer()
    documents = ["one two three", "four five six seven", "eight"]
    expected = [t for d in documents for t in tokenizer(d, add_special_tokens=False)["input_ids"]]
    assert list(token_stream(iter(documents), tokenizer, None, chunk=2)) == expected
    assert list(token_stream(iter(documents), tokenizer, 5, chunk=2)) == expected[:5]


def test_packing_keeps_the_tail_and_masks_bos_and_padding():
    sequences = list(packed_sequences(iter(range(10)), seq_len=4, bos_id=99))
    assert sequences == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    batch = make_batch(sequences[2:], bos_id=99, pad_id=-1)
    assert batch.input_ids.tolist() == [[99, 6, 7, 8], [99, 9, -1, -1]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.count_mask.tolist() == [[False, True, True, True], [False, True, False, False]]
    assert batch.num_counted == 4


def test_folder_sources_txt_and_jsonl(tmp_path):
    (tmp_path / "de.txt").write_text("Erster Absatz.\nNoch eine Zeile.\n\n\nZweiter Absatz.\n", encoding="utf-8")
    (tmp_path / "fr.jsonl").write_text(
        "\n".join(json.dumps({"body": t}) for t in ["Bonjour.", "Merci."]) + "\n", encoding="utf-8"
    )
    assert list(CorpusSpec(str(tmp_path)).documents("de")) == ["Erster Absatz.\nNoch eine Zeile.", "Zweiter Absatz."]
    assert list(CorpusSpec(f"dir:{tmp_path}", text_field="body").documents("fr")) == ["Bonjour.", "Merci."]
    assert list(CorpusSpec(f"jsonl:{tmp_path}/{{lang}}.jsonl", "body").documents("fr")) == ["Bonjour.", "Merci."]


@pytest.mark.parametrize(
    "files, lang, message",
    [
        ({}, "de", "No corpus file for language 'de'"),
        ({"de.txt": "\n\n  \n"}, "de", "is empty"),
        ({"de.jsonl": '{"other": "x"}\n'}, "de", "expected a JSON object with a 'text' field"),
        ({"de.jsonl": "not json\n"}, "de", "line 1"),
    ],
)
def test_bad_corpus_files_give_clear_errors(tmp_path, files, lang, message):
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(LapeEvalError, match=message):
        list(CorpusSpec(str(tmp_path)).documents(lang))


def test_unknown_corpus_and_language():
    with pytest.raises(LapeEvalError, match="Unknown corpus"):
        list(CorpusSpec("/no/such/folder").documents("en"))
    with pytest.raises(LapeEvalError, match="Unknown language code 'xx'"):
        list(CorpusSpec("udhr").documents("xx"))


@pytest.mark.parametrize(
    "source, lang, path, config, field",
    [
        ("culturax", "de", "uonlp/CulturaX", "de", "text"),
        ("culturax", "no", "uonlp/CulturaX", "no", "text"),
        ("fineweb2", "de", "HuggingFaceFW/fineweb-2", "deu_Latn", "text"),
        ("fineweb2", "zh", "HuggingFaceFW/fineweb-2", "cmn_Hani", "text"),
        ("glotcc", "mt", "cis-lmu/GlotCC-V1", "mlt-Latn", "content"),
    ],
)
def test_hub_sources_stream_the_real_configs_and_fields(monkeypatch, source, lang, path, config, field):
    """The online sources, fed a local fixture in the same schema."""
    import datasets

    calls = []

    def fake_load_dataset(dataset_path, **kwargs):
        calls.append((dataset_path, kwargs))
        rows = [{field: "first document", "url": "u1"}, {field: "", "url": "u2"}, {field: "second", "url": "u3"}]
        return datasets.Dataset.from_list(rows).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert list(CorpusSpec(source).documents(lang)) == ["first document", "second"]
    assert calls == [(path, {"name": config, "split": "train", "streaming": True})]


def test_hub_source_failure_is_a_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(LapeEvalError, match="needs the internet"):
        list(CorpusSpec("culturax").documents("de"))


class TestCheck:
    """CorpusSpec.check: the same errors as reading, before any model work, reading little."""

    @pytest.mark.parametrize(
        "files, message",
        [
            ({"en.txt": "English."}, "No corpus file for language 'de'"),
            ({"en.txt": "English.", "de.txt": "\n\n  \n"}, "is empty"),
            ({"en.txt": "English.", "de.jsonl": '{"other": "x"}\n'}, "expected a JSON object with a 'text' field"),
        ],
    )
    def test_unreadable_languages_are_refused(self, tmp_path, files, message):
        for name, content in files.items():
            (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(LapeEvalError, match=message):
            CorpusSpec(str(tmp_path)).check(["en", "de"])

    def test_only_the_first_document_is_read(self, tmp_path):
        (tmp_path / "en.jsonl").write_text('{"text": "fine"}\nbroken line\n', encoding="utf-8")
        CorpusSpec(str(tmp_path)).check(["en"])  # the broken second line is found when collecting
        with pytest.raises(LapeEvalError, match="line 2"):
            list(CorpusSpec(str(tmp_path)).documents("en"))

    def test_bad_sources_and_languages(self):
        with pytest.raises(LapeEvalError, match="Unknown corpus '/no/such/folder'"):
            CorpusSpec("/no/such/folder").check(["en"])
        with pytest.raises(LapeEvalError, match="Unknown UDHR split 'train'"):
            CorpusSpec("udhr:train").check(["en"])
        with pytest.raises(LapeEvalError, match="Unknown language code 'xx'"):
            CorpusSpec("udhr").check(["en", "xx"])
        CorpusSpec("udhr:heldout").check(["en", "bo", "zh"])

    def test_hub_sources_are_not_opened(self, monkeypatch):
        import datasets

        def no_network(*args, **kwargs):
            raise AssertionError("the check streamed the dataset")

        monkeypatch.setattr(datasets, "load_dataset", no_network)
        CorpusSpec("fineweb2").check(["de", "zh"])
        with pytest.raises(LapeEvalError, match="Unknown language code 'xx'"):
            CorpusSpec("culturax").check(["xx"])
