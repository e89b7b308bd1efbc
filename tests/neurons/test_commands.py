"""The neuron commands (lape_eval.cli.neurons) check all of their inputs before they load a model or
write anything: a command that fails on bad input exits with a clear message, loads no model and
leaves no file or folder behind that would change what the next command does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lape_eval.arch import ACTIVATION_POINT
from lape_eval.neurons.manifest import CollectionIdentity, write_manifest
from lape_eval.neurons.reference_masks import export_reference_masks
from neuron_samples import assert_user_error, hand_set, run_cli, synthetic_table, write_statistics


@pytest.fixture
def model_loads(monkeypatch):
    """The calls of ``lape_eval.models.load_model`` (each one fails: no test here may load a model)."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the model was loaded although the input was bad")

    monkeypatch.setattr("lape_eval.models.load_model", refuse)
    return calls


def tree(folder: Path) -> dict[str, int]:
    """Every file and folder under ``folder`` (relative path -> size, -1 for folders)."""
    return {str(path.relative_to(folder)): (-1 if path.is_dir() else path.stat().st_size)
            for path in sorted(folder.rglob("*"))}


def assert_refused_untouched(result, tmp_path: Path, before: dict, model_loads: list, *fragments):
    assert_user_error(result, *fragments)
    assert tree(tmp_path) == before, "a failed command wrote something"
    assert model_loads == []


# --------------------------------------------------------------------------------------------------
# collect


def test_collect_from_a_missing_corpus_leaves_nothing_that_refuses_the_corrected_command(
        tmp_path, tiny_model_dir, monkeypatch, model_loads):
    model = str(tiny_model_dir("llama"))
    out = tmp_path / "st"
    common = ["collect", "--model", model, "--languages", "en,de", "--max-tokens", "50", "--no-progress", "--out", out]
    failed = run_cli(*common, "--corpus", tmp_path / "NO_SUCH_DIR")
    assert_user_error(failed, "Unknown corpus", "NO_SUCH_DIR")
    assert model_loads == [] and not out.exists()

    monkeypatch.undo()  # the corrected command really loads the model
    corrected = run_cli(*common, "--corpus", "udhr")
    assert corrected.exit_code == 0, corrected.output
    assert sorted(p.name for p in out.iterdir()) == ["de.safetensors", "en.safetensors", "manifest.json"]
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["identity"]["corpus"] == "udhr"


def test_collect_takes_over_a_folder_that_an_older_version_left_with_only_a_manifest(tmp_path, tiny_model_dir):
    out = tmp_path / "st"
    write_manifest(out, CollectionIdentity(str(tiny_model_dir("llama")), None, "llama", 2, 96, ACTIVATION_POINT,
                                           "NO_SUCH_DIR (field text)", 512, None, None))
    result = run_cli("collect", "--model", tiny_model_dir("llama"), "--languages", "en", "--max-tokens", "50",
                     "--no-progress", "--corpus", "udhr", "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["identity"]["corpus"] == "udhr"


def _corpus_folder(tmp_path: Path, **texts: str) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for lang, text in texts.items():
        (folder / f"{lang}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("case", ["unknown language", "unknown udhr split", "missing jsonl", "second language missing",
                                  "empty file", "bad jsonl", "zero budget", "zero batch", "zero checkpoint interval",
                                  "one-token sequences", "foreign output folder", "output is a file"])
def test_collect_refuses_bad_input_before_loading_the_model(tmp_path, tiny_model_dir, model_loads, case):
    out = tmp_path / "out"
    args = {"--languages": "en,de", "--corpus": "udhr"}
    fragments = {
        "unknown language": ({"--languages": "en,xx"}, "Unknown language code 'xx'"),
        "unknown udhr split": ({"--corpus": "udhr:train"}, "Unknown UDHR split 'train'"),
        "missing jsonl": ({"--corpus": f"jsonl:{tmp_path}/{{lang}}.jsonl"}, "does not exist"),
        "second language missing": ({"--corpus": "CORPUS"}, "No corpus file for language 'de'"),
        "empty file": ({"--corpus": "CORPUS", "--languages": "en"}, "is empty"),
        "bad jsonl": ({"--corpus": "JSONL", "--languages": "en"}, "line 1: expected a JSON object with a 'text' field"),
        "zero budget": ({"--max-tokens": "0"}, "--max-tokens must be a positive"),
        "zero batch": ({"--batch-size": "0"}, "Invalid value for '--batch-size'"),
        "zero checkpoint interval": ({"--checkpoint-every": "0"}, "Invalid value for '--checkpoint-every'"),
        "one-token sequences": ({"--seq-len": "1"}, "Invalid value for '--seq-len'"),
        "foreign output folder": ({}, "not a lape-eval statistics folder"),
        "output is a file": ({}, "is a file"),
    }
    changes, message = fragments[case]
    args.update(changes)
    if args["--corpus"] == "CORPUS":
        args["--corpus"] = str(_corpus_folder(tmp_path, en="Some English text." if case != "empty file" else "\n\n"))
    if args["--corpus"] == "JSONL":
        folder = tmp_path / "jsonl"
        folder.mkdir()
        (folder / "en.jsonl").write_text('{"body": "no text field"}\n', encoding="utf-8")
        args["--corpus"] = str(folder)
    if case == "foreign output folder":
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"not statistics")
    if case == "output is a file":
        out = tmp_path / "out.json"
        out.write_text("{}")
    before = tree(tmp_path)
    result = run_cli("collect", "--model", tiny_model_dir("llama"), "--no-progress", "--out", out,
                     *(item for pair in args.items() for item in pair))
    assert_refused_untouched(result, tmp_path, before, model_loads, message)


