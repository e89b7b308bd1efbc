"""Leaderboard-style comparison tables over lm-eval runs.

Every score of every run is an *entry* with coordinates: ``config`` (the run's label), ``task``
(task or group name), ``language`` (from the task's metadata or its name) and ``benchmark`` (the
task name without its language). The user puts any of these on the rows and the columns (several
joined with commas: ``--columns config,benchmark``); each (row, column) must then hold at most one
entry, else the table is ambiguous and the error says which dimension to add. Cells show the score
± its standard error, the difference Δ to a baseline run with a significance marker
(:mod:`lape_eval.reports.significance`), and the best value along the configuration axis in bold. Missing
scores stay missing (``—``), never 0, and an Average over a line with a missing score is missing too.

Forcing tasks judged with ``lape-eval judge`` (:mod:`lape_eval.reports.relevance`) add two scores per
run and task: ``relevance`` and ``steering_score`` (CLaS-Bench's, 0–100). They are entries of their own,
told apart from the task's score by a fourth coordinate, ``metric``, which the table then adds to the
columns (unless the rows or columns already hold it); a run that was not judged shows "needs a judge"
there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lape_eval.errors import LapeEvalError
from lape_eval.reports.render import MISSING, Cell, TextTable
from lape_eval.reports.results import Run, Score, gc_paused, select_run, task_selected
from lape_eval.reports.significance import DEFAULT_RESAMPLES, DEFAULT_SEED, Comparison, compare, z_test
from lape_eval.reports.task_languages import (LANGUAGE_METADATA_KEYS, benchmark_name, compile_language_regex,
                                             language_sort_key, task_language)

DIMENSIONS = ("config", "task", "language", "benchmark", "metric")
JUDGE_METRICS = ("relevance", "steering_score")  # added by `lape-eval judge` (lape_eval.reports.relevance)
NEEDS_JUDGE = "needs a judge"
AVERAGE = "Average"
AVERAGE_CHOICES = ("auto", "row", "column", "both", "none")
BEST_CHOICES = ("auto", "column", "row", "none")
GROUP_CHOICES = ("all", "tasks", "groups")
TEST_NAMES = {"paired-bootstrap": "paired bootstrap on per-sample scores",
              "sacrebleu": "sacrebleu paired bootstrap on the hypotheses", "z-test": "z-test on the standard errors"}


@dataclass
class TableOptions:
    rows: list[str] = field(default_factory=lambda: ["config"])
    columns: list[str] = field(default_factory=lambda: ["task"])
    metrics: list[str] = field(default_factory=list)  # preference order; empty: each task's first metric
    tasks: list[str] = field(default_factory=list)  # fnmatch patterns; empty: all
    groups: str = "all"
    baseline: str | None = None
    test: str = "auto"
    alpha: float = 0.05
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    language_regex: str | None = None
    average: str = "auto"
    best: str = "auto"
    decimals: int | None = None
    judge: bool = True  # add the relevance and steering score of judged forcing tasks (not with --metric)


@dataclass
class Entry:
    run: Run
    task: str
    key: str  # "metric,filter"
    score: Score
    higher_is_better: bool | None
    coords: dict[str, str]
    is_group: bool
    comparison: Comparison | None = None
    baseline_score: Score | None = None


@dataclass
class TableCell:
    value: float
    stderr: float | None
    delta: float | None = None
    p_value: float | None = None
    test: str | None = None
    higher_is_better: bool | None = None
    best: bool = False
    significant: bool = False
    metric: str | None = None  # the metric name (without filter); None for an average of mixed metrics


@dataclass
class ComparisonTable:
    row_title: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[int, int], TableCell]
    baseline: str | None
    options: TableOptions
    notes: list[str]
    metrics: dict[str, str]  # task -> metric key shown
    entries: list[Entry]
    best_along: str = "none"  # "column", "row" or "none"
    judge_columns: set = field(default_factory=set)  # columns of judge metrics (a gap there needs a judge)
    judge_rows: set = field(default_factory=set)


# --------------------------------------------------------------------------------------------------
# Building


def _parse_dimensions(value: list[str] | str, option: str) -> list[str]:
    items = value.replace("+", ",").split(",") if isinstance(value, str) else list(value)
    items = [item.strip().lower() for item in items if item.strip()]
    for item in items:
        if item not in DIMENSIONS:
            raise LapeEvalError(f"Unknown {option} key {item!r}: choose from {', '.join(DIMENSIONS)} "
                                "(several joined with commas, e.g. config,benchmark).")
    if not items:
        raise LapeEvalError(f"{option} needs at least one of {', '.join(DIMENSIONS)}.")
    return items


def check_options(options: TableOptions) -> tuple[list[str], list[str]]:
    """Check the options that need no run (so that a bad one fails before any file is read);
    return the row and column dimensions."""
    rows_dims = _parse_dimensions(options.rows, "--rows")
    cols_dims = _parse_dimensions(options.columns, "--columns")
    shared = set(rows_dims) & set(cols_dims)
    if shared:
        raise LapeEvalError(f"--rows and --columns both use {', '.join(sorted(shared))}: put each key on one axis.")
    for name, value, choices in (("--average", options.average, AVERAGE_CHOICES),
                                 ("--best", options.best, BEST_CHOICES), ("--groups", options.groups, GROUP_CHOICES)):
        if value not in choices:
            raise LapeEvalError(f"Unknown {name} {value!r}: choose one of {', '.join(choices)}.")
    compile_language_regex(options.language_regex)
    return rows_dims, cols_dims


def choose_metric(run: Run, task: str, preferences: list[str]) -> str | None:
    keys = run.metric_keys(task)
    if not preferences:
        return keys[0] if keys else None
    for wanted in preferences:
        if "," in wanted:
            if wanted in keys:
                return wanted
        else:
            for key in keys:
                if key.split(",", 1)[0] == wanted:
                    return key
    return None


def collect_entries(runs: list[Run], options: TableOptions, needs_language: bool) -> tuple[list[Entry], list[str]]:
    regex = compile_language_regex(options.language_regex)
    entries, notes = [], []
    without_metric, without_language = set(), set()
    languages: dict[tuple, tuple | None] = {}  # the same task recurs in every run
    for run in runs:
        groups = run.groups
        for task in run.tasks:
            is_group = task in groups
            if options.groups == "tasks" and is_group or options.groups == "groups" and not is_group:
                continue
            if not task_selected(task, options.tasks):
                continue
            key = choose_metric(run, task, options.metrics)
            if key is None:
                without_metric.add(task)
                continue
            config = run.task_config(task)
            metadata = config.get("metadata") or {}
            cache_key = (task, *(str(metadata.get(k)) for k in LANGUAGE_METADATA_KEYS))
            if cache_key not in languages:
                languages[cache_key] = task_language(task, config, regex)
            language = languages[cache_key]
            if language is None and needs_language:
                without_language.add(task)
                continue
            coords = {"config": run.label, "task": task, "language": language[0] if language else "",
                      "benchmark": benchmark_name(task, language[1] if language else None),
                      "metric": key.split(",", 1)[0]}
            entries.append(Entry(run, task, key, run.score(task, key), run.higher_is_better(task, key), coords,
                                 is_group))
            if options.judge and not options.metrics:
                entries.extend(_judge_entries(run, task, key, coords, is_group))
    if without_metric:
        what = f"metric {' or '.join(options.metrics)}" if options.metrics else "numeric metric"
        notes.append(f"Left out (no {what}): {', '.join(sorted(without_metric))}.")
    if without_language:
        notes.append(f"Left out (no language in the name or metadata): {', '.join(sorted(without_language))}.")
    if not entries:
        raise _nothing_to_tabulate(runs, options, bool(without_language))
    return entries, notes


def add_judge_scores(runs: list[Run]) -> None:
    """Put the relevance and steering score of each judged forcing task into its run's results (as
    ``relevance,<filter>`` and ``steering_score,<filter>``), so that they are scores like any other."""
    from lape_eval.reports.relevance import run_scores

    for run in runs:
        for task in run.tasks:
            if task in run.groups or run.samples_path(task) is None:
                continue
            scores = run_scores(run, task)
            if scores is None:
                continue
            keys = run.metric_keys(task)
            filter_name = keys[0].split(",", 1)[1] if keys else "none"
            for metric, value in (("relevance", scores.overall.relevance), ("steering_score", scores.overall.steering)):
                if value is not None:
                    run.data["results"][task][f"{metric},{filter_name}"] = value
                    run.data.setdefault("higher_is_better", {}).setdefault(task, {})[metric] = True


def _judge_entries(run: Run, task: str, key: str, coords: dict, is_group: bool) -> list[Entry]:
    """Entries of the judge scores of ``task`` next to its ``key`` (same filter)."""
    filter_name = key.split(",", 1)[1] if "," in key else "none"
    entries = []
    for metric in JUDGE_METRICS:
        judge_key = f"{metric},{filter_name}"
        score = run.score(task, judge_key) if judge_key != key else None
        if score is not None:
            entries.append(Entry(run, task, judge_key, score, True, {**coords, "metric": metric}, is_group))
    return entries


def _nothing_to_tabulate(runs: list[Run], options: TableOptions, lacked_language: bool) -> LapeEvalError:
    """The error for a selection that matches no score: which option to change, and what the runs hold."""
    available = sorted({k.split(',')[0] for r in runs for t in r.tasks for k in r.metric_keys(t)})
    problems = []
    if options.tasks:
        problems.append(f"--tasks {','.join(options.tasks)}")
    if options.metrics:
        problems.append(f"--metric {','.join(options.metrics)} "
                        f"(metrics in the runs: {', '.join(available) or 'none'})")
    if lacked_language:
        problems.append("a language axis (no task name holds a language code; set --language-regex)")
    return LapeEvalError("Nothing to tabulate: no task of these runs matches "
                         + ("; ".join(problems) if problems else "the selection") + ".")


def _check_common_tasks(entries: list[Entry], runs: list[Run]) -> None:
    if len(runs) < 2:
        return
    by_task: dict[str, set[int]] = {}
    for entry in entries:
        by_task.setdefault(entry.task, set()).add(id(entry.run))
    if not any(len(owners) > 1 for owners in by_task.values()):
        listing = "; ".join(f"{run.label}: {', '.join(run.tasks[:6])}{' …' if len(run.tasks) > 6 else ''}"
                            for run in runs)
        raise LapeEvalError(f"These runs have no task in common, so there is nothing to compare ({listing}). "
                            "Pass runs of the same tasks, or select tasks with --tasks.")


def _order(dimension: str, values: set[str], runs: list[Run]) -> list[str]:
    if dimension == "config":
        return [run.label for run in runs if run.label in values]
    if dimension == "language":
        return sorted(values, key=language_sort_key)
    if dimension == "metric":  # the task's own metric first, the judge's after it
        return sorted(values, key=lambda v: (v in JUDGE_METRICS, JUDGE_METRICS.index(v) if v in JUDGE_METRICS else 0, v))
    return sorted(values)


def _axis(dimensions: list[str], entries: list[Entry], runs: list[Run]) -> list[tuple[str, ...]]:
    orders = [_order(d, {e.coords[d] for e in entries}, runs) for d in dimensions]
    rank = [{value: i for i, value in enumerate(order)} for order in orders]
    keys = {tuple(e.coords[d] for d in dimensions) for e in entries}
    return sorted(keys, key=lambda key: tuple(r[v] for r, v in zip(rank, key)))


def _place(entries: list[Entry], rows_dims: list[str], cols_dims: list[str], row_keys: list[tuple[str, ...]],
           col_keys: list[tuple[str, ...]]) -> dict[tuple[int, int], Entry]:
    """Each entry at its (row, column); two entries in one cell is an error naming the dimension to add."""
    row_index = {k: i for i, k in enumerate(row_keys)}
    col_index = {k: j for j, k in enumerate(col_keys)}
    placed: dict[tuple[int, int], Entry] = {}
    for entry in entries:
        position = (row_index[tuple(entry.coords[d] for d in rows_dims)],
                    col_index[tuple(entry.coords[d] for d in cols_dims)])
        if position in placed:
            other = placed[position]
            unused = [d for d in DIMENSIONS if d not in rows_dims + cols_dims and other.coords[d] != entry.coords[d]]
            raise LapeEvalError(
                f"Two scores fall into one cell (row {' · '.join(row_keys[position[0]])}, column "
                f"{' · '.join(col_keys[position[1]])}): {other.run.label}/{other.task} and "
                f"{entry.run.label}/{entry.task}. "
                f"Add {' or '.join(unused) or 'a dimension'} to --rows or --columns, or select tasks with --tasks.")
        placed[position] = entry
    return placed


def _compare_with_baseline(entries: list[Entry], baseline: Run, options: TableOptions) -> None:
    for entry in entries:
        entry.baseline_score = baseline.score(entry.task, entry.key)
        if entry.run is not baseline:
            entry.comparison = compare(entry.run, baseline, entry.task, entry.key, test=options.test,
                                       resamples=options.resamples, seed=options.seed,
                                       scores=(entry.score, entry.baseline_score))


def _line_averages(placed: dict[tuple[int, int], Entry], options: TableOptions, lines: int, length: int,
                   along_rows: bool) -> dict[tuple[int, int], TableCell | None]:
    """The Average of each of ``lines`` rows (``along_rows``) or columns over its ``length`` cells,
    at the position just after the line's last cell."""
    averages = {}
    for line in range(lines):
        cells = [placed.get((line, k) if along_rows else (k, line)) for k in range(length)]
        averages[(line, length) if along_rows else (length, line)] = _average(cells, options)
    return averages


