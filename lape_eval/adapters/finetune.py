"""Per-language adapters: language-subnetwork fine-tuning and its baselines (method spec §8).

``lape-eval finetune --method`` chooses what is trained, everything else of the model frozen:

* ``subnetwork`` — for every layer, the rows of gate and up and the columns of down that belong to
  the language's neurons in a neuron set (3 · d_model weights per neuron; fused gate_up and GPT-2's
  plain MLP handled). Trained as small delta tensors added by forward hooks
  (:class:`lape_eval.adapters.delta.DeltaModule`): no weight matrix is ever cloned, the model's own weights
  stay bit-identical, and the result is a compact neuron delta file;
* ``random`` — the same on a random neuron set with as many neurons *per layer* as the language's
  (layer-matched, seeded; the reference code's control sampled over all layers at once);
* ``lora`` — PEFT LoRA on the MLP projections (the reference defaults: r 32, alpha 64, dropout 0.1),
  saved as a standard PEFT adapter folder;
* ``mlp`` — every MLP weight, the larger baseline, saved as a full model folder.

The loop: causal LM loss over real tokens only (padding gets label -100 from the attention mask,
so padded batches give the same loss and gradients), AdamW with decoupled weight decay on the trained
weights only (for the subnetwork: on the trained entries W = W₀ + Δ, exactly as AdamW over those rows
would), gradient clipping, warm-up and constant / linear / cosine schedules, held-out loss every
``eval_every`` steps with the best checkpoint kept, resumable checkpoints (trainable state, optimiser,
scheduler, RNG, data position) and data parallelism over ``torchrun`` / ``accelerate launch``
processes (gradients all-reduced, loss normalised by the global token count, so N processes with
batch b train like one with batch N·b).

Output folder::

    OUT/run.json            what the run is (arguments that define it); resuming requires the same
    OUT/checkpoint.pt       latest resumable state (removed when the run finishes)
    OUT/best/               adapter with the lowest held-out loss (neuron_delta.safetensors | PEFT | model)
    OUT/last/               adapter of the last step (with --save-last)
    OUT/log.jsonl           one line per step and per evaluation
    OUT/summary.json        parameter counts and losses, written when the run finishes
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lape_eval import __version__
from lape_eval.arch import NeuronSites, resolve, unwrap_model
from lape_eval.files import read_json, write_json
from lape_eval.neurons.corpus import (HUB_DATASETS, CorpusSpec, batched, bos_token_to_prepend, make_batch, pad_token_id,
                     packed_sequences, token_stream)
from lape_eval.adapters.delta import DELTA_FILE, DeltaModule, hidden_size, weights_per_neuron
from lape_eval.distributed import Distributed, init_distributed
from lape_eval.errors import LapeEvalError
from lape_eval.languages import get_language

log = logging.getLogger(__name__)

METHODS = ("subnetwork", "lora", "random", "mlp")
SCHEDULES = ("constant", "linear", "cosine")
RUN_FORMAT = "lape-eval/finetune-run"
RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"
PROVENANCE_FILE = "finetune.json"
DEFAULT_LR = {"subnetwork": 1e-4, "random": 1e-4, "lora": 1e-4, "mlp": 1e-5}  # the reference scripts


@dataclass
class FinetuneSettings:
    method: str
    language: str
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    neurons: str | None = None  # neuron set path or shipped name (subnetwork, random; recorded for the others)
    max_tokens: int | None = None  # training tokens (all epochs); None: the whole corpus, epochs times
    epochs: int = 1
    max_steps: int | None = None
    heldout_corpus: CorpusSpec | None = None  # held-out text; else a fraction of the documents
    heldout_fraction: float = 0.05
    heldout_tokens: int = 100_000
    seq_len: int = 512
    batch_size: int = 2  # sequences per process and step
    lr: float | None = None  # None: DEFAULT_LR[method]
    weight_decay: float = 0.01
    clip: float = 1.0  # max gradient norm; 0 disables clipping
    schedule: str = "constant"
    warmup_steps: int = 0
    eval_every: int = 500
    checkpoint_every: int | None = None  # default: eval_every
    seed: int = 0
    random_seed: int | None = None  # the random neuron set's seed (default: seed)
    bf16: bool = False  # autocast to bfloat16 (weights and optimiser stay in their dtype)
    add_bos: str | bool = "auto"
    lora_rank: int = 32
    lora_alpha: float = 64.0
    lora_dropout: float = 0.1
    gradient_checkpointing: bool = False
    save_last: bool = False
    progress: bool = True

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.method] if self.lr is None else self.lr

    def validate(self) -> None:
        """Every check that needs neither the model nor the data (run before loading anything)."""
        if self.method not in METHODS:
            raise LapeEvalError(f"Unknown --method {self.method!r}: choose one of {', '.join(METHODS)}.")
        get_language(self.language)
        if self.method in ("subnetwork", "random") and not self.neurons:
            raise LapeEvalError(f"--method {self.method} trains the weights of a language's neurons: give the neuron "
                                "set with --neurons (a file from `lape-eval identify`, or a shipped set's name).")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise LapeEvalError(f"--max-tokens is the training budget and must be a positive number of tokens "
                                f"(got {self.max_tokens}).")
        positive = {"--epochs": self.epochs, "--batch-size": self.batch_size, "--eval-every": self.eval_every,
                    "--heldout-tokens": self.heldout_tokens}
        if self.max_steps is not None:
            positive["--max-steps"] = self.max_steps
        if self.checkpoint_every is not None:
            positive["--checkpoint-every"] = self.checkpoint_every
        if self.method == "lora":
            positive["--lora-rank"] = self.lora_rank
        for name, value in positive.items():
            if value < 1:
                raise LapeEvalError(f"{name} must be at least 1 (got {value}).")
        if self.seq_len < 2:
            raise LapeEvalError(f"--seq-len must be at least 2 (got {self.seq_len}).")
        if not 0 <= self.heldout_fraction < 1:
            raise LapeEvalError(f"--heldout-fraction must be in [0, 1) (got {self.heldout_fraction}).")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise LapeEvalError(f"--lr must be a positive number (got {self.learning_rate}).")
        for name, value in (("--weight-decay", self.weight_decay), ("--clip", self.clip),
                            ("--warmup-steps", self.warmup_steps), ("--lora-alpha", self.lora_alpha)):
            if not (math.isfinite(value) and value >= 0):
                raise LapeEvalError(f"{name} must be ≥ 0 (got {value}).")
        if not 0 <= self.lora_dropout < 1:
            raise LapeEvalError(f"--lora-dropout must be in [0, 1) (got {self.lora_dropout}).")
        if self.schedule not in SCHEDULES:
            raise LapeEvalError(f"Unknown --schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}.")

    def identity(self) -> dict:
        """The arguments that define the run (resuming with others is refused)."""
        data = asdict(self)
        for key in ("progress", "checkpoint_every", "save_last"):
            data.pop(key)
        data["corpus"] = asdict(self.corpus)
        data["heldout_corpus"] = asdict(self.heldout_corpus) if self.heldout_corpus else None
        data["lr"] = self.learning_rate
        if self.method != "random":
            data.pop("random_seed")
        else:
            data["random_seed"] = self.seed if self.random_seed is None else self.random_seed
        if self.method != "lora":
            for key in ("lora_rank", "lora_alpha", "lora_dropout"):
                data.pop(key)
        return data


# --------------------------------------------------------------------------------------------------
# Methods: what is trained and how it is saved


class Method:
    """The trainable part of one run. ``model`` is what the loop calls (a PEFT wrapper for LoRA)."""

    name: str
    adapter: str  # what best/ holds: "neuron_delta", "peft" or "model"

    def __init__(self, model, sites: NeuronSites):
        self.model = model
        self.sites = sites
        for parameter in model.parameters():
            parameter.requires_grad_(False)

    def named_trainable(self) -> dict[str, nn.Parameter]:
        raise NotImplementedError

    @property
    def parameters(self) -> list[nn.Parameter]:
        return list(self.named_trainable().values())

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters)

    def optimizer_weight_decay(self, weight_decay: float) -> float:
        """Weight decay given to AdamW itself (the subnetwork applies its own, see ``decay``)."""
        return weight_decay

    def decay(self, lr: float, weight_decay: float) -> None:
        """Decoupled weight decay applied before the AdamW step (only for methods that do it themselves)."""

    def save(self, folder: Path, tokenizer, info: dict) -> None:
        raise NotImplementedError

    def describe_count(self) -> str:
        return f"{self.parameter_count:,}"


class SubnetworkMethod(Method):
    adapter = "neuron_delta"

    def __init__(self, model, sites: NeuronSites, indices: list[torch.Tensor], name: str):
        super().__init__(model, sites)
        self.name = name
        self.delta = DeltaModule(model, indices).attach()

    def named_trainable(self):
        return dict(self.delta.named_parameters())

    def optimizer_weight_decay(self, weight_decay: float) -> float:
        return 0.0

    @torch.no_grad()
    def decay(self, lr: float, weight_decay: float) -> None:
        # AdamW's decoupled decay of the trained weights W = W0 + Δ: W ← W − lr·wd·W, i.e.
        # Δ ← Δ − lr·wd·(W0 + Δ). The frozen W0 entries are gathered per tensor (no full-matrix copy).
        if weight_decay == 0:
            return
        for layer, role, param in self.delta.pairs():
            param.sub_((self.delta.base_entries(layer, role) + param) * (lr * weight_decay))

    def save(self, folder: Path, tokenizer, info: dict) -> None:
        self.delta.to_delta(info).save(folder / DELTA_FILE)

    def describe_count(self) -> str:
        per = weights_per_neuron(self.delta.kind, self.delta.hidden)
        return (f"{per // self.delta.hidden} × d_model {self.delta.hidden} × {self.delta.neuron_count} neurons = "
                f"{self.parameter_count:,}")


class LoraMethod(Method):
    name = "lora"
    adapter = "peft"

    def __init__(self, model, sites: NeuronSites, rank: int, alpha: float, dropout: float):
        from peft import LoraConfig, get_peft_model

        super().__init__(model, sites)
        targets = mlp_module_names(sites)
        conv1d = sites.family.mlp_kind == "plain" and not isinstance(sites.projection(0, "fc"), nn.Linear)
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                            fan_in_fan_out=conv1d, task_type="CAUSAL_LM")
        self.model = get_peft_model(model, config)

    def named_trainable(self):
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def save(self, folder: Path, tokenizer, info: dict) -> None:
        self.model.save_pretrained(str(folder))


class MlpMethod(Method):
    name = "mlp"
    adapter = "model"

    def __init__(self, model, sites: NeuronSites):
        super().__init__(model, sites)
        self._named = {}
        for layer in range(sites.num_layers):
            for role in sites.family.projections:
                module = sites.projection(layer, role)
                for name, parameter in module.named_parameters():
                    parameter.requires_grad_(True)
                    self._named[f"layers.{layer}.{role}.{name}"] = parameter

    def named_trainable(self):
        return dict(self._named)

    def save(self, folder: Path, tokenizer, info: dict) -> None:
        unwrap_model(self.model).save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))


def mlp_module_names(sites: NeuronSites) -> list[str]:
    """Full module names (relative to the transformers model) of every layer's MLP projections."""
    return [f"{sites.layer_path}.{layer}.{path}" for layer in range(sites.num_layers)
            for path in sites.family.projections.values()]


