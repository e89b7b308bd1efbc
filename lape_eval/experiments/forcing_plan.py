"""The forcing experiment's plan: its conditions, its settings (presets), and the lm-eval runs they make.

Conditions (method spec §5, §6.1; Figure 1 of the paper is ``deact_act``):

===============  ===========================  ===============================================
name             steer spec per document      meaning
===============  ===========================  ===============================================
``baseline``     none                         the unsteered model
``act``          ``+tgt``                     activate-only (``--no_deactivation``), additive
``deact_act``    ``-src +tgt``                deactivate the prompt language, add the target
``repl``         ``-tgt:0 +tgt``              replacement without deactivation: g ← α·μ(tgt)
``deact_repl``   ``-src -tgt:0 +tgt``         replacement with deactivation (diagonal: ``-tgt:0 +tgt``)
===============  ===========================  ===============================================

Replacement is written with the additive operator: zero the target's neurons, then add α·μ(tgt), which
is g ← α·μ(tgt) exactly (the reference's ``replacement`` at α = 1; CLaS-Bench's α·μ otherwise). So the
four steered conditions of a neuron set share the operator and run as four tasks of one lm-eval run:
one model load per neuron set (two when a calibration chose another method for the activations).

Every condition is a task generated into ``OUT/tasks/`` (``lape_forcing_grid_<condition>``): the
bundled ``lape_forcing_grid`` with its decoding and prompt style written out (so the run's config
states them) and, for the steered conditions, the per-document spec as ``dataset_kwargs.steer_template``.

Presets: ``paper`` (method spec §6.1), ``calibrated FILE`` (a ``lape-eval calibrate`` file's settings)
and ``clas`` (CLaS-Bench, method spec §9.2: its 70 questions in its 32 languages, each asked bare as
the one user turn of the model's chat template, i.e. lm-eval's ``--apply_chat_template``; greedy,
repetition penalty 1.0, up to 1024 new tokens, EOS the only stop). CLaS-Bench identifies languages
with fastText's NLLB model ``lid218e.bin``, which no package here ships: the preset uses fastText
with the bundled lid.176 unless ``--lid-model PATH/lid218e.bin`` is given (its FLORES-style labels,
e.g. ``__label__pes_Arab``, are mapped to the registry's codes by :mod:`lape_eval.evaluation.lid`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lape_eval.errors import LapeEvalError
from lape_eval.evaluation import forcing
from lape_eval.evaluation.lid import BACKEND_ENV, MODEL_ENV
from lape_eval.languages import CLAS_BENCH_LANGUAGES, PAPER_LANGUAGES, parse_languages
from lape_eval.models import DEMO_MODEL
from lape_eval.resources import tasks_folder
from lape_eval.steering.calibration import read_calibration


@dataclass(frozen=True)
class Condition:
    name: str
    label: str
    steer_template: str | None  # None: unsteered
    diagonal_template: str | None = None  # for source = target, when it must differ
    additive: bool = True  # uses the activation method of the settings (False: replacement, always add)

    @property
    def task(self) -> str:
        return f"lape_forcing_grid_{self.name}"


CONDITIONS = (
    Condition("baseline", "baseline (unsteered)", None),
    Condition("act", "activate-only (+tgt)", "+{target_lang}"),
    Condition("deact_act", "deactivate + activate (-src +tgt)", "-{source_lang} +{target_lang}"),
    Condition("repl", "replacement (tgt := α·μ)", "-{target_lang}:0 +{target_lang}", additive=False),
    Condition("deact_repl", "deactivate + replacement (-src, tgt := α·μ)", "-{source_lang} -{target_lang}:0 +{target_lang}",
              "-{target_lang}:0 +{target_lang}", additive=False),
)
CONDITION_NAMES = tuple(c.name for c in CONDITIONS)
PRESETS = ("paper", "calibrated", "clas")


def condition(name: str) -> Condition:
    for item in CONDITIONS:
        if item.name == name:
            return item
    raise LapeEvalError(f"Unknown condition {name!r}: choose from {', '.join(CONDITION_NAMES)}.")


@dataclass
class ForcingSettings:
    """Everything that defines the experiment; the report states every field."""

    preset: str = "paper"
    model: str = DEMO_MODEL
    sets: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=lambda: list(PAPER_LANGUAGES))
    conditions: list[str] = field(default_factory=lambda: list(CONDITION_NAMES))
    questions: str = "bundled"
    method: str = "add"  # the operator of the activate conditions
    alpha: float = 1.0
    deactivate_value: float = 0.0  # c
    positions: str = "all"
    language_alphas: str | None = None  # a calibration / {lang: α} JSON file
    max_gen_toks: int = forcing.MAX_NEW_TOKENS
    do_sample: bool = forcing.DO_SAMPLE
    repetition_penalty: float = forcing.REPETITION_PENALTY
    stops: list[str] = field(default_factory=lambda: list(forcing.STOP_STRINGS))
    prompt: str = forcing.DEFAULT_PROMPT_STYLE  # paper: "Q: {question} \nA:"; clas: the bare question
    apply_chat_template: bool = False  # lm-eval's --apply_chat_template: the prompt as one user turn
    lid: str = "fasttext"
    lid_model: str | None = None  # a fastText model file ($LAPE_EVAL_LID_MODEL); None: lid.176 (bundled .ftz)
    dtype: str = "float32"
    device: str = "cpu"
    batch_size: int = forcing.GRID_BATCH_SIZE
    limit: int | None = None
    calibration: str | None = None  # the calibrate file of the calibrated preset

    def describe(self) -> dict:
        return asdict(self)


def paper_settings(**overrides) -> ForcingSettings:
    """Method spec §6.1: α = 1, c = 0, every position, greedy, repetition penalty 1.1, 256 new tokens,
    stops "\\nQ:" / "\\nA:" / EOS, fastText lid.176, the full grid with source = target included."""
    return _override(ForcingSettings(preset="paper"), overrides)


def calibrated_settings(calibration: str, **overrides) -> ForcingSettings:
    """A ``lape-eval calibrate`` file's settings: its chosen neuron set, method and positions, its α per
    target (``language_alphas``), and the calibration's protocol: answers of 32 tokens, cld2 labels."""
    chosen = read_calibration(calibration).chosen
    settings = ForcingSettings(preset="calibrated", calibration=str(calibration), sets=[chosen.neuron_set],
                               method=chosen.method, positions=chosen.positions, language_alphas=str(calibration),
                               max_gen_toks=forcing.SHORT_MAX_NEW_TOKENS, lid="cld2")
    return _override(settings, overrides)


