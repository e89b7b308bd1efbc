"""Held-out ablation: does zeroing a language's neurons hurt that language more than the others?

For each ablated language A and each evaluated language T we measure the mean next-token loss of
the model on T's held-out text with A's neurons deactivated (g ← 0 at every layer, every position),
and compare it with the unsteered loss. A neuron set is *language-specific* for A when the loss rise
on A itself exceeds the mean rise on the other languages (Tang et al. 2024, §4; method spec §7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lape_eval.neurons.corpus import CorpusSpec, bos_token_to_prepend, make_batch, packed_sequences, pad_token_id, token_stream
from lape_eval.steering.hooks import steer


@dataclass
class AblationReport:
    languages: list[str]  # evaluated languages (columns)
    ablated: list[str]  # ablated languages (rows)
    baseline: torch.Tensor  # [T] mean loss without ablation
    losses: torch.Tensor  # [A, T] mean loss with the row language's neurons zeroed
    tokens: list[int]  # held-out tokens per evaluated language

    @property
    def rise(self) -> torch.Tensor:
        return self.losses - self.baseline

    def own_rise(self, lang: str) -> float:
        return float(self.rise[self.ablated.index(lang), self.languages.index(lang)])

    def others_rise(self, lang: str) -> float:
        row = self.rise[self.ablated.index(lang)]
        others = [k for k, code in enumerate(self.languages) if code != lang]
        return float(row[others].mean())

    def is_specific(self, lang: str) -> bool:
        return self.own_rise(lang) > self.others_rise(lang)

    @property
    def specific_languages(self) -> list[str]:
        return [lang for lang in self.ablated if lang in self.languages and self.is_specific(lang)]

    def to_dict(self) -> dict:
        return {
            "languages": self.languages, "ablated": self.ablated, "tokens": self.tokens,
            "baseline": self.baseline.tolist(), "losses": self.losses.tolist(),
            "specific": {lang: self.is_specific(lang) for lang in self.ablated if lang in self.languages},
        }

    def table(self) -> str:
        lines = ["| ablated | own loss rise | mean rise, other languages | specific |", "|---|---:|---:|:---:|"]
        for lang in self.ablated:
            if lang in self.languages:
                lines.append(f"| {lang} | {self.own_rise(lang):+.3f} | {self.others_rise(lang):+.3f} | "
                             f"{'yes' if self.is_specific(lang) else 'no'} |")
        specific = len(self.specific_languages)
        lines.append(f"\n{specific} of {len([a for a in self.ablated if a in self.languages])} languages: "
                     "zeroing their neurons raises their own held-out loss more than the others' on average.")
        return "\n".join(lines)


def heldout_batch(tokenizer, languages: list[str], corpus: CorpusSpec, max_tokens: int):
    """One sequence per language: its first ``max_tokens`` held-out tokens (BOS prepended if usual)."""
    bos = bos_token_to_prepend(tokenizer, "auto")
    sequences = []
    for lang in languages:
        tokens = token_stream(corpus.documents(lang), tokenizer, max_tokens)
        sequences.append(next(packed_sequences(tokens, seq_len=max_tokens + 1, bos_id=bos)))
    return make_batch(sequences, bos_id=bos, pad_id=pad_token_id(tokenizer))


def mean_losses(model, batch, chunk: int = 4) -> torch.Tensor:
    """Mean next-token cross-entropy per row over its counted target tokens."""
    device = next(model.parameters()).device
    losses = []
    with torch.no_grad():
        for start in range(0, batch.input_ids.shape[0], chunk):
            rows = slice(start, start + chunk)
            ids, attention = batch.input_ids[rows].to(device), batch.attention_mask[rows].to(device)
            logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
            targets = ids[:, 1:]
            counted = batch.count_mask[rows, 1:].to(device)
            loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            losses.append((loss * counted).sum(1) / counted.sum(1))
    return torch.cat(losses).cpu()


def ablate(model, tokenizer, neuron_set, *, languages: list[str], ablated: list[str], corpus: CorpusSpec,
           max_tokens: int = 256, progress: bool = True) -> AblationReport:
    from tqdm.auto import tqdm

    batch = heldout_batch(tokenizer, languages, corpus, max_tokens)
    baseline = mean_losses(model, batch)
    rows = []
    for lang in tqdm(ablated, desc="ablate", disable=not progress):
        with steer(model, neuron_set, f"-{lang}", deactivate_value=0.0):
            rows.append(mean_losses(model, batch))
    tokens = batch.count_mask.sum(1).tolist()
    return AblationReport(languages, ablated, baseline, torch.stack(rows), tokens)