def _add_averages(cells: dict, placed: dict[tuple[int, int], Entry], rows: list[str], columns: list[str],
                  average: str, options: TableOptions) -> None:
    """Add an Average column and/or row (``average``: row, column, both or none) to ``cells``, ``rows``
    and ``columns``; the Average row leaves out the Average column."""
    row_count, column_count = len(rows), len(columns)
    if average in ("column", "both") and column_count > 1:
        averages = _line_averages(placed, options, row_count, column_count, along_rows=True)
        if any(averages.values()):  # a column of nothing but "—" says nothing
            cells.update({pos: cell for pos, cell in averages.items() if cell is not None})
            columns.append(AVERAGE)
    if average in ("row", "both") and row_count > 1:
        averages = _line_averages(placed, options, column_count, row_count, along_rows=False)
        if any(averages.values()):
            cells.update({pos: cell for pos, cell in averages.items() if cell is not None})
            rows.append(AVERAGE)


def build_table(runs: list[Run], options: TableOptions) -> ComparisonTable:
    with gc_paused():
        return _build_table(runs, options)


def _build_table(runs: list[Run], options: TableOptions) -> ComparisonTable:
    rows_dims, cols_dims = check_options(options)
    baseline = select_run(runs, options.baseline) if options.baseline else None
    if options.judge:
        add_judge_scores(runs)
    entries, notes = collect_entries(runs, options, "language" in rows_dims + cols_dims)
    judged = any(e.coords["metric"] in JUDGE_METRICS for e in entries) and not options.metrics
    if judged and "metric" not in rows_dims + cols_dims:
        cols_dims = [*cols_dims, "metric"]
    _check_common_tasks(entries, runs)
    shown = {id(entry.run) for entry in entries}
    if len(shown) < len(runs):
        notes.append(f"Runs without a selected score: {', '.join(run.label for run in runs if id(run) not in shown)}.")
    row_keys, col_keys = _axis(rows_dims, entries, runs), _axis(cols_dims, entries, runs)
    placed = _place(entries, rows_dims, cols_dims, row_keys, col_keys)
    if baseline is not None:
        _compare_with_baseline(entries, baseline, options)

    cells = {pos: _cell_of(entry, options) for pos, entry in placed.items()}
    rows = [" · ".join(k) for k in row_keys]
    columns = [" · ".join(k) for k in col_keys]
    config_on_rows, config_on_columns = "config" in rows_dims, "config" in cols_dims
    # "auto": average over the axis without the configurations, highlight along the one with them
    along = "none" if config_on_rows == config_on_columns else "column" if config_on_rows else "row"
    average = options.average
    if average == "auto":
        average = "both" if not config_on_rows and not config_on_columns else along
    _add_averages(cells, placed, rows, columns, average, options)
    best = along if options.best == "auto" else options.best
    _mark_best(cells, rows, columns, best)

    metrics = {}
    for entry in entries:
        metrics.setdefault(entry.task, entry.key)
    judge_at = lambda keys, dims: {i for i, k in enumerate(keys)  # noqa: E731
                                    if "metric" in dims and k[dims.index("metric")] in JUDGE_METRICS}
    if judged:
        notes.append("relevance, steering_score: CLaS-Bench's judge (lape-eval judge), 0–100: relevance = mean rating "
                     "/ 2 × 100 over the parsed ratings, steering score = harmonic mean of the language forcing "
                     f"success (%) and relevance; {NEEDS_JUDGE}: run `lape-eval judge` on that run.")
    return ComparisonTable(" · ".join(rows_dims), rows, columns, cells, baseline.label if baseline else None,
                           options, notes, metrics, entries, best, judge_at(col_keys, cols_dims),
                           judge_at(row_keys, rows_dims))


