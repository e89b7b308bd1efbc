"""Running the forcing experiment: the lm-eval runs of the plan, resumable, then the report.

The folder ``OUT``::

    experiment.json        the settings, the questions' source, the planned runs
    questions.jsonl        the questions asked (every source normalised to the parallel schema)
    tasks/                 the generated condition tasks (lm-eval --include_path)
    runs/<name>/           one lm-eval run per neuron set (plus ``baseline``): results and samples
    report.md  csv/  figures/

Each run is an ordinary ``lape-eval run`` (lm-eval) command, printed before it starts (lm-eval shows
its own progress). A run whose folder holds the results of the very same command is skipped, so
re-running the experiment resumes; a run whose command changed (other languages, settings, questions)
is made again.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lape_eval.errors import LapeEvalError
from lape_eval.experiments.forcing_plan import (
    ForcingSettings,
    PlannedRun,
    condition,
    lape_eval_command,
    lid_environment,
    lm_eval_arguments,
    planned_runs,
    run_environment,
    write_task_configs,
)
from lape_eval.experiments.forcing_questions import load_questions
from lape_eval.experiments.forcing_report import write_report
from lape_eval.files import read_json, write_json
from lape_eval.reports.results import RESULTS_GLOB, read_results

RECORD = "experiment-run.json"


def print_line(text: str) -> None:
    print(text, flush=True)


@dataclass
class ForcingExperiment:
    out: Path
    settings: ForcingSettings
    say: Callable[[str], None] = field(default=print_line, repr=False)
    figures: bool = True


def run_forcing_experiment(experiment: ForcingExperiment) -> Path:
    """Plan, run (resuming) and report; returns the path of ``report.md``."""
    out, settings, say = experiment.out, experiment.settings, experiment.say
    questions = load_questions(settings.questions, settings.languages)
    for warning in questions.warnings:
        say(f"  warning: {warning}")
    out.mkdir(parents=True, exist_ok=True)
    questions_file = questions.write(out / "questions.jsonl")
    write_task_configs(settings, out / "tasks")
    runs = planned_runs(settings)
    write_json(out / "experiment.json", {
        "format": "lape-eval/forcing-experiment", "version": 1, "settings": settings.describe(),
        "questions": {"source": questions.source, "per_language": questions.per_language,
                      "warnings": questions.warnings},
        "runs": [{"name": r.name, "neuron_set": r.neuron_set, "method": r.method,
                  "conditions": list(r.conditions)} for r in runs],
    })
    digest = hashlib.sha256(questions_file.read_bytes()).hexdigest()
    for number, run in enumerate(runs, 1):
        _run_once(experiment, run, f"[{number}/{len(runs)}]", questions_file, digest)
    say("▶ report: rates, paired tests, claims, heatmaps")
    report = write_report(out, settings, questions.source, questions.warnings, figures=experiment.figures)
    say(f"✓ {report}")
    return report


def _run_once(experiment: ForcingExperiment, run: PlannedRun, step: str, questions_file: Path, digest: str) -> None:
    out, settings, say = experiment.out, experiment.settings, experiment.say
    argv = lm_eval_arguments(settings, run, out, questions_file)
    folder = out / "runs" / run.name
    record = {"argv": argv, "environment": lid_environment(settings), "questions_sha256": digest,
              "tasks": [condition(name).task for name in run.conditions]}
    what = f"{run.name}: {', '.join(run.conditions)}"
    if run_complete(folder, record):
        say(f"✓ {step} {what} (already done)")
        return
    if folder.exists():
        shutil.rmtree(folder)
    command = lape_eval_command(argv)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in lid_environment(settings).items())
    say(f"\n▶ {step} {what}\n  $ {env} {' '.join(shlex.quote(part) for part in command)}")
    started = time.monotonic()
    result = subprocess.run(command, env=run_environment(settings))
    if result.returncode != 0:
        raise LapeEvalError(f"The lm-eval run '{run.name}' failed (exit code {result.returncode}); its output above "
                            "says why. Fix the cause and re-run the same command: finished runs are skipped.")
    write_json(folder / RECORD, record)
    say(f"✓ {step} {what} ({time.monotonic() - started:.0f} s)")


def run_complete(folder: Path, record: dict) -> bool:
    """Whether ``folder`` holds the finished results of the run ``record`` describes."""
    path = folder / RECORD
    if not path.is_file():
        return False
    try:
        if read_json(path, "experiment run record") != record:
            return False
    except LapeEvalError:
        return False
    results = sorted(folder.rglob(RESULTS_GLOB))
    if not results:
        return False
    found = read_results(results[-1]).get("results", {})
    return all(task in found for task in record["tasks"])