def random_layer_matched(indices: list[torch.Tensor], width: int, seed: int) -> list[torch.Tensor]:
    """Per layer, as many neurons as ``indices`` has there, drawn uniformly without replacement (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for index in indices:
        picked = torch.randperm(width, generator=generator)[: index.numel()]
        out.append(torch.sort(picked).values.to(torch.int64))
    return out


def language_indices(neuron_set, language: str, sites: NeuronSites) -> list[torch.Tensor]:
    """The language's neurons per layer, with the errors a user can act on."""
    if language not in neuron_set.languages:
        raise LapeEvalError(
            f"The neuron set has no neurons for '{language}' ({get_language(language).name}): it covers "
            f"{', '.join(neuron_set.languages)}. Use --language with one of those, or a set identified with "
            f"{language}."
        )
    neuron_set.check_model(sites)
    indices = neuron_set.indices(language)
    if sum(index.numel() for index in indices) == 0:
        raise LapeEvalError(f"The neuron set has no neuron for '{language}' at all: there is nothing to train. "
                            "Use a higher top rate.")
    return indices


def build_method(model, sites: NeuronSites, settings: FinetuneSettings, neuron_set) -> Method:
    if settings.method in ("subnetwork", "random"):
        indices = language_indices(neuron_set, settings.language, sites)
        if settings.method == "random":
            seed = settings.seed if settings.random_seed is None else settings.random_seed
            indices = random_layer_matched(indices, sites.width, seed)
        return SubnetworkMethod(model, sites, indices, settings.method)
    if settings.method == "lora":
        return LoraMethod(model, sites, settings.lora_rank, settings.lora_alpha, settings.lora_dropout)
    return MlpMethod(model, sites)


