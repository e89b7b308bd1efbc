"""A fine-tuning run's text: the training documents and the held-out ones, as packed token sequences.

The held-out text is ``--heldout-corpus``, or else every document whose index i has
⌊(i+1)f⌋ > ⌊if⌋ for the fraction f = ``--heldout-fraction`` (spread evenly over the corpus, disjoint
from the training documents). Training makes ``epochs`` passes over the rest, ``max_tokens`` tokens
in all.

(Named ``training_data``, not ``data``: :mod:`lape_eval.evaluation.data` is the evaluation tasks' data.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from lape_eval.adapters.settings import FinetuneSettings
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.corpus import HUB_DATASETS, packed_sequences, token_stream


def split_documents(documents: Iterator[str], fraction: float, part: str) -> Iterator[str]:
    """Every document whose index i has ⌊(i+1)f⌋ > ⌊if⌋ is held out (a fraction f, spread evenly)."""
    for i, document in enumerate(documents):
        heldout = fraction > 0 and math.floor((i + 1) * fraction) > math.floor(i * fraction)
        if heldout == (part == "heldout"):
            yield document


def training_documents(settings: FinetuneSettings) -> Iterator[str]:
    docs = settings.corpus.documents(settings.language)
    if settings.heldout_corpus is None:
        docs = split_documents(docs, settings.heldout_fraction, "train")
    return docs


def heldout_documents(settings: FinetuneSettings) -> Iterator[str] | None:
    """The held-out documents, or None where the run evaluates nothing (fraction 0, no held-out corpus)."""
    if settings.heldout_corpus is not None:
        return settings.heldout_corpus.documents(settings.language)
    if settings.heldout_fraction > 0:
        return split_documents(settings.corpus.documents(settings.language), settings.heldout_fraction, "heldout")
    return None


def no_training_text(settings: FinetuneSettings) -> LapeEvalError:
    return LapeEvalError(f"The corpus {settings.corpus.describe()} holds no training text for '{settings.language}' "
                         "(after setting aside the held-out documents).")


def no_heldout_text(settings: FinetuneSettings) -> LapeEvalError:
    return LapeEvalError(f"The held-out text for '{settings.language}' holds no tokens: give --heldout-corpus, or "
                         "a corpus with more documents for --heldout-fraction.")


def check_text(settings: FinetuneSettings) -> None:
    """Before a model is loaded: the training and held-out text can be read and hold a document.

    Only up to the first document of each is read (corpora may be large). A hub dataset streams
    from the network, so it is first read when training starts."""
    if settings.corpus.source not in HUB_DATASETS and next(training_documents(settings), None) is None:
        raise no_training_text(settings)
    heldout = heldout_documents(settings)
    heldout_source = (settings.heldout_corpus or settings.corpus).source
    if heldout is not None and heldout_source not in HUB_DATASETS and next(heldout, None) is None:
        raise no_heldout_text(settings)


@dataclass
class TrainingData:
    """The run's text as token sequences for its tokenizer (``bos_id``: the BOS prepended, or None)."""

    settings: FinetuneSettings
    tokenizer: object
    bos_id: int | None
    pad_id: int

    def training_sequences(self) -> Iterator[list[int]]:
        """The training stream: ``epochs`` passes over the corpus, ``max_tokens`` tokens in all."""
        s = self.settings
        remaining = s.max_tokens
        for _ in range(s.epochs):
            produced = 0
            stream = token_stream(training_documents(s), self.tokenizer, remaining)
            for sequence in packed_sequences(stream, seq_len=s.seq_len, bos_id=self.bos_id):
                produced += len(sequence)
                yield sequence
            if produced == 0:
                return
            if remaining is not None:
                remaining -= produced
                if remaining <= 0:
                    return

    def heldout_sequences(self) -> list[list[int]]:
        """The held-out sequences (``heldout_tokens`` tokens), or [] where the run evaluates nothing."""
        docs = heldout_documents(self.settings)
        if docs is None:
            return []
        stream = token_stream(docs, self.tokenizer, self.settings.heldout_tokens)
        sequences = list(packed_sequences(stream, seq_len=self.settings.seq_len, bos_id=self.bos_id))
        if not sequences:
            raise no_heldout_text(self.settings)
        return sequences

    def count(self) -> tuple[int, int] | None:
        """(sequences, tokens) of the training stream, or None where counting would stream from the hub."""
        if self.settings.corpus.source in HUB_DATASETS:
            return None
        sequences = tokens = 0
        for sequence in self.training_sequences():
            sequences += 1
            tokens += len(sequence)
        return sequences, tokens

    def planned_steps(self, processes: int) -> int | None:
        """Optimiser steps the run will take (None: unknown, a streamed corpus without a budget).

        Counts the training stream (a local corpus is read through once): refuses an empty one."""
        s = self.settings
        counted = self.count()
        if counted is not None and counted[0] == 0:
            raise no_training_text(s)
        global_batch = s.batch_size * processes
        if counted is not None:
            total = math.ceil(counted[0] / global_batch)
        elif s.max_tokens is not None:
            body = s.seq_len - (1 if self.bos_id is not None else 0)
            total = math.ceil(math.ceil(s.max_tokens / body) * s.epochs / global_batch)
        else:
            total = None
        if s.max_steps is not None:
            total = s.max_steps if total is None else min(total, s.max_steps)
        if total is None and s.schedule != "constant":
            raise LapeEvalError(f"--schedule {s.schedule} needs the number of steps: give --max-tokens or "
                                "--max-steps for a streamed corpus.")
        return total
