"""``steer=doc`` generation batches documents of different specs together (issue 14): every document
gets exactly the text that a run with its spec alone gives, rows of different specs really share
batches, and a document whose spec does not fit the neuron set stops the run before any generation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from handmade_sets import make_set
from lm_tasks import GENERATE, MULTIPLE_CHOICE, ROWWISE_ROWS, ROWWISE_SPECS, write_task, write_tasks

import lape_eval.evaluation.lm  # noqa: F401  registers the model

# Compares generations computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

BATCH = 4
LAYERS = {"llama": 2, "gemma3": 3}


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    from lm_eval.tasks import TaskManager

    folder = write_tasks(tmp_path_factory.mktemp("tasks"))
    return folder, TaskManager(include_path=str(folder), include_defaults=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    """Per architecture: the model folder and a neuron set of its shape."""
    prepared = {}
    for arch, layers in LAYERS.items():
        path = tmp_path_factory.mktemp("sets") / f"{arch}.safetensors"
        make_set(width=96, num_layers=layers).save(path)
        prepared[arch] = {"pretrained": str(tiny_model_dir(arch)), "neurons": str(path), "dtype": "float32",
                          "alpha": 2.0}
    return prepared


def evaluate(model_args, task_manager, task="tiny_rowwise", **options):
    from lm_eval import simple_evaluate

    return simple_evaluate(model="lape", model_args=model_args, tasks=[task], task_manager=task_manager,
                           device="cpu", batch_size=BATCH, bootstrap_iters=0, log_samples=True, **options)


def texts(results, task="tiny_rowwise") -> list[str]:
    return [sample["resps"][0][0] for sample in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


@pytest.fixture(scope="module")
def alone(setup, tasks):
    """Per architecture and spec: the text of every document when the whole task runs with that one spec."""
    return {arch: {spec: texts(evaluate({**args, "steer": spec}, tasks[1])) for spec in ROWWISE_SPECS}
            for arch, args in setup.items()}


def expected(alone_of_arch: dict) -> list[str]:
    return [alone_of_arch[row["steer"]][doc_id] for doc_id, row in enumerate(ROWWISE_ROWS)]


@pytest.fixture
def batches(monkeypatch):
    """Record every generation batch: its rows' specs and its attention mask."""
    from lape_eval.evaluation.lm import LapeLM

    seen = []
    original = LapeLM._model_generate

    def spy(self, context, *args, **kwargs):
        seen.append({"specs": [str(spec) for spec in self._batch_specs], "mask": kwargs["attention_mask"].clone()})
        return original(self, context, *args, **kwargs)

    monkeypatch.setattr(LapeLM, "_model_generate", spy)
    return seen


