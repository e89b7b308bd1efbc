"""The CLaS-Bench relevance judge: a scripted lm-eval model with known replies judges the recorded
forcing grid; relevance, LFS and the steering score are recomputed here by hand from the samples."""

from __future__ import annotations

import json
import shutil

import pytest
from lm_eval.api.model import LM
from lm_eval.api.registry import MODEL_REGISTRY, register_model

from recorded_runs import RUNS, invoke

from lape_eval.reports import relevance

TASK = "rep_force"


def scripted_reply(source: str, target: str) -> str:
    """The scripted judge's reply to an answer of (source, target): every pattern CLaS parses, and garbage."""
    if target == "en":
        return "The answer is on topic.\nRating: [[2]]"
    if target == "de":
        return "Somewhat related, see [[1]] as my verdict."  # CLaS's second pattern
    if source == "en":
        return "I cannot rate this. Rating: [[7]]"  # no rating in 0..2: unparsed
    return "Gibberish, so the score is 0"  # CLaS's third pattern: a lone digit at the end


def expected_rating(source: str, target: str) -> int | None:
    return {"en": 2, "de": 1}.get(target, None if source == "en" else 0)


@register_model("scripted-judge") if "scripted-judge" not in MODEL_REGISTRY else (lambda cls: cls)
class ScriptedJudge(LM):
    """Replies by the languages named in the judge's system message; counts its calls."""

    calls = 0
    chats: list = []

    def __init__(self, pretrained=None, batch_size=1, **kwargs):
        super().__init__()
        self.pretrained = pretrained

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
        return json.dumps(chat_history)

    def generate_until(self, requests, disable_tqdm=False):
        replies = []
        for request in requests:
            chat = json.loads(request.args[0])
            system = chat[0]["content"]
            source = system.split("A question was asked in ")[1].split(",")[0]
            target = system.split("steered to respond in ")[1].split(".")[0]
            type(self).calls += 1
            type(self).chats.append(chat)
            replies.append(scripted_reply(source, target))
        return replies

    def loglikelihood(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


@pytest.fixture
def grid(tmp_path):
    """A writable copy of the recorded forcing grid (3 sources × 3 targets × 4 questions)."""
    folder = tmp_path / "grid"
    shutil.copytree(RUNS / "grid", folder)
    ScriptedJudge.calls = 0
    ScriptedJudge.chats = []
    return folder


def samples_of(folder):
    path = next(folder.rglob(f"samples_{TASK}_*.jsonl"))
    return path, [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def by_hand(records, group=None):
    """(LFS, relevance, steering) of the records, from the samples themselves (CLaS's formulas)."""
    chosen = [r for r in records if group is None or group(r)]
    lfs = 100 * sum(r["target_rate"] > 0 for r in chosen) / len(chosen)
    ratings = [expected_rating(r["doc"]["source_lang"], r["doc"]["target_lang"]) for r in chosen]
    parsed = [x for x in ratings if x is not None]
    if not parsed:
        return lfs, None, None
    rel = sum(parsed) / len(parsed) / 2 * 100
    steering = 0.0 if lfs == 0 or rel == 0 else 2 * lfs * rel / (lfs + rel)
    return lfs, rel, steering


def judge(folder, *more, expect=0):
    return invoke("judge", folder, "--judge-lm", "scripted-judge", "--judge", "script-v1", *more, expect=expect)


@pytest.mark.numerics
def test_scripted_judge_gives_the_hand_computed_scores(grid):
    result = judge(grid)
    _, records = samples_of(grid)
    assert ScriptedJudge.calls == len(records) == 36
    from lape_eval.reports.results import load_runs

    run = load_runs([grid])[0]
    scores = relevance.run_scores(run, TASK)
    assert (scores.overall.lfs, scores.overall.relevance, scores.overall.steering) == pytest.approx(by_hand(records),
                                                                                                      abs=1e-12)
    for lang in ("en", "de", "fr"):
        want = by_hand(records, lambda r, lang=lang: r["doc"]["target_lang"] == lang)
        got = scores.target[lang]
        assert (got.lfs, got.relevance, got.steering) == pytest.approx(want, abs=1e-12)
        want = by_hand(records, lambda r, lang=lang: r["doc"]["source_lang"] == lang)
        got = scores.source[lang]
        assert (got.lfs, got.relevance, got.steering) == pytest.approx(want, abs=1e-12)
    # target fr from source en: "[[7]]" is no rating: 4 answers counted apart, left out of the mean
    assert scores.overall.unparsed == 4 and scores.overall.rated == 32
    assert scores.target["fr"].relevance == 0.0 and scores.target["fr"].steering == 0.0  # CLaS: 0 when OR is 0
    lfs, rel, steering = by_hand(records)
    assert f"LFS {lfs:.1f}, relevance {rel:.1f}, steering score {steering:.1f}" in result.output
    assert "4 replies without a parsable rating" in result.output


def test_the_judge_sees_clas_prompts(grid):
    judge(grid, "--limit", "1")
    _, records = samples_of(grid)
    first = records[0]
    chat = ScriptedJudge.chats[0]
    assert chat[0]["content"].startswith("You are an impartial judge. Your task is to evaluate a multilingual response "
                                         "from a language steering experiment. A question was asked in en, and the "
                                         "model was steered to respond in en.\n")
    assert 'provide the rating in this exact format: "Rating: [[score]]".\n' in chat[0]["content"]
    assert chat[1]["content"] == (f"Question (en):\n{first['doc']['prompt']}\n\nResponse (en):\n"
                                  f"{first['filtered_resps'][0].strip()}\n")
    assert ScriptedJudge.calls == 1


def test_a_second_run_reuses_the_cache(grid):
    judge(grid)
    assert ScriptedJudge.calls == 36
    path = next(grid.rglob(f"judgments_{TASK}_*.jsonl"))
    before = path.read_text(encoding="utf-8")
    result = judge(grid)
    assert ScriptedJudge.calls == 36  # no new call
    assert "0 judged now, 36 from the cache" in result.output
    assert path.read_text(encoding="utf-8") == before
    judge(grid, "--greedy")  # another decoding is another judge: judged anew, the first judge's lines kept
    assert ScriptedJudge.calls == 72
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 72 and "greedy" in lines[-1]["judge"] and "greedy" not in lines[0]["judge"]


def test_limit_then_resume_judges_only_the_rest(grid):
    judge(grid, "--limit", "10")
    assert ScriptedJudge.calls == 10
    judge(grid)
    assert ScriptedJudge.calls == 36


def test_empty_answers_are_judged_and_counted_apart(grid):
    path, records = samples_of(grid)
    for record in records[:3]:
        record["filtered_resps"] = ["  "]
        record["resps"] = [["  "]]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = judge(grid)
    assert ScriptedJudge.calls == 36  # CLaS sends empty answers to the judge too
    assert ScriptedJudge.chats[0][1]["content"].endswith("Response (en):\n\n")
    assert "3 empty answers (judged like any other)" in result.output


@pytest.mark.parametrize("reply, rating", [
    ("Fine.\nRating: [[2]]", 2), ("Rating: [[0]] and later [[2]]", 0), ("see [[1]]", 1), ("... so 1", 1),
    ("Rating: [[3]]", None), ("Rating: 2/2 ok", None), ("", None), ("[[ 2 ]]", None), ("score: 2\n", 2),
])
def test_parse_rating_follows_clas(reply, rating):
    assert relevance.parse_rating(reply) == rating


def test_a_judge_that_fails_to_load_is_a_clear_error(grid, tmp_path):
    result = invoke("judge", grid, "--judge", str(tmp_path / "no-such-judge"), expect=2)
    assert "failed to load" in result.output and "no-such-judge" in result.output
    result = invoke("judge", grid, "--judge-lm", "no-such-lm-type", expect=2)
    assert "Unknown judge model type 'no-such-lm-type'" in result.output
    assert not list(grid.rglob("judgments_*"))


def test_runs_without_forcing_samples_are_an_error(tmp_path):
    folder = tmp_path / "base"
    shutil.copytree(RUNS / "base", folder)
    result = judge(folder, expect=2)
    assert "source_lang" in result.output


@pytest.mark.numerics
def test_table_shows_relevance_and_steering_score_or_needs_a_judge(grid, tmp_path):
    from recorded_runs import table_csv

    unjudged = tmp_path / "unjudged"
    shutil.copytree(RUNS / "grid", unjudged)
    plain = invoke("table", unjudged, "--format", "markdown").output
    assert "relevance" not in plain and "needs a judge" not in plain  # nothing judged: the table as before
    judge(grid)
    _, records = samples_of(grid)
    lfs, rel, steering = by_hand(records)
    rows = table_csv(grid, unjudged, "--label", "judged", "--label", "unjudged")
    assert float(rows["judged"]["rep_force · target_rate"]) == pytest.approx(lfs / 100, abs=1e-12)
    assert float(rows["judged"]["rep_force · relevance"]) == pytest.approx(rel, abs=1e-12)
    assert float(rows["judged"]["rep_force · steering_score"]) == pytest.approx(steering, abs=1e-12)
    assert rows["unjudged"]["rep_force · relevance"] == "" and rows["unjudged"]["rep_force · steering_score"] == ""
    text = invoke("table", grid, unjudged, "--label", "judged", "--label", "unjudged").output
    unjudged_line = next(line for line in text.splitlines() if line.startswith("| unjudged"))
    assert unjudged_line.count("needs a judge") == 2
    assert f"{steering:.2f}" in text
    # a judge metric chosen by name, like any metric
    only = table_csv(grid, "--metric", "steering_score")
    assert float(next(iter(only.values()))["rep_force"]) == pytest.approx(steering, abs=1e-12)


def test_an_hf_judge_with_seeded_sampling_repeats_its_replies(grid, tiny_model_dir, tmp_path):
    """The default path: a chat model loaded by lm-eval's hf class, CLaS's sampling with a fixed seed.
    (A tiny random Llama with a minimal chat template: its replies are noise, but must repeat.)"""
    judge_dir = tmp_path / "judge"
    shutil.copytree(tiny_model_dir("llama"), judge_dir)
    config_path = judge_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant:{% endif %}")
    config_path.write_text(json.dumps(config), encoding="utf-8")
    args = ("--judge", judge_dir, "--limit", "3", "--max-gen-toks", "6", "--device", "cpu")
    invoke("judge", grid, *args)
    path = next(grid.rglob(f"judgments_{TASK}_*.jsonl"))
    first = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(first) == 3 and all("T=0.7, top-p=0.8, top-k=20, seed=1234" in j["judge"] for j in first)
    assert all(j["rating"] == relevance.parse_rating(j["reply"]) for j in first)
    path.unlink()
    invoke("judge", grid, *args)
    again = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [j["reply"] for j in again] == [j["reply"] for j in first]
    invoke("judge", grid, *args, "--seed", "99")  # another seed is another judge, and samples other replies
    other = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][-3:]
    assert "seed=99" in other[0]["judge"] and [j["reply"] for j in other] != [j["reply"] for j in first]
