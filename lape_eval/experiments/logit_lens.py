"""The logit-lens analysis (method spec §6.7; reference: ``src/logit_lens.py`` of
``d-gurgurov/Language-Neurons-Manipulation``).

For each forcing prompt of a language (``"Q: {question} \\nA:"``, :mod:`lape_eval.evaluation.forcing`),
the hidden state at the last position after every decoder layer is sent through what the model
applies after its last layer (:func:`final_head`: the final norm and the LM head, and for Gemma-2/3 the
logit soft-capping, for Cohere the logit scale); of the softmax the top-5 next tokens are decoded, each
is language-identified (lid.176 by default), and their probabilities are summed per language. Per
layer the mass on the prompt's language and on English is averaged over the prompts. Under a steer
spec the same is done with the spec applied, which shows at which layer steering takes hold.

The hidden states are taken from the decoder layers' outputs (forward hooks), not from
``output_hidden_states``, whose last entry transformers already normalises: the reference applies the
final norm to it a second time (method spec §10, pitfall 19). Here the last layer's lens is exactly
the model's own next-token distribution.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from lape_eval.arch import resolve, unwrap_model
from lape_eval.errors import LapeEvalError
from lape_eval.evaluation.forcing import forcing_prompt

TOP_K = 5
ENGLISH = "en"

# What each family applies after its last decoder layer, besides the LM head: the final norm's name
# (next to the decoder layers), and the config fields of a logit soft-cap or scale.
_FINAL_NORM = {"gpt2": "ln_f"}
_LENS_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gemma3", "cohere",
                  "cohere2", "olmo", "olmo2", "olmo3", "phi3", "gpt2")


@dataclass
class FinalHead:
    """hidden state after the last layer -> logits, as the model computes them."""

    norm: torch.nn.Module
    lm_head: torch.nn.Module
    softcap: float | None = None  # logits <- softcap * tanh(logits / softcap)   (Gemma-2, Gemma-3)
    scale: float | None = None  # logits <- scale * logits                      (Cohere)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(self.norm(hidden))
        if self.scale is not None:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def final_head(model) -> FinalHead:
    """The final norm, LM head and logit post-processing of ``model``; families whose post-processing
    lape-eval has not checked are refused."""
    sites = resolve(model)
    hf_model = unwrap_model(model)
    if sites.model_type not in _LENS_FAMILIES:
        raise LapeEvalError(
            f"The logit lens does not know what a {sites.family.name} model ({sites.model_type}) applies after its "
            "last layer (final norm, soft-capping, scaling), so its per-layer probabilities could be wrong. Supported: "
            f"{', '.join(_LENS_FAMILIES)}."
        )
    parent_path, _, _ = sites.layer_path.rpartition(".")
    parent = hf_model.get_submodule(parent_path) if parent_path else hf_model
    norm = getattr(parent, _FINAL_NORM.get(sites.model_type, "norm"), None)
    lm_head = hf_model.get_output_embeddings()
    if norm is None or lm_head is None:
        raise LapeEvalError(f"Could not find the final norm or the LM head of this {sites.family.name} model "
                            f"(under {parent_path or 'the model'}); the logit lens needs both.")
    config = getattr(hf_model.config, "text_config", None) or hf_model.config
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None) if sites.model_type in ("cohere", "cohere2") else None
    return FinalHead(norm, lm_head, float(softcap) if softcap else None, None if scale is None else float(scale))


@contextlib.contextmanager
def _last_position_outputs(sites, store: list):
    def record(module, args, output):
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        store.append(hidden[:, -1, :].detach())

    handles = [layer.register_forward_hook(record) for layer in sites.layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def layer_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[layers, vocab]``: the lens logits after every decoder layer at the last position of a one-row batch."""
    if input_ids.shape[0] != 1:
        raise ValueError("layer_logits takes one prompt at a time")
    sites, head = resolve(model), final_head(model)
    hidden: list[torch.Tensor] = []
    with torch.no_grad(), _last_position_outputs(sites, hidden):
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        if len(hidden) != sites.num_layers:
            raise LapeEvalError(f"Expected one output per decoder layer ({sites.num_layers}), got {len(hidden)}.")
        return torch.cat([head(h) for h in hidden], dim=0).float()


@dataclass
class LayerTop:
    layer: int  # 1-based: the output of decoder layer `layer`
    token_ids: list[int]
    tokens: list[str]
    probabilities: list[float]
    labels: list[str]

    def mass(self, language: str) -> float:
        return sum(p for p, label in zip(self.probabilities, self.labels) if label == language)


def top_tokens(logits: torch.Tensor, tokenizer, identifier, top_k: int = TOP_K) -> list[LayerTop]:
    """Per layer, the top-k next tokens of softmax(logits), decoded one by one and language-identified."""
    probabilities, ids = torch.topk(torch.softmax(logits.float(), dim=-1), top_k, dim=-1)
    tokens = [[tokenizer.decode([int(i)]) for i in row] for row in ids]
    labels = iter(identifier.predict([token.replace("\n", " ").strip() for row in tokens for token in row]))
    return [LayerTop(layer + 1, [int(i) for i in ids[layer]], tokens[layer], probabilities[layer].tolist(),
                     [next(labels) for _ in tokens[layer]]) for layer in range(len(tokens))]


