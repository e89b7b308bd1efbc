"""LAPE selection of language-specific neurons (method spec §4.4), as a pure function of statistics.

Inputs are the per-language counts recorded by identification (spec §4.3): ``positive_counts[k, l, i]``
is the number of tokens of language ``k`` for which neuron ``i`` of layer ``l`` had a positive
activation, and ``token_counts[k]`` the number of tokens processed for language ``k``.

The algorithm is the reference one (Tang et al. 2024 ``identify.py``, identical in Gurgurov et al.
2025), with two deliberate, result-preserving clarifications:

* Dead neurons (probability 0 for every language) get LAPE ``+inf`` directly. The reference turns their
  NaN into LAPE 0 and relies on the filter to remove them (spec §10 pitfall 6); since the filter
  threshold is an order statistic of non-negative probabilities (``tau >= 0``), a dead neuron is
  ``<= tau`` everywhere and gets ``+inf`` there too, so the result is the same.
* Equal LAPE values are ranked by flat index ``layer * I + neuron`` (stable sort), so the selection is
  deterministic; the reference's ``topk`` leaves the order of ties unspecified (spec §4.5).

Probabilities are computed in float64. The reference divides in float32; the two can only differ
when distinct counts round to the same float32 probability or LAPE values tie to within float32
precision at the selection boundary. float64 keeps the equality comparisons with the thresholds exact.
Reordering the languages changes the summation order, hence LAPE in the last bit, which could only
matter for neurons whose statistics are permutations of each other's and tie at the boundary.

Both thresholds are one global order statistic over all layers, neurons *and languages*, so the
language set changes every mask (spec §10 pitfall 7): use :func:`subset_languages` before selection,
never afterwards.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

DEFAULT_TOP_RATES = (0.01,)
PAPER_TOP_RATES = (0.01, 0.02, 0.03, 0.04, 0.05)  # the reference's masks <model>-1 … -5


@dataclass(frozen=True)
class LapeThresholds:
    """The thresholds actually used, recorded in a neuron set's metadata."""

    filter_quantile: float
    activation_bar_quantile: float
    filter_threshold: float  # tau: neurons with P <= tau for every language are never specific
    activation_bar: float  # a kept neuron belongs to every language with P > activation_bar


@dataclass
class Selection:
    """The language neurons for one ``top_rate``.

    ``indices[k][l]`` holds the sorted neuron indices (int64) of language ``languages[k]`` in layer
    ``l`` (empty when none); this is the reference's "activation mask" layout. ``selected`` holds the
    sorted, unique flat indices ``l * I + i`` of all neurons that belong to at least one language.
    It has ``round(top_rate * L * I)`` elements whenever that many neurons pass the filter (and the
    activation bar is not above the filter threshold, as with the default equal quantiles).
    """

    top_rate: float
    languages: list[str]
    indices: list[list[torch.Tensor]]
    selected: torch.Tensor
    thresholds: LapeThresholds


def activation_probabilities(positive_counts: torch.Tensor, token_counts: torch.Tensor) -> torch.Tensor:
    """P[k, l, i] = positive_counts[k, l, i] / token_counts[k], as float64 (spec §4.4 step 1)."""
    return positive_counts.to(torch.float64) / token_counts.to(torch.float64).view(-1, 1, 1)


def lape_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """LAPE[l, i]: entropy (natural log) of P[:, l, i] normalised over languages (spec §4.1).

    ``0 * log 0`` counts as 0, so a neuron active for a single language gets exactly 0. Dead neurons
    (P = 0 for every language) get ``+inf``: they have no distribution and must never be selected.
    """
    # Accumulate one language at a time, in language order, rather than with a vectorised reduction:
    # every neuron's value then comes from the same sequence of IEEE operations wherever it sits in
    # the tensor, so neurons with identical statistics get bitwise-identical LAPE and the flat-index
    # tie-break in the ranking really applies to them. It is also exactly what a plain loop computes.
    totals = torch.zeros(probabilities.shape[1:], dtype=probabilities.dtype)
    for row in probabilities:
        totals += row
    entropy = torch.zeros_like(totals)
    for row in probabilities:
        share = row / totals  # NaN for dead neurons, overwritten below
        entropy -= torch.xlogy(share, share)  # xlogy(0, 0) = 0
    return entropy.masked_fill_(totals == 0, float("inf"))


