"""CLaS-Bench in the forcing experiment (issue 17, item 4; method spec §9.2): its question files, the preset
``clas``, and the bare question sent as the one user turn of a chat template through lm-eval."""

from __future__ import annotations

import json

import pytest

from lape_eval.errors import LapeEvalError
from lape_eval.experiments import forcing_plan as fp
from lape_eval.experiments import forcing_questions as fq

# The first Vicuna question in three of CLaS-Bench's languages; the other 69 lines are stand-ins. The files have
# CLaS-Bench's format (CLaS-Bench/data/<lang>.txt, one question per line); its reader strips each line, skips
# blank ones and keeps the first 70 (utils/utils.py, get_test_questions(k=70)): so the fixture adds surrounding
# spaces, a blank line and two lines past the 70th, which must not be read.
FIRST = {"en": "How can I improve my time management skills?",
         "de": "Wie kann ich meine Fähigkeiten im Zeitmanagement verbessern?",
         "el": "Πώς μπορώ να βελτιώσω τις δεξιότητές μου στη διαχείριση του χρόνου;"}


def expected_questions(lang: str) -> list[str]:
    return [FIRST[lang]] + [f"{lang} question {i}?" for i in range(2, 71)]


def write_clas_clone(root, langs=("en", "de", "el"), lines_of=None):
    """A clone of d-gurgurov/CLaS-Bench with only its question files: ROOT/CLaS-Bench/data/<lang>.txt."""
    data = root / "CLaS-Bench" / "data"
    data.mkdir(parents=True)
    for lang in langs:
        lines = lines_of(lang) if lines_of else (
            [f"  {FIRST[lang]}  ", ""] + [f"{lang} question {i}?" for i in range(2, 71)] + ["extra 71?", "extra 72?"])
        (data / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(fq.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- the question files ---------------------------------------------------------------------------


def test_a_local_clone_or_its_data_folder_gives_70_parallel_questions(tmp_path):
    data = write_clas_clone(tmp_path / "clone")
    for spec in (f"clas:{tmp_path / 'clone'}", f"clas:{data}"):
        questions = fq.load_questions(spec, ["en", "de", "el"])
        assert questions.per_language == 70
        for lang in ("en", "de", "el"):
            assert [row[lang] for row in questions.rows] == expected_questions(lang)
        assert [row["id"] for row in questions.rows] == [f"clas_q{i}" for i in range(1, 71)]
        assert questions.languages() == ["en", "de", "el"] and questions.warnings == []


def test_the_grid_task_reads_the_written_questions_and_asks_them_bare(tmp_path):
    from lape_eval.evaluation.data import load_forcing_grid

    questions = fq.load_questions(f"clas:{write_clas_clone(tmp_path / 'clone')}", ["en", "el"])
    path = questions.write(tmp_path / "questions.jsonl")
    docs = load_forcing_grid(languages="en,el", forcing_questions=str(path), prompt_style="clas")["test"]
    assert len(docs) == 70 * 2 * 2
    assert (docs[1]["source_lang"], docs[1]["target_lang"], docs[1]["prompt"]) == ("en", "el", FIRST["en"])
    paper = load_forcing_grid(languages="en,el", forcing_questions=str(path))["test"]
    assert paper[1]["prompt"] == f"Q: {FIRST['en']} \nA:"
    with pytest.raises(LapeEvalError, match="prompt_style 'chat'"):
        load_forcing_grid(languages="en", forcing_questions=str(path), prompt_style="chat")


def test_clas_downloads_each_language_once_into_the_cache(tmp_path, monkeypatch):
    """The default source is the raw GitHub URL of each language's file, fetched once, then read offline."""
    data = write_clas_clone(tmp_path / "served")
    fetched = []

    class Response:
        def __init__(self, body):
            self.body = body

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return self.body

    def urlopen(url, timeout):
        fetched.append(url)
        return Response((data / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("LAPE_EVAL_OFFLINE", raising=False)
    monkeypatch.setattr(fq.urllib.request, "urlopen", urlopen)
    first = fq.load_questions("clas", ["de", "el"])
    assert fetched == ["https://raw.githubusercontent.com/d-gurgurov/CLaS-Bench/main/CLaS-Bench/data/de.txt",
                       "https://raw.githubusercontent.com/d-gurgurov/CLaS-Bench/main/CLaS-Bench/data/el.txt"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = fq.load_questions("clas", ["el", "de"])
    assert len(fetched) == 2 and "cached" not in first.source
    assert [row["de"] for row in again.rows] == [row["de"] for row in first.rows] == expected_questions("de")


def test_offline_without_a_copy_names_the_local_path_option():
    with pytest.raises(LapeEvalError) as error:
        fq.load_questions("clas", ["en", "de"])
    message = str(error.value)
    assert "offline" in message and "--questions clas:PATH" in message
    assert "https://raw.githubusercontent.com/d-gurgurov/CLaS-Bench/main/CLaS-Bench/data/en.txt" in message


def test_a_local_copy_fills_the_cache_that_clas_then_reads_offline(tmp_path):
    fq.load_questions(f"clas:{write_clas_clone(tmp_path / 'clone')}", ["en", "de"])
    cached = fq.load_questions("clas", ["de"])
    assert [row["de"] for row in cached.rows] == expected_questions("de")


def test_clear_errors_for_languages_files_and_counts(tmp_path):
    data = write_clas_clone(tmp_path / "clone", langs=("en",))
    with pytest.raises(LapeEvalError, match="CLaS-Bench has no af questions"):
        fq.load_questions(f"clas:{data}", ["en", "af"])  # Afrikaans is the paper's, not CLaS-Bench's
    with pytest.raises(LapeEvalError, match=r"de\.txt does not exist"):
        fq.load_questions(f"clas:{data}", ["en", "de"])
    with pytest.raises(LapeEvalError, match="no folder of CLaS-Bench question files"):
        fq.load_questions(f"clas:{tmp_path / 'nowhere'}", ["en"])
    short = write_clas_clone(tmp_path / "short", lines_of=lambda lang: [f"{lang} {i}?" for i in range(1, 70 if lang == "de" else 71)])
    with pytest.raises(LapeEvalError, match="different numbers of questions"):
        fq.load_questions(f"clas:{short}", ["en", "de"])


def test_the_32_clas_languages_all_resolve():
    from lape_eval.evaluation.lid import normalize_label
    from lape_eval.languages import get_language, parse_languages

    # Method spec §9.2, in CLaS-Bench's order, with the FLORES-200 code of each: what FLORES+ names the
    # language and what NLLB's lid218e.bin (CLaS-Bench's LID) answers as __label__<code>.
    flores = {"en": "eng_Latn", "ar": "arb_Arab", "bo": "bod_Tibt", "da": "dan_Latn", "de": "deu_Latn",
              "es": "spa_Latn", "fr": "fra_Latn", "hi": "hin_Deva", "it": "ita_Latn", "ja": "jpn_Jpan",
              "ko": "kor_Hang", "mt": "mlt_Latn", "nl": "nld_Latn", "no": "nob_Latn", "pl": "pol_Latn",
              "pt": "por_Latn", "ru": "rus_Cyrl", "sv": "swe_Latn", "tr": "tur_Latn", "zh": "zho_Hans",
              "sk": "slk_Latn", "el": "ell_Grek", "kk": "kaz_Cyrl", "sw": "swh_Latn", "ka": "kat_Geor",
              "uk": "ukr_Cyrl", "fa": "pes_Arab", "th": "tha_Thai", "id": "ind_Latn", "vi": "vie_Latn",
              "cs": "ces_Latn", "ro": "ron_Latn"}
    assert parse_languages("clas-bench") == list(flores)
    for code, label in flores.items():
        assert get_language(code).code == code and get_language(label).code == code, code
        assert normalize_label(f"__label__{label}") == code, label
    assert normalize_label("__label__nno_Latn") == "no" and normalize_label("__label__zho_Hant") == "zh"
    assert [get_language(c).flores for c in ("sk", "el", "kk", "sw", "ka", "uk", "fa", "th", "id", "vi", "cs", "ro")] \
        == [flores[c] for c in ("sk", "el", "kk", "sw", "ka", "uk", "fa", "th", "id", "vi", "cs", "ro")]
    with pytest.raises(LapeEvalError, match="clas"):
        fq.load_questions("clas", ["af"])


# --- the preset -----------------------------------------------------------------------------------

# Method spec §9.2 (CLaS-Bench's 1-prompt_generate.py), written out by hand.
SPEC_9_2 = {"until": [], "max_gen_toks": 1024, "do_sample": False, "repetition_penalty": 1.0, "languages": 32}


def _load_task(path):
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=False)


def test_preset_clas_writes_the_protocol_of_section_9_2(tmp_path):
    settings = fp.clas_settings(sets=["gemma-3-270m-udhr-5pct"])
    assert (settings.questions, settings.prompt, settings.apply_chat_template) == ("clas", "clas", True)
    assert len(settings.languages) == SPEC_9_2["languages"] and settings.lid == "fasttext"
    for path in fp.write_task_configs(settings, tmp_path / "tasks"):
        task = _load_task(path)
        kwargs = task["generation_kwargs"]
        assert (kwargs["until"], kwargs["max_gen_toks"], kwargs["do_sample"], kwargs["repetition_penalty"]) == (
            SPEC_9_2["until"], SPEC_9_2["max_gen_toks"], SPEC_9_2["do_sample"], SPEC_9_2["repetition_penalty"])
        assert task["metadata"]["prompt_style"] == "clas"
    runs = fp.planned_runs(settings)
    argv = fp.lm_eval_arguments(settings, runs[1], tmp_path, tmp_path / "q.jsonl")
    assert "--apply_chat_template" in argv
    assert json.loads(argv[argv.index("--metadata") + 1])["prompt_style"] == "clas"
    # The answer length can be lowered; the paper preset neither applies a chat template nor changes the prompt.
    assert fp.clas_settings(sets=["x"], max_gen_toks=64).max_gen_toks == 64
    paper = fp.paper_settings(sets=["x"], languages=["en"])
    assert "--apply_chat_template" not in fp.lm_eval_arguments(paper, fp.planned_runs(paper)[0], tmp_path, tmp_path / "q")
    assert fp.paper_settings(sets=["x"], languages=["en"], prompt="clas", apply_chat_template=True).prompt == "clas"
    with pytest.raises(LapeEvalError, match="prompt_style 'qa'"):
        fp.paper_settings(sets=["x"], languages=["en"], prompt="qa")


def test_the_cli_takes_the_preset_and_the_chat_options(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from lape_eval.cli import cli
    from lape_eval.experiments import forcing_run

    seen = []
    monkeypatch.setattr(forcing_run, "run_forcing_experiment", lambda experiment: seen.append(experiment.settings))
    args = ["experiment", "forcing", "--sets", "a.safetensors", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, [*args, "--preset", "clas", "--max-gen-toks", "128"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, [*args, "--languages", "en,de", "--prompt", "clas", "--apply-chat-template"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    clas, paper_chat = seen
    assert (clas.preset, clas.max_gen_toks, clas.apply_chat_template, clas.repetition_penalty) == ("clas", 128, True, 1.0)
    assert (paper_chat.preset, paper_chat.prompt, paper_chat.apply_chat_template) == ("paper", "clas", True)
    assert paper_chat.max_gen_toks == 256


# --- the prompt lm-eval sends, on a tiny model with a chat template ---------------------------------

# A Gemma-style template: BOS, turns between markers, the generation prompt opening the model's turn.
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}"
                 "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


@pytest.fixture(scope="module")
def chat_model(tiny_model_dir, tmp_path_factory):
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("chat") / "tiny-llama-chat"
    shutil.copytree(tiny_model_dir("llama"), folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def sent(monkeypatch):
    """Every prompt string the lape model tokenizes for generation, with the token ids it sends."""
    from lape_eval.evaluation.lm import LapeLM

    seen = []
    original = LapeLM.tok_batch_encode

    def spy(self, strings, *args, **kwargs):
        ids, mask = original(self, strings, *args, **kwargs)
        for text, row, keep in zip(strings, ids.tolist(), mask.tolist()):
            seen.append((str(text), [token for token, real in zip(row, keep) if real]))
        return ids, mask

    monkeypatch.setattr(LapeLM, "tok_batch_encode", spy)
    return seen


def test_preset_clas_sends_the_bare_question_in_the_chat_template(chat_model, tmp_path, sent):
    from handmade_sets import make_set
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    import lape_eval.evaluation.lm  # noqa: F401  registers the model

    neurons = tmp_path / "set.safetensors"
    make_set(width=96, num_layers=2).save(neurons)
    settings = fp.clas_settings(model=str(chat_model), sets=[str(neurons)], languages=["en", "de"],
                                questions=f"clas:{write_clas_clone(tmp_path / 'clone', langs=('en', 'de'))}",
                                conditions=["baseline", "deact_act"], max_gen_toks=3, batch_size=1)
    questions = fq.load_questions(settings.questions, settings.languages)
    questions_file = questions.write(tmp_path / "questions.jsonl")
    fp.write_task_configs(settings, tmp_path / "tasks")
    for run in fp.planned_runs(settings):
        argv = fp.lm_eval_arguments(settings, run, tmp_path, questions_file)
        assert "--apply_chat_template" in argv
        manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False,
                              metadata=json.loads(argv[argv.index("--metadata") + 1]))
        simple_evaluate(model="lape", model_args=fp.model_args(settings, run), tasks=argv[argv.index("--tasks") + 1]
                        .split(","), task_manager=manager, device="cpu", batch_size=1, limit=6, bootstrap_iters=0,
                        apply_chat_template=True)
    # limit 6: the first question of each of the 2 x 2 cells, then the second question's first two; identical
    # greedy prompts of a run are generated once.
    asked = [FIRST["en"], FIRST["de"], "en question 2?"]
    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    independent = {q: tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                    add_generation_prompt=True) for q in asked}
    by_hand = {q: f"<s><start_of_turn>user\n{q}<end_of_turn>\n<start_of_turn>model\n" for q in asked}
    assert independent == by_hand
    assert {text for text, _ in sent} == set(by_hand.values())
    for text, ids in sent:  # one BOS: the template's, none added by the tokenizer call
        assert ids == tokenizer(text, add_special_tokens=False)["input_ids"] and ids.count(tokenizer.bos_token_id) == 1


def test_the_command_runs_preset_clas_through_lm_evals_chat_template(chat_model, tmp_path):
    """``lape-eval experiment forcing --preset clas`` end to end (lm-eval's own command line in a subprocess):
    the logged request of each document is the bare question in the chat template."""
    from click.testing import CliRunner

    from lape_eval.cli import cli

    clone = write_clas_clone(tmp_path / "clone", langs=("en", "de"))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "experiment", "forcing", "--preset", "clas", "--model", str(chat_model), "--languages", "en,de",
        "--questions", f"clas:{clone}", "--conditions", "baseline", "--max-gen-toks", "2", "--limit", "4",
        "--no-figures", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [samples] = (out / "runs" / "baseline").rglob("samples_lape_forcing_grid_baseline_*.jsonl")
    logged = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()]
    assert len(logged) == 4
    for sample in logged:
        question = sample["doc"]["question"]
        assert sample["arguments"]["gen_args_0"]["arg_0"] == (
            f"<s><start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n")
    assert "preset `clas`" in (out / "report.md").read_text(encoding="utf-8")