@dataclass
class LensRow:
    condition: str
    language: str
    layer: int
    prompt_language_mass: float
    english_mass: float
    prompts: int


def run_logit_lens(model, tokenizer, prompts_by_language: dict[str, list[str]], identifier, *,
                   conditions: dict[str, object] | None = None, top_k: int = TOP_K, progress: bool = True,
                   tokens_file: Path | None = None) -> list[LensRow]:
    """Averaged masses per (condition, language, layer). ``conditions``: name -> a context-manager factory
    (``lambda: steer(model, ns, spec)``); default: the unsteered model only. ``tokens_file``: the per-prompt
    top tokens, their labels and probabilities, as JSON lines."""
    conditions = conditions or {"none": contextlib.nullcontext}
    device = next(unwrap_model(model).parameters()).device
    total = len(conditions) * sum(len(p) for p in prompts_by_language.values())
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="logit lens", unit="prompt")
    sums: dict = defaultdict(lambda: [0.0, 0.0, 0])
    records = []
    try:
        for condition, make_context in conditions.items():
            with make_context():
                for language, prompts in prompts_by_language.items():
                    for prompt in prompts:
                        batch = tokenizer(prompt, return_tensors="pt").to(device)
                        tops = top_tokens(layer_logits(model, batch["input_ids"], batch.get("attention_mask")),
                                          tokenizer, identifier, top_k)
                        for top in tops:
                            entry = sums[(condition, language, top.layer)]
                            entry[0] += top.mass(language)
                            entry[1] += top.mass(ENGLISH)
                            entry[2] += 1
                            records.append({"condition": condition, "language": language, "prompt": prompt,
                                            "layer": top.layer, "tokens": top.tokens, "labels": top.labels,
                                            "probabilities": top.probabilities})
                        if bar is not None:
                            bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if tokens_file is not None:
        from lape_eval.files import atomic_path

        with atomic_path(tokens_file) as temporary:
            temporary.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return [LensRow(condition, language, layer, p / n, e / n, n)
            for (condition, language, layer), (p, e, n) in sums.items()]


def forcing_prompts(languages: list[str], paper_only: bool = True) -> dict[str, list[str]]:
    """The forcing prompts of each language (the paper's six questions, or all bundled ones)."""
    from lape_eval.evaluation.data import forcing_questions

    rows = [row for row in forcing_questions() if row.get("paper") or not paper_only]
    missing = [lang for lang in languages if not any(row.get(lang) for row in rows)]
    if missing:
        raise LapeEvalError(f"The bundled forcing questions have no {', '.join(missing)} version; choose among the "
                            "paper's 21 languages.")
    return {lang: [forcing_prompt(row[lang]) for row in rows if row.get(lang)] for lang in languages}


def rows_csv(rows: list[LensRow]) -> str:
    lines = ["condition,language,layer,prompt_language_mass,english_mass,prompts"]
    for r in rows:
        lines.append(f"{_csv_cell(r.condition)},{r.language},{r.layer},{r.prompt_language_mass!r},"
                     f"{r.english_mass!r},{r.prompts}")
    return "\n".join(lines) + "\n"


def _csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def write_logit_lens(model, tokenizer, languages: list[str], identifier, out: Path, *, neuron_set=None,
                     specs: list | None = None, paper_only: bool = True, top_k: int = TOP_K, model_name: str = "",
                     progress: bool = True) -> dict[str, Path]:
    """Run the lens on the forcing prompts of ``languages`` (unsteered, then under each spec) and write
    ``logit_lens.csv``, ``logit_lens.png``, ``tokens.jsonl`` and ``settings.json`` under ``out``."""
    from lape_eval.files import atomic_path, write_json
    from lape_eval.reports.plots import logit_lens_figure, save_figure
    from lape_eval.steering.hooks import steer

    final_head(model)  # refuse an unknown family before anything runs
    conditions: dict[str, object] = {"none": contextlib.nullcontext}
    for spec in specs or []:
        conditions[str(spec)] = (lambda spec=spec: steer(model, neuron_set, spec))
    out = Path(out)
    files = {"csv": out / "logit_lens.csv", "figure": out / "logit_lens.png", "tokens": out / "tokens.jsonl",
             "settings": out / "settings.json"}
    rows = run_logit_lens(model, tokenizer, forcing_prompts(languages, paper_only), identifier,
                          conditions=conditions, top_k=top_k, progress=progress, tokens_file=files["tokens"])
    with atomic_path(files["csv"]) as temporary:
        temporary.write_text(rows_csv(rows), encoding="utf-8")
    save_figure(logit_lens_figure(rows, title=f"Logit lens · {model_name or 'model'} · top-{top_k} tokens"),
                files["figure"])
    write_json(files["settings"], {"protocol": "method spec §6.7 (src/logit_lens.py)", "model": model_name,
                                   "languages": languages, "paper_questions_only": paper_only, "top_k": top_k,
                                   "lid": identifier.describe(),
                                   "conditions": [spec.describe() for spec in specs or []],
                                   "neuron_set_hash": neuron_set.content_hash if neuron_set is not None else None})
    return files
