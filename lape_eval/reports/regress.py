"""A regression gate on task scores: compare runs against a stored baseline of expected scores.

The baseline is a small JSON file (``lape-eval regress --update`` writes it)::

    {"format": "lape-eval/score-baseline", "version": 1, "created": "...", "tool_version": "...",
     "runs": [{"label": ..., "model": ..., "steer": ..., "neuron_set": ..., "adapter": ..., "date": ...}],
     "tasks": {"<task>": {"<metric>,<filter>": {"value": 0.61, "stderr": 0.02, "higher_is_better": true}}}}

A score is *worse* when it moved against its direction (``higher_is_better`` from the run, else from
the baseline, else higher) by more than the tolerance, *better* when it moved with it by more,
else *unchanged*. The tolerance of a score is ``max(tolerance, tolerance_se · sqrt(se_base² +
se_run²))`` (a missing standard error counts as 0). Scores only in the baseline are *missing*,
scores only in the runs are *new*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lape_eval import __version__
from lape_eval.files import read_json, write_json
from lape_eval.errors import LapeEvalError
from lape_eval.reports.render import MISSING, Cell, TextTable
from lape_eval.reports.results import Run, Score, task_selected

BASELINE_FORMAT = "lape-eval/score-baseline"
BASELINE_VERSION = 1
STATUSES = ("worse", "missing", "new", "better", "unchanged")
_EPSILON = 1e-12


@dataclass(frozen=True)
class Check:
    task: str
    key: str
    status: str
    baseline: Score | None
    current: Score | None
    tolerance: float | None = None
    higher_is_better: bool = True

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current.value - self.baseline.value


def _selected(task: str, key: str, tasks: list[str], metrics: list[str]) -> bool:
    if not task_selected(task, tasks):
        return False
    if metrics and not any(key == m or key.split(",", 1)[0] == m for m in metrics):
        return False
    return True


def current_scores(runs: list[Run], tasks: list[str] | None = None, metrics: list[str] | None = None) -> dict:
    """``{task: {key: (Score, higher_is_better, run)}}`` over all runs; a score given twice is an error."""
    scores: dict[str, dict[str, tuple]] = {}
    for run in runs:
        for task in run.tasks:
            for key in run.metric_keys(task):
                if not _selected(task, key, tasks or [], metrics or []):
                    continue
                if key in scores.get(task, {}):
                    other = scores[task][key][2]
                    raise LapeEvalError(
                        f"{task} ({key}) is in two runs: {other.path} and {run.path}. Give each task once "
                        "(one run per task set), or keep one baseline file per configuration.")
                scores.setdefault(task, {})[key] = (run.score(task, key), run.higher_is_better(task, key), run)
    if not scores:
        raise LapeEvalError("The runs hold no score" + (" matching --tasks/--metric" if tasks or metrics else "") + ".")
    return scores


# The baseline file: made, written and read here only (the CLI, scripts/update_demo_baseline.py through
# the CLI, and the tests all go through these three functions).


def make_baseline(runs: list[Run], tasks: list[str] | None = None, metrics: list[str] | None = None) -> dict:
    """The baseline of the runs' scores (selected by task globs and metric names), ready to write."""
    scores = current_scores(runs, tasks, metrics)
    return {
        "format": BASELINE_FORMAT,
        "version": BASELINE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "runs": [{"label": run.label, "model": run.identity.model, "lm": run.identity.lm, "steer": run.identity.steer,
                  "neuron_set": run.identity.neuron_set, "adapter": run.identity.adapter,
                  "lm_eval_version": run.data.get("lm_eval_version"), "date": run.date_id, "file": run.path.name}
                 for run in runs],
        "tasks": {task: {key: {"value": score.value, "stderr": score.stderr, "higher_is_better": hib}
                         for key, (score, hib, _) in by_key.items()}
                  for task, by_key in sorted(scores.items())},
    }


def write_baseline(path: Path | str, baseline: dict) -> None:
    write_json(Path(path), baseline)


def read_baseline(path: Path | str) -> dict:
    """A baseline file, checked: its format and version, and a numeric value for every score."""
    path = Path(path)
    if not path.exists():
        raise LapeEvalError(f"The baseline {path} does not exist: create it from a trusted run with "
                            f"`lape-eval regress --baseline {path} --update RUN...`.")
    data = read_json(path, "baseline")
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT or not isinstance(data.get("tasks"), dict):
        raise LapeEvalError(f"{path} is not a lape-eval score baseline (no \"format\": \"{BASELINE_FORMAT}\" and "
                            "\"tasks\"); write one with `lape-eval regress --update`.")
    if data.get("version") != BASELINE_VERSION:
        raise LapeEvalError(f"{path} is a baseline of format version {data.get('version')}; this lape-eval reads "
                            f"version {BASELINE_VERSION}. Re-create it with --update.")
    for task, by_key in data["tasks"].items():
        for key, entry in (by_key or {}).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("value"), (int, float)):
                raise LapeEvalError(f"{path}: the entry {task} / {key} has no numeric \"value\".")
    return data


