"""Model-free lm-eval LMs for the task-suite tests: an oracle that answers with the gold answer, and
a scripted LM that returns hand-made predictions."""

from __future__ import annotations

from lm_eval.api.model import LM


class _TaskAware(LM):
    """Looks up each request's task (built once per name by the given TaskManager)."""

    def __init__(self, task_manager):
        super().__init__()
        self._manager = task_manager
        self._tasks: dict = {}

    def task(self, name: str):
        if name not in self._tasks:
            self._tasks[name] = self._manager.load([name])["tasks"][name]
        return self._tasks[name]

    def gold_text(self, request) -> str:
        task = self.task(request.task_name)
        target = task.doc_to_target(request.doc)
        if task.OUTPUT_TYPE == "multiple_choice" and isinstance(target, int):
            return str(task.doc_to_choice(request.doc)[target])
        return str(target)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


class OracleLM(_TaskAware):
    """Generates ``doc_to_target`` (the gold answer / reference / gold letter) and gives the gold
    choice log-likelihood 0 and every other choice -100."""

    def generate_until(self, requests, disable_tqdm: bool = False):
        return [self.gold_text(request) for request in requests]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        out = []
        for request in requests:
            gold = request.arguments[1].strip() == self.gold_text(request).strip()
            out.append((0.0 if gold else -100.0, gold))
        return out


class ScriptedLM(_TaskAware):
    """Generates ``predictions[(task, doc_id)]`` (default ``""``); log-likelihood: choice
    ``choices[(task, doc_id)]`` wins."""

    def __init__(self, task_manager, predictions: dict | None = None, choices: dict | None = None):
        super().__init__(task_manager)
        self.predictions = predictions or {}
        self.choices = choices or {}

    def generate_until(self, requests, disable_tqdm: bool = False):
        return [self.predictions.get((r.task_name, r.doc_id), "") for r in requests]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        out = []
        for request in requests:
            task = self.task(request.task_name)
            wanted = task.doc_to_choice(request.doc)[self.choices.get((request.task_name, request.doc_id), 0)]
            chosen = request.arguments[1].strip() == str(wanted).strip()
            out.append((0.0 if chosen else -100.0, chosen))
        return out
