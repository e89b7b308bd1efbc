"""lm-eval runs on disk: results JSON files, their per-sample files, and who made them.

``lm_eval --output_path DIR`` writes ``DIR/<model>/results_<time>.json`` and, with
``--log_samples``, ``samples_<task>_<time>.jsonl`` next to it (one line per document and filter;
``resps`` stringified). :func:`load_runs` finds the results files under folders (recursively) or
takes files as given, checks that each is an lm-eval results file, and returns one :class:`Run` per
file: its scores per task and metric key (``"acc,none"``, ``"exact_match,strict-match"``), the
metric directions, and a :class:`RunIdentity` read from the recorded config (model, adapter,
neuron set, steer spec of the ``lape`` model) from which readable, distinct labels are made.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lape_eval.errors import LapeEvalError

RESULTS_GLOB = "results_*.json"
_DATE = re.compile(r"_(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)\.json$")
_STEER_DEFAULTS = {"method": "add", "alpha": 1.0, "beta": 1.0, "deactivate_value": 0.0, "positions": "all"}
_STEER_SYMBOLS = {"alpha": "α", "beta": "β", "deactivate_value": "c", "method": "", "positions": "positions="}


@dataclass(frozen=True)
class Score:
    value: float
    stderr: float | None  # None where lm-eval wrote "N/A" (custom aggregations, bootstrap_iters=0)


@dataclass(frozen=True)
class RunIdentity:
    """What distinguishes one configuration from another, read from the run's recorded config."""

    model: str  # short model name: a local folder's name, or the hub id
    lm: str  # the lm-eval model type: hf, lape, steered, vllm, ...
    steer: str | None  # "-en +de", "per-doc", or None (no steering)
    steer_options: tuple[tuple[str, object], ...] = ()  # method, alpha, ... of a steered run
    neuron_set: str | None = None  # "<file stem>@<hash prefix>"
    adapter: str | None = None  # PEFT adapter (or delta) folder name

    @property
    def steer_text(self) -> str:
        return self.steer or "base"


@dataclass
class Run:
    """One lm-eval results file."""

    path: Path
    data: dict
    identity: RunIdentity
    label: str = ""
    _samples: dict = field(default_factory=dict, repr=False)

    # ---- scores -----------------------------------------------------------------------------

    @property
    def tasks(self) -> list[str]:
        """Tasks and groups with results, in the file's order."""
        return list(self.data["results"])

    @property
    def groups(self) -> set[str]:
        return set(self.data.get("group_subtasks") or {}) | set(self.data.get("groups") or {})

    def metric_keys(self, task: str) -> list[str]:
        """``"metric,filter"`` keys with a numeric value, in the file's order."""
        return [key for key, value in (self.data["results"].get(task) or {}).items()
                if "," in key and not key.split(",", 1)[0].endswith("_stderr") and _is_number(value)]

    def score(self, task: str, key: str) -> Score | None:
        entry = self.data["results"].get(task)
        value = entry.get(key) if entry else None
        if value is None or not _is_number(value):
            return None
        metric, _, filter_name = key.partition(",")
        stderr = entry.get(f"{metric}_stderr,{filter_name}")
        return Score(float(value), float(stderr) if _is_number(stderr) and math.isfinite(stderr) else None)

    def higher_is_better(self, task: str, key: str) -> bool | None:
        directions = (self.data.get("higher_is_better") or {}).get(task) or {}
        value = directions.get(key.split(",", 1)[0])
        return value if isinstance(value, bool) else None

    def task_config(self, task: str) -> dict:
        return (self.data.get("configs") or {}).get(task) or {}

    # ---- per-sample records -------------------------------------------------------------------

    @property
    def date_id(self) -> str | None:
        match = _DATE.search(self.path.name)
        return match.group(1) if match else None

    def samples_path(self, task: str) -> Path | None:
        date = self.date_id
        if date is None:
            return None
        if "_files" not in self._samples:  # list the folder once, not one stat per task
            prefix, suffix = "samples_", f"_{date}.jsonl"
            self._samples["_files"] = {name[len(prefix):-len(suffix)] for name in os.listdir(self.path.parent)
                                       if name.startswith(prefix) and name.endswith(suffix)}
        return self.path.with_name(f"samples_{task}_{date}.jsonl") if task in self._samples["_files"] else None

    def samples(self, task: str) -> list[dict] | None:
        """The task's per-sample records (all filters), or None when no sample file was written."""
        key = ("task", task)
        if key not in self._samples:
            path = self.samples_path(task)
            self._samples[key] = None if path is None else _read_jsonl(path)
        return self._samples[key]

    def __str__(self) -> str:
        return f"{self.label} ({self.path})"


