"""The progressive-deactivation ("fallback") study: which language does the model fall back to?

English prompts; languages are deactivated cumulatively in an order (default: the paper's
en fr es it pt ru de ar zh ko ja), and the study reports the distribution of output languages at
every step. :func:`study_from_counts` builds the table and the stacked bars from the labels counted
per step; it serves both sources of such counts: ``lape-eval experiment fallback``
(:mod:`lape_eval.experiments.fallback`, the paper's protocol, method spec §6.6) and
:func:`fallback_study`, which reads one lm-eval run per step. A run's step is read from its recorded
steer spec: step k deactivates exactly the first k languages of the order ("-en -fr -es" is step 3),
a run without steering is step 0.
"""

from __future__ import annotations

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
    run: Run | None  # the lm-eval run the counts come from (None: counted by the fallback experiment)
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
    counted, label_from, sources = [], "", set()
    for number in sorted(by_step):
        run = by_step[number]
        counts: Counter = Counter()
        for task in sample_tasks(run, tasks):
            items, how = outcomes(run, task, names)
            label_from = how["label"]
            counts.update(item.label or UNKNOWN for item in items)
            sources.update(item.source for item in items if item.source)
        counted.append((number, counts, run))
    first = by_step[min(by_step)]
    prompts = "English prompts" if sources <= {"en"} else f"prompts in {', '.join(sorted(sources))}"
    described = f"{first.identity.model}" + (f" · {first.identity.neuron_set}" if first.identity.neuron_set else "")
    return study_from_counts(order, counted, f"{prompts}\n{described}", label_from, min_share)


def study_from_counts(order: list[str], counted: list[tuple[int, Counter, Run | None]], description: str,
                      label_from: str, min_share: float = 0.02) -> FallbackStudy:
    """The study from ``(step number, Counter of output-language labels, run or None)`` per step (step k
    deactivates ``order[:k]``). ``description``: what the title says after the study's name (the prompts
    on its first line, then the model and neuron set); languages below ``min_share`` at every step are
    merged into "other"."""
    order = parse_order(order)
    steps: list[Step] = []
    for number, counts, run in sorted(counted, key=lambda item: item[0]):
        steps.append(Step(number, list(order[:number]), run, Counter(counts),
                          previous=steps[-1].number if steps else 0))
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
    prompts, _, rest = description.partition("\n")
    title = (f"Output languages as languages are deactivated cumulatively ({prompts})\n"
             f"{rest}" + (" · " if rest else "") + f"{max((s.total for s in steps), default=0)} outputs per step")
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
