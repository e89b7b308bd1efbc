"""CLaS-Bench's relevance judge and steering score (method spec §9.2): the protocol, the judgments
file and the scores, without torch (the judge model itself is called by
:mod:`lape_eval.evaluation.judge`, the runs are judged by :mod:`lape_eval.reports.judging`).

Followed from ``d-gurgurov/CLaS-Bench``, folder ``CLaS-Bench/`` (commit b3d0062):

* ``judge_llm.py`` ``SYSTEM_PROMPT_TEMPLATE`` / ``USER_PROMPT_TEMPLATE``: the judge's
  system and user messages, verbatim. The languages are the run's language codes (CLaS writes its
  codes, e.g. ``de``, into them: ``deactivate_language`` / ``activate_language`` of the result files),
  the question is the question as asked (CLaS: ``item["input"]``, the raw question) and the response
  the answer stripped of surrounding white space (CLaS strips vLLM's output in ``*_generate.py``).
* ``judge_llm.py`` ``parse_rating``: ``Rating: [[s]]`` first, else any ``[[s]]``, else
  a lone 0, 1 or 2 at the very end, s ∈ {0, 1, 2}; anything else is unparsed (None).
* ``judge_llm.py`` ``main``, the evaluation loop and the ``judge_analysis.json`` statistics: unparsed ratings are left out of every average (here
  they are also counted apart); the overall average pools every parsed rating of every
  (source, target) cell, the diagonal included; per target language it pools over the sources, per
  source language over the targets. Empty answers get no special case: the judge rates them like any
  other answer (here they are also counted apart).
* ``get_steering_score.py`` ``extract_judge_per_language``: relevance (OR) = mean rating / 2 × 100.
* ``evaluate_forcing_success.py``: LFS = answers in the target language / answers × 100, pooled the
  same three ways (diagonal included, method spec pitfall 9).
* ``get_steering_score.py`` ``harmonic_mean`` and ``compute_results``: steering
  score = 2·LFS·OR / (LFS + OR), 0 when either is 0; per target (source) language from that language's
  LFS and OR; overall from the overall LFS and OR, not a mean of the per-language scores.

One departure: a group whose every rating is unparsed (or that nobody judged) has no relevance and no
steering score here (None, shown "—"), where CLaS writes an average of 0.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lape_eval.errors import LapeEvalError

SYSTEM_PROMPT_TEMPLATE = """You are an impartial judge. Your task is to evaluate a multilingual response from a language steering experiment. A question was asked in {source_language}, and the model was steered to respond in {target_language}.

Important: do NOT evaluate *which language* the response is in or whether steering succeeded. Ignore the target language entirely for scoring - evaluate the final response solely on its content, regardless of the language used.

You must evaluate the response based on two criteria:
1.  **Relevance:** Is the response a relevant answer to the question?
2.  **Coherence:** Is the response coherent text, or is it gibberish, repetitive, or useless?

Focus only on these criteria and do not consider language conformity or steering success.

**Scoring:**
- **0:** The response is completely unrelated to the question OR it is total gibberish/useless text.
- **1:** The response is *somewhat* related to the question but may be incomplete, partially off-target, or minimally useful.
- **2:** The response is clearly and directly related to the question and is coherent and useful text.

Begin your evaluation with a brief explanation (a few sentences) of your reasoning.
After your explanation, provide the rating in this exact format: "Rating: [[score]]".
"""

USER_PROMPT_TEMPLATE = """Question ({source_language}):
{question}