def clas_settings(**overrides) -> ForcingSettings:
    """CLaS-Bench's generation protocol (method spec §9.2): its questions in its 32 languages, asked bare in
    the chat template, greedy, repetition penalty 1.0, 1024 new tokens (``--max-gen-toks`` lowers it), EOS
    only; fastText LID (CLaS-Bench's lid218e.bin with ``--lid-model``, else the bundled lid.176)."""
    settings = ForcingSettings(preset="clas", languages=list(CLAS_BENCH_LANGUAGES), questions="clas",
                               prompt="clas", apply_chat_template=True, max_gen_toks=forcing.CLAS_MAX_NEW_TOKENS,
                               do_sample=False, repetition_penalty=forcing.CLAS_REPETITION_PENALTY,
                               stops=list(forcing.CLAS_STOP_STRINGS), lid="fasttext")
    return _override(settings, overrides)


def _override(settings: ForcingSettings, overrides: dict) -> ForcingSettings:
    known = set(asdict(settings))
    unknown = set(overrides) - known
    if unknown:
        raise LapeEvalError(f"Unknown forcing settings: {', '.join(sorted(unknown))}.")
    settings = replace(settings, **{key: value for key, value in overrides.items() if value is not None})
    return check_settings(settings)


def check_settings(settings: ForcingSettings) -> ForcingSettings:
    settings.languages = parse_languages(" ".join(settings.languages)) if settings.languages else []
    if len(settings.languages) < 1:
        raise LapeEvalError("--languages: give at least one language.")
    for name in settings.conditions:
        condition(name)
    settings.prompt = forcing.check_prompt_style(settings.prompt)
    if settings.max_gen_toks < 1:
        raise LapeEvalError(f"--max-gen-toks must be positive, got {settings.max_gen_toks}.")
    steered = [name for name in settings.conditions if name != "baseline"]
    if steered and not settings.sets:
        raise LapeEvalError("--sets: give the neuron sets to steer with (files or shipped names, comma-separated, "
                            f"e.g. gemma-3-270m-udhr-1pct for {DEMO_MODEL}); with --preset calibrated the calibration's "
                            "set is used.")
    if settings.method not in ("add", "multiply", "diffmean", "replace"):
        raise LapeEvalError(f"--method {settings.method!r}: choose add, diffmean, multiply or replace.")
    return settings


# --- lm-eval runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """One lm-eval invocation (one model load): its folder name, the conditions it evaluates, its set."""

    name: str
    conditions: tuple[str, ...]
    neuron_set: str | None
    method: str


def set_name(neuron_set: str) -> str:
    """A neuron set's short name (a shipped name, or a file's stem)."""
    return Path(neuron_set).name.removesuffix(".safetensors")


