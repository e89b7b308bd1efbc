"""The fallback experiment with the paper's protocol (method spec §6.6; reference: ``src/fallbacks.py``
of ``d-gurgurov/Language-Neurons-Manipulation`` and its script ``2.1-fallback.sh``).

English questions (the 70 Vicuna questions, :mod:`lape_eval.experiments.vicuna`) are asked as
``"Q: " + question + "A: "`` (no separator: the reference's format, byte for byte) while the neurons of
more and more languages are deactivated: en; en+fr; en+fr+es; ... adding it, pt, ru, de, ar, zh, ko,
ja (11 conditions). At every layer the union of the languages' neurons is deactivated at the
activation point g (:mod:`lape_eval.arch`), at every position, in the prompt and in every generated
token; nothing is activated. The answers are greedy (repetition penalty 1.1), at most 128 new tokens,
cut at ``"\\nQ:"`` / ``"\\nA:"``; each answer's lid.176 label is counted, and the study reports per
condition the label distribution and the most frequent label: the language the model falls back to.

The deactivation variants are the reference's ``--deactivation_method`` choices, on the union's
neurons j (per token; the paper's script uses ``negative`` with c = -1.5):

=========  =====================================================================
negative   g_j <- c                                  (c: ``value``, default -1.5)
zero       g_j <- 0                                  (Tang et al.)
mean       g_j <- mean of g over all the layer's neurons at that token (before the edit)
random     g_j <- N(0, 0.1^2)
mask       g_j <- -0.1 * g_j
noise      g_j <- g_j + N(0, 5^2)
invert     g_j <- -g_j
=========  =====================================================================

``random`` and ``noise`` draw from one generator per layer, seeded with ``seed + layer`` when the
deactivation starts, so a run is reproducible.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lape_eval.arch import resolve
from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.calibration_sweep import generate_answers
from lape_eval.evaluation.forcing import REPETITION_PENALTY, STOP_STRINGS
from lape_eval.evaluation.lid import get_identifier
from lape_eval.experiments.vicuna import Questions
from lape_eval.files import atomic_path, write_json
from lape_eval.reports.fallback import DEFAULT_ORDER, FallbackStudy, parse_order, study_from_counts

REFERENCE_ORDER = DEFAULT_ORDER  # en fr es it pt ru de ar zh ko ja (high_resource_languages in fallbacks.py)
DEACTIVATE_VALUE = -1.5  # 2.1-fallback.sh (the argparse default of fallbacks.py is -1.0)
MAX_NEW_TOKENS = 128
DEFAULT_VARIANT = "negative"
VARIANTS = ("negative", "zero", "mean", "random", "mask", "noise", "invert")
DEFAULT_LID = "fasttext"  # lid.176


def fallback_prompt(question: str) -> str:
    """The reference's prompt: ``"Q: " + question + "A: "`` (no newline between question and answer)."""
    return "Q: " + question + "A: "


def cumulative_conditions(order: list[str]) -> list[list[str]]:
    """The deactivated languages per condition: the first 1, 2, ..., all languages of ``order``."""
    return [list(order[:k]) for k in range(1, len(order) + 1)]


def union_per_layer(neuron_set, languages: list[str]) -> list[torch.Tensor]:
    """Per layer, the sorted union of the neuron indices of ``languages`` in ``neuron_set``."""
    missing = [lang for lang in languages if lang not in neuron_set.languages]
    if missing:
        raise LapeEvalError(
            f"The neuron set has no neurons for {', '.join(missing)}; it covers {', '.join(neuron_set.languages)}. "
            "Use a set identified with every language of the order, or pass an --order of languages it covers."
        )
    per_language = [neuron_set.indices(lang) for lang in languages]
    empty = torch.zeros(0, dtype=torch.int64)
    return [torch.unique(torch.cat([indices[layer] for indices in per_language] or [empty]))
            for layer in range(neuron_set.num_layers)]


