"""Inspection of a neuron set (the ``inspect`` command): neurons per language and layer, the
language-overlap (Jaccard) matrix, and their text / Markdown / CSV rendering.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import torch

from lape_eval.errors import LapeEvalError
from lape_eval.neurons.neuron_set import NeuronSet, language_list, language_rows, union_of

@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list]


def language_counts(ns: NeuronSet) -> dict[str, tuple[int, int]]:
    """lang -> (neurons, of which unique: assigned to no other language of the set)."""
    membership = torch.zeros(ns.num_layers * ns.width, dtype=torch.int64)
    for flat in ns.flat.values():
        membership[flat] += 1
    return {lang: (flat.numel(), int((membership[flat] == 1).sum())) for lang, flat in ns.flat.items()}


def layer_counts(ns: NeuronSet) -> torch.Tensor:
    """[L, K] neurons per layer and language."""
    return torch.stack([torch.bincount(ns.flat[lang] // ns.width, minlength=ns.num_layers)
                        for lang in ns.languages], dim=1)


def jaccard_matrix(ns: NeuronSet) -> torch.Tensor:
    """[K, K] |A ∩ B| / |A ∪ B| of the languages' neuron sets (NaN where both are empty)."""
    member = torch.zeros(len(ns.languages), ns.num_layers * ns.width)
    for k, lang in enumerate(ns.languages):
        member[k, ns.flat[lang]] = 1
    both = member @ member.T
    sizes = member.sum(1)
    union = sizes[:, None] + sizes[None, :] - both
    return (both.double() / union.double()).where(union > 0, torch.tensor(float("nan"), dtype=torch.float64))


def upper_half_share(ns: NeuronSet) -> float:
    """Fraction of (language, neuron) assignments in layers l with 2l >= L (the upper half)."""
    counts = layer_counts(ns).sum(1)
    upper = torch.arange(ns.num_layers) * 2 >= ns.num_layers
    return float(counts[upper].sum()) / max(int(counts.sum()), 1)


def inspection_tables(ns: NeuronSet, languages: list[str] | None = None) -> list[Table]:
    """Neurons per language, per-layer distribution and Jaccard overlap, for ``languages`` (default all).

    "unique" always means: assigned to no other language of the whole set.
    """
    from lape_eval.languages import get_language

    shown = language_list(languages) if languages else list(ns.languages)
    columns = language_rows(ns.languages, shown, "neuron set")
    counts = language_counts(ns)
    summary = Table("Neurons per language", ["language", "name", "script", "neurons", "unique", "shared"], [])
    for lang in shown:
        total, unique = counts[lang]
        known = _registered(lang, get_language)
        summary.rows.append([lang, known.name if known else "", known.script if known else "", total, unique,
                             total - unique])
    per_layer = layer_counts(ns)[:, columns]
    union_per_layer = torch.bincount(union_of(ns.flat[lang] for lang in shown) // ns.width, minlength=ns.num_layers)
    layers = Table("Neurons per layer", ["layer", "any", *shown],
                   [[layer, int(union_per_layer[layer]), *per_layer[layer].tolist()] for layer in range(ns.num_layers)])
    layers.rows.append(["total", int(union_per_layer.sum()), *per_layer.sum(0).tolist()])
    jaccard = jaccard_matrix(ns)[columns][:, columns]
    overlap = Table("Language overlap (Jaccard)", ["", *shown],
                    [[lang, *row.tolist()] for lang, row in zip(shown, jaccard)])
    return [summary, layers, overlap]


def describe(ns: NeuronSet) -> list[tuple[str, str]]:
    """Key facts of a set's metadata, for the head of `inspect`."""
    model = ns.info.get("model") or {}
    selection = ns.info.get("selection") or {}
    statistics = ns.info.get("statistics") or {}
    tokens = (statistics.get("tokens_per_language") or {}).values()
    facts = [
        ("model", f"{model.get('id') or 'unknown'}" + (f" @ {model['revision']}" if model.get("revision") else "")),
        ("shape", f"{ns.num_layers} layers × {ns.width} neurons ({model.get('model_type') or 'type unknown'})"),
        ("languages", f"{len(ns.languages)}: {', '.join(ns.languages)}"),
        ("top rate", _optional(selection.get("top_rate"))),
        ("thresholds", f"filter {_optional(selection.get('filter_threshold'))} (quantile "
                       f"{_optional(selection.get('filter_quantile'))}), bar {_optional(selection.get('activation_bar'))} "
                       f"(quantile {_optional(selection.get('activation_bar_quantile'))})"),
        ("neurons", f"{ns.unique_neuron_count} unique, {sum(ns.neuron_count(k) for k in ns.languages)} assignments, "
                    f"{upper_half_share(ns):.0%} of assignments in the upper half of the layers"),
        ("corpus", f"{statistics.get('corpus', 'unknown')}, seq_len {statistics.get('seq_len', '?')}, "
                   f"tokens per language {min(tokens, default='?')}–{max(tokens, default='?')}"),
        ("means", "stored" if ns.has_means else "absent (deactivation only)"),
        ("content hash", ns.content_hash),
    ]
    imported = (ns.info.get("provenance") or {}).get("imported_from")
    if imported:
        facts.append(("imported from", f"{imported.get('file')} (sha256 {str(imported.get('sha256'))[:16]}…)"))
    return facts


def render(tables: list[Table], fmt: str = "text", facts: list[tuple[str, str]] | None = None) -> str:
    """Tables as aligned ``text``, ``markdown`` pipe tables, or ``csv`` (one block per table, '# title' first)."""
    out = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        for i, table in enumerate(tables):
            out.write(("\n" if i else "") + f"# {table.title}\n")
            writer.writerows([table.header, *([_cell(c, fmt) for c in row] for row in table.rows)])
        return out.getvalue()
    if facts:
        for key, value in facts:
            out.write(f"- **{key}**: {value}\n" if fmt == "markdown" else f"{key + ':':<15}{value}\n")
        out.write("\n")
    for table in tables:
        cells = [table.header, *([_cell(c, fmt) for c in row] for row in table.rows)]
        if fmt == "markdown":
            out.write(f"### {table.title}\n\n| " + " | ".join(cells[0]) + " |\n|"
                      + "|".join("---" for _ in cells[0]) + "|\n")
            out.writelines("| " + " | ".join(row) + " |\n" for row in cells[1:])
        else:
            widths = [max(len(row[c]) for row in cells) for c in range(len(cells[0]))]
            out.write(f"{table.title}\n")
            out.writelines("  ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in cells)
        out.write("\n")
    return out.getvalue().rstrip("\n") + "\n"


def _registered(lang: str, get_language):
    try:
        return get_language(lang)
    except LapeEvalError:
        return None


def _cell(value, fmt: str) -> str:
    """Floats (Jaccard values) with 2 decimals for reading, 6 digits in csv; NaN (both sets empty) as '-'."""
    if isinstance(value, float):
        if value != value:
            return "" if fmt == "csv" else "-"
        return f"{value:.6g}" if fmt == "csv" else f"{value:.2f}"
    return str(value)


def _optional(value) -> str:
    if value is None:
        return "unknown"
    return f"{value:.6g}" if isinstance(value, float) else str(value)
