"""Per-language text sources, tokenised and packed into fixed-length token batches.

A corpus spec names where each language's documents come from:

* ``udhr`` — the bundled Universal Declaration of Human Rights (the 21 paper languages; others need another source);
  ``udhr:identify`` is its articles 1–22 (with the preamble), ``udhr:heldout`` articles 23–30;
* a folder path (or ``dir:PATH``) — ``PATH/<lang>.txt`` (documents separated by blank lines) or
  ``PATH/<lang>.jsonl`` (one JSON object per line, text in ``text_field``);
* ``jsonl:TEMPLATE`` — e.g. ``jsonl:data/{lang}.jsonl``;
* ``culturax``, ``fineweb2``, ``glotcc`` — Hugging Face datasets streamed in their native order
  (online; CulturaX is gated and needs ``huggingface-cli login``).

Documents are tokenised with the model's tokenizer without special tokens and concatenated with
no separator (as in the reference code), then cut into sequences of ``seq_len`` tokens. The last,
shorter sequence is kept (its padding never counts). With ``add_bos`` each sequence starts with the
tokenizer's BOS token, which the model needs for sensible activations (Gemma in particular); the BOS
position is attended to but never counted in the statistics. ``max_tokens`` caps the counted tokens
per language exactly (the last document is cut).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from dataclasses import dataclass
from pathlib import Path

import torch

from lape_eval.errors import LapeEvalError
from lape_eval.languages import get_language

DEFAULT_SEQ_LEN = 512


@dataclass(frozen=True)
class HubDataset:
    """A streamed Hugging Face dataset: its id, the per-language config and the text field."""

    path: str
    text_field: str
    config_style: str  # "iso" (de), "fineweb" (deu_Latn), "glotcc" (deu-Latn)
    overrides: tuple[tuple[str, str], ...] = ()

    def config_for(self, lang: str) -> str:
        special = dict(self.overrides)
        if lang in special:
            return special[lang]
        flores = get_language(lang).flores
        if self.config_style == "iso":
            return lang
        if self.config_style == "glotcc":
            return flores.replace("_", "-")
        return flores


HUB_DATASETS = {
    "culturax": HubDataset("uonlp/CulturaX", "text", "iso"),
    # FineWeb-2 names Mandarin 'cmn_Hani' and has no English (English is FineWeb proper).
    "fineweb2": HubDataset("HuggingFaceFW/fineweb-2", "text", "fineweb", (("zh", "cmn_Hani"),)),
    "glotcc": HubDataset("cis-lmu/GlotCC-V1", "content", "glotcc", (("zh", "cmn-Hani"),)),
}


@dataclass
class CorpusSpec:
    source: str = "udhr"
    text_field: str = "text"

    def describe(self) -> str:
        return self.source if self.source.startswith("udhr") else f"{self.source} (field {self.text_field})"

    def check(self, languages: list[str]) -> None:
        """Fail now, before a model is loaded or a file written, if a language's text cannot be had:
        read the first document of each language from a local source (a file is opened, not read
        through). A hub dataset is streamed over the network, so only its per-language configuration
        is resolved here; it is opened when collection starts."""
        for lang in languages:
            if self.source in HUB_DATASETS:
                get_language(lang)
                HUB_DATASETS[self.source].config_for(lang)
            else:
                next(self.documents(lang), None)  # an unreadable or empty source raises

    def documents(self, lang: str) -> Iterator[str]:
        """The language's documents in a fixed, reproducible order."""
        get_language(lang)
        source = self.source
        if source == "udhr" or source.startswith("udhr:"):
            from lape_eval.udhr import udhr_paragraphs

            try:
                yield from udhr_paragraphs(lang, source.partition(":")[2] or "all")
            except ValueError as error:
                raise LapeEvalError(str(error)) from None
        elif source in HUB_DATASETS:
            yield from _stream_hub(HUB_DATASETS[source], lang)
        elif source.startswith("jsonl:"):
            yield from _read_jsonl(Path(source[len("jsonl:"):].format(lang=lang)), self.text_field)
        else:
            folder = Path(source[len("dir:"):] if source.startswith("dir:") else source)
            if not folder.is_dir():
                raise LapeEvalError(
                    f"Unknown corpus {source!r}: give 'udhr', a folder holding <lang>.txt or "
                    f"<lang>.jsonl files, 'jsonl:PATH/{{lang}}.jsonl', or one of {', '.join(HUB_DATASETS)}."
                )
            yield from _read_folder(folder, lang, self.text_field)


def _read_folder(folder: Path, lang: str, text_field: str) -> Iterator[str]:
    txt, jsonl = folder / f"{lang}.txt", folder / f"{lang}.jsonl"
    if jsonl.exists():
        yield from _read_jsonl(jsonl, text_field)
    elif txt.exists():
        yield from _read_paragraphs(txt)
    else:
        raise LapeEvalError(
            f"No corpus file for language '{lang}' in {folder}: expected {txt.name} (plain text, "
            f"documents separated by blank lines) or {jsonl.name} (JSON lines with a '{text_field}' field)."
        )