def deactivated_values(g: torch.Tensor, index: torch.Tensor, variant: str, value: float,
                       generator: torch.Generator | None) -> torch.Tensor:
    """``g`` (``[..., neurons]``) with the neurons ``index`` deactivated by ``variant`` (a new tensor)."""
    out = g.clone()
    selected = g[..., index]
    if variant == "negative":
        new = torch.full_like(selected, value)
    elif variant == "zero":
        new = torch.zeros_like(selected)
    elif variant == "mean":
        new = g.mean(dim=-1, keepdim=True).expand_as(selected)
    elif variant == "random":
        new = _normal(selected, generator) * 0.1
    elif variant == "mask":
        new = selected * -0.1
    elif variant == "noise":
        new = selected + _normal(selected, generator) * 5.0
    elif variant == "invert":
        new = -selected
    else:
        raise LapeEvalError(f"Unknown deactivation variant {variant!r}: choose one of {', '.join(VARIANTS)}.")
    out[..., index] = new
    return out


def _normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=torch.float32).to(like.dtype)


@contextlib.contextmanager
def deactivate(model, indices_per_layer: list[torch.Tensor], variant: str = DEFAULT_VARIANT,
               value: float = DEACTIVATE_VALUE, seed: int = 0):
    """Deactivate ``indices_per_layer[layer]`` of every layer of ``model`` with ``variant`` inside the block."""
    if variant not in VARIANTS:
        raise LapeEvalError(f"Unknown deactivation variant {variant!r}: choose one of {', '.join(VARIANTS)}.")
    sites = resolve(model)
    if len(indices_per_layer) != sites.num_layers:
        raise LapeEvalError(f"The deactivation names {len(indices_per_layer)} layers; the model has "
                            f"{sites.num_layers}. Use a neuron set made for this model.")
    handles = []

    def hook_for(layer: int, index: torch.Tensor):
        placed: dict = {}
        generators: dict = {}

        def edit(module, args, output):
            device = output.device
            if device not in placed:
                placed[device] = index.to(device)
                if variant in ("random", "noise"):
                    generators[device] = torch.Generator(device=device).manual_seed(seed + layer)
            return deactivated_values(output, placed[device], variant, value, generators.get(device))

        return edit

    try:
        for layer, index in enumerate(indices_per_layer):
            if index.numel():
                handles.append(sites.activations[layer].register_forward_hook(hook_for(layer, index.long())))
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class FallbackSettings:
    order: list[str] = field(default_factory=lambda: list(REFERENCE_ORDER))
    variant: str = DEFAULT_VARIANT
    value: float = DEACTIVATE_VALUE
    max_new_tokens: int = MAX_NEW_TOKENS
    repetition_penalty: float = REPETITION_PENALTY
    baseline: bool = False  # also step 0 (nothing deactivated); the reference has no such condition
    seed: int = 0
    lid: str = DEFAULT_LID
    batch_size: int = 8

    def __post_init__(self):
        self.order = parse_order(self.order)
        if self.variant not in VARIANTS:
            raise LapeEvalError(f"Unknown deactivation variant {self.variant!r}: choose one of {', '.join(VARIANTS)}.")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise LapeEvalError("max_new_tokens and batch_size must be at least 1.")


@dataclass
class FallbackResult:
    study: FallbackStudy
    falls_back_to: dict[int, tuple[str, int]]  # step -> (most frequent label, its count)
    files: dict[str, Path]


def step_file(out: Path, step: int) -> Path:
    return out / "answers" / f"step-{step:02d}.jsonl"


