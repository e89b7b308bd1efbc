"""Steering settings chosen on calibration prompts (never on the prompts a result is reported on).

Language forcing needs different strengths per target: on Gemma-3-270M, Russian and Chinese
collapse into repeated symbols at α ≥ 1 while Latin-script targets need α ≈ 1. :func:`calibrate`
asks the model the calibration questions (``lape_eval/data/calibration_questions.jsonl``, disjoint
from the forcing task's questions) in several source languages and steers "-source +target" under
every candidate setting: neuron set × method × positions × α. A *success* is a non-degenerate answer
that language identification assigns to the target (the forcing task's own guard and LID).

Selection: per setting, each target keeps its best α (ties: the smallest, the gentlest edit); the
setting with the highest mean of those per-target rates wins. The result is a JSON file that the
``lape`` model reads as ``language_alphas=FILE``, and that ``lape-eval demo`` also reads the chosen
set, method and positions from.

All (source, target, question) prompts of one setting and α are generated together, several
steer specs per batch (one per row), so a sweep fills whole batches.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path

import torch

from lape_eval.files import write_json
from lape_eval.errors import LapeEvalError
from lape_eval.steering.spec import parse_steer
from lape_eval.steering.hooks import steer
from lape_eval.evaluation.metrics import is_degenerate, output_language

FORCING_PROMPT = "Q: {question} \nA:"
STOPS = ("\nQ:", "\nA:")


@cache
def calibration_questions() -> dict[str, list[str]]:
    """``{lang: [question, ...]}``, parallel across the 21 languages."""
    text = (files("lape_eval") / "data" / "calibration_questions.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {lang: [row[lang] for row in rows] for lang in rows[0] if lang != "id"}


def generate_answers(model, tokenizer, questions: list[str], *, neuron_set=None, specs: list | None = None,
                     max_new_tokens: int = 32, repetition_penalty: float = 1.1, batch_size: int = 8,
                     progress=None) -> list[str]:
    """Greedy answers to ``"Q: {question} \\nA:"`` prompts, cut at the forcing task's stop strings.

    With ``neuron_set`` and ``specs`` (one steer spec per question), each answer is generated under
    its own spec; batches mix specs.
    """
    if specs is not None and len(specs) != len(questions):
        raise ValueError("generate_answers needs one spec per question")
    answers = []
    device = next(model.parameters()).device
    for start in range(0, len(questions), batch_size):
        prompts = [FORCING_PROMPT.format(question=q) for q in questions[start:start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(device)
        steering = steer(model, neuron_set, specs[start:start + batch_size]) if specs is not None else contextlib.nullcontext()
        with torch.no_grad(), steering:
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    repetition_penalty=repetition_penalty, pad_token_id=tokenizer.pad_token_id)
        for text in tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True):
            for stop in STOPS:
                text = text.split(stop)[0]
            answers.append(text.strip())
        if progress is not None:
            progress.update(len(prompts))
    return answers


def forced(answer: str, target: str) -> bool:
    """A success: a non-degenerate answer that the language identifier assigns to ``target``."""
    return not is_degenerate(answer) and output_language(answer) == target


@dataclass(frozen=True)
class Setting:
    """One point of the sweep apart from α."""

    neuron_set: str
    method: str = "add"
    positions: str = "all"

    @property
    def key(self) -> str:
        return f"{self.neuron_set} method={self.method} positions={self.positions}"


@dataclass
class Calibration:
    settings: list[Setting]
    sources: list[str]
    targets: list[str]
    alphas_tried: list[float]
    questions_per_source: int
    rates: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # setting key -> target -> α -> %
    chosen: Setting | None = None
    content_hash: str = ""  # of the chosen setting's neuron set
    best: dict[str, float] = field(default_factory=dict)  # target -> chosen α (for the chosen setting)

    def score(self, setting: Setting) -> float:
        """Mean over targets of each target's best rate under ``setting``."""
        by_target = self.rates[setting.key]
        return sum(max(by_alpha.values()) for by_alpha in by_target.values()) / max(len(by_target), 1)

    def choose(self) -> None:
        # Highest score; on ties the setting listed first (the caller lists the default first).
        self.chosen = max(self.settings, key=lambda s: (self.score(s), -self.settings.index(s)))
        self.best = {target: best_alpha(by_alpha) for target, by_alpha in self.rates[self.chosen.key].items()}

    def to_json(self) -> dict:
        chosen = asdict(self.chosen) if self.chosen else None
        return {"language_alphas": self.best, "chosen": chosen, "content_hash": self.content_hash,
                "calibration_rate": self.score(self.chosen) if self.chosen else None,
                "sources": self.sources, "targets": self.targets, "alphas_tried": self.alphas_tried,
                "questions_per_source": self.questions_per_source,
                "settings": [{**asdict(s), "score": self.score(s)} for s in self.settings], "rates": self.rates}