def _cell_of(entry: Entry, options: TableOptions) -> TableCell:
    cell = TableCell(entry.score.value, entry.score.stderr, higher_is_better=entry.higher_is_better,
                     metric=entry.key.split(",", 1)[0])
    if entry.comparison is not None:
        cell.delta, cell.p_value, cell.test = entry.comparison.delta, entry.comparison.p_value, entry.comparison.test
        cell.significant = cell.p_value is not None and cell.p_value < options.alpha
    return cell


def _mean_score(scores: list[Score]) -> Score:
    value = sum(s.value for s in scores) / len(scores)
    stderrs = [s.stderr for s in scores]
    stderr = math.sqrt(sum(se * se for se in stderrs)) / len(scores) if all(se is not None for se in stderrs) else None
    return Score(value, stderr)


def _average(line: list[Entry | None], options: TableOptions) -> TableCell | None:
    """Mean over a line's task entries (groups only when the line has nothing else); None if any is missing."""
    if not line or any(e is None for e in line):
        return None
    leaves = [e for e in line if not e.is_group] or line
    if len({e.key.split(",", 1)[0] for e in leaves}) > 1:
        return None  # a mean of different metrics (acc and chrF) means nothing
    mean = _mean_score([e.score for e in leaves])
    directions = {e.higher_is_better for e in leaves}
    cell = TableCell(mean.value, mean.stderr, higher_is_better=directions.pop() if len(directions) == 1 else None,
                     metric=leaves[0].key.split(",", 1)[0])
    if all(e.baseline_score is not None for e in leaves) and len({id(e.run) for e in leaves}) == 1 \
            and all(e.comparison is not None for e in leaves):
        base = _mean_score([e.baseline_score for e in leaves])
        comparison = z_test(mean, base)
        cell.delta, cell.p_value, cell.test = comparison.delta, comparison.p_value, comparison.test
        cell.significant = cell.p_value is not None and cell.p_value < options.alpha
    return cell


