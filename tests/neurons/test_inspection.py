"""Inspection of a neuron set (lape_eval.neurons.inspection and the `inspect` command): counts per
language and layer, and Jaccard overlaps, against a hand computation."""

from __future__ import annotations

import csv
import io

import pytest
import torch

from lape_eval.neurons.inspection import jaccard_matrix, upper_half_share
from neuron_samples import hand_set, run_cli


def test_inspect_counts_and_jaccard_equal_a_hand_computation(tmp_path):
    path = hand_set().save(tmp_path / "hand.safetensors")
    result = run_cli("inspect", path, "--format", "csv")
    assert result.exit_code == 0, result.output
    blocks = {}
    for block in result.output.strip().split("\n\n"):
        title, *lines = block.splitlines()
        blocks[title.removeprefix("# ")] = list(csv.reader(io.StringIO("\n".join(lines))))
    assert blocks["Neurons per language"] == [
        ["language", "name", "script", "neurons", "unique", "shared"],
        ["en", "English", "Latin", "3", "1", "2"],  # 1 alone; 2 and 25 shared with de
        ["de", "German", "Latin", "4", "1", "3"],  # 27 alone
        ["ru", "Russian", "Cyrillic", "4", "3", "1"],  # 13 shared with de
    ]
    assert blocks["Neurons per layer"] == [
        ["layer", "any", "en", "de", "ru"],
        ["0", "2", "2", "1", "0"],
        ["1", "3", "0", "1", "3"],
        ["2", "3", "1", "2", "1"],
        ["total", "8", "3", "4", "4"],
    ]
    overlap = blocks["Language overlap (Jaccard)"]
    assert overlap[0] == ["", "en", "de", "ru"]
    values = [[float(v) for v in row[1:]] for row in overlap[1:]]
    expected = [[1, 2 / 5, 0], [2 / 5, 1, 1 / 7], [0, 1 / 7, 1]]  # en∩de = {2, 25}; de∩ru = {13}
    assert torch.allclose(torch.tensor(values, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                          atol=1e-6)  # csv keeps 6 significant digits
    assert torch.allclose(jaccard_matrix(hand_set()), torch.tensor(expected, dtype=torch.float64))
    assert upper_half_share(hand_set()) == pytest.approx(4 / 11)  # layer 2 of 3 holds 4 of 11 assignments

    text = run_cli("inspect", path)
    assert text.exit_code == 0, text.output
    assert "0.40" in text.output and "0.14" in text.output and "hand-made" in text.output
    assert "36% of assignments in the upper half" in text.output
    shown = run_cli("inspect", path, "--languages", "ru,de", "--format", "markdown")
    assert shown.exit_code == 0, shown.output
    assert "| ru | Russian | Cyrillic | 4 | 3 | 1 |" in shown.output  # unique w.r.t. the whole set
    assert "| de | 0.14 | 1.00 |" in shown.output
    assert "| en" not in shown.output


# --------------------------------------------------------------------------------------------------
# Planted neurons: a tiny model edited so that chosen neurons fire only on Russian tokens

LANGS = ["en", "ru", "zh"]