Response ({target_language}):
{response}
"""

MAX_RATING = 2
_EXACT = re.compile(r"Rating: \[\[([012])\]\]")
_BRACKETS = re.compile(r"\[\[([012])\]\]")
_TRAILING = re.compile(r"\b([012])\b\s*$")


def messages(question: str, answer: str, source: str, target: str) -> list[dict[str, str]]:
    """The judge's chat: CLaS's system message and user message for one answer."""
    return [{"role": "system", "content": SYSTEM_PROMPT_TEMPLATE.format(source_language=source, target_language=target)},
            {"role": "user", "content": USER_PROMPT_TEMPLATE.format(source_language=source, question=question,
                                                                    target_language=target, response=answer.strip())}]


def parse_rating(reply: str) -> int | None:
    """The rating in a judge's reply (CLaS's three patterns, in their order), None when there is none."""
    for pattern, text in ((_EXACT, reply), (_BRACKETS, reply), (_TRAILING, reply.strip())):
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    return None


def judgment_key(chat: list[dict[str, str]], judge: dict) -> str:
    """The cache key of one judgment: sha256 of the judge's whole input (question, answer and both
    languages) and the judge's identity and decoding settings."""
    payload = json.dumps({"messages": chat, "judge": judge}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --- the judgments file ------------------------------------------------------------------------------


def judgments_path(results_path: Path, task: str, date_id: str) -> Path:
    """``judgments_<task>_<date>.jsonl`` next to the run's ``samples_<task>_<date>.jsonl``."""
    return Path(results_path).with_name(f"judgments_{task}_{date_id}.jsonl")


@dataclass(frozen=True)
class Judgment:
    """One answer's judgment, as a line of the judgments file."""

    doc_id: int
    source: str
    target: str
    key: str
    judge: str  # the judge's description (model and decoding), see lape_eval.evaluation.judge
    rating: int | None  # None: the reply holds no rating
    reply: str
    empty: bool  # the answer was empty (judged all the same, as CLaS does)

    def to_json(self) -> dict:
        return {"doc_id": self.doc_id, "source": self.source, "target": self.target, "key": self.key,
                "judge": self.judge, "rating": self.rating, "empty": self.empty, "reply": self.reply}


def read_judgments_file(path: Path) -> list[Judgment]:
    """Every judgment in ``path`` (an empty list when there is no file)."""
    if not Path(path).exists():
        return []
    judgments = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            judgments.append(Judgment(int(row["doc_id"]), str(row["source"]), str(row["target"]), str(row["key"]),
                                      str(row["judge"]), row["rating"], str(row["reply"]), bool(row["empty"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise LapeEvalError(f"The judgments file {path} is damaged at line {number} ({error}). Delete it and run "
                                "`lape-eval judge` again (the answers are judged anew).") from None
    return judgments


def current_judgments(path: Path) -> dict[int, Judgment] | None:
    """The judgments of the judge that ran last on this task (the file's last line names it), by
    document id; None when the task was never judged."""
    judgments = read_judgments_file(path)
    if not judgments:
        return None
    judge = judgments[-1].judge
    return {j.doc_id: j for j in judgments if j.judge == judge}


# --- scores --------------------------------------------------------------------------------------------


def harmonic_mean(a: float, b: float) -> float:
    """CLaS's harmonic mean: 0 when either value is 0."""
    if a == 0 or b == 0:
        return 0.0
    return 2 * a * b / (a + b)


@dataclass
class SteeringScore:
    """LFS, relevance and their harmonic mean over a group of answers (all on 0–100)."""

    answers: int = 0
    successes: int = 0  # answers in the target language
    rated: int = 0  # answers with a parsed rating
    rating_sum: int = 0
    unparsed: int = 0  # judged, but the reply holds no rating
    unjudged: int = 0  # not judged (yet)
    empty: int = 0  # empty answers (judged like any other)

    @property
    def lfs(self) -> float | None:
        return 100 * self.successes / self.answers if self.answers else None

    @property
    def relevance(self) -> float | None:
        return 100 * self.rating_sum / (MAX_RATING * self.rated) if self.rated else None

    @property
    def steering(self) -> float | None:
        if self.lfs is None or self.relevance is None:
            return None
        return harmonic_mean(self.lfs, self.relevance)

    def add(self, success: bool, judgment: Judgment | None) -> None:
        self.answers += 1
        self.successes += bool(success)
        if judgment is None:
            self.unjudged += 1
            return
        self.empty += judgment.empty
        if judgment.rating is None:
            self.unparsed += 1
        else:
            self.rated += 1
            self.rating_sum += judgment.rating


@dataclass
class SteeringScores:
    """CLaS's three views: overall, per target language, per source language."""

    overall: SteeringScore = field(default_factory=SteeringScore)
    target: dict[str, SteeringScore] = field(default_factory=dict)
    source: dict[str, SteeringScore] = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        return self.overall.answers > self.overall.unjudged


def steering_scores(items: Iterable[tuple[str, str, bool, Judgment | None]]) -> SteeringScores:
    """Scores of (source, target, success, judgment or None) items, pooled as CLaS pools them."""
    scores = SteeringScores()
    for source, target, success, judgment in items:
        scores.overall.add(success, judgment)
        scores.target.setdefault(target, SteeringScore()).add(success, judgment)
        scores.source.setdefault(source, SteeringScore()).add(success, judgment)
    return scores


def counts_note(score: SteeringScore) -> str:
    """What the relevance rests on: rated, unparsed, unjudged and empty answers."""
    parts = [f"{score.rated} of {score.answers} answers rated"]
    if score.unparsed:
        parts.append(f"{score.unparsed} replies without a parsable rating (left out, as CLaS-Bench does)")
    if score.unjudged:
        parts.append(f"{score.unjudged} not judged")
    if score.empty:
        parts.append(f"{score.empty} empty answers (judged like any other)")
    return "; ".join(parts)


def run_scores(run, task: str, names=None) -> SteeringScores | None:
    """The steering scores of a judged forcing task of a run (``names``: its field names, see
    :class:`lape_eval.reports.outcomes.FieldNames`); None when nobody judged it."""
    from lape_eval.reports.outcomes import FieldNames, outcomes

    date = run.date_id
    judged = current_judgments(judgments_path(run.path, task, date)) if date else None
    if judged is None:
        return None
    items, _ = outcomes(run, task, names or FieldNames())
    return steering_scores((str(o.source), str(o.target), bool(o.success), judged.get(o.doc_id)) for o in items)