def _mark_best(cells: dict, rows: list[str], columns: list[str], along: str) -> None:
    if along == "none":
        return
    outer = range(len(columns)) if along == "column" else range(len(rows))
    inner_count = len(rows) if along == "column" else len(columns)
    inner_labels = rows if along == "column" else columns
    for o in outer:
        line = [(i, cells.get((i, o) if along == "column" else (o, i))) for i in range(inner_count)
                if inner_labels[i] != AVERAGE]
        line = [(i, c) for i, c in line if c is not None]
        if len(line) < 2:
            continue
        directions = {c.higher_is_better is not False for _, c in line}
        if len(directions) != 1:
            continue
        pick = max if directions.pop() else min
        target = pick(c.value for _, c in line)
        if all(c.value == target for _, c in line):
            continue  # all equal: nothing stands out
        for _, c in line:
            c.best = c.value == target


# --------------------------------------------------------------------------------------------------
# Presenting


def _small(value: float, stderr: float | None) -> bool:
    return abs(value) <= 1 and (stderr is None or stderr <= 1)


def metric_decimals(cells) -> dict[str, int]:
    """3 decimals for a metric whose every score lies in [-1, 1] (accuracies), else 2 (percentages, chrF)."""
    small: dict[str, bool] = {}
    for cell in cells:
        if cell.metric is not None:
            small[cell.metric] = small.get(cell.metric, True) and _small(cell.value, cell.stderr)
    return {metric: 3 if is_small else 2 for metric, is_small in small.items()}