def run_fallback(model, tokenizer, neuron_set, questions: Questions, out: Path | str,
                 settings: FallbackSettings | None = None, *, model_name: str = "", neuron_set_name: str = "",
                 progress: bool = True, identifier=None) -> FallbackResult:
    """Generate, label and count the answers of every condition; write them, the table and the figure
    under ``out``. Steps whose answer file is complete are read back instead of generated again."""
    settings = settings or FallbackSettings()
    out = Path(out)
    neuron_set.check_model(resolve(model))
    identifier = identifier or get_identifier(settings.lid)
    conditions = ([[]] if settings.baseline else []) + cumulative_conditions(settings.order)
    union_per_layer(neuron_set, settings.order)  # every language of the order known, before any generation
    recorded = {"protocol": "method spec §6.6 (src/fallbacks.py, 2.1-fallback.sh)", "model": model_name,
                "neuron_set": neuron_set_name, "neuron_set_hash": neuron_set.content_hash, "prompt": "'Q: ' + question + 'A: '",
                "stop_strings": list(STOP_STRINGS), "questions": questions.describe(),
                "lid": identifier.describe(), **asdict(settings)}
    _check_same_settings(out / "settings.json", recorded)
    write_json(out / "settings.json", recorded)
    bar = _progress_bar(len(conditions) * len(questions.questions), progress)
    counted = []
    try:
        for languages in conditions:
            step = len(languages)
            rows = _read_step(step_file(out, step), questions.questions)
            if rows is None:
                with deactivate(model, union_per_layer(neuron_set, languages), settings.variant, settings.value,
                                settings.seed):
                    answers = generate_answers(model, tokenizer, questions.questions,
                                               max_new_tokens=settings.max_new_tokens,
                                               repetition_penalty=settings.repetition_penalty,
                                               batch_size=settings.batch_size, progress=bar,
                                               prompt_of=fallback_prompt)
                labels = identifier.predict(answers)
                rows = [{"question": q, "prompt": fallback_prompt(q), "answer": a, "label": label}
                        for q, a, label in zip(questions.questions, answers, labels)]
                _write_step(step_file(out, step), rows)
            elif bar is not None:
                bar.update(len(rows))
            counted.append((step, Counter(row["label"] for row in rows), None))
    finally:
        if bar is not None:
            bar.close()
    prompts = f"{len(questions.questions)} English questions, 'Q: …A: '"
    description = (f"{prompts}\n{model_name or 'model'} · {recorded['neuron_set'] or 'neuron set'} · "
                   f"{settings.variant}" + (f" c = {settings.value:g}" if settings.variant == "negative" else ""))
    study = study_from_counts(settings.order, counted, description, f"{identifier.spec} (lid.176 labels)"
                              if identifier.spec == "fasttext" else identifier.spec, min_share=0.0)
    falls_back_to = {step: counts.most_common(1)[0] for step, counts, _ in counted if counts}
    return FallbackResult(study, falls_back_to, _write_reports(out, study, falls_back_to))


def _check_same_settings(path: Path, recorded: dict) -> None:
    if not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    keys = ("model", "neuron_set_hash", "questions", "variant", "value", "max_new_tokens", "repetition_penalty",
            "seed", "lid", "order")
    changed = [key for key in keys if before.get(key) != json.loads(json.dumps(recorded.get(key)))]
    if changed:
        raise LapeEvalError(
            f"{path.parent} holds a fallback run with other settings ({', '.join(changed)} differ), so its answers "
            "cannot be reused. Give another --out folder, or delete that one to start again."
        )


def _read_step(path: Path, questions: list[str]) -> list[dict] | None:
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if [row.get("question") for row in rows] != questions:
        return None  # incomplete or other questions: generate again
    return rows


def _write_step(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def _write_reports(out: Path, study: FallbackStudy, falls_back_to: dict) -> dict[str, Path]:
    from lape_eval.reports.fallback import study_table
    from lape_eval.reports.plots import fallback_figure, save_figure
    from lape_eval.reports.render import render

    table = study_table(study)
    files = {"table": out / "fallback.md", "csv": out / "fallback.csv", "figure": out / "fallback.png",
             "summary": out / "summary.json"}
    lines = ["# Fallback (method spec §6.6)", "", render(table, "markdown").rstrip(), "", "Falls back to:", ""]
    for step in study.steps:
        label, count = falls_back_to.get(step.number, ("-", 0))
        lines.append(f"- step {step.number} (deactivated: {' '.join(step.deactivated) or 'none'}): "
                     f"**{label}** ({count}/{step.total})")
    with atomic_path(files["table"]) as temporary:
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with atomic_path(files["csv"]) as temporary:
        temporary.write_text(render(table, "csv"), encoding="utf-8")
    save_figure(fallback_figure(study), files["figure"])
    write_json(files["summary"], {"steps": [
        {"step": s.number, "deactivated": s.deactivated, "outputs": s.total, "distribution": dict(s.counts),
         "falls_back_to": falls_back_to.get(s.number, (None, 0))[0]} for s in study.steps]})
    return files


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fallback answers", unit="answer")

