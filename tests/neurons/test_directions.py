"""Residual-stream means (``collect --residual-means``) and the direction artifact (``lape-eval directions``):
the means equal a manual computation over the model's hidden states (padding and BOS excluded), resume
and two processes give the same sums, and the artifact is self-describing, hashed and checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import lape_eval.neurons.stats as stats_module
from float_bounds import FORWARD, assert_close_at_scale
from lape_eval.arch import RESIDUAL_POINT, resolve
from lape_eval.cli import cli
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.corpus import CorpusSpec
from lape_eval.neurons.directions import ResidualDirections, directions_from_statistics
from lape_eval.neurons.stats import ActivationRecorder, CollectSettings, collect, load_statistics
from tiny_models import build_model, build_tokenizer

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

REPO = Path(__file__).resolve().parents[2]
BOS = 1
LANGUAGES = ["en", "de", "ru"]
# Float64 sums of the same float32 values in another order (per batch, then across batches or ranks):
# n·u64 of the scale with n ≤ a few thousand tokens is ~1e-13; 1e-12 keeps a margin, and a token lost or
# counted twice moves a sum by a whole |h|, ~1e-3 of the scale or more.
FLOAT64_ORDER = 1e-12


def _layer_outputs(model, input_ids, attention_mask):
    """Every decoder layer's output hidden state, from plain hooks and from ``output_hidden_states``."""
    layers = resolve(model).layers
    seen = {}
    handles = [layer.register_forward_hook(lambda mod, a, out, i=i: seen.__setitem__(
        i, (out[0] if isinstance(out, tuple) else out).detach().clone())) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            output = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    outputs = [seen[i] for i in range(len(layers))]
    # HF's hidden_states[l + 1] is layer l's output for all but the last layer (the last gets the final
    # norm): the hooked point is "the layer's output hidden state".
    for layer in range(len(layers) - 1):
        assert torch.equal(outputs[layer], output.hidden_states[layer + 1])
    return outputs


def _bos_batch(sequences, side: str):
    """A padded batch of BOS + sequence rows; the count mask leaves out BOS and padding."""
    width = 1 + max(map(len, sequences))
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    attention = torch.zeros_like(ids)
    counted = torch.zeros(len(sequences), width, dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        start = 0 if side == "right" else width - 1 - len(sequence)
        ids[row, start] = BOS
        ids[row, start + 1 : start + 1 + len(sequence)] = torch.tensor(sequence)
        attention[row, start : start + 1 + len(sequence)] = 1
        counted[row, start + 1 : start + 1 + len(sequence)] = True
    return ids, attention, counted


SEQUENCES = [[5, 17, 42, 8, 99, 120, 7], [33, 4], [250, 251, 252, 9, 10], [61]]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_residual_sums_equal_a_manual_sum_of_the_hidden_states_without_padding_and_bos(arch, side):
    model = build_model(arch)
    ids, attention, counted = _bos_batch(SEQUENCES, side)
    reference = _layer_outputs(model, ids, attention)
    recorder = ActivationRecorder(resolve(model), "cpu", residual_width=model.config.hidden_size)
    with recorder, torch.no_grad():
        recorder.set_count_mask(counted)
        model(input_ids=ids, attention_mask=attention)
    assert int(recorder.tokens) == sum(map(len, SEQUENCES))
    for layer, hidden in enumerate(reference):
        real = hidden[counted].double()  # [15 tokens, H]: no BOS, no padding
        # The same values (same pass, same process) summed in float64 in another order.
        assert_close_at_scale(recorder.residual_sums[layer], real.sum(0), FLOAT64_ORDER, what=f"layer {layer}")
        with_bos = hidden[attention.bool()].double().sum(0)  # what counting BOS would give
        assert (with_bos - real.sum(0)).abs().max() > 1e-3 * real.abs().sum(0).max()


def _write_corpus(folder: Path, repeats: int = 1) -> Path:
    from lape_eval.udhr import udhr_paragraphs

    folder.mkdir(parents=True, exist_ok=True)
    for lang in LANGUAGES:
        (folder / f"{lang}.txt").write_text("\n\n".join(udhr_paragraphs(lang)[:12] * repeats), encoding="utf-8")
    return folder


def _settings(corpus, **overrides):
    settings = CollectSettings(CorpusSpec(str(corpus)), seq_len=48, batch_size=3, add_bos=True, progress=False,
                               residual_means=True)
    for key, value in overrides.items():
        setattr(settings, key, value)
    return settings


def _collect(model_dir, corpus, out, **overrides):
    from lape_eval.models import load_model

    loaded = load_model(str(model_dir))
    return collect(loaded.model, loaded.tokenizer, LANGUAGES, out, _settings(corpus, **overrides),
                   model_name=str(model_dir))


def test_collected_residual_means_equal_one_sequence_at_a_time_by_hand(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    corpus = _write_corpus(tmp_path / "corpus")
    collected = _collect(model_dir, corpus, tmp_path / "stats")
    model, tokenizer = build_model("llama"), build_tokenizer()
    for lang in LANGUAGES:
        # By hand: the corpus's paragraphs tokenised and concatenated, cut into 47 tokens (48 with BOS),
        # each sequence run alone (no padding), BOS dropped, every layer's output summed in float64.
        paragraphs = (corpus / f"{lang}.txt").read_text(encoding="utf-8").split("\n\n")
        stream = [t for p in paragraphs for t in tokenizer(p, add_special_tokens=False)["input_ids"]]
        chunks = [stream[i : i + 47] for i in range(0, len(stream), 47)]
        assert len(chunks) % 3 != 0 and len(chunks[-1]) < 47  # the last batch is short and right-padded
        sums = torch.zeros(2, model.config.hidden_size, dtype=torch.float64)
        for chunk in chunks:
            ids = torch.tensor([[BOS, *chunk]])
            for layer, hidden in enumerate(_layer_outputs(model, ids, torch.ones_like(ids))):
                sums[layer] += hidden[0, 1:].double().sum(0)
        assert collected[lang].tokens == len(stream)
        # Batches of 3 with padding against one sequence at a time: forward passes in another order.
        assert_close_at_scale(collected[lang].residual_sums, sums, FORWARD, what=lang)
    table = load_statistics(tmp_path / "stats", ["de", "en"])
    assert table.residual_sums.shape == (2, 2, 32) and table.residual_sums.dtype == torch.float64


def test_an_interrupted_language_resumes_to_the_same_residual_sums(tmp_path, tiny_model_dir, monkeypatch):
    model_dir = tiny_model_dir("llama")
    corpus = _write_corpus(tmp_path / "corpus", repeats=2)
    reference = _collect(model_dir, corpus, tmp_path / "uninterrupted")
    checkpoint = stats_module._checkpoint
    calls = []

    def interrupted(recorder, folder, lang, sequences_done, dist):
        checkpoint(recorder, folder, lang, sequences_done, dist)
        calls.append(lang)
        if calls.count("de") == 2:
            raise KeyboardInterrupt  # stands for a killed process: the checkpoint is on disk
    monkeypatch.setattr(stats_module, "_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _collect(model_dir, corpus, tmp_path / "resumed", checkpoint_every=1)
    assert (tmp_path / "resumed" / "de.partial.safetensors").exists()
    monkeypatch.setattr(stats_module, "_checkpoint", checkpoint)
    resumed = _collect(model_dir, corpus, tmp_path / "resumed")
    for lang in LANGUAGES:
        assert resumed[lang].tokens == reference[lang].tokens
        # The same batches in the same order, the float64 sums resumed as written: bit-identical. A batch
        # lost or repeated at the interruption would change them.
        assert torch.equal(resumed[lang].residual_sums, reference[lang].residual_sums), lang
        assert torch.equal(resumed[lang].positive_counts, reference[lang].positive_counts), lang


def test_two_process_gloo_run_equals_the_single_process_run(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir("qwen2")
    corpus = _write_corpus(tmp_path / "corpus", repeats=2)
    out = tmp_path / "dp"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "lape_eval",
         "collect", "--model", str(model_dir), "--corpus", str(corpus), "--languages", ",".join(LANGUAGES),
         "--seq-len", "48", "--batch-size", "3", "--add-bos", "yes", "--checkpoint-every", "2", "--residual-means",
         "--no-progress", "--device", "cpu", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    reference = _collect(model_dir, corpus, tmp_path / "single")
    table = load_statistics(out, LANGUAGES)
    for k, lang in enumerate(LANGUAGES):
        assert int(table.tokens[k]) == reference[lang].tokens
        # The ranks run the single process's batches (each rank every other one); only the order in
        # which the float64 sums are added differs.
        assert_close_at_scale(table.residual_sums[k], reference[lang].residual_sums, FLOAT64_ORDER, what=lang)


# --------------------------------------------------------------------------------------------------
# The artifact


@pytest.fixture(scope="module")
def residual_stats(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("residual")
    _collect(tiny_model_dir("llama"), _write_corpus(folder / "corpus"), folder / "stats")
    return folder / "stats"


def test_the_artifact_holds_sums_over_tokens_and_describes_itself(residual_stats, tmp_path):
    result = CliRunner().invoke(cli, ["directions", str(residual_stats), "--languages", "de,en",
                                      "--out", str(tmp_path / "dirs.safetensors")])
    assert result.exit_code == 0, result.output
    loaded = ResidualDirections.load(tmp_path / "dirs.safetensors")
    assert loaded.languages == ["de", "en"] and loaded.shape == (2, 32)
    for row, lang in enumerate(["de", "en"]):
        stored = stats_module.StatisticsFolder(residual_stats).load_language(lang)
        expected = stored.residual_sums / stored.tokens  # float64 division of the exact sums
        assert torch.equal(loaded.means_table[row], expected)
        assert loaded.info["statistics"]["tokens_per_language"][lang] == stored.tokens
    assert loaded.means_table.dtype == torch.float64
    assert loaded.info["model"]["residual_point"] == RESIDUAL_POINT and "activation_point" not in loaded.info["model"]
    assert loaded.info["statistics"]["corpus"].startswith(str(residual_stats.parent / "corpus"))
    assert loaded.info["provenance"]["created_by"]["command"] == "lape-eval directions"
    assert loaded.content_hash.startswith("sha256:") and "2 languages" in result.output


def test_directions_are_normalised_differences_of_the_means(residual_stats):
    made = directions_from_statistics([residual_stats])
    means = made.means_table
    row = {lang: made.languages.index(lang) for lang in made.languages}
    for layer in range(2):
        difference = means[row["de"], layer] - means[row["en"], layer]
        assert torch.allclose(made.direction("de", "en", layer), difference / difference.norm(), rtol=0, atol=1e-15)
        others = (means[row["en"], layer] + means[row["ru"], layer]) / 2
        against_rest = means[row["de"], layer] - others
        assert torch.allclose(made.direction("de", None, layer), against_rest / against_rest.norm(), rtol=0,
                              atol=1e-15)
        assert torch.equal(made.direction("de", "de", layer), torch.zeros(32, dtype=torch.float64))


def _rewrite_metadata(path: Path, change) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["lape_eval"])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    change(metadata, tensors)
    save_file(tensors, str(path), metadata={"lape_eval": json.dumps(metadata)})


@pytest.mark.parametrize("change, message", [
    (lambda meta, tensors: tensors["means"].mul_(2), "modified or corrupted"),
    (lambda meta, tensors: meta.__setitem__("languages", ["de", "fr", "ru"]), "modified or corrupted"),
    (lambda meta, tensors: meta.__setitem__("format", "lape-eval/neuron-set"), "not a lape-eval direction artifact"),
    (lambda meta, tensors: meta.__setitem__("format_version", 99), "format version 99"),
])
def test_a_changed_or_foreign_file_is_refused(residual_stats, tmp_path, change, message):
    path = directions_from_statistics([residual_stats]).save(tmp_path / "dirs.safetensors")
    _rewrite_metadata(path, change)
    with pytest.raises(LapeEvalError, match=message):
        ResidualDirections.load(path)


def test_a_neuron_set_is_not_a_direction_artifact(tmp_path):
    from handmade_sets import make_set

    make_set(96).save(tmp_path / "set.safetensors")
    with pytest.raises(LapeEvalError, match="not a lape-eval direction artifact"):
        ResidualDirections.load(tmp_path / "set.safetensors")


def test_statistics_without_residual_sums_are_refused_by_name(tmp_path, tiny_model_dir):
    corpus = _write_corpus(tmp_path / "corpus")
    _collect(tiny_model_dir("llama"), corpus, tmp_path / "plain", residual_means=False)
    result = CliRunner().invoke(cli, ["directions", str(tmp_path / "plain"), "--out", str(tmp_path / "d.safetensors")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "no residual-stream sums for de, ru, en" in result.output and "--residual-means" in result.output
    assert not (tmp_path / "d.safetensors").exists()


def test_a_folder_collected_without_residual_means_is_not_resumed_with_them(tmp_path, tiny_model_dir):
    corpus = _write_corpus(tmp_path / "corpus")
    _collect(tiny_model_dir("llama"), corpus, tmp_path / "stats", residual_means=False)
    with pytest.raises(LapeEvalError, match="residual_means: False there, True now"):
        _collect(tiny_model_dir("llama"), corpus, tmp_path / "stats")


def test_unknown_language_and_bad_output_name_are_refused(residual_stats, tmp_path):
    missing = CliRunner().invoke(cli, ["directions", str(residual_stats), "--languages", "de,fr",
                                       "--out", str(tmp_path / "d.safetensors")])
    assert missing.exit_code != 0 and "No statistics for fr" in missing.output
    wrong_name = CliRunner().invoke(cli, ["directions", str(residual_stats), "--out", str(tmp_path / "d.pt")])
    assert wrong_name.exit_code != 0 and "FILE.safetensors" in wrong_name.output
