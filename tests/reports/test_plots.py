"""`lape-eval plot` and `lape-eval fallback`: figures from the real neuron set and real lm-eval runs
of tests/data/report_runs; the plotted values against computations made here from the files."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lape_eval.cli import cli

RUNS = Path(__file__).parents[1] / "data" / "report_runs"
SET = RUNS / "tiny-llama-udhr-25pct.safetensors"
FALLBACK = ["fallback-0", "fallback-1", "fallback-2", "fallback-3", "fallback-11"]


def invoke(*args, expect: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def samples(name: str, task: str) -> list[dict]:
    path = next((RUNS / name).rglob(f"samples_{task}_*.jsonl"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_png(path: Path, min_side: int = 300) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert min(image.shape[:2]) >= min_side
    assert image[..., :3].std() > 0.05  # not a blank canvas


def check_svg(path: Path, *texts: str) -> None:
    root = ElementTree.parse(path).getroot()
    assert root.tag.endswith("svg")
    content = path.read_text(encoding="utf-8")
    for text in texts:
        assert text in content, text


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


def test_success_from_lid_when_no_field_is_logged(monkeypatch):
    """Without per-sample label and success fields, the outputs go through language identification."""
    from lape_eval.reports import outcomes as outcomes_module
    from lape_eval.evaluation.lid import identify_languages
    from lape_eval.reports.results import load_runs

    monkeypatch.setattr(outcomes_module, "LABEL_FIELDS", ())
    monkeypatch.setattr(outcomes_module, "SUCCESS_FIELDS", ())
    run = load_runs([RUNS / "grid"])[0]
    items, how = outcomes_module.outcomes(run, "rep_force")
    records = samples("grid", "rep_force")
    expected = identify_languages([r["filtered_resps"][0] for r in records])
    assert [o.label for o in items] == expected
    assert [o.success for o in items] == [label == r["doc"]["target_lang"] for label, r in zip(expected, records)]
    assert how == {"label": "LID (default backend) on the output", "success": "output language = target language"}


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


class TestFallback:
    def test_study_counts_output_languages_per_step(self):
        from lape_eval.reports.fallback import fallback_study
        from lape_eval.reports.results import load_runs

        study = fallback_study(load_runs([RUNS / name for name in FALLBACK]), min_share=0.0)
        assert [s.number for s in study.steps] == [0, 1, 2, 3, 11]
        assert study.steps[2].deactivated == ["en", "fr"]
        for step, name in zip(study.steps, FALLBACK):
            counts = Counter(s["output_lang"] for s in samples(name, "rep_fallback"))
            total = sum(counts.values())
            assert step.total == total
            for lang, count in counts.items():
                assert step.shares[lang if lang != "unknown" else "unknown"] == pytest.approx(count / total)
        assert study.columns[0] == "en"  # order languages first
        assert "English prompts" in study.title

    def test_cli_table_and_stacked_bars(self, tmp_path):
        chart = tmp_path / "fallback.png"
        out = invoke("fallback", *[RUNS / name for name in FALLBACK], "--plot", chart, "--format", "csv").output
        lines = out.splitlines()
        assert lines[0].startswith("step,deactivated,outputs,en,")
        assert lines[1].startswith("0,none,10,") and lines[3].startswith("2,en fr,10,")
        check_png(chart)
        invoke("fallback", *[RUNS / name for name in FALLBACK], "--plot", tmp_path / "fallback.svg", "--format", "text")
        check_svg(tmp_path / "fallback.svg", "output language")

    def test_golden_text_table(self):
        out = invoke("fallback", *[RUNS / name for name in FALLBACK], "--min-share", "0.15", "--format", "text").output
        assert out.splitlines()[3:9] == [
            "0     none                                   10  50.0*   0.0   0.0   50.0      0.0",
            "1     en                                     10  70.0*   0.0   0.0   30.0      0.0",
            "2     en fr                                  10  50.0*  30.0   0.0   20.0      0.0",
            "3     en fr es                               10  30.0*   0.0  20.0   40.0     10.0",
            "11    en fr es it pt ru de ar zh ko ja       10  50.0*   0.0  20.0   30.0      0.0",
            "",
        ]
        assert out.splitlines()[1].split() == ["step", "deactivated", "outputs", "en", "ru", "bi", "other", "unknown"]

    def test_min_share_merges_rare_languages(self):
        from lape_eval.reports.fallback import fallback_study
        from lape_eval.reports.results import load_runs

        study = fallback_study(load_runs([RUNS / name for name in FALLBACK]), min_share=0.25)
        for step in study.steps:
            assert sum(step.shares.values()) == pytest.approx(1.0)
        assert "other" in study.columns and set(study.columns) <= {"en", "ru", "bi", "other", "unknown", "pt", "ar"}

    def test_runs_that_are_not_steps(self, tmp_path):
        runs = [RUNS / name for name in FALLBACK]
        assert "not the start of the order" in invoke("fallback", *runs, "--order", "fr,en", expect=2).output
        assert "only deactivates" in invoke("fallback", RUNS / "plus-fr", expect=2).output
        shutil.copytree(RUNS / "fallback-1", tmp_path / "again")
        assert "Two runs are step 1" in invoke("fallback", RUNS / "fallback-1", tmp_path / "again", expect=2).output
        assert "no sample file for task rep_mc" in invoke("fallback", RUNS / "fallback-0", "--task", "rep_mc",
                                                          expect=2).output

    def test_commands_for_the_steps(self):
        out = invoke("fallback-commands", "--model-args", "pretrained=google/gemma-3-270m,neurons=set.safetensors",
                     "--tasks", "lape_forcing_en", "--output-root", "runs/fallback", "--steps", "0,2",
                     "--extra", "--device cuda").output.splitlines()
        assert out == [
            "lape-eval run --model lape --model_args pretrained=google/gemma-3-270m,neurons=set.safetensors "
            "--tasks lape_forcing_en --log_samples --output_path runs/fallback/step-00 --device cuda",
            "lape-eval run --model lape --model_args 'pretrained=google/gemma-3-270m,neurons=set.safetensors,"
            "steer=-en -fr' --tasks lape_forcing_en --log_samples --output_path runs/fallback/step-02 --device cuda",
        ]
        assert len(invoke("fallback-commands", "--model-args", "pretrained=m", "--tasks", "t", "--output-root",
                          "r").output.splitlines()) == 12
        assert "Leave steer= out" in invoke("fallback-commands", "--model-args", "pretrained=m,steer=+de", "--tasks", "t",
                                            "--output-root", "r", expect=2).output