def _lines(path: Path) -> Iterator[str]:
    """The file's lines, streamed (corpus files may be far larger than memory)."""
    try:
        with path.open(encoding="utf-8") as handle:
            yield from handle
    except UnicodeDecodeError as error:
        raise LapeEvalError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}).") from None


def _read_paragraphs(path: Path) -> Iterator[str]:
    """Documents of a text file: paragraphs separated by blank lines."""
    seen, paragraph = 0, []
    for line in _lines(path):
        if line.strip():
            paragraph.append(line.rstrip("\n"))
        elif paragraph:
            seen += 1
            yield "\n".join(paragraph).strip()
            paragraph = []
    if paragraph:
        seen += 1
        yield "\n".join(paragraph).strip()
    if seen == 0:
        raise LapeEvalError(f"The corpus file {path} is empty: put text in it (documents separated by blank lines).")


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    if not path.exists():
        raise LapeEvalError(f"The corpus file {path} does not exist.")
    seen = 0
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            text = record[text_field]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise LapeEvalError(
                f"{path}, line {number}: expected a JSON object with a '{text_field}' field "
                "(or name the field that holds the text)."
            ) from None
        if isinstance(text, str) and text.strip():
            seen += 1
            yield text
    if seen == 0:
        raise LapeEvalError(f"The corpus file {path} holds no text in field '{text_field}'.")


def _stream_hub(dataset: HubDataset, lang: str) -> Iterator[str]:
    import datasets

    name = dataset.config_for(lang)
    try:
        stream = datasets.load_dataset(dataset.path, name=name, split="train", streaming=True)
        for record in stream:
            text = record.get(dataset.text_field)
            if text:
                yield text
    except (ConnectionError, OSError, ValueError, FileNotFoundError) as error:
        raise LapeEvalError(
            f"Cannot stream {dataset.path} (config '{name}') for language '{lang}': "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}. This source needs the "
            "internet (and for CulturaX an accepted licence and `huggingface-cli login`); offline, "
            "use the bundled UDHR (udhr) or local files."
        ) from None


@dataclass
class TokenBatch:
    """One batch of packed sequences. ``count_mask`` marks the tokens that enter the statistics."""

    input_ids: torch.Tensor  # [B, T] int64
    attention_mask: torch.Tensor  # [B, T] int64: 1 for real tokens (BOS included)
    count_mask: torch.Tensor  # [B, T] bool: real language tokens (no BOS, no padding)

    @property
    def num_counted(self) -> int:
        return int(self.count_mask.sum())


def batched(items, size: int) -> Iterator[list]:
    """``itertools.batched`` for Python < 3.12."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def token_stream(
    documents: Iterator[str], tokenizer, max_tokens: int | None, chunk: int = 64
) -> Iterator[int]:
    """Token ids of the documents, concatenated, stopping after exactly ``max_tokens``."""
    remaining = max_tokens
    for group in batched(documents, chunk):  # the fast tokenizers are much quicker on lists
        for ids in tokenizer(group, add_special_tokens=False)["input_ids"]:
            if remaining is not None and len(ids) >= remaining:
                yield from ids[:remaining]
                return
            if remaining is not None:
                remaining -= len(ids)
            yield from ids


def packed_sequences(tokens: Iterator[int], *, seq_len: int, bos_id: int | None) -> Iterator[list[int]]:
    """Cut the token stream into sequences of ``seq_len`` tokens (BOS included); the last may be shorter."""
    if seq_len < 2:
        raise LapeEvalError(f"The sequence length must be at least 2 tokens (got {seq_len}).")
    body = seq_len - (1 if bos_id is not None else 0)
    current: list[int] = []
    for token in tokens:
        current.append(token)
        if len(current) == body:
            yield current
            current = []
    if current:
        yield current


def make_batch(sequences: list[list[int]], *, bos_id: int | None, pad_id: int) -> TokenBatch:
    """Right-padded batch of sequences; BOS (if any) is attended to but never counted."""
    width = max(len(s) for s in sequences) + (1 if bos_id is not None else 0)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    counted = torch.zeros((len(sequences), width), dtype=torch.bool)
    start = 0 if bos_id is None else 1
    for row, sequence in enumerate(sequences):
        if bos_id is not None:
            input_ids[row, 0] = bos_id
            attention[row, 0] = 1
        input_ids[row, start : start + len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention[row, : start + len(sequence)] = 1
        counted[row, start : start + len(sequence)] = True
    return TokenBatch(input_ids, attention, counted)


def bos_token_to_prepend(tokenizer, add_bos: str | bool) -> int | None:
    """``auto``: prepend BOS when the tokenizer itself would add one to plain text (Gemma, Llama)."""
    if add_bos == "auto":
        bos = tokenizer.bos_token_id
        if bos is None:
            return None
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        return bos if probe and probe[0] == bos else None
    if add_bos in (True, "true", "yes", "1"):
        if tokenizer.bos_token_id is None:
            raise LapeEvalError("A BOS token was asked for, but the tokenizer has none: let BOS be added "
                                "automatically (auto) or not at all (no).")
        return tokenizer.bos_token_id
    return None


def pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0
