"""Figures from neuron sets and lm-eval runs, written as PNG or SVG.

Each ``*_data`` function computes what is drawn (a :class:`Matrix`, also writable as CSV) and each
``*_figure`` function draws it: neurons per layer and language, the languages' overlap (Jaccard,
ordered by family), a forcing grid (source × target success rate) and a task-delta grid (test
language × activated language, Δ against a baseline run). The fallback study's stacked bars are
drawn by :func:`fallback_figure` (data from :mod:`lape_eval.reports.fallback`). Figures use matplotlib's
object API with the Agg canvas: no display, no global pyplot state.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lape_eval.errors import LapeEvalError
from lape_eval.files import atomic_path
from lape_eval.languages import get_language
from lape_eval.reports.outcomes import FieldNames, outcomes, sample_tasks
from lape_eval.reports.results import Run, task_selected
from lape_eval.reports.significance import compare
from lape_eval.reports.table import TableOptions, choose_metric
from lape_eval.reports.task_languages import compile_language_regex, language_sort_key, task_language
from lape_eval.steering.spec import parse_steer

FIGURE_SUFFIXES = (".png", ".svg")


@dataclass
class Matrix:
    """A labelled matrix: ``values[i][j]`` for ``rows[i]`` × ``columns[j]`` (NaN: no data)."""

    values: np.ndarray
    rows: list[str]
    columns: list[str]
    title: str
    value_name: str
    row_name: str
    column_name: str
    annotations: list[list[str]] | None = None  # per-cell text (default: the formatted value)
    notes: list[str] = field(default_factory=list)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([f"{self.row_name} \\ {self.column_name}", *self.columns])
        for label, row in zip(self.rows, self.values):
            writer.writerow([label, *("" if math.isnan(v) else f"{v:.10g}" for v in row)])
        return out.getvalue()


# --------------------------------------------------------------------------------------------------
# Helpers


def family_of(code: str) -> str:
    try:
        return get_language(code).family
    except LapeEvalError:
        return "other"


def family_ordered(codes) -> list[str]:
    return sorted(codes, key=language_sort_key)


def _language_label(code: str) -> str:
    try:
        return f"{code} {get_language(code).name}"
    except LapeEvalError:
        return code


def check_figure_path(path: Path | str, option: str = "--out") -> Path:
    """``path`` if it names a figure file (.png or .svg): commands check it before they compute or write anything."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise LapeEvalError(f"{option} {path}: the file name must end in .png or .svg (the format follows the suffix).")
    return path


