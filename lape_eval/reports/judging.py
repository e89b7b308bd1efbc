"""``lape-eval judge``: every answer of forcing runs rated by a judge model (CLaS-Bench's relevance
protocol, :mod:`lape_eval.reports.relevance`), the judgments cached in the run folder.

The judgments of ``samples_<task>_<date>.jsonl`` go to ``judgments_<task>_<date>.jsonl`` next to it,
one line per answer. They are the cache: an answer whose judge input (question, answer, languages)
and judge (model and decoding) are already in the file is not judged again, so a second run calls
the judge zero times and an interrupted run resumes (the file is rewritten, atomically, after every
batch). Judgments of other judges stay in the file; the judge that ran last is written last, and
that is the one the reports read.
"""

from __future__ import annotations

from dataclasses import dataclass

from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.judge import Judge, JudgeSettings
from lape_eval.files import atomic_path
from lape_eval.reports.outcomes import FieldNames, outcomes, sample_tasks
from lape_eval.reports.relevance import (Judgment, SteeringScores, judgment_key, judgments_path, messages,
                                         parse_rating, read_judgments_file, steering_scores)
from lape_eval.reports.results import Run, load_runs, task_selected

CHUNK = 32  # chats per call of the judge; the file is saved after each


@dataclass
class Pending:
    doc_id: int
    source: str
    target: str
    chat: list[dict[str, str]]
    key: str
    empty: bool


@dataclass
class JudgedTask:
    run: Run
    task: str
    path: object
    judged_now: int  # judge calls made by this invocation
    reused: int  # answers whose judgment came from the cache
    scores: SteeringScores


def _write(path, judgments: list[Judgment]) -> None:
    import json

    with atomic_path(path) as temporary:
        temporary.write_text("".join(json.dumps(j.to_json(), ensure_ascii=False) + "\n" for j in judgments),
                             encoding="utf-8")


def judge_runs(paths: list[str], settings: JudgeSettings, *, tasks: list[str] | None = None,
               names: FieldNames = FieldNames(), batch_size: int | str = 1, limit: int | None = None,
               device: str | None = None, progress: bool = True, judge_factory=Judge) -> list[JudgedTask]:
    """Judge the answers of the forcing tasks of the runs under ``paths`` (``tasks``: globs; ``limit``:
    the first N answers per task) and return, per task, the calls made and the scores."""
    from tqdm.auto import tqdm

    runs = load_runs(list(paths))
    work = []  # (run, task, outcomes)
    for run in runs:
        chosen = [t for t in sample_tasks(run, require=(names.source, names.target)) if task_selected(t, tasks or [])]
        for task in chosen:
            items, _ = outcomes(run, task, names)
            work.append((run, task, items))
    if not work:
        raise LapeEvalError(f"No forcing task to judge in {', '.join(map(str, paths))}"
                            f"{' matching --tasks ' + ','.join(tasks) if tasks else ''}: a task needs a sample file "
                            f"(lm_eval --log_samples) whose documents have {names.source} and {names.target}.")
    described = settings.describe()
    label = settings.label()
    judge = None
    results = []
    total_missing = 0
    plans = []
    for run, task, items in work:
        path = judgments_path(run.path, task, run.date_id)
        existing = read_judgments_file(path)
        cache = {j.key: j for j in existing}
        pending, ready = [], {}
        for index, item in enumerate(items):
            chat = messages(item.question, item.answer, str(item.source), str(item.target))
            key = judgment_key(chat, described)
            if key in cache:
                old = cache[key]
                ready[item.doc_id] = Judgment(item.doc_id, str(item.source), str(item.target), key, label, old.rating,
                                              old.reply, old.empty)
            elif limit is None or index < limit:  # beyond --limit: only what the cache holds
                pending.append(Pending(item.doc_id, str(item.source), str(item.target), chat, key,
                                       not item.answer.strip()))
        total_missing += len({p.key for p in pending})
        plans.append((run, task, items, path, existing, pending, ready))
    bar = tqdm(total=total_missing, desc="judge", unit="answer", disable=not progress)
    for run, task, items, path, existing, pending, ready in plans:
        reused = len(ready)
        others = [j for j in existing if j.judge != label]
        calls = 0
        unique = list({p.key: p for p in pending}.values())  # one call per distinct judge input
        replies: dict[str, str] = {}
        for start in range(0, len(unique), CHUNK):
            if judge is None:
                judge = judge_factory(settings, batch_size=batch_size, device=device)
            batch = unique[start:start + CHUNK]
            for item, reply in zip(batch, judge.reply([p.chat for p in batch])):
                replies[item.key] = reply
            calls += len(batch)
            bar.update(len(batch))
            for p in pending:
                if p.key in replies and p.doc_id not in ready:
                    ready[p.doc_id] = Judgment(p.doc_id, p.source, p.target, p.key, label, parse_rating(replies[p.key]),
                                               replies[p.key], p.empty)
            _write(path, others + sorted(ready.values(), key=lambda j: j.doc_id))  # resumable after each batch
        _write(path, others + sorted(ready.values(), key=lambda j: j.doc_id))  # this judge last: the current one
        scores = steering_scores((str(o.source), str(o.target), bool(o.success), ready.get(o.doc_id)) for o in items)
        results.append(JudgedTask(run, task, path, calls, reused, scores))
    bar.close()
    return results
