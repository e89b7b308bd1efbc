"""`lape-eval plot`: figures from the real neuron set and real lm-eval runs of tests/data/report_runs;
the plotted values against computations made here from the files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recorded_runs import RUNS, SET, check_png, check_svg, files_under, invoke, samples


@pytest.mark.parametrize("kind, args", [
    ("neurons-per-layer", [SET]),
    ("overlap", [SET]),
    ("forcing", [RUNS / "grid"]),
    ("task-delta", [RUNS / "base", RUNS / "minus-en-plus-de", RUNS / "plus-fr", RUNS / "plus-en", "--baseline", "base",
                    "--tasks", "rep_mc_*", "--metric", "acc_norm"]),
])
def test_every_plot_renders_as_png_and_svg(tmp_path, kind, args):
    png, svg, table = tmp_path / f"{kind}.png", tmp_path / f"{kind}.svg", tmp_path / f"{kind}.csv"
    assert f"wrote {png}" in invoke("plot", kind, *args, "--out", png, "--csv", table).output
    check_png(png)
    invoke("plot", kind, *args, "--out", svg, "--title", f"My {kind} title")
    check_svg(svg)
    assert table.read_text(encoding="utf-8").count("\n") >= 3


def test_neurons_per_layer_counts_the_set():
    from lape_eval.neurons.neuron_set import NeuronSet
    from lape_eval.reports.plots import neurons_per_layer_data

    neuron_set = NeuronSet.load(SET)
    matrix = neurons_per_layer_data(neuron_set)
    codes = [row.split()[0] for row in matrix.rows]
    assert sorted(codes) == sorted(neuron_set.languages)
    assert codes[:2] == ["de", "en"] and codes[-2:] == ["ja", "ko"]  # Germanic first, Koreanic last (FAMILY_ORDER)
    for code, row in zip(codes, matrix.values):
        layers = (neuron_set.flat[code] // neuron_set.width).tolist()
        assert row.tolist() == [layers.count(layer) for layer in range(neuron_set.num_layers)]
    assert "tiny-llama, top rate 0.25" in matrix.title


def test_overlap_is_the_jaccard_of_the_neuron_sets():
    from lape_eval.neurons.neuron_set import NeuronSet
    from lape_eval.reports.plots import overlap_data

    neuron_set = NeuronSet.load(SET)
    matrix = overlap_data(neuron_set, ["fr", "de", "es", "en"])
    assert matrix.columns == ["de", "en", "es", "fr"]  # ordered by family: Germanic, then Romance
    for i, a in enumerate(matrix.columns):
        for j, b in enumerate(matrix.columns):
            if a == b:
                assert np.isnan(matrix.values[i, j])
                continue
            sa, sb = set(neuron_set.flat[a].tolist()), set(neuron_set.flat[b].tolist())
            assert matrix.values[i, j] == pytest.approx(len(sa & sb) / len(sa | sb))
    with pytest.raises(Exception, match="has no xx"):
        overlap_data(neuron_set, ["xx"])


def test_forcing_grid_is_the_success_rate_per_source_and_target():
    from lape_eval.reports.plots import forcing_data
    from lape_eval.reports.results import load_runs

    matrix = forcing_data(load_runs([RUNS / "grid"])[0])
    cells: dict = {}
    for sample in samples("grid", "rep_force"):
        cells.setdefault((sample["doc"]["source_lang"], sample["doc"]["target_lang"]), []).append(sample["target_rate"])
    assert matrix.rows == ["de", "en", "fr"] and matrix.columns == ["de", "en", "fr"]
    for (source, target), values in cells.items():
        assert matrix.values[matrix.rows.index(source), matrix.columns.index(target)] == pytest.approx(100 * np.mean(values))
    assert "success from field 'target_rate'" in matrix.title and "36 samples" in matrix.title


def test_forcing_field_names_are_options(tmp_path, monkeypatch):
    from lape_eval.reports import outcomes as outcomes_module
    from lape_eval.reports.outcomes import FieldNames
    from lape_eval.reports.plots import forcing_data
    from lape_eval.reports.results import load_runs

    run = load_runs([RUNS / "grid"])[0]
    logged = forcing_data(run, FieldNames(label="output_lang", success="target_rate"))
    monkeypatch.setattr(outcomes_module, "SUCCESS_FIELDS", ())
    from_labels = forcing_data(run, FieldNames(label="output_lang"))
    assert "success from output language = target language" in from_labels.title
    np.testing.assert_array_equal(from_labels.values, logged.values)  # target_rate was logged as label == target
    out = invoke("plot", "forcing", RUNS / "grid", "--source-field", "lang_of_prompt", "--out", tmp_path / "f.png",
                 expect=2).output
    assert "no task with a sample file with document fields lang_of_prompt, target_lang" in out
    out = invoke("plot", "forcing", RUNS / "grid", "--success-field", "hit", "--out", tmp_path / "f.png", expect=2).output
    assert "the samples have no field 'hit'" in out


def test_task_delta_is_steered_minus_baseline():
    from lape_eval.reports.plots import task_delta_data
    from lape_eval.reports.results import load_runs
    from lape_eval.reports.table import TableOptions

    runs = load_runs([RUNS / "base", RUNS / "minus-en-plus-de", RUNS / "plus-fr"])
    matrix = task_delta_data(runs, runs[0], TableOptions(metrics=["acc_norm"], tasks=["rep_mc_*"]))
    assert matrix.rows == ["de", "en", "fr"] and matrix.columns == ["+de", "+fr"]
    results = {name: json.loads(next((RUNS / name).rglob("results_*.json")).read_text())["results"]
               for name in ("base", "minus-en-plus-de", "plus-fr")}
    for j, name in enumerate(["minus-en-plus-de", "plus-fr"]):
        for i, lang in enumerate(matrix.rows):
            task = f"rep_mc_{lang}"
            assert matrix.values[i, j] == pytest.approx(
                results[name][task]["acc_norm,none"] - results["base"][task]["acc_norm,none"])


def test_task_delta_errors(tmp_path):
    out = invoke("plot", "task-delta", RUNS / "base", RUNS / "minus-en-plus-de", RUNS / "plus-fr", "--baseline", "base",
                 "--out", tmp_path / "d.png", expect=2).output
    assert "two tasks have the test language de" in out
    out = invoke("plot", "task-delta", RUNS / "base", "--baseline", "base", "--out", tmp_path / "d.png", expect=2).output
    assert "at least one run besides the baseline" in out
    out = invoke("plot", "task-delta", RUNS / "base", RUNS / "lora", "--baseline", "base", "--tasks", "rep_mc_*",
                 "--out", tmp_path / "d.pdf", expect=2).output
    assert "must end in .png or .svg" in out


def test_bad_options_write_nothing(tmp_path):
    out = invoke("plot", "forcing", RUNS / "grid", "--out", tmp_path / "f.pdf", "--csv", tmp_path / "f.csv",
                 expect=2).output
    assert "--out" in out and "must end in .png or .svg" in out
    out = invoke("plot", "task-delta", RUNS / "base", RUNS / "plus-fr", "--baseline", "base", "--language-regex", "(de",
                 "--out", tmp_path / "d.png", "--csv", tmp_path / "d.csv", expect=2).output
    assert "is not a valid regular expression" in out
    assert files_under(tmp_path) == []
