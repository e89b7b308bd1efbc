"""The paper's downstream heatmaps (method spec §6.2-6.5): "activate X while testing Y".

For a task family (offline UDHR translation; FLORES+, Belebele, XQuAD, XNLI with their data) and
one or more neuron sets, every test language Y is evaluated unsteered (the baseline) and with the
additive activation of each activated language X's neurons (``+X``; α, method and positions from the
``lape`` model's arguments, e.g. ``language_alphas=`` a calibration), and each cell of the
test-language × activated-language heatmap is ``improvement = steered − baseline``.

**One lm-eval run per set.** The run evaluates the ``lape_downstream_<task>`` variant of each test
language's task (:func:`lape_eval.evaluation.suite.downstream_task`): its documents are the task's
documents once with ``steer: none`` and once per activated language with ``steer: +X`` (field
``activated_lang``), and the ``lape`` model with ``steer=doc`` steers every document by its own spec
(generation batches mix specs row by row; log-likelihoods run one group per spec). The baseline is
part of every set's run, so each set's heatmap comes from that one run (it costs one extra condition
per set; the paper also computes the baseline once per mask ratio).

**Cells from the samples.** lm-eval's aggregated score of a downstream task mixes the conditions, so
each cell is computed from the run's logged samples (``--log_samples``): the samples of one
(test language, condition) are aggregated as the task aggregates them (the mean of per-document
values, or corpus chrF++ / BLEU over the cell's hypotheses and references), the baseline the same
way, and the difference is taken. Significance: paired bootstrap over the documents for per-document
metrics, sacrebleu's paired bootstrap for corpus metrics (:mod:`lape_eval.reports.significance`).

Outputs in ``--out``: ``runs/<set>/`` (the lm-eval run, results and samples), ``downstream.csv``
(every cell: baseline, steered, improvement, p-value, test, documents), ``heatmaps/<set>-<metric>.png``
and ``.csv`` (rows: test languages, columns: activated languages, both ordered by family as
:data:`lape_eval.languages.FAMILY_ORDER`), ``report.md`` and ``summary.json``. Re-running skips the sets
whose run finished with the same command; a set's run that was interrupted runs again.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.data import (
    BASELINE_CONDITION, XNLI_LANGUAGES, XQUAD_LANGUAGES,
)
from lape_eval.evaluation.metrics import corpus_bleu, corpus_chrf_pp
from lape_eval.evaluation.suite import DOWNSTREAM_FAMILIES, DOWNSTREAM_PREFIX, FAMILY_METRICS, parse_task_name
from lape_eval.files import atomic_path, write_json
from lape_eval.languages import PAPER_LANGUAGES
from lape_eval.reports.plots import Matrix, family_ordered, save_figure, task_delta_figure
from lape_eval.reports.results import load_runs
from lape_eval.reports.significance import (
    DEFAULT_RESAMPLES, DEFAULT_SEED, corpus_metric_name, paired_bootstrap, sacrebleu_paired_p,
)

FAMILIES = DOWNSTREAM_FAMILIES
TRANSLATION_FAMILIES = ("flores", "udhr_translation")
# Translation direction: the paper translates English into each test language (§6.2); "to-en" is the
# reverse (each test language into English), the other half of the picture it does not draw.
DIRECTIONS = ("from-en", "to-en")
# Per family: the metrics a heatmap can show (the task family's own, evaluation.suite.FAMILY_METRICS),
# the paper's first: sentence BLEU and chrF++ for translation, EM and F1 for XQuAD, accuracy otherwise.
METRICS = {family: FAMILY_METRICS["translation" if family in TRANSLATION_FAMILIES else family]
           for family in FAMILIES}
PAPER_METRICS = {"flores": ("sentence_bleu", "chrf_pp"), "udhr_translation": ("sentence_bleu", "chrf_pp"),
                 "xquad": ("exact_match", "f1")}  # else the family's first metric
CORPUS_METRICS = {"chrf_pp": corpus_chrf_pp, "corpus_bleu": corpus_bleu}
TESTS = ("auto", "none")
_COMMAND_FILE = "command.json"


def family_languages(family: str) -> tuple[str, ...]:
    """The test languages a family has (translation: the targets of English → X)."""
    if family in TRANSLATION_FAMILIES:
        return tuple(code for code in PAPER_LANGUAGES if code != "en")
    if family == "xquad":
        return XQUAD_LANGUAGES
    if family in ("xnli", "xnli_ll"):
        return XNLI_LANGUAGES
    return PAPER_LANGUAGES


def task_of(family: str, language: str, direction: str = "from-en") -> str:
    """The lape-eval task of ``family`` in test language ``language`` (translation: English → it, or it →
    English with ``direction="to-en"``)."""
    if family in TRANSLATION_FAMILIES:
        return f"lape_{family}_" + (f"en-{language}" if direction == "from-en" else f"{language}-en")
    return f"lape_{family}_{language}"


def downstream_task_name(family: str, language: str, direction: str = "from-en") -> str:
    return DOWNSTREAM_PREFIX + task_of(family, language, direction)[len("lape_"):]


@dataclass(frozen=True)
class DownstreamSettings:
    """What to evaluate and how (checked by :func:`downstream_settings`)."""

    family: str
    test_languages: tuple[str, ...]
    activated: tuple[str, ...]
    metrics: tuple[str, ...]
    direction: str = "from-en"  # translation families only: DIRECTIONS
    limit: int | None = None  # documents per test language (None: all)
    max_gen_toks: int | None = None  # None: the task's (the paper's) limit
    batch_size: str = "8"
    device: str = "cpu"
    dtype: str = "float32"
    steering: dict = field(default_factory=dict)  # lape model_args: method, alpha, language_alphas, positions
    model_options: dict = field(default_factory=dict)  # revision, trust_remote_code
    metadata: dict = field(default_factory=dict)  # task options: data_dir, udhr_split, xnli_max_docs, ...
    test: str = "auto"
    significance: float = 0.05
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED


def downstream_settings(family: str, test_languages=None, activated=None, metrics=None, **options) -> DownstreamSettings:
    """Checked settings: ``test_languages`` / ``activated`` as codes (default: all of the family / the 21),
    ``metrics`` names of :data:`METRICS` (default: the paper's)."""
    family = str(family).strip()
    if family not in FAMILIES:
        raise LapeEvalError(f"Unknown downstream task family {family!r}: choose one of {', '.join(FAMILIES)}.")
    direction = options.get("direction", "from-en")
    if direction not in DIRECTIONS:
        raise LapeEvalError(f"Unknown translation direction {direction!r}: choose from-en (English into each test "
                            "language, the paper's) or to-en (each test language into English).")
    if direction != "from-en" and family not in TRANSLATION_FAMILIES:
        raise LapeEvalError(f"--direction {direction} applies to the translation families "
                            f"({', '.join(TRANSLATION_FAMILIES)}), not to {family}: leave it out.")
    known = family_languages(family)
    tests = _codes(test_languages, known, f"the test languages of {family}") if test_languages else list(known)
    for code in tests:
        parse_task_name(task_of(family, code, direction))  # the family's own check (e.g. XQuAD's 12 languages)
    active = _codes(activated, PAPER_LANGUAGES, "the activated languages") if activated else list(PAPER_LANGUAGES)
    allowed = METRICS[family]
    chosen = list(dict.fromkeys(metrics)) if metrics else list(PAPER_METRICS.get(family, allowed[:1]))
    unknown = [m for m in chosen if m not in allowed]
    if unknown:
        raise LapeEvalError(f"The {family} heatmaps can show {', '.join(allowed)}; not {', '.join(unknown)}.")
    test = options.get("test", "auto")
    if test not in TESTS:
        raise LapeEvalError(f"Unknown significance test {test!r}: choose auto (paired bootstrap; sacrebleu's for "
                            "chrF++/BLEU) or none.")
    for key in ("limit", "max_gen_toks"):
        if options.get(key) is not None and int(options[key]) < 1:
            raise LapeEvalError(f"{key} must be at least 1, got {options[key]}.")
    return DownstreamSettings(family, tuple(tests), tuple(active), tuple(chosen), **options)


def _codes(value, known, what: str) -> list[str]:
    items = value.replace(",", " ").split() if isinstance(value, str) else [str(v).strip() for v in value]
    if items == ["all"]:
        return list(known)
    codes = []
    for code in items:
        if code not in known:
            raise LapeEvalError(f"Unknown language code {code!r} in {what}: choose among {', '.join(known)}.")
        if code not in codes:
            codes.append(code)
    if not codes:
        raise LapeEvalError(f"No language given for {what}.")
    return codes


# --------------------------------------------------------------------------------------------------
# Runs: one lm-eval run per neuron set


@dataclass(frozen=True)
class SetRun:
    label: str  # folder name and label of the set
    source: str  # the set as given (file or shipped name)
    folder: Path
    command: list[str]  # the lape-eval run command (without the interpreter)


def set_label(source: str) -> str:
    path = Path(source)
    name = path.stem if path.suffix == ".safetensors" else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "set"


def check_sets(sources: list[str], activated) -> list[str]:
    """The sets' labels; every set must hold every activated language (checked before anything runs)."""
    from lape_eval.neurons.shipped import resolve_neuron_set

    if not sources:
        raise LapeEvalError("No neuron set given: name at least one set file or shipped set with --neurons.")
    labels = []
    for source in sources:
        neuron_set = resolve_neuron_set(source)
        missing = [code for code in activated if code not in neuron_set.languages]
        if missing:
            raise LapeEvalError(f"The neuron set {source} has no neurons for {', '.join(missing)} (it has "
                                f"{', '.join(neuron_set.languages)}): choose the activated languages among its "
                                "languages with --activated.")
        labels.append(set_label(source))
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise LapeEvalError(f"Two neuron sets have the name {', '.join(repeated)}: give files with different names.")
    return labels


def lm_eval_command(model: str, neuron_set: str, folder: Path, settings: DownstreamSettings) -> list[str]:
    """The ``lape-eval run`` command (lm-eval's own options) of one set."""
    source = str(Path(neuron_set).resolve()) if Path(neuron_set).is_file() else neuron_set
    arguments = {"pretrained": model, "neurons": source, "steer": "doc", "dtype": settings.dtype,
                 **settings.steering, **settings.model_options}
    for key, value in arguments.items():
        if "," in str(value):
            raise LapeEvalError(f"The lape model argument {key}={value!r} contains a comma, which lm-eval's "
                                "--model_args cannot carry: rename the file or folder.")
    conditions = len(settings.activated) + 1
    metadata = {**settings.metadata, "activated_languages": ",".join(settings.activated), "downstream_baseline": True}
    command = ["run", "--model", "lape", "--model_args", ",".join(f"{k}={v}" for k, v in arguments.items()),
               "--tasks", ",".join(downstream_task_name(settings.family, code, settings.direction) for code in settings.test_languages),
               "--metadata", json.dumps(metadata, sort_keys=True), "--device", settings.device,
               "--batch_size", str(settings.batch_size), "--log_samples", "--output_path", str(folder)]
    if settings.limit is not None:
        command += ["--limit", str(settings.limit * conditions)]  # documents are repeated document-major
    if settings.max_gen_toks is not None:
        command += ["--gen_kwargs", f"max_gen_toks={settings.max_gen_toks}"]
    return command


def plan_runs(model: str, sources: list[str], out: Path, settings: DownstreamSettings) -> list[SetRun]:
    labels = check_sets(sources, settings.activated)
    runs = []
    for label, source in zip(labels, sources):
        folder = out / "runs" / label
        runs.append(SetRun(label, source, folder, lm_eval_command(model, source, folder, settings)))
    for run in runs:  # another experiment's run in the folder: refuse before anything runs
        record = run.folder / _COMMAND_FILE
        if record.is_file() and json.loads(record.read_text(encoding="utf-8")).get("command") != run.command:
            raise LapeEvalError(
                f"{run.folder} holds a run of set {run.label} made with other settings (see {record}). Use another "
                "--out folder, or delete that run folder to redo it with these settings."
            )
    return runs


def _finished(run: SetRun) -> bool:
    record = run.folder / _COMMAND_FILE
    return record.is_file() and any(run.folder.rglob("results_*.json"))


def run_sets(runs: list[SetRun], echo=print, python: str = sys.executable) -> None:
    """Run lm-eval for every set whose run has not finished with the same command (lm-eval's progress bars
    stream to the terminal)."""
    for number, run in enumerate(runs, 1):
        if _finished(run):
            echo(f"[{number}/{len(runs)}] {run.label}: done already ({run.folder})")
            continue
        if run.folder.exists():  # an interrupted run: lm-eval cannot resume one, start it again
            shutil.rmtree(run.folder)
        echo(f"[{number}/{len(runs)}] {run.label}: lape-eval {' '.join(run.command)}")
        code = subprocess.run([python, "-m", "lape_eval", *run.command]).returncode
        if code != 0:
            raise LapeEvalError(f"The lm-eval run of set {run.label} failed (exit code {code}; its output is above). "
                                "Fix the cause and re-run the same command: finished sets are skipped.")
        write_json(run.folder / _COMMAND_FILE, {"command": run.command})


# --------------------------------------------------------------------------------------------------
# Cells from the samples


@dataclass(frozen=True)
class Cell:
    set: str
    metric: str
    test_language: str
    activated: str
    baseline: float
    steered: float
    improvement: float
    p_value: float | None
    test: str | None  # "paired-bootstrap", "sacrebleu" or None
    documents: int
    significant: bool


def aggregate(metric: str, values: list):
    """A cell's score from its documents' sample values, as the task aggregates them."""
    if metric in CORPUS_METRICS:
        return CORPUS_METRICS[metric]([tuple(v) for v in values])
    return float(np.mean(np.asarray(values, dtype=np.float64)))


def _by_condition(samples: list[dict], task: str) -> dict[str, dict[int, dict]]:
    conditions: dict[str, dict[int, dict]] = {}
    for sample in samples:
        if sample.get("filter", "none") != "none":
            continue
        doc = sample["doc"]
        conditions.setdefault(doc["activated_lang"], {})[int(doc["source_doc"])] = sample
    if BASELINE_CONDITION not in conditions:
        raise LapeEvalError(f"The samples of {task} have no unsteered documents (activated_lang 'none').")
    return conditions


def _significance(metric: str, steered: list, baseline: list, settings: DownstreamSettings) -> tuple:
    if settings.test == "none":
        return None, None
    if metric in CORPUS_METRICS:
        tokenizers = {v[2] for v in steered} if metric == "corpus_bleu" else {None}
        p = sacrebleu_paired_p(corpus_metric_name(metric), [v[0] for v in steered], [v[0] for v in baseline],
                               [[v[1] for v in baseline]], tokenizers.pop(), settings.resamples, settings.seed)
        return p, "sacrebleu"
    return paired_bootstrap(np.asarray(steered, dtype=np.float64), np.asarray(baseline, dtype=np.float64),
                            settings.resamples, settings.seed), "paired-bootstrap"


def set_cells(label: str, folder: Path, settings: DownstreamSettings) -> list[Cell]:
    """Every cell of one set's run: per metric, test language and activated language."""
    runs = load_runs([folder])
    if len(runs) != 1:
        raise LapeEvalError(f"{folder}: expected one lm-eval results file, found {len(runs)}; delete the folder "
                            "and re-run to redo the set.")
    run = runs[0]
    cells = []
    for language in settings.test_languages:
        task = downstream_task_name(settings.family, language, settings.direction)
        samples = run.samples(task)
        if not samples:
            raise LapeEvalError(f"{folder}: the run has no samples of {task} (it was run without --log_samples?); "
                                "delete the folder and re-run.")
        conditions = _by_condition(samples, task)
        baseline = conditions[BASELINE_CONDITION]
        for activated in settings.activated:
            steered = conditions.get(activated)
            if not steered:
                raise LapeEvalError(f"{folder}: {task} has no documents with activated language {activated}.")
            shared = sorted(set(steered) & set(baseline))
            for metric in settings.metrics:
                values_b = [baseline[i][metric] for i in shared]
                values_s = [steered[i][metric] for i in shared]
                score_b, score_s = aggregate(metric, values_b), aggregate(metric, values_s)
                p, test = _significance(metric, values_s, values_b, settings)
                cells.append(Cell(label, metric, language, activated, score_b, score_s, score_s - score_b, p, test,
                                  len(shared), p is not None and p < settings.significance))
    return cells


# --------------------------------------------------------------------------------------------------
# Outputs


def heatmap_matrix(cells: list[Cell], set_name: str, metric: str, settings: DownstreamSettings,
                   model: str = "") -> Matrix:
    """Improvement of ``metric`` for one set: test language (rows) × activated language (columns), both
    ordered by family; † marks p < the significance level."""
    mine = [c for c in cells if c.set == set_name and c.metric == metric]
    rows = family_ordered({c.test_language for c in mine})
    columns = family_ordered({c.activated for c in mine})
    values = np.full((len(rows), len(columns)), np.nan)
    annotations = [["" for _ in columns] for _ in rows]
    for cell in mine:
        i, j = rows.index(cell.test_language), columns.index(cell.activated)
        values[i, j] = cell.improvement
        text = "0" if cell.improvement == 0 else f"{cell.improvement:+.3g}".replace("-", "−")
        annotations[i][j] = text + ("†" if cell.significant else "")
    documents = sorted({c.documents for c in mine})
    test = "" if settings.test == "none" else f" · † p < {settings.significance:g} (paired bootstrap)"
    family = settings.family + (f" {settings.direction}" if settings.family in TRANSLATION_FAMILIES else "")
    title = (f"{family}: {metric} improvement (steered − baseline), set {set_name}\n"
             f"{model + ' · ' if model else ''}{'/'.join(map(str, documents))} documents per cell{test}")
    return Matrix(values, rows, [f"+{code}" for code in columns], title, f"Δ {metric}", "test language",
                  "activated language", annotations)


def cells_csv(cells: list[Cell]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = list(Cell.__dataclass_fields__)
    writer.writerow(names)
    for cell in cells:
        row = asdict(cell)
        writer.writerow(["" if row[n] is None else repr(row[n]) if isinstance(row[n], float) else row[n]
                         for n in names])
    return out.getvalue()


def _markdown(matrix: Matrix, baselines: dict[str, float]) -> str:
    head = f"| {matrix.row_name} | baseline | " + " | ".join(matrix.columns) + " |"
    lines = [head, "|" + "---|" * (len(matrix.columns) + 2)]
    for label, annotations in zip(matrix.rows, matrix.annotations):
        base = baselines.get(label)
        lines.append(f"| {label} | {'' if base is None else f'{base:.4g}'} | " + " | ".join(a or "—" for a in annotations)
                     + " |")
    return "\n".join(lines)


@dataclass
class DownstreamResult:
    cells: list[Cell]
    files: dict[str, Path]
    runs: list[SetRun]


def write_outputs(cells: list[Cell], runs: list[SetRun], out: Path, settings: DownstreamSettings,
                  model: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    table = out / "downstream.csv"
    with atomic_path(table) as temporary:
        temporary.write_text(cells_csv(cells), encoding="utf-8")
    files["csv"] = table
    direction = (" (English → test language)" if settings.direction == "from-en" else " (test language → English)") \
        if settings.family in TRANSLATION_FAMILIES else ""
    report = [f"# Downstream heatmaps: {settings.family}{direction}", "",
              f"Model `{model}`; improvement = steered (`+X`, steer=doc) − unsteered baseline, both from the set's one "
              f"lm-eval run; cells from the logged samples. Steering: {settings.steering or 'the lape defaults (add, α = 1)'}. "
              + ("" if settings.test == "none" else
                 f"† p < {settings.significance:g}: paired bootstrap over documents (sacrebleu's for chrF++/BLEU), "
                 f"{settings.resamples} resamples, seed {settings.seed}."), ""]
    for run in runs:
        for metric in settings.metrics:
            matrix = heatmap_matrix(cells, run.label, metric, settings, model)
            stem = f"{run.label}-{metric}"
            figure = save_figure(task_delta_figure(matrix, families="both"), out / "heatmaps" / f"{stem}.png")
            with atomic_path(out / "heatmaps" / f"{stem}.csv") as temporary:
                temporary.write_text(matrix.to_csv(), encoding="utf-8")
            files[f"heatmap:{stem}"] = figure
            baselines = {c.test_language: c.baseline for c in cells if c.set == run.label and c.metric == metric}
            report += [f"## {run.label}: {metric}", "", _markdown(matrix, baselines), "",
                       f"![{stem}](heatmaps/{stem}.png)", ""]
    files["report"] = out / "report.md"
    with atomic_path(files["report"]) as temporary:
        temporary.write_text("\n".join(report), encoding="utf-8")
    files["summary"] = out / "summary.json"
    write_json(files["summary"], {
        "experiment": "downstream", "model": model, "settings": _jsonable(asdict(settings)),
        "sets": {run.label: {"source": run.source, "run": str(run.folder), "command": run.command} for run in runs},
        "cells": len(cells), "files": {key: str(path) for key, path in files.items()},
    })
    return files


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_downstream(model: str, neuron_sets: list[str], out: str | Path, settings: DownstreamSettings,
                   echo=print) -> DownstreamResult:
    """The experiment: one lm-eval run per set (skipped when finished), the cells, the heatmaps and report."""
    out = Path(out)
    runs = plan_runs(model, list(neuron_sets), out, settings)
    run_sets(runs, echo=echo)
    cells = [cell for run in runs for cell in set_cells(run.label, run.folder, settings)]
    files = write_outputs(cells, runs, out, settings, model)
    return DownstreamResult(cells, files, runs)
