"""Per-sample outcomes of forcing-style runs, read from lm-eval sample files.

For each logged document: its source and target language (document fields, default
``source_lang`` / ``target_lang``), the language of the model's output and whether the output was
in the target language. Field names are options because tasks name them differently; a field is
looked up among the sample's metric values first, then in the document (``doc.NAME`` forces the
document). Without a label field the output text (``filtered_resps``) is identified with
:mod:`lape_eval.evaluation.lid`; without a success field success is "output language == target".
"""

from __future__ import annotations

from dataclasses import dataclass

from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.lid import identify_languages, normalize_label
from lape_eval.reports.results import Run

LABEL_FIELDS = ("answer_lang", "output_lang", "output_language", "lid", "pred_lang", "predicted_lang", "language_id")
SUCCESS_FIELDS = ("success", "target_rate", "on_target", "forcing_success", "target_language_rate")
QUESTION_FIELDS = ("question", "input", "prompt")
_MISSING = object()


@dataclass(frozen=True)
class FieldNames:
    source: str = "source_lang"
    target: str = "target_lang"
    label: str | None = None  # None: the first of LABEL_FIELDS present, else LID on the output
    success: str | None = None  # None: the first of SUCCESS_FIELDS present, else label == target
    lid: str | None = None  # LID backend when the label comes from the output text
    filter: str | None = None  # the filter whose records count (default: the first one logged)
    question: str | None = None  # None: the first of QUESTION_FIELDS in the document, else the prompt as given


@dataclass(frozen=True)
class Outcome:
    task: str
    doc_id: int
    source: str | None
    target: str | None
    label: str
    success: bool | None
    question: str = ""  # what was asked (for the relevance judge)
    answer: str = ""  # the model's output (``filtered_resps``)


def field(record: dict, name: str):
    """A sample's metric value ``name``, else its document's field ``name`` (``doc.NAME``: only the document)."""
    if name.startswith("doc."):
        return (record.get("doc") or {}).get(name[4:], _MISSING)
    if name in record:
        return record[name]
    return (record.get("doc") or {}).get(name, _MISSING)


def output_text(record: dict) -> str:
    response = record.get("filtered_resps", record.get("resps"))
    while isinstance(response, list) and response:
        response = response[0]
    return response if isinstance(response, str) else ""


def question_text(record: dict, name: str | None = None) -> str:
    """What the document asked: its field ``name`` (default: the first of QUESTION_FIELDS it has),
    else the prompt the model was given."""
    doc = record.get("doc") or {}
    for candidate in [name] if name else QUESTION_FIELDS:
        value = field(record, candidate) if name else doc.get(candidate, _MISSING)
        if value is not _MISSING and value is not None:
            return str(value)
    arguments = record.get("arguments") or {}
    first = next(iter(arguments.values()), None) if isinstance(arguments, dict) else None
    return str(first.get("arg_0", "")) if isinstance(first, dict) else ""


def _first_present(records: list[dict], candidates) -> str | None:
    for name in candidates:
        if all(field(r, name) is not _MISSING for r in records):
            return name
    return None


def _success(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value > 0
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], bool):  # (diagonal, hit) pairs
        return value[1]
    return None


def sample_tasks(run: Run, tasks: list[str] | None = None, require: tuple[str, ...] = ()) -> list[str]:
    """The run's tasks with sample files (and whose documents have the ``require``d fields)."""
    chosen = []
    for task in tasks or run.tasks:
        samples = run.samples(task)
        if samples is None:
            if tasks:
                raise LapeEvalError(f"{run.label}: no sample file for task {task} next to {run.path} (run lm_eval with "
                                    "--log_samples).")
            continue
        if all(field(samples[0], name) is not _MISSING for name in require):
            chosen.append(task)
    if not chosen:
        need = f" with document fields {', '.join(require)}" if require else ""
        raise LapeEvalError(f"{run.label} ({run.path}): no task with a sample file{need}. Run lm_eval with "
                            "--log_samples (and check the field names, e.g. --source-field/--target-field).")
    return chosen


def outcomes(run: Run, task: str, names: FieldNames = FieldNames()) -> tuple[list[Outcome], dict[str, str]]:
    """The task's outcomes and where label and success came from (``{"label": ..., "success": ...}``)."""
    records = run.samples(task)
    if not records:
        raise LapeEvalError(f"{run.label}: no sample file for task {task} (run lm_eval with --log_samples).")
    wanted = names.filter or records[0].get("filter", "none")
    records = [r for r in records if r.get("filter", "none") == wanted]
    if not records:
        raise LapeEvalError(f"{run.label}/{task}: no sample of filter {wanted!r}.")
    label_field = names.label or _first_present(records, LABEL_FIELDS)
    if names.label and _first_present(records, [names.label]) is None:
        raise LapeEvalError(f"{run.label}/{task}: the samples have no field {names.label!r} "
                            f"(fields: {', '.join(sorted(set(records[0]) | set(records[0].get('doc') or {})))}).")
    if label_field:
        labels = [normalize_label(str(field(r, label_field))) for r in records]
        label_from = f"field '{label_field}'"
    else:
        labels = identify_languages([output_text(r) for r in records], names.lid)
        label_from = f"LID ({names.lid or 'default backend'}) on the output"
    success_field = names.success or _first_present(records, SUCCESS_FIELDS)
    if names.success and _first_present(records, [names.success]) is None:
        raise LapeEvalError(f"{run.label}/{task}: the samples have no field {names.success!r}.")
    result = []
    for record, label in zip(records, labels):
        source, target = field(record, names.source), field(record, names.target)
        source = None if source is _MISSING else str(source)
        target = None if target is _MISSING else str(target)
        if success_field:
            success = _success(field(record, success_field))
        else:
            success = None if target is None else label == target
        result.append(Outcome(task, record.get("doc_id"), source, target, label, success,
                              question_text(record, names.question), output_text(record)))
    success_from = f"field '{success_field}'" if success_field else "output language = target language"
    return result, {"label": label_from, "success": success_from}
