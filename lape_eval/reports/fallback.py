"""The progressive-deactivation ("fallback") study: which language does the model fall back to?

English prompts; languages are deactivated cumulatively in an order (default: the paper's
en fr es it pt ru de ar zh ko ja), one lm-eval run per step, and the study reports the distribution
of output languages at every step. Each run's step is read from its recorded steer spec: step k
deactivates exactly the first k languages of the order ("-en -fr -es" is step 3), a run without
steering is step 0. :func:`step_commands` prints the lm-eval commands that make the runs.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field

from lape_eval.errors import LapeEvalError
from lape_eval.languages import parse_languages
from lape_eval.evaluation.lid import UNKNOWN
from lape_eval.reports.outcomes import FieldNames, outcomes, sample_tasks
from lape_eval.reports.render import Cell, TextTable
from lape_eval.reports.results import Run
from lape_eval.steering.spec import parse_steer

DEFAULT_ORDER = ("en", "fr", "es", "it", "pt", "ru", "de", "ar", "zh", "ko", "ja")
OTHER = "other"


@dataclass
class Step:
    number: int
    deactivated: list[str]
    run: Run
    counts: Counter
    shares: dict[str, float] = field(default_factory=dict)
    previous: int = 0  # the step shown before this one (steps may be skipped)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def tick(self) -> str:
        """Axis label: the step and the languages it adds to the previous step shown."""
        added = self.deactivated[self.previous:]
        if not added:
            return "none"
        return f"{self.number}\n−{added[0]}" if len(added) == 1 else f"{self.number}\n−{added[0]}…{added[-1]}"


@dataclass
class FallbackStudy:
    order: list[str]
    steps: list[Step]
    columns: list[str]  # output languages in display order (order languages first, then others, other, unknown)
    title: str
    label_from: str


def parse_order(order: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if not order:
        return list(DEFAULT_ORDER)
    return parse_languages(list(order) if isinstance(order, (list, tuple)) else order)


def step_of(run: Run, order: list[str]) -> int:
    steer = run.identity.steer
    if steer is None:
        return 0
    try:
        spec = parse_steer(steer)
    except LapeEvalError as error:
        raise LapeEvalError(f"{run.label} ({run.path}): its steer spec {steer!r} is not a deactivation step "
                            f"({error})") from None
    if spec.activated:
        raise LapeEvalError(f"{run.label} ({run.path}) activates {', '.join(spec.activated)}: the fallback study only "
                            "deactivates (steer='-en -fr ...').")
    deactivated = spec.deactivated
    k = len(deactivated)
    if set(deactivated) != set(order[:k]):
        raise LapeEvalError(f"{run.label} ({run.path}) deactivates {' '.join(deactivated)}, which is not the start of "
                            f"the order {' '.join(order)}; pass the order you used with --order.")
    return k


def fallback_study(runs: list[Run], order: list[str] | None = None, names: FieldNames = FieldNames(),
                   tasks: list[str] | None = None, min_share: float = 0.02) -> FallbackStudy:
    order = parse_order(order)
    by_step: dict[int, Run] = {}
    for run in runs:
        number = step_of(run, order)
        if number in by_step:
            raise LapeEvalError(f"Two runs are step {number} ({' '.join(order[:number]) or 'no deactivation'}): "
                                f"{by_step[number].path} and {run.path}. Pass one run per step.")
        by_step[number] = run
    steps, label_from, sources = [], "", set()
    for number in sorted(by_step):
        run = by_step[number]
        counts: Counter = Counter()
        for task in sample_tasks(run, tasks):
            items, how = outcomes(run, task, names)
            label_from = how["label"]
            counts.update(item.label or UNKNOWN for item in items)
            sources.update(item.source for item in items if item.source)
        steps.append(Step(number, list(order[:number]), run, counts, previous=steps[-1].number if steps else 0))
    totals: Counter = Counter()
    for step in steps:
        step.shares = {lang: count / step.total for lang, count in step.counts.items()} if step.total else {}
        totals.update(step.shares)
    kept = {lang for lang in totals if lang != UNKNOWN and max(s.shares.get(lang, 0.0) for s in steps) >= min_share}
    for step in steps:
        merged = sum(share for lang, share in step.shares.items() if lang not in kept and lang != UNKNOWN)
        step.shares = {lang: share for lang, share in step.shares.items() if lang in kept or lang == UNKNOWN}
        if merged:
            step.shares[OTHER] = merged
    columns = [lang for lang in order if lang in kept]
    columns += sorted(kept - set(columns), key=lambda lang: (-totals[lang], lang))
    columns += [c for c in (OTHER, UNKNOWN) if any(c in s.shares for s in steps)]
    first = steps[0].run
    prompts = "English prompts" if sources <= {"en"} else f"prompts in {', '.join(sorted(sources))}"
    title = (f"Output languages as languages are deactivated cumulatively ({prompts})\n"
             f"{first.identity.model}" + (f" · {first.identity.neuron_set}" if first.identity.neuron_set else "")
             + f" · {max(s.total for s in steps)} outputs per step")
    return FallbackStudy(order, steps, columns, title, label_from)


def study_table(study: FallbackStudy, decimals: int = 1) -> TextTable:
    header = ["step", "deactivated", "outputs", *study.columns]
    rows, csv_rows = [], [["step", "deactivated", "outputs", *study.columns]]
    for step in study.steps:
        deactivated = " ".join(step.deactivated) or "none"
        shares = [step.shares.get(lang, 0.0) for lang in study.columns]
        languages = [s for lang, s in zip(study.columns, shares) if lang not in (OTHER, UNKNOWN)]
        top = max(languages, default=0.0)
        cells = []
        for lang, share in zip(study.columns, shares):
            text = f"{100 * share:.{decimals}f}"
            cells.append(Cell(text, len(text) if top > 0 and share == top and lang not in (OTHER, UNKNOWN) else 0))
        rows.append([Cell(str(step.number)), Cell(deactivated), Cell(str(step.total)), *cells])
        csv_rows.append([step.number, deactivated, step.total, *shares])
    notes = [f"% of outputs per output language (label from {study.label_from}); **Bold**: the most frequent "
             f"language of a step. Order: {' '.join(study.order)}."]
    return TextTable(header, rows, notes, title=study.title.replace("\n", " — "), csv_rows=csv_rows, left=2)


def step_commands(model_args: str, tasks: str, output_root: str, order: list[str] | None = None,
                  steps: list[int] | None = None, extra: str = "") -> list[str]:
    """One ``lape-eval run`` command per step (each with its own --output_path and --log_samples)."""
    order = parse_order(order)
    steps = list(range(len(order) + 1)) if steps is None else steps
    bad = [k for k in steps if not 0 <= k <= len(order)]
    if bad:
        raise LapeEvalError(f"Steps must be between 0 and {len(order)} (the length of the order); got {bad}.")
    if "steer=" in model_args:
        raise LapeEvalError("Leave steer= out of --model-args: each step sets its own.")
    commands = []
    width = len(str(len(order)))
    for k in steps:
        args = model_args + (f",steer={' '.join('-' + code for code in order[:k])}" if k else "")
        command = ["lape-eval", "run", "--model", "lape", "--model_args", args, "--tasks", tasks, "--log_samples",
                   "--output_path", f"{output_root.rstrip('/')}/step-{k:0{width}d}"]
        commands.append(shlex.join(command) + (f" {extra}" if extra else ""))
    return commands