def _is_number(value) -> bool:
    return type(value) is float or type(value) is int


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise LapeEvalError(f"The sample file {path} is damaged at line {number} ({error}).") from None
    return records


# --------------------------------------------------------------------------------------------------
# Finding and reading results files


def find_results_files(paths: list[str | Path]) -> list[Path]:
    """Results files of ``paths``: files as given, folders searched recursively for results_*.json."""
    if not paths:
        raise LapeEvalError("Name at least one run: an lm-eval output folder or a results_<time>.json file.")
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(path.rglob(RESULTS_GLOB))
            if not found:
                raise LapeEvalError(
                    f"No lm-eval results in the folder {path}: no {RESULTS_GLOB} file anywhere below it. Give the "
                    "folder you passed to lm_eval --output_path (or a results file itself); was the run finished?")
            files.extend(found)
        else:
            raise LapeEvalError(f"No such file or folder: {path}.")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique


def read_results(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LapeEvalError(f"{path} is not an lm-eval results file: it is not valid JSON ({error}).") from None
    except OSError as error:
        raise LapeEvalError(f"Cannot read {path}: {error.strerror or error}.") from None
    results = data.get("results") if isinstance(data, dict) else None
    if (not isinstance(results, dict) or not isinstance(data.get("config"), dict)
            or not all(isinstance(entry, dict) for entry in results.values())):
        keys = ", ".join(list(data)[:8]) if isinstance(data, dict) else type(data).__name__
        raise LapeEvalError(
            f"{path} is not an lm-eval results file: it needs a 'results' section of tasks and a 'config' "
            f"section (it has: {keys or 'nothing'}). Pass the results_<time>.json that lm_eval --output_path "
            "writes, or the folder holding it.")
    return data


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector: parsed results files are millions of small acyclic objects,
    and every collection would walk them all again (it halves the time of a 500-run table)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_runs(paths: list[str | Path], labels: list[str] | None = None) -> list[Run]:
    """Every results file under ``paths`` as a :class:`Run`, labelled (``labels``: one per run)."""
    files = find_results_files(paths)
    with gc_paused():
        runs = [Run(path, data, identify_run(data)) for path, data in ((p, read_results(p)) for p in files)]
    assign_labels(runs, labels)
    return runs


# --------------------------------------------------------------------------------------------------
# Who made a run


def model_args(config: dict) -> dict:
    """``config.model_args`` as a dict (lm-eval stores the CLI string as it was given)."""
    args = config.get("model_args")
    if isinstance(args, dict):
        return args
    if isinstance(args, str):
        parsed = {}
        for item in filter(None, args.split(",")):
            key, _, value = item.partition("=")
            parsed[key.strip()] = value.strip()
        return parsed
    return {}


def _short_path(value) -> str:
    text = str(value).rstrip("/")
    if text.startswith(("/", ".", "~")) or "\\" in text or Path(text).exists():
        return Path(text).name or text
    return text  # a hub id such as google/gemma-3-270m


def identify_run(data: dict) -> RunIdentity:
    config = data.get("config") or {}
    args = model_args(config)
    lm = str(config.get("model") or "?")
    model = args.get("pretrained") or args.get("model") or args.get("path") or args.get("engine") \
        or data.get("model_name") or "?"
    adapter = args.get("peft") or args.get("delta")
    lape = config.get("lape") if isinstance(config.get("lape"), dict) else None
    steer, options, neuron_set = None, (), None
    if lape is not None:
        text = str(lape.get("steer") or "none")
        steer = None if text == "none" else ("per-doc" if text == "doc" else text)
        if steer is not None:
            options = tuple((k, lape.get(k)) for k in _STEER_DEFAULTS if k in lape)
        recorded = lape.get("neuron_set") or {}
        if recorded:
            stem = Path(str(recorded.get("source") or "set")).name.removesuffix(".safetensors")
            digest = str(recorded.get("content_hash") or "").removeprefix("sha256:")[:8]
            neuron_set = f"{stem}@{digest}" if digest else stem
    elif args.get("steer"):  # a lape run whose results lack get_model_info (or another steering model)
        steer = str(args["steer"])
        options = tuple((k, args[k]) for k in _STEER_DEFAULTS if k in args)
        if args.get("neurons"):
            neuron_set = Path(str(args["neurons"])).name.removesuffix(".safetensors")
    elif args.get("steer_path"):  # lm-eval's own `steered` model
        steer = f"steered:{Path(str(args['steer_path'])).name}"
    return RunIdentity(_short_path(model), lm, steer, options, neuron_set,
                       _short_path(adapter) if adapter else None)


def _option_text(key: str, value) -> str:
    if key == "method":
        return str(value)
    return f"{_STEER_SYMBOLS[key]}{value:g}" if isinstance(value, (int, float)) else f"{_STEER_SYMBOLS[key]}{value}"


def assign_labels(runs: list[Run], labels: list[str] | None = None) -> None:
    """Give each run a short label made of what differs between the runs; ``labels`` override."""
    if labels:
        if len(labels) != len(runs):
            listing = "; ".join(f"{i}: {run.path}" for i, run in enumerate(runs, 1))
            raise LapeEvalError(f"Give one --label per run: {len(labels)} labels for {len(runs)} runs ({listing}).")
        for run, label in zip(runs, labels):
            run.label = label
    else:
        identities = [run.identity for run in runs]
        several = lambda values: len(set(values)) > 1  # noqa: E731
        show_model = several(i.model for i in identities)
        show_set = len({i.neuron_set for i in identities if i.neuron_set and i.steer}) > 1
        steered_options = [dict(i.steer_options) for i in identities if i.steer]
        varying = [k for k in _STEER_DEFAULTS if several(o.get(k, _STEER_DEFAULTS[k]) for o in steered_options)]
        for run in runs:
            identity = run.identity
            parts = []
            if show_model:
                parts.append(identity.model)
            if identity.adapter:
                parts.append(f"peft:{identity.adapter}")
            if show_set and identity.steer and identity.neuron_set:
                parts.append(f"set:{identity.neuron_set}")
            steer = identity.steer_text if identity.steer or not identity.adapter else ""
            options = dict(identity.steer_options)
            shown = [_option_text(k, options.get(k, _STEER_DEFAULTS[k])) for k in varying] if identity.steer else []
            if steer:
                parts.append(steer + (f" ({', '.join(shown)})" if shown else ""))
            run.label = " · ".join(parts)
    seen: dict[str, int] = {}
    for run in runs:  # identical configurations (repeated runs) stay apart
        count = seen.get(run.label, 0) + 1
        seen[run.label] = count
        if count > 1:
            run.label = f"{run.label} #{count}"


def select_run(runs: list[Run], key: str, what: str = "--baseline") -> Run:
    """A run by its label, its number (1-based, in the order listed) or its results file path."""
    for run in runs:
        if run.label == key:
            return run
    if key.isdigit() and 1 <= int(key) <= len(runs):
        return runs[int(key) - 1]
    candidate = Path(key)
    if candidate.exists():
        resolved = candidate.resolve()
        for run in runs:
            if run.path == resolved or resolved in run.path.parents:
                return run
    listing = "; ".join(f"{i}: {run.label!r}" for i, run in enumerate(runs, 1))
    raise LapeEvalError(f"{what} {key!r} names none of the runs: give a label, a number or a path ({listing}).")


def task_selected(task: str, patterns: list[str]) -> bool:
    """Whether ``task`` matches one of the ``--tasks`` globs (no globs: every task)."""
    return not patterns or any(fnmatch.fnmatchcase(task, pattern) for pattern in patterns)