# --------------------------------------------------------------------------------------------------
# identify, inspect, import-masks, export-masks


@pytest.mark.parametrize("extra, message", [
    (["--filter-quantile", "1.5"], "--filter-quantile must be in the open interval (0, 1); got 1.5"),
    (["--activation-bar-quantile", "0"], "--activation-bar-quantile must be in the open interval (0, 1)"),
    (["--name", "a/b"], "must be a plain file name stem"),
    (["--languages", "en,xx"], "Unknown language code 'xx'"),
    (["--top-rates", ""], "--top-rates is empty"),
])
def test_identify_refuses_bad_options(tmp_path, model_loads, extra, message):
    folder = write_statistics(tmp_path / "stats", synthetic_table(["en", "de"]))
    before = tree(tmp_path)
    result = run_cli("identify", folder, "--out", tmp_path / "sets", *extra)
    assert_refused_untouched(result, tmp_path, before, model_loads, message)


def test_identify_refuses_a_folder_that_holds_no_statistics(tmp_path, model_loads):
    (tmp_path / "empty").mkdir()
    before = tree(tmp_path)
    result = run_cli("identify", tmp_path / "empty", "--out", tmp_path / "sets")
    assert_refused_untouched(result, tmp_path, before, model_loads, "is not a statistics folder (no manifest.json)")


@pytest.mark.parametrize("target, extra, message", [
    ("missing.safetensors", [], "No neuron set 'MISSING'"),
    ("hand.safetensors", ["--languages", "ru,ko"], "ko not in the neuron set (it has: en, de, ru)"),
])
def test_inspect_refuses_bad_input(tmp_path, model_loads, target, extra, message):
    hand_set().save(tmp_path / "hand.safetensors")
    before = tree(tmp_path)
    result = run_cli("inspect", tmp_path / target, *extra)
    assert_refused_untouched(result, tmp_path, before, model_loads, message.replace("MISSING", str(tmp_path / target)))


@pytest.mark.parametrize("extra, message", [
    (["--languages", "en,de,ru"], "give --width, or --stats"),
    (["--languages", "en,de,ru", "--width", "0"], "--width must be positive (got 0)"),
    (["--languages", "en,de,ru", "--width", "10", "--top-rate", "1"], "--top-rate must be in the open interval"),
    (["--languages", "en,xx,ru", "--width", "10"], "Unknown language code 'xx'"),
    (["--languages", "en,de,ru", "--stats", "STATS"], "is not a statistics folder"),
    (["--languages", "en,de", "--width", "10"], "masks for 3 languages, but 2 language codes"),
])
def test_import_masks_refuses_bad_input(tmp_path, model_loads, extra, message):
    mask = export_reference_masks(hand_set(), tmp_path / "mask")
    (tmp_path / "stats").mkdir()
    extra = [str(tmp_path / "stats") if item == "STATS" else item for item in extra]
    before = tree(tmp_path)
    result = run_cli("import-masks", mask, "--out", tmp_path / "imported.safetensors", *extra)
    assert_refused_untouched(result, tmp_path, before, model_loads, message)


def test_import_masks_refuses_a_missing_mask_file(tmp_path, model_loads):
    before = tree(tmp_path)
    result = run_cli("import-masks", tmp_path / "nope", "--languages", "en", "--width", "10",
                     "--out", tmp_path / "imported.safetensors")
    assert_refused_untouched(result, tmp_path, before, model_loads, "does not exist")


def test_export_masks_refuses_a_missing_set(tmp_path, model_loads):
    before = tree(tmp_path)
    result = run_cli("export-masks", "no-such-set", "--out", tmp_path / "mask")
    assert_refused_untouched(result, tmp_path, before, model_loads, "No neuron set 'no-such-set'", "shipped: ")


# --------------------------------------------------------------------------------------------------
# ablate


@pytest.mark.parametrize("extra, message", [
    (["--languages", "en,xx"], "Unknown language code 'xx'"),
    (["--languages", "ko,ja"], "None of the languages ko, ja is in the neuron set (it has: en, de, ru)"),
    (["--max-tokens", "0"], "--max-tokens must be a positive"),
    (["--corpus", "NO_SUCH_DIR"], "Unknown corpus 'NO_SUCH_DIR'"),
    (["--corpus", "udhr:train"], "Unknown UDHR split 'train'"),
])
def test_ablate_refuses_bad_input_before_loading_the_model(tmp_path, tiny_model_dir, model_loads, extra, message):
    neuron_set = hand_set().save(tmp_path / "hand.safetensors")
    before = tree(tmp_path)
    result = run_cli("ablate", neuron_set, "--model", tiny_model_dir("llama"), "--out", tmp_path / "report.json",
                     *extra)
    assert_refused_untouched(result, tmp_path, before, model_loads, message)


def test_ablate_refuses_a_missing_set_before_loading_the_model(tmp_path, tiny_model_dir, model_loads):
    before = tree(tmp_path)
    result = run_cli("ablate", tmp_path / "missing.safetensors", "--model", tiny_model_dir("llama"),
                     "--out", tmp_path / "report.json")
    assert_refused_untouched(result, tmp_path, before, model_loads, "No neuron set")

