"""Reports over lm-eval runs: table, regress, plot, fallback (lape_eval.reports.table, .regress, .plots and
.fallback do the work; .results reads the runs).

Every command checks all of its inputs before it writes anything: a bad option leaves no file behind.
"""

from __future__ import annotations

import sys

import click

from lape_eval.cli.group import cli
from lape_eval.cli.options import emit, split_names
from lape_eval.errors import LapeEvalError

def _table_options(function):
    options = [
        click.option("--metric", "metrics", multiple=True,
                     help="Metric to show: acc, chrf, exact_match,strict-match (metric,filter). Repeat for a preference "
                          "order per task (default: each task's first metric)."),
        click.option("--tasks", "tasks", multiple=True, help="Only tasks matching these globs (comma-separated or repeated)."),
        click.option("--language-regex", default=None,
                     help="Regex whose first group is the language in a task name (default: task metadata "
                          "'language', else the last part of the name that is a language or FLORES code)."),
        click.option("--test", type=click.Choice(["auto", "bootstrap", "z", "none"]), default="auto", show_default=True,
                     help="Significance test: auto = paired bootstrap on sample files when present, else z-test."),
        click.option("--alpha", "alpha", type=float, default=0.05, show_default=True, help="Significance level (†)."),
        click.option("--resamples", type=click.IntRange(min=10), default=1000, show_default=True,
                     help="Bootstrap resamples."),
        click.option("--seed", type=click.IntRange(min=1), default=12345, show_default=True, help="Bootstrap seed."),
        click.option("--label", "labels", multiple=True,
                     help="Run labels, one per run in the order listed (see --list-runs); default: from the config."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@cli.command("table")
@click.argument("runs", nargs=-1, required=True)
@click.option("--rows", default="config", show_default=True,
              help="Row key(s): config, task, language, benchmark (task without language); several: config,benchmark.")
@click.option("--columns", default="task", show_default=True, help="Column key(s), as --rows.")
@click.option("--baseline", default=None, help="Run to compare with: its label, number (1-based) or path.")
@_table_options
@click.option("--groups", type=click.Choice(["all", "tasks", "groups"]), default="all", show_default=True,
              help="Show tasks and groups, only tasks, or only groups.")
@click.option("--average", type=click.Choice(["auto", "row", "column", "both", "none"]), default="auto", show_default=True,
              help="Average row/column (auto: over the axis without config).")
@click.option("--best", type=click.Choice(["auto", "column", "row", "none"]), default="auto", show_default=True,
              help="Highlight the best value per column or row (auto: along the config axis).")
@click.option("--decimals", type=click.IntRange(min=0, max=10), default=None, help="Decimals (default: 3 below 1, else 2).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "html", "latex", "text"]), default="markdown",
              show_default=True)
@click.option("--output", default=None, type=click.Path(dir_okay=False), help="Write to this file (default: stdout).")
@click.option("--list-runs", is_flag=True, help="Only list the runs found, with their labels and identities.")
def table(runs, rows, columns, baseline, metrics, tasks, language_regex, test, alpha, resamples, seed, labels, groups,
          average, best, decimals, fmt, output, list_runs):
    """Compare lm-eval runs in one leaderboard table: score ± stderr, Δ vs a baseline, significance, best.

    RUNS are lm-eval output folders (searched recursively for results_*.json) or results files.
    Sample files (--log_samples) next to a results file enable paired significance tests.
    """
    from lape_eval.reports.render import render
    from lape_eval.reports.results import load_runs
    from lape_eval.reports.table import TableOptions, build_table, check_options, to_text_table

    options = TableOptions(rows=rows, columns=columns, metrics=list(metrics), tasks=split_names(tasks), groups=groups,
                           baseline=baseline, test=test, alpha=alpha, resamples=resamples,
                           seed=seed, language_regex=language_regex, average=average, best=best, decimals=decimals)
    if not list_runs:
        check_options(options)  # before reading hundreds of files
    loaded = load_runs(list(runs), list(labels) or None)
    if list_runs:
        for number, run in enumerate(loaded, 1):
            i = run.identity
            click.echo(f"{number}. {run.label}\n   {run.path}\n   model {i.model} ({i.lm}), steer {i.steer_text}, "
                       f"neuron set {i.neuron_set or '-'}, adapter {i.adapter or '-'}, tasks {len(run.tasks)}")
        return
    emit(render(to_text_table(build_table(loaded, options)), fmt), output)


@cli.command("regress")
@click.argument("runs", nargs=-1, required=True)
@click.option("--baseline", "baseline_file", required=True, type=click.Path(dir_okay=False),
              help="Baseline JSON of expected scores (written by --update).")
@click.option("--tolerance", type=float, default=0.0, show_default=True, help="Allowed change in absolute score points.")
@click.option("--tolerance-se", type=float, default=2.0, show_default=True,
              help="Allowed change in standard errors of the difference; the larger of the two tolerances applies.")
@click.option("--update", is_flag=True, help="Write the runs' scores as the new baseline (exit 0).")
@click.option("--fail-on-missing", is_flag=True, help="Also fail when a baseline score is missing from the runs.")
@click.option("--tasks", "tasks", multiple=True, help="Only tasks matching these globs.")
@click.option("--metric", "metrics", multiple=True, help="Only these metrics (name or metric,filter; repeat).")
@click.option("--only-changes", is_flag=True, help="Leave unchanged scores out of the report.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
@click.option("--output", default=None, type=click.Path(dir_okay=False), help="Also write the report to this file.")
def regress(runs, baseline_file, tolerance, tolerance_se, update, fail_on_missing, tasks, metrics, only_changes, fmt,
            output):
    """Compare runs' task scores with a stored baseline; exit 1 if a score got worse beyond the tolerance.

    Exit codes: 0 no regression, 1 regression (or a missing score with --fail-on-missing), 2 bad input.
    """
    from pathlib import Path

    from lape_eval.reports.regress import (check_tolerances, checks_table, compare_to_baseline, failed, make_baseline,
                                           read_baseline, summary, write_baseline)
    from lape_eval.reports.render import render
    from lape_eval.reports.results import load_runs

    check_tolerances(tolerance, tolerance_se)
    loaded = load_runs(list(runs))
    task_globs, metric_names = split_names(tasks), list(metrics)
    new_baseline = make_baseline(loaded, task_globs, metric_names) if update else None
    checks = None
    if not update or Path(baseline_file).exists():  # --update over a baseline reports the change first
        checks = compare_to_baseline(read_baseline(baseline_file), loaded, tolerance=tolerance,
                                     tolerance_se=tolerance_se, tasks=task_globs, metrics=metric_names)
    if checks is not None:
        report = render(checks_table(checks, baseline_file, fail_on_missing, only_changes), fmt)
        if output:
            emit(report, output)
        click.echo(report, nl=False)
    if new_baseline is None:
        click.echo(summary(checks, fail_on_missing), err=True)
        if failed(checks, fail_on_missing):
            sys.exit(1)
        return
    write_baseline(baseline_file, new_baseline)
    click.echo(f"wrote baseline {baseline_file}", err=True)


@cli.group("plot")
def plot():
    """Figures (PNG or SVG, by the --out suffix) from neuron sets and lm-eval runs."""


def _plot_options(function):
    options = [
        click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Figure file: .png or .svg."),
        click.option("--title", default=None, help="Replace the title."),
        click.option("--dpi", type=click.IntRange(min=30, max=1200), default=150, show_default=True, help="PNG resolution."),
        click.option("--csv", "csv_file", default=None, type=click.Path(dir_okay=False), help="Also write the plotted values."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _save_plot(matrix_or_none, figure, out_file, title, dpi, csv_file):
    from lape_eval.reports.plots import save_figure

    if title:
        figure.axes[0].set_title(title, fontsize=10)
    save_figure(figure, out_file, dpi)
    click.echo(f"wrote {out_file}")
    if csv_file and matrix_or_none is not None:
        emit(matrix_or_none.to_csv(), csv_file)


def _forcing_field_options(function):
    options = [
        click.option("--source-field", default="source_lang", show_default=True, help="Document field: prompt language."),
        click.option("--target-field", default="target_lang", show_default=True, help="Document field: target language."),
        click.option("--label-field", default=None,
                     help="Per-sample output-language field (default: answer_lang, output_lang, lid, ... if present, "
                          "else language identification of the output)."),
        click.option("--success-field", default=None,
                     help="Per-sample success field (default: success, target_rate, ... if present, else label = target)."),
        click.option("--lid", default=None, help="LID backend when the label comes from the output (default: cld2)."),
        click.option("--task", "tasks", multiple=True, help="Tasks to read (default: every task with sample files)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _field_names(source_field, target_field, label_field, success_field, lid):
    from lape_eval.reports.outcomes import FieldNames

    return FieldNames(source_field, target_field, label_field, success_field, lid)


def _neuron_set_plot(command: str, stem: str, help_text: str):
    """Register ``lape-eval plot COMMAND SET``: a heatmap from one neuron set, drawn by
    ``plots.<stem>_data`` and ``plots.<stem>_figure``."""

    @plot.command(command, help=help_text)
    @click.argument("neuron_set")
    @click.option("--languages", default=None, help="Comma-separated languages (default: all in the set).")
    @_plot_options
    def plot_from_neuron_set(neuron_set, languages, out_file, title, dpi, csv_file):
        from lape_eval.neurons.shipped import resolve_neuron_set
        from lape_eval.reports import plots

        plots.check_figure_path(out_file)
        matrix = getattr(plots, f"{stem}_data")(resolve_neuron_set(neuron_set), split_names([languages]) or None)
        _save_plot(matrix, getattr(plots, f"{stem}_figure")(matrix), out_file, title, dpi, csv_file)

    return plot_from_neuron_set


plot_neurons_per_layer = _neuron_set_plot(
    "neurons-per-layer", "neurons_per_layer", "Heatmap of language neurons per layer and language (languages grouped by family).")
plot_overlap = _neuron_set_plot(
    "overlap", "overlap", "Heatmap of the Jaccard overlap between languages' neurons, ordered by language family.")


@plot.command("forcing")
@click.argument("run")
@_forcing_field_options
@_plot_options
def plot_forcing(run, source_field, target_field, label_field, success_field, lid, tasks, out_file, title, dpi, csv_file):
    """Heatmap of a forcing grid run: % of outputs in the target language, source × target language."""
    from lape_eval.reports.plots import check_figure_path, forcing_data, forcing_figure
    from lape_eval.reports.results import load_runs

    check_figure_path(out_file)
    runs = load_runs([run])
    if len(runs) != 1:
        raise LapeEvalError(f"{run} holds {len(runs)} results files; name one of them: "
                            + ", ".join(str(r.path) for r in runs))
    matrix = forcing_data(runs[0], _field_names(source_field, target_field, label_field, success_field, lid),
                          split_names(tasks) or None)
    _save_plot(matrix, forcing_figure(matrix), out_file, title, dpi, csv_file)


@plot.command("task-delta")
@click.argument("runs", nargs=-1, required=True)
@click.option("--baseline", required=True, help="The unsteered run: its label, number (1-based) or path.")
@_table_options
@_plot_options
def plot_task_delta(runs, baseline, metrics, tasks, language_regex, test, alpha, resamples, seed, labels, out_file,
                    title, dpi, csv_file):
    """Heatmap of score changes vs a baseline run: test language (task) × activated language (run)."""
    from lape_eval.reports.plots import check_figure_path, task_delta_data, task_delta_figure
    from lape_eval.reports.results import load_runs, select_run
    from lape_eval.reports.table import TableOptions
    from lape_eval.reports.task_languages import compile_language_regex

    check_figure_path(out_file)
    compile_language_regex(language_regex)
    options = TableOptions(metrics=list(metrics), tasks=split_names(tasks), language_regex=language_regex, test=test,
                           alpha=alpha, resamples=resamples, seed=seed)
    loaded = load_runs(list(runs), list(labels) or None)
    matrix = task_delta_data(loaded, select_run(loaded, baseline), options)
    _save_plot(matrix, task_delta_figure(matrix), out_file, title, dpi, csv_file)


@cli.command("fallback")
@click.argument("runs", nargs=-1, required=True)
@click.option("--order", default=",".join(("en", "fr", "es", "it", "pt", "ru", "de", "ar", "zh", "ko", "ja")),
              show_default=True, help="Deactivation order (comma-separated).")
@_forcing_field_options
@click.option("--min-share", type=float, default=0.02, show_default=True,
              help="Languages below this share at every step are merged into 'other'.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "html", "latex", "text"]), default="markdown",
              show_default=True)
@click.option("--output", default=None, type=click.Path(dir_okay=False), help="Write the table to this file.")
@click.option("--plot", "plot_file", default=None, type=click.Path(dir_okay=False),
              help="Also draw the stacked bar chart (.png or .svg).")
@click.option("--dpi", type=click.IntRange(min=30, max=1200), default=150, show_default=True)
def fallback(runs, order, source_field, target_field, label_field, success_field, lid, tasks, min_share, fmt, output,
             plot_file, dpi):
    """Progressive deactivation study: output-language distribution per step, from one run per step.

    Each run's step comes from its recorded steer spec ("-en -fr" = step 2 of the default order).
    `lape-eval experiment fallback` runs the paper's protocol itself (one model load, no lm-eval runs).
    """
    from lape_eval.reports.fallback import fallback_study, study_table
    from lape_eval.reports.plots import check_figure_path, fallback_figure, save_figure
    from lape_eval.reports.render import render
    from lape_eval.reports.results import load_runs

    if plot_file:
        check_figure_path(plot_file, "--plot")  # before the table is written
    study = fallback_study(load_runs(list(runs)), split_names([order]),
                           _field_names(source_field, target_field, label_field, success_field, lid),
                           split_names(tasks) or None, min_share)
    emit(render(study_table(study), fmt), output)
    if plot_file:
        save_figure(fallback_figure(study), plot_file, dpi)
        click.echo(f"wrote {plot_file}", err=True)


@cli.command("fallback-commands", hidden=True, context_settings={"ignore_unknown_options": True})
@click.argument("ignored", nargs=-1, type=click.UNPROCESSED)
def fallback_commands(ignored):
    """Replaced by `lape-eval experiment fallback` (the paper's protocol, method spec §6.6)."""
    raise LapeEvalError(
        "fallback-commands has been replaced: it planned lm-eval runs that deviated from the paper's protocol "
        "(deactivation to c = 0, the forcing questions, the prompt 'Q: ...\\nA:'). Run `lape-eval experiment "
        "fallback --model M --neurons SET --out DIR` instead: the 70 English Vicuna questions, the prompt "
        "'Q: ' + question + 'A: ', cumulative deactivation en; en+fr; ... ja to c = -1.5, 128 new tokens, lid.176 "
        "labels, with the table and the stacked bars in DIR."
    )