# --------------------------------------------------------------------------------------------------
# Data


def split_documents(documents: Iterator[str], fraction: float, part: str) -> Iterator[str]:
    """Every document whose index i has ⌊(i+1)f⌋ > ⌊if⌋ is held out (a fraction f, spread evenly)."""
    for i, document in enumerate(documents):
        heldout = fraction > 0 and math.floor((i + 1) * fraction) > math.floor(i * fraction)
        if heldout == (part == "heldout"):
            yield document


@dataclass
class DataPlan:
    settings: FinetuneSettings
    tokenizer: object
    bos_id: int | None
    pad_id: int

    def _train_documents(self) -> Iterator[str]:
        docs = self.settings.corpus.documents(self.settings.language)
        if self.settings.heldout_corpus is None:
            docs = split_documents(docs, self.settings.heldout_fraction, "train")
        return docs

    def training_sequences(self) -> Iterator[list[int]]:
        """The training stream: ``epochs`` passes over the corpus, ``max_tokens`` tokens in all."""
        s = self.settings
        remaining = s.max_tokens
        for _ in range(s.epochs):
            produced = 0
            stream = token_stream(self._train_documents(), self.tokenizer, remaining)
            for sequence in packed_sequences(stream, seq_len=s.seq_len, bos_id=self.bos_id):
                produced += len(sequence)
                yield sequence
            if produced == 0:
                return
            if remaining is not None:
                remaining -= produced
                if remaining <= 0:
                    return

    def heldout_sequences(self) -> list[list[int]]:
        s = self.settings
        if s.heldout_corpus is not None:
            docs = s.heldout_corpus.documents(s.language)
        elif s.heldout_fraction > 0:
            docs = split_documents(s.corpus.documents(s.language), s.heldout_fraction, "heldout")
        else:
            return []
        stream = token_stream(docs, self.tokenizer, s.heldout_tokens)
        sequences = list(packed_sequences(stream, seq_len=s.seq_len, bos_id=self.bos_id))
        if not sequences:
            raise LapeEvalError(f"The held-out text for '{s.language}' holds no tokens: give --heldout-corpus, or "
                                "a corpus with more documents for --heldout-fraction.")
        return sequences

    def count(self) -> tuple[int, int] | None:
        """(sequences, tokens) of the training stream, or None where counting would stream from the hub."""
        if self.settings.corpus.source in HUB_DATASETS:
            return None
        sequences = tokens = 0
        for sequence in self.training_sequences():
            sequences += 1
            tokens += len(sequence)
        return sequences, tokens


