"""Identification (the ``identify`` command): activation statistics -> one neuron set per top rate.

Data flows one way: statistics (``lape_eval.neurons.stats``) -> LAPE selection
(``lape_eval.neurons.selection``) -> here -> :class:`~lape_eval.neurons.neuron_set.NeuronSet`.
This module also names the files (``<name>-<rate>pct.safetensors``) and parses top-rate lists.

Messages name values generically ("top rates", "filter quantile"); the command line passes its
option names as labels where a message is about one option.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import torch

from lape_eval import __version__
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.manifest import CollectionIdentity
from lape_eval.neurons.neuron_set import SUFFIX, NeuronSet, flatten_layers, language_rows
from lape_eval.neurons.selection import Selection, select_language_neurons
from lape_eval.neurons.stats import StatisticsTable, load_statistics

# --------------------------------------------------------------------------------------------------
# Parameters and file names


def parse_top_rates(text: str, label: str = "top rates") -> list[float]:
    """``"0.01,0.02"`` -> [0.01, 0.02]; each rate a fraction in (0, 1). ``label`` starts every message."""
    rates: list[float] = []
    for item in text.replace(",", " ").split():
        try:
            rate = float(item)
        except ValueError:
            raise LapeEvalError(f"{label}: {item!r} is not a number; give fractions such as 0.01,0.05.") from None
        if not 0 < rate < 1:
            hint = f" (for {item} % write {rate / 100:g})" if 1 <= rate < 100 else ""
            raise LapeEvalError(
                f"{label}: {item} is not in the open interval (0, 1); a top rate is the fraction of all "
                f"neurons to keep, e.g. 0.01 for 1 %{hint}."
            )
        if rate not in rates:
            rates.append(rate)
    if not rates:
        raise LapeEvalError(f"{label} is empty; give at least one fraction, e.g. 0.01.")
    if len({rate_label(rate) for rate in rates}) != len(rates):
        raise LapeEvalError(f"{label} {text}: two rates would get the same file name; use rates that differ more.")
    return rates


def check_quantile(value: float, label: str) -> float:
    """A LAPE quantile must lie in the open interval (0, 1)."""
    if not 0 < value < 1:
        raise LapeEvalError(f"{label} must be in the open interval (0, 1); got {value}.")
    return value


def check_rates_keep_neurons(rates: list[float], identity: CollectionIdentity) -> None:
    """Refuse a rate that keeps no neuron at all of this model (round(rate × layers × width) = 0)."""
    total = identity.num_layers * identity.width
    for rate in rates:
        if round(rate * total) == 0:
            raise LapeEvalError(
                f"The top rate {rate} keeps round({rate} × {total}) = 0 of the {identity.num_layers} × "
                f"{identity.width} neurons of this model; give a larger rate."
            )


def rate_label(rate: float) -> str:
    """0.01 -> '1pct', 0.025 -> '2.5pct' (used in file names)."""
    return f"{rate * 100:.10g}pct"


def set_file_name(name: str, rate: float) -> str:
    return f"{name}-{rate_label(rate)}{SUFFIX}"


def default_set_name(model: str, corpus: str) -> str:
    """``<model>-<corpus>``, e.g. ``gemma-3-270m-gguf-udhr`` (the corpus only when it is a plain word)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/")).name).strip("-.") or "neurons"
    return f"{stem}-{corpus}" if re.fullmatch(r"[A-Za-z0-9_-]+", corpus) else stem


# --------------------------------------------------------------------------------------------------
# Statistics -> sets


def identify_neuron_sets(
    statistics_dirs: list[Path], top_rates: list[float], languages: list[str] | None = None,
    filter_quantile: float = 0.95, activation_bar_quantile: float = 0.95, created_by: dict | None = None,
) -> dict[float, NeuronSet]:
    """Load statistics, run LAPE selection for every rate, wrap each result as a NeuronSet."""
    check_quantile(filter_quantile, "The filter quantile")
    check_quantile(activation_bar_quantile, "The activation-bar quantile")
    table = load_statistics(list(statistics_dirs), languages)
    check_rates_keep_neurons(top_rates, table.identity)
    try:
        selections = select_language_neurons(
            table.positive_counts, table.tokens, table.languages, top_rates,
            filter_quantile=filter_quantile, activation_bar_quantile=activation_bar_quantile,
        )
    except ValueError as error:  # inconsistent statistics files
        raise LapeEvalError(f"Cannot select neurons from these statistics: {error}.") from None
    return {rate: neuron_set_from_selection(selection, table, created_by)
            for rate, selection in selections.items()}


def neuron_set_from_selection(selection: Selection, statistics: StatisticsTable,
                              created_by: dict | None = None) -> NeuronSet:
    """The set of a :class:`Selection`, with the means and metadata of the statistics it came from."""
    identity = statistics.identity
    num_layers, width = identity.num_layers, identity.width
    if any(len(per_layer) != num_layers for per_layer in selection.indices):
        raise LapeEvalError(f"The selection does not have {num_layers} layers like its statistics.")
    languages = list(selection.languages)
    flat = {lang: flatten_layers(per_layer, width) for lang, per_layer in zip(languages, selection.indices)}
    selected = selection.selected.to(torch.int64)
    model_info, statistics_info = statistics_info_of(statistics, languages)
    info = {
        "model": model_info,
        "selection": {"method": "LAPE", "top_rate": selection.top_rate, **asdict(selection.thresholds)},
        "statistics": statistics_info,
        "provenance": {"tool_version": __version__, "created_by": created_by},
    }
    means = mean_activations_at(statistics, languages, selected)
    return NeuronSet(languages, num_layers, width, flat, selected, means, info)


def mean_activations_at(statistics: StatisticsTable, languages: list[str], selected: torch.Tensor) -> torch.Tensor:
    """[K, N] float32: μ of ``languages`` at the ``selected`` flat indices."""
    rows = language_rows(statistics.languages, languages, "statistics")
    # Index the sums before dividing: a full [K, L, I] mean table would be large for 8B models.
    sums = statistics.activation_sums[rows].reshape(len(rows), -1)[:, selected]
    return (sums / statistics.tokens[rows].clamp(min=1).view(-1, 1).double()).float()


def statistics_info_of(statistics: StatisticsTable, languages: list[str]) -> tuple[dict, dict]:
    """The ``model`` and ``statistics`` metadata of a set made from ``statistics`` for ``languages``."""
    identity = statistics.identity
    rows = language_rows(statistics.languages, languages, "statistics")
    model = {"id": identity.model, "revision": identity.revision, "model_type": identity.model_type,
             "activation_point": identity.activation_point}
    corpus = {"corpus": identity.corpus, "seq_len": identity.seq_len, "bos_token_id": identity.bos_token_id,
              "max_tokens": identity.max_tokens,
              "tokens_per_language": {lang: int(statistics.tokens[r]) for lang, r in zip(languages, rows)}}
    return model, corpus
