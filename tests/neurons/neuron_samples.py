"""Shared by the neurons tests: a hand-made neuron set whose counts, overlaps and means are easy to
compute by hand, synthetic statistics written as a statistics folder, and the in-process CLI runner.
(Imported as a top-level module: pytest puts this folder on sys.path for the tests in it.)"""

from __future__ import annotations

from pathlib import Path

import torch

from lape_eval.arch import ACTIVATION_POINT
from lape_eval.neurons.manifest import CollectionIdentity
from lape_eval.neurons.neuron_set import NeuronSet
from lape_eval.neurons.stats import LanguageStats, StatisticsFolder, StatisticsTable


def run_cli(*args):
    from click.testing import CliRunner

    from lape_eval.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_user_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    for fragment in fragments:
        assert fragment in result.output, result.output


# --------------------------------------------------------------------------------------------------
# A hand-built set whose counts and overlaps are easy to compute by hand

WIDTH = 10
HAND = {  # language -> neuron indices per layer (3 layers)
    "en": [[1, 2], [], [5]],  # flat 1, 2, 25
    "de": [[2], [3], [5, 7]],  # flat 2, 13, 25, 27
    "ru": [[], [0, 3, 9], [8]],  # flat 10, 13, 19, 28
}


def hand_set(with_means: bool = True) -> NeuronSet:
    languages = list(HAND)
    flat = {lang: torch.tensor([l * WIDTH + i for l, idx in enumerate(layers) for i in idx], dtype=torch.int64)
            for lang, layers in HAND.items()}
    selected = torch.unique(torch.cat(list(flat.values())))
    # means[k, j] = 100 k + flat index: every value says which language and neuron it belongs to.
    means = (100 * torch.arange(3).view(-1, 1) + selected.view(1, -1)).float() if with_means else None
    info = {"model": {"id": "hand-made", "revision": None, "model_type": "llama", "activation_point": ACTIVATION_POINT},
            "selection": {"method": "LAPE", "top_rate": 0.25, "filter_quantile": 0.95, "activation_bar_quantile": 0.95,
                          "filter_threshold": 0.5, "activation_bar": 0.5},
            "statistics": {"corpus": "udhr", "seq_len": 64, "bos_token_id": None, "max_tokens": None,
                           "tokens_per_language": {"en": 100, "de": 120, "ru": 90}},
            "provenance": {"tool_version": "test", "created_by": None}}
    return NeuronSet(languages, 3, WIDTH, flat, selected, means, info)


def assert_same_set(a: NeuronSet, b: NeuronSet):
    assert a.languages == b.languages and a.shape == b.shape
    for lang in a.languages:
        assert torch.equal(a.flat_indices(lang), b.flat_indices(lang))
        assert all(torch.equal(x, y) for x, y in zip(a.indices(lang), b.indices(lang)))
    assert torch.equal(a.selected, b.selected)
    assert a.has_means == b.has_means
    if a.has_means:
        assert torch.equal(a.means_table, b.means_table)


# --------------------------------------------------------------------------------------------------
# Synthetic statistics (random counts: for file handling and bad input, not for checking LAPE)


def synthetic_table(languages, num_layers=2, width=96, seed=0, model="synthetic") -> StatisticsTable:
    generator = torch.Generator().manual_seed(seed)
    tokens = 1000
    counts = torch.randint(0, tokens + 1, (len(languages), num_layers, width), generator=generator)
    sums = torch.randn(len(languages), num_layers, width, generator=generator, dtype=torch.float64) * tokens
    identity = CollectionIdentity(model, None, "llama", num_layers, width, ACTIVATION_POINT, "udhr", 64, None, None)
    return StatisticsTable(identity, list(languages), counts, sums, torch.full((len(languages),), tokens))


def write_statistics(folder: Path, table: StatisticsTable) -> Path:
    target = StatisticsFolder(folder)
    target.claim(table.identity)
    for k, lang in enumerate(table.languages):
        target.save_language(LanguageStats(lang, int(table.tokens[k]), table.positive_counts[k],
                                           table.activation_sums[k]), {})
    return folder