def label_count(sequence: list[int], bos_id: int | None) -> int:
    """Positions of a sequence that are predicted: all its tokens after BOS (or after the first token)."""
    return len(sequence) if bos_id is not None else len(sequence) - 1


def causal_lm_loss_sum(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over real tokens (float32) and their number.

    Labels are the input ids with -100 wherever the attention mask is 0, so padding is neither a
    target nor (causally, with right padding) a context of any target.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    targets = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], dim=1)  # no logits copy
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100,
                           reduction="sum")
    return loss, int((targets != -100).sum())


# --------------------------------------------------------------------------------------------------
# Output folder


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILE

    def claim(self, identity: dict) -> str:
        """'new', 'resume' or 'finished'; refuses a folder that holds anything else."""
        run_file = self.path / RUN_FILE
        if not run_file.exists():
            if self.path.exists() and any(self.path.iterdir()):
                raise LapeEvalError(
                    f"The output folder {self.path} is not empty and holds no {RUN_FILE}: it is not a lape-eval "
                    "fine-tuning run. Choose a new or empty folder with --out."
                )
            write_json(run_file, {"format": RUN_FORMAT, "tool_version": __version__, "identity": identity})
            return "new"
        data = read_json(run_file, "fine-tuning run file")
        if data.get("format") != RUN_FORMAT:
            raise LapeEvalError(f"{run_file} is not a lape-eval fine-tuning run file (format {data.get('format')!r}).")
        existing = json.loads(json.dumps(data.get("identity")))
        mine = json.loads(json.dumps(identity))
        differences = [f"{key}: {existing.get(key)!r} there, {mine.get(key)!r} now"
                       for key in sorted(set(existing) | set(mine)) if existing.get(key) != mine.get(key)]
        if differences:
            raise LapeEvalError(
                f"The output folder {self.path} holds another fine-tuning run ({'; '.join(differences)}). Resuming "
                "with different arguments would mix two runs: use the original arguments to resume, or another "
                "--out folder (or delete this one) to start a new run."
            )
        return "finished" if self.summary.exists() else ("resume" if self.checkpoint.exists() else "new")

    def log(self, record: dict) -> None:
        with open(self.path / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_log(self, step: int) -> None:
        path = self.path / "log.jsonl"
        if path.exists():
            lines = [line for line in path.read_text(encoding="utf-8").splitlines()
                     if line.strip() and json.loads(line).get("step", 0) <= step]
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def replace_folder(target: Path, write) -> None:
    """Write a folder with ``write(tmp)`` and swap it in, so a crash never leaves a half-written adapter."""
    target = Path(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        write(staging)
        old = target.parent / f".{target.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# The loop


def lr_factor(step: int, settings: FinetuneSettings, total_steps: int | None) -> float:
    """Multiplier of the learning rate at optimiser step ``step`` (0-based): linear warm-up, then the schedule."""
    warmup = settings.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if settings.schedule == "constant" or not total_steps:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if settings.schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class FinetuneResult:
    out_dir: Path
    method: str
    trainable_parameters: int
    total_parameters: int
    parameter_formula: str
    steps: int
    tokens: int
    heldout: dict  # initial, best, best_step, final
    adapter: Path
    summary: dict


def _enable_activation_checkpointing(model) -> None:
    """Non-reentrant checkpointing (forward hooks, such as the delta's, are re-run in the recomputation)."""
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def finetune(model, tokenizer, out_dir: Path | str, settings: FinetuneSettings, *, model_name: str,
             revision: str | None = None, neuron_set=None, dtype: str | None = None) -> FinetuneResult:
    """Train one adapter into ``out_dir`` (resuming a run that is there); see the module docstring.

    ``model`` (a transformers causal LM on its device) is used in place: LoRA injects its layers into
    it and ``mlp`` changes its MLP weights; the subnetwork methods leave its weights untouched and
    remove their hooks when done. The adapter to use is ``result.adapter`` (the best checkpoint).
    """
    settings.validate()
    dist = Distributed.current()
    device = next(model.parameters()).device
    sites = resolve(model)
    if neuron_set is not None:
        if settings.method in ("subnetwork", "random"):
            language_indices(neuron_set, settings.language, sites)  # errors before any work
        else:
            neuron_set.check_model(sites)
        set_model = ((neuron_set.info or {}).get("model") or {}).get("id")
        if set_model and set_model != model_name:
            log.warning("The neuron set was identified on %s; fine-tuning %s.", set_model, model_name)
    bos_id = bos_token_to_prepend(tokenizer, settings.add_bos)
    data = DataPlan(settings, tokenizer, bos_id, pad_token_id(tokenizer))
    identity = {"model": model_name, "revision": revision, "dtype": dtype, "world_size": dist.world,
                "neuron_set": neuron_set.content_hash if neuron_set is not None else None, **settings.identity()}
    folder = RunFolder(Path(out_dir))
    state = None
    if dist.main:
        try:
            state = folder.claim(identity)
        except LapeEvalError as error:  # every process must stop, not only the one that found it
            state = error
    state = dist.gather(state)[0]
    if isinstance(state, LapeEvalError):
        raise state
    if state == "finished":
        summary = read_json(folder.summary, "fine-tuning summary")
        return _result_from_summary(folder, summary)

    counted = data.count()
    if counted is not None and counted[0] == 0:
        raise LapeEvalError(f"The corpus {settings.corpus.describe()} holds no training text for '{settings.language}' "
                            "(after setting aside the held-out documents).")
    global_batch = settings.batch_size * dist.world
    if counted is not None:
        total_steps = math.ceil(counted[0] / global_batch)
    elif settings.max_tokens is not None:
        body = settings.seq_len - (1 if bos_id is not None else 0)
        total_steps = math.ceil(math.ceil(settings.max_tokens / body) * settings.epochs / global_batch)
    else:
        total_steps = None
    if settings.max_steps is not None:
        total_steps = settings.max_steps if total_steps is None else min(total_steps, settings.max_steps)
    if total_steps is None and settings.schedule != "constant":
        raise LapeEvalError(f"--schedule {settings.schedule} needs the number of steps: give --max-tokens or "
                            "--max-steps for a streamed corpus.")
    heldout = data.heldout_sequences()

    torch.manual_seed(settings.seed)  # the same initial adapter on every process (LoRA's A)
    method = build_method(model, sites, settings, neuron_set)
    params = method.parameters
    for parameter in params:
        dist.broadcast_(parameter.data)
    if settings.gradient_checkpointing:
        _enable_activation_checkpointing(unwrap_model(method.model))
    lr = settings.learning_rate
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=method.optimizer_weight_decay(settings.weight_decay))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, settings, total_steps))
    torch.manual_seed(settings.seed + dist.rank)  # dropout differs between processes, as in any DP run
    total_parameters = sum(p.numel() for p in unwrap_model(method.model).parameters())
    if settings.method == "lora":
        total_parameters -= method.parameter_count  # the base model's size

    progress = {"step": 0, "sequences": 0, "tokens": 0, "best_loss": None, "best_step": None,
                "initial_loss": None, "history": []}
    if state == "new" and dist.main:
        (folder.path / "log.jsonl").unlink(missing_ok=True)  # left by a run stopped before its first checkpoint
    if state == "resume":
        progress = _load_checkpoint(folder.checkpoint, method, optimizer, scheduler, dist, device)
        if dist.main:
            folder.truncate_log(progress["step"])
        log.info("resuming %s at step %d", folder.path, progress["step"])

    def provenance(step: int, heldout_loss) -> dict:
        return _provenance(settings, identity, model_name, revision, sites, neuron_set, method, progress, step,
                           heldout_loss, total_steps, dist)

    def evaluate(step: int) -> float | None:
        if not heldout:
            return None
        loss = heldout_loss(method.model, heldout, settings.batch_size, bos_id, data.pad_id, device, dist,
                            settings.bf16)
        progress["history"].append({"step": step, "heldout_loss": loss})
        if progress["initial_loss"] is None:
            progress["initial_loss"] = loss
        improved = progress["best_loss"] is None or loss < progress["best_loss"]
        if improved:
            progress["best_loss"], progress["best_step"] = loss, step
        if dist.main:
            folder.log({"step": step, "heldout_loss": loss, "best": improved})
            if improved:
                _save_adapter(method, folder.path / "best", tokenizer, provenance(step, loss))
        return loss

    if progress["step"] == 0 and not progress["history"]:
        evaluate(0)
        _save_checkpoint(folder.checkpoint, method, optimizer, scheduler, progress, dist, device)

    stream = islice(data.training_sequences(), progress["sequences"], None)
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=progress["step"], unit="step", dynamic_ncols=True,
               desc=f"finetune {settings.method} {settings.language}", disable=not settings.progress or not dist.main)
    checkpoint_every = settings.checkpoint_every or settings.eval_every
    method.model.train()
    last_eval = progress["history"][-1]["step"] if progress["history"] else None
    while settings.max_steps is None or progress["step"] < settings.max_steps:
        group = list(islice(stream, global_batch))
        if not group:
            break
        loss, tokens, grad_norm = train_step(method, optimizer, group, settings, bos_id, data.pad_id, device, dist)
        scheduler.step()
        progress["step"] += 1
        progress["sequences"] += len(group)
        progress["tokens"] += sum(len(s) for s in group)
        step = progress["step"]
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}",
                        best="-" if progress["best_loss"] is None else f"{progress['best_loss']:.4f}")
        if dist.main:
            folder.log({"step": step, "loss": loss, "tokens": progress["tokens"], "lr": scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm})
        evaluated = step % settings.eval_every == 0
        if evaluated:
            evaluate(step)
            last_eval = step
            method.model.train()
        if evaluated or step % checkpoint_every == 0:
            _save_checkpoint(folder.checkpoint, method, optimizer, scheduler, progress, dist, device)
    bar.close()
    method.model.eval()
    if progress["step"] == 0:
        raise LapeEvalError("No training step was taken: the training stream is empty.")
    final_loss = progress["history"][-1]["heldout_loss"] if progress["history"] else None
    if heldout and last_eval != progress["step"]:
        final_loss = evaluate(progress["step"])
    if dist.main:
        if not heldout:
            _save_adapter(method, folder.path / "best", tokenizer, provenance(progress["step"], None))
            progress["best_step"] = progress["step"]
        if settings.save_last:
            _save_adapter(method, folder.path / "last", tokenizer, provenance(progress["step"], final_loss))
        summary = {
            "method": settings.method, "language": settings.language, "model": model_name,
            "trainable_parameters": method.parameter_count, "total_parameters": total_parameters,
            "trainable_fraction": method.parameter_count / max(1, total_parameters),
            "parameter_formula": method.describe_count(), "steps": progress["step"], "tokens": progress["tokens"],
            "heldout": {"initial": progress["initial_loss"], "best": progress["best_loss"],
                        "best_step": progress["best_step"], "final": final_loss},
            "history": progress["history"], "adapter": "best", "adapter_kind": method.adapter,
            "neurons": getattr(getattr(method, "delta", None), "neuron_count", None),
            "identity": identity,
        }
        write_json(folder.summary, summary)
        folder.checkpoint.unlink(missing_ok=True)
    if isinstance(method, SubnetworkMethod):
        method.delta.detach()  # the model computes as before again (its weights were never touched)
    dist.barrier()
    summary = read_json(folder.summary, "fine-tuning summary")
    return _result_from_summary(folder, summary)


