"""Steering settings chosen on calibration prompts (never on the prompts a result is reported on).

Language forcing needs different strengths per target: on Gemma-3-270M, Russian and Chinese
collapse into repeated symbols at α ≥ 1 while Latin-script targets need α ≈ 1. :func:`sweep`
asks the model the calibration questions (``lape_eval/data/calibration_questions.jsonl``, disjoint
from the forcing task's questions) in several source languages under the forcing protocol
(:mod:`lape_eval.evaluation.forcing`) and steers "-source +target" under every candidate setting:
neuron set × method × positions × α, or — for residual DiffMean (``method=residual_diffmean``) — a
direction artifact × positions × decoder layer × α (the layer is chosen like a method). A *success* is a non-degenerate answer that language
identification assigns to the target (the forcing task's ``target_rate_clean``).

The selection rule and the file written are :mod:`lape_eval.steering.calibration`'s.
:func:`calibrate` is ``lape-eval calibrate``: it checks every input, then loads the model, sweeps,
and writes the file.

All (source, target, question) prompts of one setting and α are generated together, several
steer specs per batch (one per row), so a sweep fills whole batches.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.forcing import (
    REPETITION_PENALTY, SHORT_MAX_NEW_TOKENS, cut_at_stop_strings, forcing_prompt,
)
from lape_eval.evaluation.metrics import is_degenerate, output_language
from lape_eval.files import write_json
from lape_eval.languages import parse_languages
from lape_eval.models import default_device, load_model
from lape_eval.neurons.shipped import resolve_neuron_set
from lape_eval.resources import shipped_data_file
from lape_eval.steering.calibration import Calibration, Setting, write_calibration
from lape_eval.neurons.directions import ResidualDirections
from lape_eval.steering.hooks import compile_steer, steer
from lape_eval.steering.residual import steer_residual
from lape_eval.steering.spec import RESIDUAL_DIFFMEAN, parse_steer

# Methods a sweep over α can try: multiply has a β, not an α.
SWEEPABLE_METHODS = ("add", "diffmean", "replace")


@cache
def calibration_questions() -> dict[str, list[str]]:
    """``{lang: [question, ...]}``, parallel across the 21 languages."""
    text = shipped_data_file("calibration_questions.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {lang: [row[lang] for row in rows] for lang in rows[0] if lang != "id"}


def generate_answers(model, tokenizer, questions: list[str], *, neuron_set=None, specs: list | None = None,
                     layer: int | None = None, max_new_tokens: int = SHORT_MAX_NEW_TOKENS, repetition_penalty: float = REPETITION_PENALTY,
                     batch_size: int = 8, progress=None, prompt_of=forcing_prompt) -> list[str]:
    """Greedy answers to forcing prompts (``"Q: {question} \\nA:"``), cut at the forcing stop strings.

    ``prompt_of`` turns a question into the prompt (the fallback experiment's format differs).

    With ``neuron_set`` and ``specs`` (one steer spec per question), each answer is generated under
    its own spec; batches mix specs. With ``layer``, ``neuron_set`` is a residual direction artifact
    and the specs (method residual_diffmean) steer that decoder layer's output.
    """
    if specs is not None and len(specs) != len(questions):
        raise ValueError("generate_answers needs one spec per question")
    answers = []
    device = next(model.parameters()).device
    for start in range(0, len(questions), batch_size):
        prompts = [prompt_of(q) for q in questions[start:start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(device)
        steering = (contextlib.nullcontext() if specs is None
                    else steer(model, neuron_set, specs[start:start + batch_size]) if layer is None
                    else steer_residual(model, neuron_set, specs[start:start + batch_size], layer))
        with torch.no_grad(), steering:
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    repetition_penalty=repetition_penalty, pad_token_id=tokenizer.pad_token_id)
        for text in tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True):
            answers.append(cut_at_stop_strings(text).strip())
        if progress is not None:
            progress.update(len(prompts))
    return answers


def forced(answer: str, target: str) -> bool:
    """A success: a non-degenerate answer that the language identifier assigns to ``target``."""
    return not is_degenerate(answer) and output_language(answer) == target


# --- the sweep --------------------------------------------------------------------------------


def sweep(model, tokenizer, neuron_sets: dict, *, targets: list[str], sources: list[str], alphas: list[float],
          methods: list[str] = ("add",), positions: list[str] = ("all",), layers: list[int] = (),
          questions_per_source: int | None = None, max_new_tokens: int = SHORT_MAX_NEW_TOKENS, batch_size: int = 32,
          progress: bool = True, checkpoint: Path | None = None) -> Calibration:
    """Sweep ``neuron_sets`` (``{name: NeuronSet or ResidualDirections}``) × methods × positions × alphas; a
    direction artifact is swept with method residual_diffmean × positions × ``layers`` × alphas instead. See
    the module doc.

    With ``checkpoint``, the rates are saved there after every (setting, α), and a re-run of the same
    sweep (same sets, languages, questions and answer length) continues from them.
    """
    from tqdm.auto import tqdm

    prompts = calibration_prompts(targets, sources, questions_per_source)
    count = len(calibration_questions()[sources[0]][:questions_per_source])
    settings = []
    for name, steerer in neuron_sets.items():
        if isinstance(steerer, ResidualDirections):
            settings += [Setting(name, RESIDUAL_DIFFMEAN, where, layer)
                         for where, layer in itertools.product(positions, layers)]
        else:
            settings += [Setting(name, method, where) for method, where in itertools.product(methods, positions)]
    result = Calibration(settings, list(sources), list(targets), list(alphas), count)
    identity = {"sets": {name: ns.content_hash for name, ns in neuron_sets.items()}, "targets": list(targets),
                "sources": list(sources), "questions": count, "max_new_tokens": max_new_tokens,
                "model": getattr(getattr(model, "config", None), "name_or_path", "")}
    result.rates = _resume(checkpoint, identity)
    bar = tqdm(total=len(settings) * len(alphas) * len(prompts), desc="calibrate", unit="answer", disable=not progress)
    for setting in settings:
        for alpha in alphas:
            if all(f"{alpha:g}" in result.rates.get(setting.key, {}).get(target, {}) for target in targets):
                bar.update(len(prompts))  # measured before an interruption
                continue
            rates = _success_rates(model, tokenizer, neuron_sets[setting.neuron_set], setting, alpha, prompts,
                                   targets, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=bar)
            for target, rate in rates.items():
                result.rates.setdefault(setting.key, {}).setdefault(target, {})[f"{alpha:g}"] = rate
            if checkpoint is not None:
                write_json(checkpoint, {"identity": identity, "rates": result.rates})
    bar.close()
    result.rates = {s.key: {t: {f"{a:g}": result.rates[s.key][t][f"{a:g}"] for a in alphas} for t in targets}
                    for s in settings}  # only this sweep's cells, in its order (a checkpoint may hold more)
    result.choose()
    result.content_hash = neuron_sets[result.chosen.neuron_set].content_hash
    return result


def calibration_prompts(targets: list[str], sources: list[str],
                        questions_per_source: int | None = None) -> list[tuple[str, str, str]]:
    """Every (source, target, question) the sweep asks: each source's questions, for every other target."""
    questions = calibration_questions()
    missing = [lang for lang in sources if lang not in questions]  # a target needs no questions, only LID
    if missing:
        raise LapeEvalError(f"No calibration questions in {', '.join(sorted(missing))}: choose source languages "
                            f"(--sources) among {', '.join(questions)}; targets may be any language.")
    prompts = [(source, target, question) for target in targets for source in sources if source != target
               for question in questions[source][:questions_per_source]]
    if not prompts:
        raise LapeEvalError("Calibration needs at least one source language different from a target.")
    return prompts


def _success_rates(model, tokenizer, neuron_set, setting: Setting, alpha: float, prompts, targets: list[str],
                   **generation) -> dict:
    """``{target: success %}`` of one setting and α over every prompt (0 for a target without prompts)."""
    specs = [parse_steer(f"-{source} +{target}", method=setting.method, alpha=alpha, positions=setting.positions)
             for source, target, _ in prompts]
    answers = generate_answers(model, tokenizer, [q for _, _, q in prompts], neuron_set=neuron_set, specs=specs,
                               layer=setting.layer, **generation)
    hits_by_target: dict[str, list[bool]] = {target: [] for target in targets}
    for (_, target, _), answer in zip(prompts, answers):
        hits_by_target[target].append(forced(answer, target))
    return {target: 100.0 * sum(hits) / max(len(hits), 1) for target, hits in hits_by_target.items()}


def _resume(checkpoint: Path | None, identity: dict) -> dict:
    """The rates a previous, interrupted run of the same sweep measured (else nothing)."""
    if checkpoint is None or not Path(checkpoint).exists():
        return {}
    try:
        saved = json.loads(Path(checkpoint).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return saved.get("rates", {}) if saved.get("identity") == identity else {}


# --- lape-eval calibrate ----------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationPlan:
    """A checked ``lape-eval calibrate`` request: everything but the model."""

    neuron_sets: dict  # {name as given: NeuronSet or ResidualDirections}
    targets: list[str]
    sources: list[str]
    alphas: list[float]
    methods: list[str]
    positions: list[str]
    questions_per_source: int | None
    max_new_tokens: int
    out: Path
    layers: list[int] = field(default_factory=list)  # decoder layers swept for direction artifacts

    @property
    def checkpoint(self) -> Path:
        """Where an interrupted sweep's rates wait for the re-run."""
        return Path(f"{self.out}.partial.json")


def plan_calibration(neuron_sets: list[str], *, targets, sources, alphas: list[float], methods: list[str],
                     positions: list[str], questions_per_source: int | None, max_new_tokens: int,
                     out: Path | str, directions: list[str] = (), layers: list[int] = ()) -> CalibrationPlan:
    """Check every input of a calibration (before a model is loaded or a file written). ``directions``:
    residual direction artifacts to sweep over ``layers`` (method residual_diffmean) beside the neuron sets."""
    if not neuron_sets and not directions:
        raise LapeEvalError("Calibration needs at least one neuron set (--neurons FILE_OR_NAME[,...]) or direction "
                            "artifact (--directions FILE --layers N[,...]).")
    if directions and not layers:
        raise LapeEvalError("A direction artifact is swept over decoder layers: give them with --layers, "
                            "e.g. --layers 4,8,12.")
    if layers and not directions:
        raise LapeEvalError("--layers applies to direction artifacts (--directions FILE); the neuron methods steer "
                            "every layer the set covers. Leave --layers out or add --directions.")
    if not alphas:
        raise LapeEvalError("Calibration needs at least one candidate strength: --alphas 0.5,1,2.")
    _check_counts(questions_per_source, max_new_tokens)
    if Path(out).is_dir():
        raise LapeEvalError(f"--out {out} is a folder: name the calibration JSON to write, "
                            f"e.g. {Path(out) / 'calibration.json'}.")
    steerers = {name: resolve_neuron_set(name) for name in neuron_sets}
    for path in directions:
        if path in steerers:
            raise LapeEvalError(f"{path} is named both as a neuron set and as a direction artifact.")
        steerers[path] = ResidualDirections.load(path)
    plan = CalibrationPlan(steerers, parse_languages(targets), parse_languages(sources), [float(a) for a in alphas],
                           list(methods), list(positions), questions_per_source, max_new_tokens, Path(out),
                           list(dict.fromkeys(layers)))
    calibration_prompts(plan.targets, plan.sources, questions_per_source)  # languages with questions, some prompt
    for method in plan.methods if neuron_sets else []:
        if method not in SWEEPABLE_METHODS:
            parse_steer("", method=method)  # an unknown method: the spec parser's message lists them
            raise LapeEvalError(f"calibrate sweeps α: choose methods among {', '.join(SWEEPABLE_METHODS)} "
                                f"(got {method}, which has no α).")
    for method in (plan.methods if neuron_sets else []) + ([RESIDUAL_DIFFMEAN] if directions else []):
        for where, alpha in itertools.product(plan.positions, plan.alphas):
            parse_steer("", method=method, positions=where, alpha=alpha)
    _check_neuron_sets(plan)
    return plan


def _check_counts(questions_per_source: int | None, max_new_tokens: int) -> None:
    if questions_per_source is not None and questions_per_source < 1:
        raise LapeEvalError(f"--questions must be at least 1 (got {questions_per_source}); leave it out to ask all.")
    if max_new_tokens < 1:
        raise LapeEvalError(f"--max-new-tokens must be at least 1 (got {max_new_tokens}).")


def _check_neuron_sets(plan: CalibrationPlan) -> None:
    """Every set has neurons (and means) for every language the sweep deactivates or activates."""
    terms = " ".join([f"-{lang}" for lang in plan.sources] + [f"+{lang}" for lang in plan.targets])
    for name, neuron_set in plan.neuron_sets.items():
        if isinstance(neuron_set, ResidualDirections):
            for layer in plan.layers:
                neuron_set.check_layer(layer)
            for lang in dict.fromkeys(plan.sources + plan.targets):
                neuron_set.mean(lang, plan.layers[0])  # every language the sweep steers from or to
            continue
        for method in plan.methods:
            try:
                compile_steer(parse_steer(terms, method=method), neuron_set)
            except LapeEvalError as error:
                raise LapeEvalError(f"The neuron set {name} cannot steer this calibration: {error}") from None


def calibrate(model_name: str, neuron_sets: list[str], *, targets, sources, alphas: list[float],
              methods: list[str] = ("add",), positions: list[str] = ("all",), directions: list[str] = (),
              layers: list[int] = (), questions_per_source: int | None = None,
              max_new_tokens: int = SHORT_MAX_NEW_TOKENS, out: Path | str, revision: str | None = None,
              dtype: str = "float32", device: str | None = None, trust_remote_code: bool = False) -> Calibration:
    """``lape-eval calibrate``: check the inputs, load the model, sweep, write ``out``.

    An interrupted sweep resumes from ``OUT.partial.json`` (removed once ``out`` is written).
    """
    plan = plan_calibration(neuron_sets, targets=targets, sources=sources, alphas=alphas, methods=methods,
                            positions=positions, questions_per_source=questions_per_source,
                            max_new_tokens=max_new_tokens, out=out, directions=directions, layers=layers)
    loaded = load_model(model_name, dtype=dtype, device=device or default_device(), revision=revision,
                        trust_remote_code=trust_remote_code)
    result = sweep(loaded.model, loaded.tokenizer, plan.neuron_sets, targets=plan.targets, sources=plan.sources,
                   alphas=plan.alphas, methods=plan.methods, positions=plan.positions, layers=plan.layers,
                   questions_per_source=plan.questions_per_source, max_new_tokens=plan.max_new_tokens,
                   checkpoint=plan.checkpoint)
    result.model = model_name
    write_calibration(plan.out, result)
    plan.checkpoint.unlink(missing_ok=True)
    return result