def _order_statistic(values: torch.Tensor, quantile: float) -> float:
    """The k-th smallest of ``values`` with k = round(quantile * N), clamped to [1, N] (1-based).

    This is the reference's ``kthvalue(round(N * rate))``; ``torch.quantile`` would interpolate and
    also refuses inputs this large.
    """
    n = values.numel()
    k = min(max(round(n * quantile), 1), n)
    return values.kthvalue(k).values.item()


def lape_thresholds(probabilities: torch.Tensor, filter_quantile: float,
                    activation_bar_quantile: float) -> LapeThresholds:
    """The filter threshold tau and the activation bar: order statistics of all probabilities P[k, l, i]."""
    flat = probabilities.view(-1)
    tau = _order_statistic(flat, filter_quantile)
    bar = tau if activation_bar_quantile == filter_quantile else _order_statistic(flat, activation_bar_quantile)
    return LapeThresholds(filter_quantile, activation_bar_quantile, tau, bar)


def select_language_neurons(
    positive_counts: torch.Tensor,
    token_counts: torch.Tensor,
    languages: Sequence[str],
    top_rates: Iterable[float] = DEFAULT_TOP_RATES,
    filter_quantile: float = 0.95,
    activation_bar_quantile: float = 0.95,
) -> dict[float, Selection]:
    """Select LAPE language neurons for each rate in ``top_rates`` (spec §4.4).

    Args:
        positive_counts: integer tensor [K, L, I], tokens with a positive activation per language.
        token_counts: integer tensor [K], tokens processed per language.
        languages: the K language codes, in the order of the first axis.
        top_rates: fractions of all L*I neurons to keep, each in (0, 1).
        filter_quantile: quantile of all probabilities giving the filter threshold tau.
        activation_bar_quantile: quantile giving the bar for assigning a kept neuron to a language.

    Returns:
        ``{top_rate: Selection}``. The rates share the probabilities, thresholds and a single sort, so
        asking for several rates costs little more than one.
    """
    languages = list(languages)
    top_rates = list(top_rates)
    positive_counts, token_counts = _validated(positive_counts, token_counts, languages)
    _check_fraction("filter_quantile", filter_quantile)
    _check_fraction("activation_bar_quantile", activation_bar_quantile)
    if not top_rates:
        raise ValueError("top_rates is empty; give at least one rate in (0, 1), e.g. (0.01,)")
    for rate in top_rates:
        _check_fraction("top_rate", rate)

    _, num_layers, width = positive_counts.shape
    probabilities = activation_probabilities(positive_counts, token_counts)
    lape = lape_entropy(probabilities)

    thresholds = lape_thresholds(probabilities, filter_quantile, activation_bar_quantile)
    tau, bar = thresholds.filter_threshold, thresholds.activation_bar

    # Neurons never above tau for any language are not specific to anything (spec §4.4 step 5).
    lape.masked_fill_(~(probabilities > tau).any(dim=0), float("inf"))
    # One stable sort serves every rate: ties keep ascending flat index, and each rate takes a prefix.
    ranking = torch.sort(lape.view(-1), stable=True).indices
    flat_by_language = probabilities.view(len(languages), -1)

    selections = {}
    for rate in top_rates:
        # Like the reference, keep exactly M neurons even if some have LAPE = +inf. Those never exceed
        # tau, so with bar >= tau (the default) they belong to no language and drop out below; with a
        # lower bar they join the languages above it, again as in the reference.
        kept = ranking[: round(num_layers * width * rate)].sort().values
        members = flat_by_language[:, kept] > bar  # [K, M]
        indices = [_split_by_layer(kept[row], num_layers, width) for row in members]
        selected = kept[members.any(dim=0)]
        selections[rate] = Selection(rate, list(languages), indices, selected, thresholds)
    return selections