def save_figure(figure, path: Path | str, dpi: int = 150) -> Path:
    """Write ``figure`` to ``path`` (.png or .svg, chosen by the suffix) atomically."""
    path = check_figure_path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=path.suffix.lower()[1:], dpi=dpi, bbox_inches="tight")
    return path


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _text_colour(rgba) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def _heatmap(matrix: Matrix, *, cmap: str, vmin: float, vmax: float, fmt, colorbar_label: str,
             centre: float | None = None, families: str = "", cell: float = 0.42):
    """Draw ``matrix`` as an annotated heatmap; ``families``: "rows", "columns" or "both" to draw
    separators between language families."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize, TwoSlopeNorm

    n_rows, n_cols = matrix.values.shape
    longest = max((len(r) for r in matrix.rows), default=4)
    width = max(5.0, n_cols * cell + 0.09 * longest + 2.2)
    height = max(3.2, n_rows * cell * 0.85 + 1.8)
    figure = _new_figure(width, height)
    axes = figure.add_subplot()
    colours = colormaps[cmap].with_extremes(bad="#e6e6e6")
    if centre is not None and vmin < centre < vmax:
        norm = TwoSlopeNorm(vcenter=centre, vmin=vmin, vmax=vmax)
    else:
        norm = Normalize(vmin=vmin, vmax=vmax)
    data = np.ma.masked_invalid(matrix.values.astype(float))
    image = axes.imshow(data, cmap=colours, norm=norm, aspect="auto", interpolation="nearest")
    axes.set_xticks(range(n_cols), matrix.columns, rotation=45 if max(map(len, matrix.columns), default=0) > 3 else 0,
                    ha="right" if max(map(len, matrix.columns), default=0) > 3 else "center")
    axes.set_yticks(range(n_rows), matrix.rows)
    axes.set_xlabel(matrix.column_name)
    axes.set_ylabel(matrix.row_name)
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    size = 8 if max(n_rows, n_cols) <= 12 else 6.5 if max(n_rows, n_cols) <= 24 else 0
    if size:
        for i in range(n_rows):
            for j in range(n_cols):
                value = matrix.values[i, j]
                text = matrix.annotations[i][j] if matrix.annotations else ("" if math.isnan(value) else fmt(value))
                if text:
                    colour = "black" if math.isnan(value) else _text_colour(colours(norm(value)))
                    axes.text(j, i, text, ha="center", va="center", fontsize=size, color=colour)
    if families in ("rows", "both"):
        _family_lines(axes, matrix.rows, "rows")
    if families in ("columns", "both"):
        _family_lines(axes, matrix.columns, "columns")
    bar = figure.colorbar(image, ax=axes, shrink=0.85, pad=0.02)
    bar.set_label(colorbar_label)
    axes.set_title(matrix.title, fontsize=10)
    return figure


def _family_lines(axes, labels: list[str], which: str) -> None:
    """White lines between language families, and the family names on the far side of the axis."""
    codes = [label.split()[0].lstrip("+") for label in labels]  # "de German", "de", "+de"
    groups: list[tuple[str, int, int]] = []  # family, first, last position
    for position, code in enumerate(codes):
        family = family_of(code)
        if groups and groups[-1][0] == family:
            groups[-1] = (family, groups[-1][1], position)
        else:
            if groups:
                (axes.axhline if which == "rows" else axes.axvline)(position - 0.5, color="white", linewidth=2)
            groups.append((family, position, position))
    centres = [(first + last) / 2 for _, first, last in groups]
    names = [family for family, _, _ in groups]
    if which == "rows":
        side = axes.secondary_yaxis("right")
        side.set_yticks(centres, names, fontsize=7, color="#555555")
    else:
        side = axes.secondary_xaxis("top")
        side.set_xticks(centres, names, fontsize=7, color="#555555", rotation=35, ha="left")
    side.tick_params(length=0)
    for spine in side.spines.values():
        spine.set_visible(False)


def _set_title(neuron_set) -> str:
    model = (neuron_set.info.get("model") or {}).get("id") or "unknown model"
    rate = (neuron_set.info.get("selection") or {}).get("top_rate")
    return f"{model}" + (f", top rate {rate:.3g}" if isinstance(rate, (int, float)) else "")


def _chosen_languages(neuron_set, languages: list[str] | None) -> list[str]:
    if not languages:
        return family_ordered(neuron_set.languages)
    unknown = [code for code in languages if code not in neuron_set.languages]
    if unknown:
        raise LapeEvalError(f"The neuron set has no {', '.join(unknown)} (it has {', '.join(neuron_set.languages)}).")
    return family_ordered(languages)


# --------------------------------------------------------------------------------------------------
# Neuron sets


def neurons_per_layer_data(neuron_set, languages: list[str] | None = None) -> Matrix:
    from lape_eval.neurons.inspection import layer_counts

    shown = _chosen_languages(neuron_set, languages)
    counts = layer_counts(neuron_set).numpy()  # [L, K]
    columns = [neuron_set.languages.index(code) for code in shown]
    values = counts[:, columns].T.astype(float)  # languages × layers
    total = int(sum(neuron_set.neuron_count(code) for code in shown))
    title = (f"Language neurons per layer: {_set_title(neuron_set)}\n"
             f"{len(shown)} languages (grouped by family), {total} language–neuron assignments")
    return Matrix(values, [_language_label(c) for c in shown], [str(layer) for layer in range(neuron_set.num_layers)],
                  title, "neurons", "language", "layer")


def neurons_per_layer_figure(matrix: Matrix):
    vmax = max(1.0, float(np.nanmax(matrix.values))) if matrix.values.size else 1.0
    return _heatmap(matrix, cmap="viridis", vmin=0, vmax=vmax, fmt=lambda v: f"{v:.0f}",
                    colorbar_label="neurons of the language in the layer", families="rows")


def overlap_data(neuron_set, languages: list[str] | None = None) -> Matrix:
    from lape_eval.neurons.inspection import jaccard_matrix

    shown = _chosen_languages(neuron_set, languages)
    index = [neuron_set.languages.index(code) for code in shown]
    values = jaccard_matrix(neuron_set).numpy()[np.ix_(index, index)].astype(float)
    np.fill_diagonal(values, np.nan)
    labels = [_language_label(c) for c in shown]
    title = (f"Overlap of language neurons (Jaccard |A∩B| / |A∪B|): {_set_title(neuron_set)}\n"
             "languages grouped by family; diagonal (= 1) left blank")
    return Matrix(values, labels, [c for c in shown], title, "Jaccard", "language", "language")


def overlap_figure(matrix: Matrix):
    finite = matrix.values[np.isfinite(matrix.values)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return _heatmap(matrix, cmap="magma_r", vmin=0, vmax=vmax, fmt=lambda v: f"{v:.2f}".lstrip("0") if v else "0",
                    colorbar_label="Jaccard overlap of the two languages' neurons", families="both")


# --------------------------------------------------------------------------------------------------
# Forcing grid


def forcing_data(run: Run, names: FieldNames | None = None, tasks: list[str] | None = None) -> Matrix:
    names = names or FieldNames()
    chosen = sample_tasks(run, tasks, require=(names.source, names.target))
    items, sources = [], []
    for task in chosen:
        found, how = outcomes(run, task, names)
        items.extend(found)
        sources.append(how)
    cells: dict[tuple[str, str], list[bool]] = {}
    for item in items:
        if item.source is None or item.target is None or item.success is None:
            continue
        cells.setdefault((item.source, item.target), []).append(item.success)
    if not cells:
        raise LapeEvalError(f"{run.label}: no sample has a source, a target and a success value.")
    rows = family_ordered({s for s, _ in cells})
    columns = family_ordered({t for _, t in cells})
    values = np.full((len(rows), len(columns)), np.nan)
    annotations = [["" for _ in columns] for _ in rows]
    for (source, target), hits in cells.items():
        i, j = rows.index(source), columns.index(target)
        values[i, j] = 100.0 * sum(hits) / len(hits)
        annotations[i][j] = f"{values[i, j]:.0f}"
    count = sum(len(h) for h in cells.values())
    who = run.identity.model + ("" if run.label in ("base", run.identity.model) else f" · {run.label}")
    title = (f"Language forcing: % of outputs in the target language\n{who} · {', '.join(chosen)} · "
             f"{count} samples · success from {sources[0]['success']}")
    return Matrix(values, rows, columns, title, "success %", "source (prompt) language", "target language",
                  annotations, notes=[f"{task}: label from {how['label']}, success from {how['success']}"
                                      for task, how in zip(chosen, sources)])


def forcing_figure(matrix: Matrix):
    return _heatmap(matrix, cmap="RdYlGn", vmin=0, vmax=100, fmt=lambda v: f"{v:.0f}",
                    colorbar_label="% of outputs in the target language", families="both", cell=0.5)


# --------------------------------------------------------------------------------------------------
# Task deltas


def activated_key(run: Run) -> str:
    """The languages a run activates ("de", "de+fr"), else its steer spec ("-en"), else its label."""
    steer = run.identity.steer
    if steer and not steer.startswith(("per-doc", "steered:")):
        try:
            spec = parse_steer(steer)
        except LapeEvalError:
            return steer
        return "+".join(spec.activated) or steer
    return run.label


def _runs_by_activated_language(runs: list[Run], baseline: Run) -> dict[str, Run]:
    """The runs other than ``baseline``, keyed by what they activate (one run per key)."""
    others = [run for run in runs if run is not baseline]
    if not others:
        raise LapeEvalError("task-delta needs at least one run besides the baseline.")
    columns: dict[str, Run] = {}
    for run in others:
        key = activated_key(run)
        if key in columns:
            raise LapeEvalError(f"Two runs activate {key}: {columns[key].label} and {run.label}. Pass one run per "
                                "activated language.")
        columns[key] = run
    return columns


def _delta_cells(columns: dict[str, Run], baseline: Run, options: TableOptions) -> tuple[dict, set[str]]:
    """``{(test language, activated key): (Δ, significant, task)}`` and the metric keys compared."""
    regex = compile_language_regex(options.language_regex)
    cells: dict[tuple[str, str], tuple[float, bool, str]] = {}
    metrics = set()
    for key, run in columns.items():
        for task in run.tasks:
            if task in run.groups or not task_selected(task, options.tasks):
                continue
            metric = choose_metric(run, task, options.metrics)
            language = task_language(task, run.task_config(task), regex)
            if metric is None or language is None:
                continue
            comparison = compare(run, baseline, task, metric, test=options.test, resamples=options.resamples,
                                 seed=options.seed)
            if comparison is None:
                continue
            if (language[0], key) in cells:
                raise LapeEvalError(f"{run.label}: two tasks have the test language {language[0]} "
                                    f"({cells[(language[0], key)][2]}, {task}); choose one task family with --tasks.")
            significant = comparison.p_value is not None and comparison.p_value < options.alpha
            cells[(language[0], key)] = (comparison.delta, significant, task)
            metrics.add(metric)
    if not cells:
        raise LapeEvalError(f"No task of these runs has a language and a score in the baseline {baseline.label}.")
    if len({m.split(',')[0] for m in metrics}) > 1:
        raise LapeEvalError(f"The tasks report different metrics ({', '.join(sorted(metrics))}); "
                            "choose one with --metric.")
    return cells, metrics


def task_delta_data(runs: list[Run], baseline: Run, options: TableOptions) -> Matrix:
    """Δ of the chosen metric, test language (rows) × activated language (columns), vs ``baseline``
    (``options``: metric, tasks, language regex, test, α)."""
    columns = _runs_by_activated_language(runs, baseline)
    cells, metrics = _delta_cells(columns, baseline, options)
    rows = family_ordered({lang for lang, _ in cells})
    keys = [k for k in columns if any(k == c for _, c in cells)]
    values = np.full((len(rows), len(keys)), np.nan)
    annotations = [["" for _ in keys] for _ in rows]
    for (lang, key), (delta, significant, _) in cells.items():
        i, j = rows.index(lang), keys.index(key)
        values[i, j] = delta
        text = "0" if delta == 0 else f"{delta:+.3g}".replace("-", "−")
        annotations[i][j] = text + ("†" if significant else "")
    metric = sorted(metrics)[0]
    title = (f"Δ {metric} vs {baseline.label}: test language × activated language\n"
             f"† p < {options.alpha:g}; tasks {', '.join(sorted({t for _, _, t in cells.values()}))}")
    return Matrix(values, rows, [f"+{k}" if k.isalpha() or "+" in k else k for k in keys], title, f"Δ {metric}",
                  "test language", "activated language", annotations)


def task_delta_figure(matrix: Matrix, families: str = "rows"):
    """Δ heatmap centred on 0; ``families``: separators between language families on the "rows" (test
    languages), or "both" when the columns are languages too (the downstream experiment's "+X" columns)."""
    finite = matrix.values[np.isfinite(matrix.values)]
    bound = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    return _heatmap(matrix, cmap="RdBu", vmin=-bound, vmax=bound, centre=0.0, fmt=lambda v: f"{v:+.3g}",
                    colorbar_label=f"{matrix.value_name} (steered − baseline)", families=families, cell=0.55)


# --------------------------------------------------------------------------------------------------
# Fallback study


def fallback_figure(study):
    """Stacked bars: the share of each output language at every deactivation step."""
    from matplotlib import colormaps

    steps = study.steps
    languages = study.columns
    width = max(6.0, 0.75 * len(steps) + 3.5)
    figure = _new_figure(width, 4.8)
    axes = figure.add_subplot()
    tab20 = colormaps["tab20"]
    palette = [tab20(2 * i) for i in range(10)] + [tab20(2 * i + 1) for i in range(10)]  # strong hues first
    bottom = np.zeros(len(steps))
    x = np.arange(len(steps))
    for k, language in enumerate(languages):
        shares = np.array([100.0 * step.shares.get(language, 0.0) for step in steps])
        colour = "#b0b0b0" if language in ("other", "unknown") else palette[k % 20]
        if language == "unknown":
            colour = "#606060"
        axes.bar(x, shares, bottom=bottom, color=colour, edgecolor="white", linewidth=0.5,
                 label=_language_label(language) if language not in ("other", "unknown") else language)
        bottom += shares
    axes.set_xticks(x, [step.tick for step in steps], rotation=0)
    axes.set_ylim(0, 100)
    axes.set_ylabel("% of outputs")
    axes.set_xlabel("languages deactivated (cumulative, left to right)")
    axes.legend(title="output language", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title_fontsize=8)
    axes.set_title(study.title, fontsize=10)
    axes.spines[["top", "right"]].set_visible(False)
    return figure


# --------------------------------------------------------------------------------------------------
# Logit lens


def logit_lens_figure(rows, title: str = "Logit lens"):
    """One panel per prompt language: per layer, the top-k mass on the prompt's language (solid) and on
    English (dashed), one colour per condition (unsteered, then each steer spec). ``rows``: objects with
    condition, language, layer, prompt_language_mass, english_mass."""
    from matplotlib import colormaps

    languages = list(dict.fromkeys(r.language for r in rows))
    conditions = list(dict.fromkeys(r.condition for r in rows))
    columns = min(4, max(1, len(languages)))
    lines = (len(languages) + columns - 1) // columns
    figure = _new_figure(3.2 * columns + 1.5, 2.6 * lines + 0.8)
    colours = colormaps["tab10"]
    for k, language in enumerate(languages):
        axes = figure.add_subplot(lines, columns, k + 1)
        for c, condition in enumerate(conditions):
            mine = sorted((r for r in rows if r.language == language and r.condition == condition),
                          key=lambda r: r.layer)
            layers = [r.layer for r in mine]
            name = "unsteered" if condition == "none" else condition
            axes.plot(layers, [r.prompt_language_mass for r in mine], color=colours(c % 10), marker="o",
                      markersize=2.5, label=f"{name}: prompt language")
            if language != "en":
                axes.plot(layers, [r.english_mass for r in mine], color=colours(c % 10), linestyle="--",
                          label=f"{name}: English")
        axes.set_title(_language_label(language), fontsize=9)
        axes.set_ylim(-0.02, 1.02)
        axes.tick_params(labelsize=7)
        axes.spines[["top", "right"]].set_visible(False)
        if k % columns == 0:
            axes.set_ylabel("top-k probability", fontsize=8)
        if k >= len(languages) - columns:
            axes.set_xlabel("layer", fontsize=8)
    handles, labels = [], []
    for axes in figure.axes:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=10)
    return figure
