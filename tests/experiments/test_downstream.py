"""``lape-eval experiment downstream`` (issue 16 item 1): on a tiny model, every heatmap cell equals the
difference of two separate lm-eval runs of the plain task (the unsteered run and the run steered with
``+X``), and rows and columns are ordered by the language families of :mod:`lape_eval.languages`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from handmade_sets import make_set

from lape_eval.errors import LapeEvalError
from lape_eval.languages import FAMILY_ORDER, PAPER_LANGUAGES, get_language

# The cells and the separate runs come from generations computed on the fly.
pytestmark = pytest.mark.numerics

TESTS = "fr,de"  # given out of family order on purpose
ACTIVATED = "fr,en,de"
DOCS = 2
NEW_TOKENS = 8
BATCH = "4"
METRICS = ("sentence_bleu", "chrf_pp")  # a per-document mean and a corpus metric


def settings(**changes):
    from lape_eval.experiments.downstream import downstream_settings

    options = dict(limit=DOCS, max_gen_toks=NEW_TOKENS, batch_size=BATCH, steering={"alpha": "2"})
    options.update(changes)
    return downstream_settings("udhr_translation", TESTS, ACTIVATED, list(METRICS), **options)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tiny_model_dir):
    from lape_eval.experiments.downstream import run_downstream

    folder = tmp_path_factory.mktemp("downstream")
    neurons = folder / "tiny-set.safetensors"
    make_set(width=96, num_layers=2).save(neurons)
    model = str(tiny_model_dir("llama"))
    result = run_downstream(model, [str(neurons)], folder / "out", settings(), echo=lambda text: None)
    return {"model": model, "neurons": str(neurons), "out": folder / "out", "result": result}


def separate_run(model: str, neurons: str, steer: str) -> dict:
    """The plain UDHR tasks (en->fr, en->de) in one lm-eval run with one global steer spec."""
    from lm_eval import simple_evaluate

    import lape_eval.evaluation.lm  # noqa: F401  registers the model
    from lape_eval.evaluation.suite import task_manager

    tasks = ["lape_udhr_translation_en-fr", "lape_udhr_translation_en-de"]
    results = simple_evaluate(
        model="lape", model_args={"pretrained": model, "neurons": neurons, "dtype": "float32", "steer": steer,
                                  "alpha": 2.0},
        tasks=tasks, task_manager=task_manager(), device="cpu", batch_size=int(BATCH), limit=DOCS,
        gen_kwargs={"max_gen_toks": NEW_TOKENS}, bootstrap_iters=0)
    return {task.rsplit("-", 1)[1]: results["results"][task] for task in tasks}


@pytest.fixture(scope="module")
def separate(experiment):
    return {steer: separate_run(experiment["model"], experiment["neurons"], steer)
            for steer in ("none", "+fr", "+en", "+de")}


def read_csv(path):
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_cells_equal_the_differences_of_separate_runs(experiment, separate):
    rows = read_csv(experiment["out"] / "downstream.csv")
    assert len(rows) == 2 * 3 * len(METRICS)  # test languages x activated x metrics
    checked = 0
    for row in rows:
        language, activated, metric = row["test_language"], row["activated"], row["metric"]
        baseline = separate["none"][language][f"{metric},none"]
        steered = separate[f"+{activated}"][language][f"{metric},none"]
        # Same texts, same sacrebleu: only the order of a mean's summation can differ (numpy vs lm-eval).
        assert float(row["baseline"]) == pytest.approx(baseline, abs=1e-9), row
        assert float(row["steered"]) == pytest.approx(steered, abs=1e-9), row
        assert float(row["improvement"]) == pytest.approx(steered - baseline, abs=1e-9), row
        assert int(row["documents"]) == DOCS
        checked += 1
    assert checked == 12
    # The test has teeth: steering changes the scores somewhere.
    assert any(abs(float(row["improvement"])) > 1e-6 for row in rows)


def test_heatmap_files_hold_the_cells_ordered_by_family(experiment, separate):
    out = experiment["out"]
    for metric in METRICS:
        with open(out / "heatmaps" / f"tiny-set-{metric}.csv", encoding="utf-8") as handle:
            table = list(csv.reader(handle))
        columns = table[0][1:]
        rows = [line[0] for line in table[1:]]
        assert rows == ["de", "fr"]  # Germanic before Romance (FAMILY_ORDER), whatever the order given
        assert columns == ["+de", "+en", "+fr"]
        for line in table[1:]:
            for column, text in zip(columns, line[1:]):
                expected = (separate[column][line[0]][f"{metric},none"] - separate["none"][line[0]][f"{metric},none"])
                # The heatmap CSV writes 10 significant digits.
                assert float(text) == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert (out / "heatmaps" / f"tiny-set-{metric}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## tiny-set: chrf_pp" in report and "| test language | baseline | +de | +en | +fr |" in report
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["settings"]["activated"] == ["fr", "en", "de"]


def test_one_run_per_set_with_the_baseline_in_it(experiment):
    from lape_eval.reports.results import load_runs

    runs = load_runs([experiment["out"] / "runs"])
    assert len(runs) == 1
    assert runs[0].data["config"]["lape"]["steer"] == "doc"
    samples = runs[0].samples("lape_downstream_udhr_translation_en-de")
    conditions = sorted((s["doc"]["source_doc"], s["doc"]["steer"]) for s in samples)
    assert conditions == sorted((d, spec) for d in range(DOCS) for spec in ("none", "+fr", "+en", "+de"))


def test_rerun_skips_finished_sets_and_refuses_other_settings(experiment, monkeypatch):
    import subprocess

    from lape_eval.experiments.downstream import run_downstream

    def no_run(*args, **kwargs):
        raise AssertionError("a finished set ran again")

    monkeypatch.setattr(subprocess, "run", no_run)
    before = (experiment["out"] / "downstream.csv").read_text(encoding="utf-8")
    run_downstream(experiment["model"], [experiment["neurons"]], experiment["out"], settings(), echo=lambda t: None)
    assert (experiment["out"] / "downstream.csv").read_text(encoding="utf-8") == before
    with pytest.raises(LapeEvalError, match="other settings"):
        run_downstream(experiment["model"], [experiment["neurons"]], experiment["out"], settings(limit=1),
                       echo=lambda t: None)


def test_cli_reuses_the_finished_run(experiment, monkeypatch):
    import subprocess

    from lape_eval.cli import cli

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a finished set ran again"))
    result = CliRunner().invoke(cli, [
        "experiment", "downstream", "--model", experiment["model"], "--neurons", experiment["neurons"],
        "--family", "udhr_translation", "--languages", TESTS, "--activated", ACTIVATED,
        "--metric", ",".join(METRICS), "--limit", str(DOCS), "--max-gen-toks", str(NEW_TOKENS),
        "--batch-size", BATCH, "--alpha", "2", "--out", str(experiment["out"])])
    assert result.exit_code == 0, result.output
    assert "## tiny-set: sentence_bleu" in result.output


@pytest.mark.parametrize("change, message", [
    (dict(activated="en,ru"), "has no neurons for ru"),
])
def test_a_set_without_an_activated_language_is_refused_before_any_run(tmp_path, change, message, monkeypatch):
    import subprocess

    from lape_eval.experiments.downstream import downstream_settings, run_downstream

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran before the check"))
    neurons = tmp_path / "set.safetensors"
    make_set(width=96, num_layers=2).save(neurons)
    chosen = downstream_settings("belebele", "de", change["activated"])
    with pytest.raises(LapeEvalError, match=message):
        run_downstream("unused", [str(neurons)], tmp_path / "out", chosen, echo=lambda t: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments, message", [
    (("forcing",), "Unknown downstream task family 'forcing'"),
    (("xquad", "mt"), "Unknown language code 'mt' in the test languages of xquad"),
    (("belebele", "de", "xx"), "Unknown language code 'xx' in the activated languages"),
    (("belebele", "de", "en", ["chrf_pp"]), "can show acc, unparsable_rate, fallback_rate; not chrf_pp"),
    (("udhr_translation", "de", "en", None, "into-en"), "Unknown translation direction 'into-en'"),
    (("belebele", "de", "en", None, "to-en"), "applies to the translation families"),
])
def test_bad_settings_are_refused(arguments, message):
    from lape_eval.experiments.downstream import downstream_settings

    *positional, direction = arguments if len(arguments) == 5 else (*arguments, "from-en")
    with pytest.raises(LapeEvalError, match=message):
        downstream_settings(*positional, direction=direction)


def test_to_english_cells_equal_a_separate_run_of_the_reverse_pair(tmp_path, tiny_model_dir):
    """--direction to-en: the test language's rows translate it into English (lape_udhr_translation_fr-en);
    the cell equals the difference of two separate runs of that plain task."""
    from lm_eval import simple_evaluate

    from lape_eval.evaluation.suite import task_manager
    from lape_eval.experiments.downstream import lm_eval_command, run_downstream

    neurons = tmp_path / "tiny-set.safetensors"
    make_set(width=96, num_layers=2).save(neurons)
    model = str(tiny_model_dir("llama"))
    from lape_eval.experiments.downstream import downstream_settings

    chosen = downstream_settings("udhr_translation", "fr", "de", ["sentence_bleu"], direction="to-en", limit=DOCS,
                                 max_gen_toks=NEW_TOKENS, batch_size=BATCH, steering={"alpha": "2"})
    command = lm_eval_command(model, str(neurons), tmp_path / "run", chosen)
    assert command[command.index("--tasks") + 1] == "lape_downstream_udhr_translation_fr-en"
    result = run_downstream(model, [str(neurons)], tmp_path / "out", chosen, echo=lambda text: None)
    (cell,) = result.cells
    scores = {}
    for steer in ("none", "+de"):
        run = simple_evaluate(
            model="lape", model_args={"pretrained": model, "neurons": str(neurons), "dtype": "float32",
                                      "steer": steer, "alpha": 2.0},
            tasks=["lape_udhr_translation_fr-en"], task_manager=task_manager(), device="cpu",
            batch_size=int(BATCH), limit=DOCS, gen_kwargs={"max_gen_toks": NEW_TOKENS}, bootstrap_iters=0)
        scores[steer] = run["results"]["lape_udhr_translation_fr-en"]["sentence_bleu,none"]
    assert (cell.test_language, cell.activated) == ("fr", "de")
    assert cell.baseline == pytest.approx(scores["none"], abs=1e-12)
    assert cell.improvement == pytest.approx(scores["+de"] - scores["none"], abs=1e-12)
    assert "test language → English" in result.files["report"].read_text(encoding="utf-8")


def test_default_settings_follow_the_paper():
    from lape_eval.experiments.downstream import downstream_settings

    flores = downstream_settings("flores")
    assert flores.test_languages == tuple(code for code in PAPER_LANGUAGES if code != "en")
    assert flores.activated == PAPER_LANGUAGES and flores.metrics == ("sentence_bleu", "chrf_pp")
    assert downstream_settings("xquad").test_languages == ("ar", "de", "zh", "en", "es", "hi", "vi", "tr", "th",
                                                           "ru", "ro", "el")
    assert downstream_settings("xnli").metrics == ("acc",)


def test_full_heatmap_is_ordered_by_the_registry_families():
    """21 x 21 made-up cells: rows and columns come out grouped by family in FAMILY_ORDER, each cell in place."""
    from lape_eval.experiments.downstream import Cell, downstream_settings, heatmap_matrix

    codes = list(PAPER_LANGUAGES)
    value = {(t, a): codes.index(t) * 100 + codes.index(a) for t in codes for a in codes}
    cells = [Cell("s", "acc", t, a, 0.0, float(v), float(v), 0.01 if v % 2 else 0.5, "paired-bootstrap", 3,
                  bool(v % 2)) for (t, a), v in value.items()]
    matrix = heatmap_matrix(cells, "s", "acc", downstream_settings("belebele"))
    columns = [c.lstrip("+") for c in matrix.columns]
    for order in (matrix.rows, columns):
        assert sorted(order) == sorted(codes)
        families = [get_language(code).family for code in order]
        blocks = [f for i, f in enumerate(families) if i == 0 or families[i - 1] != f]
        assert len(blocks) == len(set(families))  # each family in one block
        assert blocks == [f for f in FAMILY_ORDER if f in blocks]  # blocks in the registry's family order
    for i, test in enumerate(matrix.rows):
        for j, activated in enumerate(columns):
            assert matrix.values[i, j] == value[(test, activated)]
            assert matrix.annotations[i][j].endswith("†") == bool(value[(test, activated)] % 2)


def test_downstream_documents_repeat_each_document_per_condition():
    from lape_eval.evaluation.data import downstream_condition_docs, load_downstream

    docs = downstream_condition_docs([{"q": "a"}, {"q": "b"}], ["de", "fr"])
    assert [(d["q"], d["source_doc"], d["activated_lang"], d["steer"]) for d in docs] == [
        ("a", 0, "none", "none"), ("a", 0, "de", "+de"), ("a", 0, "fr", "+fr"),
        ("b", 1, "none", "none"), ("b", 1, "de", "+de"), ("b", 1, "fr", "+fr")]
    loaded = load_downstream(task_family="udhr_translation", source_lang="en", target_lang="de",
                             activated_languages="de", downstream_baseline="false")
    from lape_eval.evaluation.data import load_udhr_translation

    plain = load_udhr_translation(source_lang="en", target_lang="de")["test"].to_list()
    assert [d["reference"] for d in loaded["test"]] == [d["reference"] for d in plain]
    assert {d["steer"] for d in loaded["test"]} == {"+de"}
    with pytest.raises(LapeEvalError, match="activated_languages"):
        load_downstream(task_family="belebele", lang="de", activated_languages="de,xx")


def test_downstream_task_names():
    from lape_eval.evaluation.suite import parse_task_name, task_yaml_text

    spec = parse_task_name("lape_downstream_xquad_vi")
    assert spec.dataset_kwargs == {"task_family": "xquad", "lang": "vi"}
    assert "custom_dataset: !function lape_eval.evaluation.data.load_downstream" in task_yaml_text(spec)
    with pytest.raises(LapeEvalError, match="no downstream variant of lape_forcing_de"):
        parse_task_name("lape_downstream_forcing_de")
    with pytest.raises(LapeEvalError, match="needs a lape-eval task name"):
        parse_task_name("lape_downstream_nothing")


FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "tasks"


def test_log_likelihood_cells_equal_separate_runs(tmp_path, tiny_model_dir):
    """Belebele in lm-eval's log-likelihood form (one group per spec in the lape model), local fixtures."""
    from lm_eval import simple_evaluate

    import lape_eval.evaluation.lm  # noqa: F401  registers the model
    from lape_eval.evaluation.suite import task_manager
    from lape_eval.experiments.downstream import downstream_settings, run_downstream
    from lape_eval.reports.results import load_runs

    neurons = tmp_path / "tiny-set.safetensors"
    make_set(width=96, num_layers=2).save(neurons)
    model = str(tiny_model_dir("llama"))
    chosen = downstream_settings("belebele_ll", "fr,de", "fr,en,de", ["acc", "acc_norm"], batch_size=BATCH,
                                 steering={"alpha": "4"}, metadata={"data_dir": str(FIXTURES)})
    run_downstream(model, [str(neurons)], tmp_path / "out", chosen, echo=lambda text: None)
    cells = read_csv(tmp_path / "out" / "downstream.csv")
    assert len(cells) == 2 * 3 * 2
    tasks = ["lape_belebele_ll_fr", "lape_belebele_ll_de"]
    separate = {}
    for steer in ("none", "+fr", "+en", "+de"):
        results = simple_evaluate(
            model="lape", model_args={"pretrained": model, "neurons": str(neurons), "dtype": "float32",
                                      "steer": steer, "alpha": 4.0},
            tasks=tasks, task_manager=task_manager(metadata={"data_dir": str(FIXTURES)}), device="cpu",
            batch_size=int(BATCH), bootstrap_iters=0)
        separate[steer] = {task.rsplit("_", 1)[1]: results["results"][task] for task in tasks}
    for cell in cells:
        language, metric = cell["test_language"], cell["metric"]
        baseline = separate["none"][language][f"{metric},none"]
        steered = separate["+" + cell["activated"]][language][f"{metric},none"]
        # Means of 0/1 values over the same 3 documents: only the summation order can differ.
        assert float(cell["baseline"]) == pytest.approx(baseline, abs=1e-9), cell
        assert float(cell["improvement"]) == pytest.approx(steered - baseline, abs=1e-9), cell
    # The run was steered per document: the log-likelihoods of a document differ between its conditions.
    samples = load_runs([tmp_path / "out" / "runs"])[0].samples("lape_downstream_belebele_ll_de")
    by_condition = {(s["doc"]["source_doc"], s["doc"]["activated_lang"]): s["filtered_resps"] for s in samples}
    assert by_condition[(0, "none")] != by_condition[(0, "de")]