def _result_from_summary(folder: RunFolder, summary: dict) -> FinetuneResult:
    return FinetuneResult(folder.path, summary["method"], summary["trainable_parameters"], summary["total_parameters"],
                          summary["parameter_formula"], summary["steps"], summary["tokens"], summary["heldout"],
                          folder.path / "best", summary)


def train_step(method: Method, optimizer, group: list[list[int]], settings: FinetuneSettings, bos_id, pad_id,
               device, dist: Distributed) -> tuple[float, int, float]:
    """One optimiser step on ``group`` (this process takes its slice); returns the mean loss over the whole
    group, its token count and the gradient norm before clipping."""
    params = method.parameters
    mine = group[dist.rank * settings.batch_size:(dist.rank + 1) * settings.batch_size]
    targets = sum(label_count(s, bos_id) for s in group)  # known on every process: the global normaliser
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    if mine and targets:
        batch = make_batch(mine, bos_id=bos_id, pad_id=pad_id)
        with _autocast(device, settings.bf16):
            loss, _ = causal_lm_loss_sum(method.model, batch.input_ids.to(device), batch.attention_mask.to(device))
        (loss / targets).backward()
        loss_sum += loss.detach().double()
    for parameter in params:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.sum_(parameter.grad)
    dist.sum_(loss_sum)
    if settings.clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, settings.clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    lr = optimizer.param_groups[0]["lr"]
    method.decay(lr, settings.weight_decay)
    optimizer.step()
    return float(loss_sum) / max(1, targets), targets, float(norm)