@pytest.mark.parametrize("arch", list(LAYERS))
def test_rowwise_grid_equals_a_run_per_spec_and_shares_batches(arch, setup, tasks, alone, batches):
    grid = evaluate({**setup[arch], "steer": "doc"}, tasks[1])
    assert texts(grid) == expected(alone[arch])
    # The test has teeth: specs that differ only in strength, and steering at all, change the text.
    assert alone[arch]["+de:0.5"] != alone[arch]["+de:2"]
    assert alone[arch]["-en +de:8"] != alone[arch]["none"]
    # One HFLM generation loop over every spec: the 18 distinct requests (the repeated document is
    # generated once) in ceil(18 / 4) batches, mixing specs and prompt lengths (left padding).
    distinct = len({(row["question"], row["steer"]) for row in ROWWISE_ROWS})
    assert [len(batch["specs"]) for batch in batches] == [BATCH] * (distinct // BATCH) + [distinct % BATCH]
    assert sorted(spec for batch in batches for spec in batch["specs"]) == sorted(
        str(parse(row["steer"])) for row in ROWWISE_ROWS[:distinct])
    assert any(len(set(batch["specs"])) > 1 and not batch["mask"].all() for batch in batches)
    assert grid["config"]["lape"]["steer"] == "doc"


def parse(text):
    from lape_eval.steering.spec import parse_steer

    return parse_steer(text)


CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def test_rowwise_grid_with_a_chat_template(setup, tasks, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    chat = tmp_path / "chat-llama"
    shutil.copytree(setup["llama"]["pretrained"], chat)
    tokenizer = AutoTokenizer.from_pretrained(chat)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(chat)
    args = {**setup["llama"], "pretrained": str(chat)}
    grid = evaluate({**args, "steer": "doc"}, tasks[1], apply_chat_template=True)
    for sample in grid["samples"]["tiny_rowwise"]:
        assert sample["arguments"][0][0].endswith("assistant:")  # (prompt, generation settings)
    specs = ROWWISE_SPECS[:3]
    alone = {spec: texts(evaluate({**args, "steer": spec}, tasks[1], apply_chat_template=True)) for spec in specs}
    for doc_id, (row, text) in enumerate(zip(ROWWISE_ROWS, texts(grid))):
        if row["steer"] in alone:
            assert text == alone[row["steer"]][doc_id], (doc_id, row)


def test_rowwise_grid_with_limit_and_cached_requests(setup, tasks, alone, monkeypatch, tmp_path):
    """--limit, and lm-eval's request cache (the built requests and their documents, reloaded)."""
    import lm_eval.caching.cache as request_cache

    monkeypatch.setattr(request_cache, "PATH", str(tmp_path))
    args = {**setup["llama"], "steer": "doc"}
    first = evaluate(args, tasks[1], limit=9, cache_requests=True)
    assert list(tmp_path.iterdir()), "lm-eval should have cached the requests"
    again = evaluate(args, tasks[1], limit=9, cache_requests=True)
    assert texts(first) == texts(again) == expected(alone["llama"])[:9]


def test_response_cache_is_refused_with_steer_doc(setup, tasks, tmp_path):
    from lape_eval.errors import LapeEvalError

    with pytest.raises(LapeEvalError, match="--use_cache"):
        evaluate({**setup["llama"], "steer": "doc"}, tasks[1], use_cache=str(tmp_path / "responses"))


def test_identical_greedy_requests_are_generated_once_per_spec(setup, tasks, batches):
    evaluate({**setup["llama"], "steer": "doc"}, tasks[1])
    generated = sum(len(batch["specs"]) for batch in batches)
    assert len(ROWWISE_ROWS) == 19 and generated == 18


def test_stock_lm_eval_command_runs_the_rowwise_grid(setup, tasks, alone, tmp_path):
    folder, _ = tasks
    model_args = ",".join(f"{key}={value}" for key, value in {**setup["gemma3"], "steer": "doc"}.items())
    command = [os.path.join(os.path.dirname(sys.executable), "lm_eval"), "--model", "lape", "--model_args",
               model_args, "--tasks", "tiny_rowwise", "--include_path", str(folder), "--device", "cpu",
               "--batch_size", str(BATCH), "--limit", "14", "--log_samples", "--output_path", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    written_file = next(tmp_path.rglob("samples_tiny_rowwise_*.jsonl"))
    samples = [json.loads(line) for line in written_file.read_text().splitlines()]
    written = [sample["resps"][0][0] for sample in sorted(samples, key=lambda s: s["doc_id"])]
    assert written == expected(alone["gemma3"])[:14]


class TestBadDocumentSpecs:
    """A document whose spec cannot be applied stops the run before anything is generated or scored."""

    ROWS = [{"question": "Hi?", "steer": "+de", "answer": "", "label": 0},
            {"question": "Who are you?", "steer": "-en +fr", "answer": "", "label": 1},
            {"question": "Where?", "steer": None, "answer": "", "label": 0}]

    @pytest.mark.parametrize("steer, message", [
        ("-en +zh", r"document 2 of task 'tiny_bad_\w+' asks for the steer spec '-en \+zh'.*no neurons for 'zh'"),
        ("+xx", r"document 2 of task 'tiny_bad_\w+'.*Unknown language code 'xx'"),
        ("de", r"document 2 of task 'tiny_bad_\w+'.*a language needs a sign"),
    ])
    @pytest.mark.parametrize("kind", ["gen", "mc"])
    def test_fails_before_any_forward_pass_naming_task_and_document(self, setup, tmp_path, monkeypatch, steer,
                                                                    message, kind):
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        from lape_eval.errors import LapeEvalError

        rows = [dict(row, steer=row["steer"] or steer) for row in self.ROWS]
        write_task(tmp_path, f"tiny_bad_{kind}", rows, GENERATE if kind == "gen" else MULTIPLE_CHOICE)
        forward = []
        monkeypatch.setattr(HFLM, "_model_generate", lambda *a, **k: forward.append("generate"))
        monkeypatch.setattr(HFLM, "_model_call", lambda *a, **k: forward.append("call"))
        manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
        with pytest.raises(LapeEvalError, match=message):
            evaluate({**setup["llama"], "steer": "doc"}, manager, task=f"tiny_bad_{kind}")
        assert forward == []