def format_cell(cell: TableCell | None, decimals: int | None = None, per_metric: dict[str, int] | None = None) -> Cell:
    if cell is None:
        return Cell(MISSING)
    d = decimals
    if d is None:
        d = (per_metric or {}).get(cell.metric, 3 if _small(cell.value, cell.stderr) else 2)
    value = f"{cell.value:.{d}f}"
    text = value + (f" ± {cell.stderr:.{d}f}" if cell.stderr is not None else "")
    if cell.delta is not None:
        text += f" ({cell.delta:+.{d}f}{'†' if cell.significant else ''})"
    return Cell(text.replace("-", "−"), len(value) if cell.best else 0)


def _notes(table: ComparisonTable) -> list[str]:
    options = table.options
    metric_keys = sorted(set(table.metrics.values()))
    notes = []
    if len(metric_keys) == 1:
        shown = f"{metric_keys[0]}"
    else:
        by_metric: dict[str, list[str]] = {}
        for task, key in table.metrics.items():
            by_metric.setdefault(key, []).append(task)
        shown = "; ".join(f"{key}: {', '.join(sorted(tasks))}" for key, tasks in sorted(by_metric.items()))
    parts = [f"Score ({shown}) ± standard error"]
    if table.baseline:
        tests = sorted({c.test for c in table.cells.values() if c.test})
        parts.append(f"(Δ vs {table.baseline}; † p < {options.alpha:g}, "
                     + (", ".join(TEST_NAMES[t] for t in tests) if tests else "no test possible") + ")")
    line = " ".join(parts) + "."
    if any(c.best for c in table.cells.values()):
        line += f" **Bold**: best per {table.best_along}."
    line += f" {MISSING}: not in the run."
    if AVERAGE in table.rows or AVERAGE in table.columns:
        line += (f" {AVERAGE}: mean over the tasks of the line (groups left out); missing where a task is missing "
                 "or the metrics differ.")
    notes.append(line)
    return notes + table.notes


def to_text_table(table: ComparisonTable) -> TextTable:
    decimals, per_metric = table.options.decimals, metric_decimals(table.cells.values())
    def shown(i: int, j: int) -> Cell:
        cell = table.cells.get((i, j))
        if cell is None and (j in table.judge_columns or i in table.judge_rows):
            return Cell(NEEDS_JUDGE)
        return format_cell(cell, decimals, per_metric)

    rows = [[Cell(label)] + [shown(i, j) for j in range(len(table.columns))] for i, label in enumerate(table.rows)]
    csv_rows = [[table.row_title] + [f"{c}{suffix}" for c in table.columns
                                     for suffix in ("", " stderr", " delta", " p", " test")]]
    for i, label in enumerate(table.rows):
        line = [label]
        for j in range(len(table.columns)):
            cell = table.cells.get((i, j))
            line += [None] * 5 if cell is None else [cell.value, cell.stderr, cell.delta, cell.p_value, cell.test or ""]
        csv_rows.append(line)
    return TextTable([table.row_title] + table.columns, rows, _notes(table), csv_rows=csv_rows)