@torch.no_grad()
def heldout_loss(model, sequences: list[list[int]], batch_size: int, bos_id, pad_id, device, dist: Distributed,
                 bf16: bool = False) -> float:
    """Mean next-token loss over the held-out sequences (split over processes, summed exactly)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for number, chunk in enumerate(batched(sequences, batch_size)):
        if number % dist.world != dist.rank:
            continue
        batch = make_batch(chunk, bos_id=bos_id, pad_id=pad_id)
        with _autocast(device, bf16):
            loss, count = causal_lm_loss_sum(model, batch.input_ids.to(device), batch.attention_mask.to(device))
        totals[0] += loss.double()
        totals[1] += count
    dist.sum_(totals)
    model.train(was_training)
    return float(totals[0] / totals[1].clamp(min=1))


# --------------------------------------------------------------------------------------------------
# Checkpoints and adapters


def _save_checkpoint(path: Path, method: Method, optimizer, scheduler, progress: dict, dist: Distributed,
                     device) -> None:
    rng = dist.gather(_rng_state(device))
    if dist.main:
        from lape_eval.files import atomic_path

        state = {"format": RUN_FORMAT, "progress": progress,
                 "trainable": {name: p.detach().cpu() for name, p in method.named_trainable().items()},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng}
        with atomic_path(path) as temporary:
            torch.save(state, temporary)
    dist.barrier()


def _load_checkpoint(path: Path, method: Method, optimizer, scheduler, dist: Distributed, device) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file
        raise LapeEvalError(f"The checkpoint {path} cannot be read ({str(error).splitlines()[0][:200]}); delete it "
                            "to restart the run from its beginning.") from None
    named = method.named_trainable()
    stored = state.get("trainable", {})
    if set(stored) != set(named) or any(stored[k].shape != named[k].shape for k in named):
        raise LapeEvalError(f"The checkpoint {path} holds other trainable tensors than this run has; delete it "
                            "to restart the run.")
    with torch.no_grad():
        for name, parameter in named.items():
            parameter.copy_(stored[name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    if len(rng) != dist.world:
        raise LapeEvalError(f"The checkpoint was written by {len(rng)} processes; resume it with as many.")
    _set_rng_state(rng[dist.rank], device)
    return state["progress"]


def _save_adapter(method: Method, target: Path, tokenizer, info: dict) -> None:
    def write(staging: Path) -> None:
        method.save(staging, tokenizer, info)
        write_json(staging / PROVENANCE_FILE, info)

    replace_folder(target, write)


def _provenance(settings, identity, model_name, revision, sites, neuron_set, method, progress, step, heldout_loss,
                total_steps, dist) -> dict:
    set_info = None
    if neuron_set is not None:
        set_info = {"source": settings.neurons, "content_hash": neuron_set.content_hash,
                    "languages": neuron_set.languages, "model": (neuron_set.info.get("model") or {}).get("id"),
                    "top_rate": (neuron_set.info.get("selection") or {}).get("top_rate"),
                    "neurons_of_language": (neuron_set.neuron_count(settings.language)
                                            if settings.language in neuron_set.languages else None)}
    return {
        "kind": "lape-eval finetune adapter",
        "method": settings.method,
        "language": settings.language,
        "base_model": {"id": model_name, "revision": revision, "model_type": sites.model_type,
                       "num_layers": sites.num_layers, "width": sites.width, "hidden_size": hidden_size(sites),
                       "mlp_kind": sites.family.mlp_kind},
        "neuron_set": set_info,
        "random_seed": identity.get("random_seed"),
        "data": {"corpus": settings.corpus.describe(),
                 "heldout": (settings.heldout_corpus.describe() if settings.heldout_corpus else
                             f"fraction {settings.heldout_fraction} of the corpus documents"),
                 "max_tokens": settings.max_tokens, "epochs": settings.epochs, "seq_len": settings.seq_len,
                 "tokens_seen": progress["tokens"], "sequences_seen": progress["sequences"]},
        "training": {"step": step, "total_steps": total_steps, "lr": settings.learning_rate,
                     "weight_decay": settings.weight_decay, "clip": settings.clip, "schedule": settings.schedule,
                     "warmup_steps": settings.warmup_steps, "batch_size": settings.batch_size,
                     "world_size": dist.world, "seed": settings.seed, "bf16": settings.bf16,
                     "dtype": identity.get("dtype")},
        "heldout_loss": heldout_loss,
        "trainable_parameters": method.parameter_count,
        "tool_version": __version__,
    }


# --------------------------------------------------------------------------------------------------
# Command-line entry points (the click commands in cli.py call these)


def finetune_command(*, model_name, revision, dtype, device, trust_remote_code, out_dir, settings: FinetuneSettings,
                     echo=print) -> FinetuneResult:
    from lape_eval.models import default_device, load_model

    settings.validate()  # before anything slow
    neuron_set = None
    if settings.neurons:
        from lape_eval.neurons.neuron_set import resolve_neuron_set

        neuron_set = resolve_neuron_set(settings.neurons)
        if settings.method in ("subnetwork", "random") and settings.language not in neuron_set.languages:
            raise LapeEvalError(
                f"The neuron set {settings.neurons} has no neurons for '{settings.language}' "
                f"({get_language(settings.language).name}): it covers {', '.join(neuron_set.languages)}."
            )
    if settings.bf16:
        if (device or default_device()).startswith("cuda") and not torch.cuda.is_bf16_supported():
            raise LapeEvalError("--bf16 was asked for, but this GPU does not support bfloat16.")
    if settings.method == "mlp" and dtype in ("bfloat16", "bf16", "float16", "fp16", "half"):
        warnings.warn("--method mlp with a half-precision --dtype trains the MLP weights in half precision; use "
                      "--dtype float32 --bf16 for mixed precision with float32 weights.", stacklevel=2)
    local_rank = init_distributed()
    if device is None:
        device = f"cuda:{local_rank}" if local_rank is not None and default_device() == "cuda" else default_device()
    loaded = load_model(model_name, dtype=dtype, device=device, revision=revision, trust_remote_code=trust_remote_code)
    result = finetune(loaded.model, loaded.tokenizer, out_dir, settings, model_name=model_name, revision=revision,
                      neuron_set=neuron_set, dtype=dtype)
    if Distributed.current().main:
        summary = result.summary
        echo(f"trainable parameters: {summary['parameter_formula']} "
             f"({summary['trainable_fraction']:.3%} of {summary['total_parameters']:,})")
        held = summary["heldout"]
        if held.get("initial") is not None:
            echo(f"held-out loss: {held['initial']:.4f} before, {held['best']:.4f} best (step {held['best_step']}), "
                 f"{held['final']:.4f} final")
        echo(f"{summary['steps']} steps, {summary['tokens']:,} tokens; adapter: {result.adapter}")
    return result


def merge_command(*, model_name, revision, dtype, trust_remote_code, adapter, out_dir, fmt="hf", echo=print) -> Path:
    """Apply a neuron delta (or a PEFT adapter folder) to the model and save a full model (or a PEFT adapter)."""
    from lape_eval.adapters.delta import NeuronDelta, delta_to_peft
    from lape_eval.models import load_model

    adapter = Path(adapter)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise LapeEvalError(f"The output folder {out_dir} is not empty: choose a new folder with --out.")
    is_peft = adapter.is_dir() and (adapter / "adapter_config.json").exists()
    delta = None if is_peft else NeuronDelta.load(adapter)  # errors before the model loads
    if is_peft and fmt == "peft":
        raise LapeEvalError(f"{adapter} already is a PEFT adapter folder.")
    loaded = load_model(model_name, dtype=dtype, device="cpu", revision=revision, trust_remote_code=trust_remote_code)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    provenance = {"kind": "lape-eval merge", "base_model": model_name, "revision": revision,
                  "adapter": str(adapter), "tool_version": __version__}
    if delta is not None:
        delta.check_model(resolve(loaded.model))
        provenance["neuron_delta"] = delta.describe()
    if fmt == "peft":
        replace_folder(out_dir, lambda staging: (delta_to_peft(delta, loaded.model, staging, model_name),
                                                 write_json(staging / PROVENANCE_FILE, provenance)))
        echo(f"wrote the PEFT adapter {out_dir} ({delta.neuron_count} neurons, {delta.parameter_count:,} weights)")
        return out_dir
    model = loaded.model
    if is_peft:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    else:
        delta.apply(model)

    def write(staging: Path) -> None:
        model.save_pretrained(str(staging))
        loaded.tokenizer.save_pretrained(str(staging))
        write_json(staging / PROVENANCE_FILE, provenance)

    replace_folder(out_dir, write)
    echo(f"wrote {out_dir}: {model_name} with {adapter} merged")
    return out_dir