def _resume(checkpoint: Path | None, identity: dict) -> dict:
    """The rates a previous, interrupted run of the same sweep measured (else nothing)."""
    if checkpoint is None or not Path(checkpoint).exists():
        return {}
    try:
        saved = json.loads(Path(checkpoint).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return saved.get("rates", {}) if saved.get("identity") == identity else {}


def best_alpha(rates_by_alpha: dict[str, float]) -> float:
    """The α with the highest success rate; on ties the smallest (the gentlest intervention)."""
    return min((-rate, float(alpha)) for alpha, rate in rates_by_alpha.items())[1]


def calibrate(model, tokenizer, neuron_sets: dict, *, targets: list[str], sources: list[str], alphas: list[float],
              methods: list[str] = ("add",), positions: list[str] = ("all",), questions_per_source: int | None = None,
              max_new_tokens: int = 32, batch_size: int = 32, progress: bool = True,
              checkpoint: Path | None = None) -> Calibration:
    """Sweep ``neuron_sets`` (``{name: NeuronSet}``) × methods × positions × alphas; see the module doc.

    With ``checkpoint``, the rates are saved there after every (setting, α), and a re-run of the same
    sweep (same sets, languages, questions and answer length) continues from them.
    """
    from tqdm.auto import tqdm

    questions = calibration_questions()
    missing = [lang for lang in {*targets, *sources} if lang not in questions]
    if missing:
        raise LapeEvalError(f"No calibration questions in {', '.join(sorted(missing))}: calibrate with languages "
                            f"among {', '.join(questions)}.")
    count = len(questions[sources[0]][:questions_per_source])
    prompts = [(source, target, question) for target in targets for source in sources if source != target
               for question in questions[source][:questions_per_source]]
    if not prompts:
        raise LapeEvalError("Calibration needs at least one source language different from a target.")
    settings = [Setting(name, method, where) for name, method, where in itertools.product(neuron_sets, methods, positions)]
    result = Calibration(settings, list(sources), list(targets), list(alphas), count)
    identity = {"sets": {name: ns.content_hash for name, ns in neuron_sets.items()}, "targets": list(targets),
                "sources": list(sources), "questions": count, "max_new_tokens": max_new_tokens,
                "model": getattr(getattr(model, "config", None), "name_or_path", "")}
    result.rates = _resume(checkpoint, identity)
    bar = tqdm(total=len(settings) * len(alphas) * len(prompts), desc="calibrate", unit="answer", disable=not progress)
    for setting in settings:
        neuron_set = neuron_sets[setting.neuron_set]
        for alpha in alphas:
            if all(f"{alpha:g}" in result.rates.get(setting.key, {}).get(target, {}) for target in targets):
                bar.update(len(prompts))  # measured before an interruption
                continue
            specs = [parse_steer(f"-{source} +{target}", method=setting.method, alpha=alpha, positions=setting.positions)
                     for source, target, _ in prompts]
            answers = generate_answers(model, tokenizer, [q for _, _, q in prompts], neuron_set=neuron_set, specs=specs,
                                       max_new_tokens=max_new_tokens, batch_size=batch_size, progress=bar)
            for target in targets:
                hits = [forced(answer, target) for (_, t, _), answer in zip(prompts, answers) if t == target]
                rate = 100.0 * sum(hits) / max(len(hits), 1)
                result.rates.setdefault(setting.key, {}).setdefault(target, {})[f"{alpha:g}"] = rate
            if checkpoint is not None:
                write_json(checkpoint, {"identity": identity, "rates": result.rates})
    bar.close()
    result.rates = {s.key: {t: {f"{a:g}": result.rates[s.key][t][f"{a:g}"] for a in alphas} for t in targets}
                    for s in settings}  # only this sweep's cells, in its order (a checkpoint may hold more)
    result.choose()
    result.content_hash = neuron_sets[result.chosen.neuron_set].content_hash
    return result