def check_tolerances(tolerance: float, tolerance_se: float) -> None:
    if tolerance < 0 or tolerance_se < 0:
        raise LapeEvalError("--tolerance and --tolerance-se must be ≥ 0.")


def compare_to_baseline(baseline: dict, runs: list[Run], *, tolerance: float = 0.0, tolerance_se: float = 2.0,
                        tasks: list[str] | None = None, metrics: list[str] | None = None) -> list[Check]:
    """One :class:`Check` per score of the baseline (as :func:`read_baseline` returns it) or the runs,
    worst first."""
    check_tolerances(tolerance, tolerance_se)
    current = current_scores(runs, tasks, metrics)
    expected = {task: {key: entry for key, entry in by_key.items() if _selected(task, key, tasks or [], metrics or [])}
                for task, by_key in baseline["tasks"].items()}
    checks = []
    for task in sorted(set(expected) | set(current)):
        for key in list(dict.fromkeys([*expected.get(task, {}), *current.get(task, {})])):
            stored = expected.get(task, {}).get(key)
            base = None if stored is None else Score(float(stored["value"]), _stderr(stored.get("stderr")))
            now, hib, _ = current.get(task, {}).get(key, (None, None, None))
            if hib is None:
                hib = stored.get("higher_is_better") if stored else None
            hib = hib is not False
            if base is None:
                checks.append(Check(task, key, "new", None, now, higher_is_better=hib))
            elif now is None:
                checks.append(Check(task, key, "missing", base, None, higher_is_better=hib))
            else:
                se = math.hypot(base.stderr or 0.0, now.stderr or 0.0)
                allowed = max(tolerance, tolerance_se * se)
                change = (now.value - base.value) * (1 if hib else -1)
                status = ("worse" if change < -allowed - _EPSILON else "better" if change > allowed + _EPSILON
                          else "unchanged")
                checks.append(Check(task, key, status, base, now, allowed, hib))
    order = {status: i for i, status in enumerate(STATUSES)}
    return sorted(checks, key=lambda c: order[c.status])


def _stderr(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def failed(checks: list[Check], fail_on_missing: bool = False) -> bool:
    return any(c.status == "worse" or fail_on_missing and c.status == "missing" for c in checks)


def summary(checks: list[Check], fail_on_missing: bool = False) -> str:
    counts = {status: sum(c.status == status for c in checks) for status in STATUSES}
    verdict = "FAIL" if failed(checks, fail_on_missing) else "PASS"
    return f"{verdict}: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES) + "."


def _fmt(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4g}"


def checks_table(checks: list[Check], baseline_path: str, fail_on_missing: bool = False,
                 only_changes: bool = False) -> TextTable:
    shown = [c for c in checks if not only_changes or c.status != "unchanged"]
    def score(s: Score | None) -> str:
        return MISSING if s is None else _fmt(s.value) + ("" if s.stderr is None else f" ± {s.stderr:.2g}")

    rows = []
    for c in shown:
        delta = c.delta
        rows.append([Cell(c.status.upper() if c.status == "worse" else c.status),
                     Cell(c.task), Cell(c.key + ("" if c.higher_is_better else " (lower is better)")),
                     Cell(score(c.baseline)), Cell(score(c.current)),
                     Cell(MISSING if delta is None else f"{delta:+.4g}"), Cell(_fmt(c.tolerance))])
    notes = [f"Baseline: {baseline_path}. {summary(checks, fail_on_missing)}"]
    if only_changes and len(shown) < len(checks):
        notes.append(f"{len(checks) - len(shown)} unchanged scores not shown.")
    csv_rows = [["status", "task", "metric", "baseline", "baseline_stderr", "current", "current_stderr", "delta",
                 "tolerance", "higher_is_better"]]
    for c in shown:
        csv_rows.append([c.status, c.task, c.key, c.baseline.value if c.baseline else None,
                         c.baseline.stderr if c.baseline else None, c.current.value if c.current else None,
                         c.current.stderr if c.current else None, c.delta, c.tolerance, c.higher_is_better])
    return TextTable(["status", "task", "metric", "baseline", "current", "Δ", "tolerance"], rows, notes,
                     csv_rows=csv_rows, left=3)