def _split_by_layer(flat: torch.Tensor, num_layers: int, width: int) -> list[torch.Tensor]:
    """Sorted flat indices -> per-layer sorted neuron indices (a list of L int64 tensors)."""
    per_layer = torch.bincount(flat // width, minlength=num_layers).tolist()
    # clone: split returns views of one storage, and torch.save would store all of it in every chunk.
    return [chunk.clone() for chunk in torch.split(flat % width, per_layer)]


def subset_languages(
    positive_counts: torch.Tensor,
    token_counts: torch.Tensor,
    languages: Sequence[str],
    keep: Sequence[str],
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Restrict the statistics to the languages in ``keep`` (in that order).

    Returns ``(positive_counts[keep], token_counts[keep], list(keep))``. Do this *before* selection:
    the thresholds depend on the language set, so a subset of a selection is not the selection of a
    subset (spec §10 pitfall 7).
    """
    languages = list(languages)
    keep = list(keep)
    if len(languages) != positive_counts.shape[0]:
        raise ValueError(
            f"got {len(languages)} languages for statistics of {positive_counts.shape[0]} languages"
        )
    if not keep:
        raise ValueError("keep is empty; name at least one language")
    _check_unique("keep", keep)
    missing = [code for code in keep if code not in languages]
    if missing:
        raise ValueError(
            f"language(s) {', '.join(missing)} not in the statistics; available: {', '.join(languages)}"
        )
    rows = torch.tensor([languages.index(code) for code in keep], dtype=torch.long)
    return positive_counts[rows], token_counts[rows], keep


def _validated(
    positive_counts: torch.Tensor, token_counts: torch.Tensor, languages: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the statistics for consistency and return them as int64 tensors."""
    positive_counts = torch.as_tensor(positive_counts)
    token_counts = torch.as_tensor(token_counts)
    if positive_counts.dim() != 3:
        raise ValueError(
            f"positive_counts must have shape [languages, layers, neurons]; got {tuple(positive_counts.shape)}"
        )
    if token_counts.dim() != 1 or token_counts.shape[0] != positive_counts.shape[0]:
        raise ValueError(
            f"token_counts must have shape [{positive_counts.shape[0]}] (one count per language of "
            f"positive_counts); got {tuple(token_counts.shape)}"
        )
    if positive_counts.numel() == 0:
        raise ValueError(f"positive_counts is empty (shape {tuple(positive_counts.shape)})")
    for name, tensor in (("positive_counts", positive_counts), ("token_counts", token_counts)):
        if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer counts; got dtype {tensor.dtype}")
    if len(languages) != positive_counts.shape[0]:
        raise ValueError(
            f"got {len(languages)} languages for statistics of {positive_counts.shape[0]} languages"
        )
    _check_unique("languages", languages)
    positive_counts = positive_counts.to(torch.int64)
    token_counts = token_counts.to(torch.int64)

    for code, tokens in zip(languages, token_counts.tolist()):
        if tokens <= 0:
            raise ValueError(f"token count of language {code!r} is {tokens}; it must be positive")
    smallest = positive_counts.amin(dim=(1, 2)).tolist()
    largest = positive_counts.amax(dim=(1, 2)).tolist()
    for code, low, high, tokens in zip(languages, smallest, largest, token_counts.tolist()):
        if low < 0:
            raise ValueError(f"positive_counts of language {code!r} has a negative count ({low})")
        if high > tokens:
            raise ValueError(
                f"positive_counts of language {code!r} has a count ({high}) above its token count ({tokens})"
            )
    return positive_counts, token_counts


def _check_fraction(name: str, value: float) -> None:
    # NaN fails the comparison too; bool is excluded because True would read as the rate 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be in the open interval (0, 1); got {value!r}")


def _check_unique(name: str, codes: list[str]) -> None:
    duplicates = sorted({code for code in codes if codes.count(code) > 1})
    if duplicates:
        raise ValueError(f"{name} lists language(s) more than once: {', '.join(duplicates)}")