def planned_runs(settings: ForcingSettings) -> list[PlannedRun]:
    runs = []
    if "baseline" in settings.conditions:
        runs.append(PlannedRun("baseline", ("baseline",), None, "add"))
    for neuron_set in settings.sets:
        groups: dict[str, list[str]] = {}
        for name in settings.conditions:
            if name == "baseline":
                continue
            method = settings.method if condition(name).additive else "add"
            groups.setdefault(method, []).append(name)
        for method, names in groups.items():
            suffix = "" if len(groups) == 1 else f"-{method}"
            runs.append(PlannedRun(f"{set_name(neuron_set)}{suffix}", tuple(names), neuron_set, method))
    return runs


def task_config(settings: ForcingSettings, item: Condition) -> dict:
    """The generated task of one condition (YAML-able: plain values only)."""
    config = {
        "task": item.task,
        "include": str(tasks_folder() / "forcing" / "_forcing_grid_yaml"),
        "generation_kwargs": {"until": list(settings.stops), "max_gen_toks": settings.max_gen_toks,
                              "do_sample": settings.do_sample, "repetition_penalty": settings.repetition_penalty},
        # The prompt style goes to the loader with the metadata (lm-eval passes both to it; a key in both
        # dataset_kwargs and --metadata would be a duplicate argument, one in metadata is overridden).
        "metadata": {"version": 1.0, "condition": item.name, "description": item.label,
                     "prompt_style": settings.prompt},
    }
    if item.steer_template:
        config["dataset_kwargs"] = {"steer_template": item.steer_template}
        if item.diagonal_template:
            config["dataset_kwargs"]["steer_template_diagonal"] = item.diagonal_template
    return config


def write_task_configs(settings: ForcingSettings, folder: Path) -> list[Path]:
    """``lape_forcing_grid_<condition>.yaml`` for each condition, into ``folder`` (lm-eval's --include_path)."""
    import yaml

    from lape_eval.files import atomic_path

    paths = []
    for name in settings.conditions:
        item = condition(name)
        path = folder / f"{item.task}.yaml"
        with atomic_path(path) as tmp:
            tmp.write_text("# Generated by lape-eval experiment forcing; the run's record of its task.\n"
                           + yaml.safe_dump(task_config(settings, item), sort_keys=False, allow_unicode=True),
                           encoding="utf-8")
        paths.append(path)
    return paths


def model_args(settings: ForcingSettings, run: PlannedRun) -> dict:
    args = {"pretrained": settings.model, "dtype": settings.dtype}
    if run.neuron_set is not None:
        args.update(neurons=run.neuron_set, steer="doc", method=run.method, alpha=settings.alpha,
                    deactivate_value=settings.deactivate_value, positions=settings.positions)
        if settings.language_alphas:
            args["language_alphas"] = settings.language_alphas
    return args


def lm_eval_arguments(settings: ForcingSettings, run: PlannedRun, out: Path, questions_file: Path) -> list[str]:
    """``lape-eval run`` arguments of one planned run (what ``lm_eval`` gets)."""
    for key, value in model_args(settings, run).items():
        if any(ch in str(value) for ch in ",={}"):
            raise LapeEvalError(f"The model argument {key}={value!r} holds ',', '=' or braces, which lm-eval's "
                                "--model_args cannot carry; rename or move the file.")
    metadata = {"languages": ",".join(settings.languages), "forcing_questions": str(questions_file.resolve()),
                "prompt_style": settings.prompt}
    argv = ["--model", "lape", "--model_args", ",".join(f"{k}={v}" for k, v in model_args(settings, run).items()),
            "--tasks", ",".join(condition(name).task for name in run.conditions),
            "--include_path", str((out / "tasks").resolve()), "--metadata", json.dumps(metadata, ensure_ascii=False),
            "--device", settings.device, "--batch_size", str(settings.batch_size), "--log_samples",
            "--output_path", str((out / "runs" / run.name).resolve())]
    if settings.apply_chat_template:
        argv.append("--apply_chat_template")
    if settings.limit:
        argv += ["--limit", str(settings.limit)]
    return argv


def lid_environment(settings: ForcingSettings) -> dict[str, str]:
    """The environment that makes the runs' metric use the chosen language identifier."""
    env = {BACKEND_ENV: settings.lid}
    if settings.lid_model:
        env[MODEL_ENV] = settings.lid_model
    return env


def lape_eval_command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "lape_eval", "run", *argv]


def run_environment(settings: ForcingSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(MODEL_ENV, None)
    env.update(lid_environment(settings))
    return env
