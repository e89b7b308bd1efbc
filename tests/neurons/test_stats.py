"""Activation statistics: exact counts, padding, resume after SIGKILL, data-parallel runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lape_eval.arch import resolve
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.corpus import CorpusSpec
from lape_eval.neurons.stats import ActivationRecorder, CollectSettings, collect, load_statistics
from float_bounds import FORWARD, U32, assert_close_at_scale
from tiny_models import build_model, build_tokenizer

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

REPO = Path(__file__).resolve().parents[2]
# Statistics summed from the same per-batch float32 sums in another float64 order (the ranks' partial
# sums added at the end): n·u64 with n ≤ 120 batches per language is ~1.3e-14 of the scale. 1e-12 keeps
# a wide margin and stays far below one float32 rounding in one batch's sum (u32 / n ≈ 5e-10 of it).
FLOAT64_ORDER = 1e-12


def _captured_gates(model, input_ids, attention_mask, position_ids=None):
    """g of every layer, captured by plain hooks (the reference the recorder is checked against)."""
    sites = resolve(model)
    seen = {}
    handles = [m.register_forward_hook(lambda mod, a, out, i=i: seen.__setitem__(i, out.detach().clone()))
               for i, m in enumerate(sites.activations)]
    try:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    finally:
        for h in handles:
            h.remove()
    return [seen[i] for i in range(sites.num_layers)]


def _record(model, batches):
    """Run the recorder over (input_ids, attention_mask, count_mask, position_ids) batches."""
    recorder = ActivationRecorder(resolve(model), "cpu")
    with recorder, torch.no_grad():
        for input_ids, attention, counted, positions in batches:
            recorder.set_count_mask(counted)
            model(input_ids=input_ids, attention_mask=attention, position_ids=positions)
    return recorder


SEQUENCES = [[5, 17, 42, 8, 99, 120, 7], [33, 4], [250, 251, 252, 9, 10], [61]]


def _padded(sequences, side: str):
    width = max(map(len, sequences))
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        cols = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, cols] = torch.tensor(seq)
        mask[row, cols] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, mask.bool(), positions


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_recorder_counts_equal_a_manual_count_of_the_hooked_values(arch):
    model = build_model(arch)
    ids, mask, counted, positions = _padded(SEQUENCES, "right")
    gates = _captured_gates(model, ids, mask, positions)
    recorder = _record(model, [(ids, mask, counted, positions)])
    assert int(recorder.tokens) == sum(map(len, SEQUENCES))
    for layer, g in enumerate(gates):
        real = g[counted]  # [tokens, width]: padding removed
        assert torch.equal(recorder.positive_counts[layer], (real > 0).sum(0))
        # The same g (the same pass repeated in the same process: bit-identical), summed by the recorder
        # in float32 over at most n = 15 tokens and here in float64: off by ≤ n·u·Σ|g| (u = 2^-24).
        # Measured ≤ 1.4e-7 of the scale, ≥ 6x below the bound; a pad counted or a token missed moves a
        # sum by a whole |g|.
        bound = len(real) * U32 * real.abs().double().sum(0).max().item()
        torch.testing.assert_close(recorder.activation_sums[layer], real.double().sum(0), rtol=0.0, atol=bound)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_padding_never_counts_left_or_right(arch):
    model = build_model(arch)
    single = _record(model, [(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long),
                              torch.ones(1, len(s), dtype=torch.bool), None) for s in SEQUENCES])
    for side in ("right", "left"):
        batched = _record(model, [_padded(SEQUENCES, side)])
        assert int(batched.tokens) == int(single.tokens) == sum(map(len, SEQUENCES))
        assert torch.equal(batched.positive_counts, single.positive_counts), side
        # Each token's g comes from a forward pass in another summation order (padding columns in the
        # attention, other matmul shapes): FORWARD of the activations' scale, and the sums over the 15
        # tokens carry it at their own scale. Measured ≤ 1.9e-7 of the scale (scalar, AVX2, AVX-512); a
        # counted pad would add a whole token's g (and change the counts, compared exactly).
        assert_close_at_scale(batched.activation_sums, single.activation_sums, FORWARD, what=side)


def _write_corpus(folder: Path, repeats: int = 1, repeats_of: dict[str, int] | None = None) -> Path:
    from lape_eval.udhr import udhr_paragraphs

    folder.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "de", "ru"):
        paragraphs = udhr_paragraphs(lang) * (repeats_of or {}).get(lang, repeats)
        (folder / f"{lang}.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    return folder


def _collect(model_dir, corpus, out, **overrides):
    from lape_eval.models import load_model

    loaded = load_model(str(model_dir))
    settings = CollectSettings(CorpusSpec(str(corpus)), seq_len=64, batch_size=3, progress=False)
    for key, value in overrides.items():
        setattr(settings, key, value)
    return collect(loaded.model, loaded.tokenizer, ["en", "de", "ru"], out, settings, model_name=str(model_dir))


def test_collect_equals_a_direct_recording_and_is_batch_size_independent(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    corpus = _write_corpus(tmp_path / "corpus")
    by_three = _collect(model_dir, corpus, tmp_path / "a")
    by_one = _collect(model_dir, corpus, tmp_path / "b", batch_size=1)
    tokenizer = build_tokenizer()
    for lang in ("en", "de", "ru"):
        text_tokens = sum(len(tokenizer(p, add_special_tokens=False)["input_ids"])
                          for p in (corpus / f"{lang}.txt").read_text(encoding="utf-8").split("\n\n"))
        assert by_three[lang].tokens == by_one[lang].tokens == text_tokens
        assert torch.equal(by_three[lang].positive_counts, by_one[lang].positive_counts)
        # Batches of 3 against 1: forward passes in another summation order, as in the padding test.
        # Measured ≤ 3.3e-9 of the scale (the rounding of thousands of tokens averages out); a sequence
        # lost or counted twice moves the sums by its share of the corpus, ~1e-2.
        assert_close_at_scale(by_three[lang].activation_sums, by_one[lang].activation_sums, FORWARD, what=lang)
    table = load_statistics(tmp_path / "a", ["ru", "en"])
    assert table.languages == ["ru", "en"] and table.positive_counts.shape == (2, 2, 96)
    assert table.tokens.tolist() == [by_three["ru"].tokens, by_three["en"].tokens]


def test_max_tokens_is_exact_and_a_short_corpus_warns(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    corpus = _write_corpus(tmp_path / "corpus")
    exact = _collect(model_dir, corpus, tmp_path / "exact", max_tokens=300)
    assert {s.tokens for s in exact.values()} == {300}
    with pytest.warns(UserWarning, match="holds only .* tokens, fewer than the 10,000,000 asked"):
        short = _collect(model_dir, corpus, tmp_path / "short", max_tokens=10_000_000)
    assert all(s.tokens < 10_000_000 for s in short.values())
    assert load_statistics(tmp_path / "short").tokens.tolist() == [short[k].tokens for k in ("de", "ru", "en")]


@pytest.mark.parametrize("changes, message", [
    ({"max_tokens": 0}, "The token budget per language must be positive (got 0)"),
    ({"batch_size": 0}, "The batch size must be at least 1 (got 0)"),
    ({"seq_len": 1}, "The sequence length must be at least 2 tokens (got 1)"),
    ({"checkpoint_every": 0}, "Checkpoints must be at least one step apart (got 0)"),
    ({"corpus": CorpusSpec("NO_SUCH_DIR")}, "Unknown corpus 'NO_SUCH_DIR'"),
])
def test_collect_checks_its_settings_before_writing_anything(tmp_path, changes, message):
    settings = CollectSettings(CorpusSpec("udhr"), seq_len=64, max_tokens=50, progress=False)
    for key, value in changes.items():
        setattr(settings, key, value)
    with pytest.raises(LapeEvalError) as error:
        collect(build_model("llama"), build_tokenizer(), ["en"], tmp_path / "out", settings, model_name="tiny")
    assert message in str(error.value) and "--" not in str(error.value)
    assert not (tmp_path / "out").exists()



def _cli(*args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lape_eval", *args], cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_collection_killed_mid_language_resumes_to_the_same_statistics(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    # German long (~300 checkpointed batches), so that the kill lands mid-language with a wide margin;
    # English and Russian short, since only their completion and resumption matter.
    corpus = _write_corpus(tmp_path / "corpus", repeats_of={"de": 12})
    out = tmp_path / "killed"
    args = ["collect", "--model", str(model_dir), "--corpus", str(corpus), "--languages", "en,de,ru",
            "--seq-len", "64", "--batch-size", "3", "--checkpoint-every", "1", "--no-progress", "--out", str(out)]
    process = _cli(*args)
    partial = out / "de.partial.safetensors"  # wait until the second language is under way
    deadline = time.monotonic() + 300
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert (out / "en.safetensors").exists() and not (out / "de.safetensors").exists(), "not killed mid-language"
    assert partial.exists()
    resumed = subprocess.run([sys.executable, "-m", "lape_eval", *args], cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists()
    reference = _collect(model_dir, corpus, tmp_path / "uninterrupted")
    table = load_statistics(out, ["en", "de", "ru"])
    for k, lang in enumerate(["en", "de", "ru"]):
        assert int(table.tokens[k]) == reference[lang].tokens
        assert torch.equal(table.positive_counts[k], reference[lang].positive_counts)
        # The same batches in the same order with the same kernels (the environment is inherited), the
        # float64 sums resumed from the checkpoint as written: bit-identical (measured under scalar, AVX2
        # and AVX-512 kernels). A batch lost or repeated at the kill would change them.
        assert torch.equal(table.activation_sums[k], reference[lang].activation_sums), lang


def test_two_process_gloo_run_equals_the_single_process_run(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir("qwen2")
    corpus = _write_corpus(tmp_path / "corpus", repeats=2)
    out = tmp_path / "dp"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "lape_eval",
         "collect", "--model", str(model_dir), "--corpus", str(corpus), "--languages", "en,de,ru", "--seq-len", "64",
         "--batch-size", "3", "--checkpoint-every", "2", "--no-progress", "--device", "cpu", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    reference = _collect(model_dir, corpus, tmp_path / "single")
    table = load_statistics(out, ["en", "de", "ru"])
    for k, lang in enumerate(["en", "de", "ru"]):
        assert int(table.tokens[k]) == reference[lang].tokens
        assert torch.equal(table.positive_counts[k], reference[lang].positive_counts)
        # Same batches, same float32 per-batch sums; only the float64 accumulation order differs.
        assert_close_at_scale(table.activation_sums[k], reference[lang].activation_sums, FLOAT64_ORDER, what=lang)


class TestBadInput:
    def run(self, *args):
        from click.testing import CliRunner

        from lape_eval.cli import cli

        return CliRunner().invoke(cli, list(args))

    def assert_user_error(self, result, *fragments):
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit)  # no traceback
        for fragment in fragments:
            assert fragment in result.output

    def test_unknown_language(self, tmp_path, tiny_model_dir):
        out = tmp_path / "out"
        result = self.run("collect", "--model", str(tiny_model_dir("llama")), "--languages", "en,xx", "--out", str(out))
        self.assert_user_error(result, "Unknown language code 'xx'", "register_language")
        assert not out.exists()

    def test_missing_corpus_file(self, tmp_path, tiny_model_dir):
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        (corpus / "en.txt").write_text("Some English text.", encoding="utf-8")
        out = tmp_path / "out"
        result = self.run("collect", "--model", str(tiny_model_dir("llama")), "--languages", "en,de",
                          "--corpus", str(corpus), "--out", str(out), "--no-progress")
        self.assert_user_error(result, "No corpus file for language 'de'", "de.txt")
        assert not out.exists()  # checked before collection starts: not even English was collected

    def test_empty_corpus_file(self, tmp_path, tiny_model_dir):
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        (corpus / "en.txt").write_text("\n\n", encoding="utf-8")
        result = self.run("collect", "--model", str(tiny_model_dir("llama")), "--languages", "en",
                          "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--no-progress")
        self.assert_user_error(result, "is empty")

    def test_unsupported_architecture(self, tmp_path, tiny_model_dir):
        result = self.run("collect", "--model", str(tiny_model_dir("gpt_neox")), "--languages", "en",
                          "--out", str(tmp_path / "out"))
        self.assert_user_error(result, "Unsupported architecture 'gpt_neox'", "Llama", "register_family")
        assert not (tmp_path / "out").exists()

    def test_output_folder_of_another_model(self, tmp_path, tiny_model_dir):
        out = tmp_path / "out"
        first = self.run("collect", "--model", str(tiny_model_dir("llama")), "--languages", "en",
                         "--max-tokens", "50", "--out", str(out), "--no-progress")
        assert first.exit_code == 0, first.output
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        result = self.run("collect", "--model", str(tiny_model_dir("qwen2")), "--languages", "en,de",
                          "--max-tokens", "50", "--out", str(out), "--no-progress")
        self.assert_user_error(result, "holds statistics made with other settings", "model_type")
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    def test_unreadable_model_paths(self, tmp_path):
        result = self.run("collect", "--model", str(tmp_path / "nope"), "--languages", "en", "--out", str(tmp_path / "o"))
        self.assert_user_error(result, "does not exist")
        (tmp_path / "empty").mkdir()
        result = self.run("collect", "--model", str(tmp_path / "empty"), "--languages", "en", "--out", str(tmp_path / "o"))
        self.assert_user_error(result, "holds no config.json")

    def test_non_positive_budget(self, tmp_path, tiny_model_dir):
        result = self.run("collect", "--model", str(tiny_model_dir("llama")), "--max-tokens", "0", "--out", str(tmp_path / "o"))
        self.assert_user_error(result, "--max-tokens must be a positive")
