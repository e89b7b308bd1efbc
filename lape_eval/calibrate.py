"""Per-language steering strengths, chosen on calibration prompts (never on the reported ones).

Language forcing needs different strengths per target: on Gemma-3-270M, Russian and Chinese
collapse into repeated symbols at α ≥ 1 while Latin-script targets need α ≈ 1. :func:`calibrate`
asks the model the calibration questions (``lape_eval/data/calibration_questions.jsonl``, disjoint
from the forcing task's questions) in several source languages, steers "-source +target" with each
candidate α, and keeps, per target, the α with the highest rate of non-degenerate answers in the
target language (language ID + the forcing task's degeneracy guard). The result is a JSON file that
the ``lape`` model reads as ``language_alphas=FILE``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib.resources import files

import torch

from .errors import LapeEvalError
from .steering import steer
from .task_metrics import is_degenerate, output_language

FORCING_PROMPT = "Q: {question} \nA:"
STOPS = ("\nQ:", "\nA:")


@cache
def calibration_questions() -> dict[str, list[str]]:
    """``{lang: [question, ...]}``, parallel across the 21 languages."""
    text = (files("lape_eval") / "data" / "calibration_questions.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {lang: [row[lang] for row in rows] for lang in rows[0] if lang != "id"}


def generate_answers(model, tokenizer, questions: list[str], *, max_new_tokens: int = 32,
                     repetition_penalty: float = 1.1, batch_size: int = 8) -> list[str]:
    """Greedy answers to ``"Q: {question} \\nA:"`` prompts, cut at the forcing task's stop strings."""
    answers = []
    device = next(model.parameters()).device
    for start in range(0, len(questions), batch_size):
        prompts = [FORCING_PROMPT.format(question=q) for q in questions[start:start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(device)
        with torch.no_grad():
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    repetition_penalty=repetition_penalty, pad_token_id=tokenizer.pad_token_id)
        for text in tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True):
            for stop in STOPS:
                text = text.split(stop)[0]
            answers.append(text.strip())
    return answers


def forced(answer: str, target: str) -> bool:
    """A success: a non-degenerate answer that the language identifier assigns to ``target``."""
    return not is_degenerate(answer) and output_language(answer) == target


@dataclass
class Calibration:
    neuron_set: str
    content_hash: str
    method: str
    sources: list[str]
    alphas_tried: list[float]
    rates: dict[str, dict[str, float]] = field(default_factory=dict)  # target -> {alpha: success %}
    best: dict[str, float] = field(default_factory=dict)  # target -> chosen alpha

    def to_json(self) -> dict:
        return {"language_alphas": self.best, **asdict(self)}


def calibrate(model, tokenizer, neuron_set, *, targets: list[str], sources: list[str], alphas: list[float],
              neuron_set_name: str = "", method: str = "add", questions_per_source: int | None = None,
              max_new_tokens: int = 32, progress: bool = True) -> Calibration:
    from tqdm.auto import tqdm

    questions = calibration_questions()
    missing = [lang for lang in {*targets, *sources} if lang not in questions]
    if missing:
        raise LapeEvalError(f"No calibration questions in {', '.join(sorted(missing))}.")
    result = Calibration(neuron_set_name, neuron_set.content_hash, method, sources, list(alphas))
    runs = [(t, a) for t in targets for a in alphas]
    for target, alpha in tqdm(runs, desc="calibrate", disable=not progress):
        hits = total = 0
        for source in sources:
            if source == target:
                continue
            asked = questions[source][:questions_per_source]
            with steer(model, neuron_set, f"-{source} +{target}", method=method, alpha=alpha):
                answers = generate_answers(model, tokenizer, asked, max_new_tokens=max_new_tokens)
            hits += sum(forced(answer, target) for answer in answers)
            total += len(answers)
        result.rates.setdefault(target, {})[f"{alpha:g}"] = 100.0 * hits / max(total, 1)
    for target, by_alpha in result.rates.items():
        # Highest success; on ties the smallest α (the gentlest intervention).
        result.best[target] = min((-rate, float(alpha)) for alpha, rate in by_alpha.items())[1]
    return result
