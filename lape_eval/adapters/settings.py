"""What a fine-tuning run is: the model to load (:class:`ModelSource`) and the run's settings
(:class:`FinetuneSettings`), with every check that needs neither the model nor the data.

The settings are one flat dataclass on purpose: :meth:`FinetuneSettings.identity` is what ``run.json``
records, and a flat record keeps that file (and the resuming of runs written by earlier versions)
unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from lape_eval.errors import LapeEvalError
from lape_eval.languages import get_language
from lape_eval.neurons.corpus import CorpusSpec

METHODS = ("subnetwork", "lora", "random", "mlp")
SCHEDULES = ("constant", "linear", "cosine")
DEFAULT_LR = {"subnetwork": 1e-4, "random": 1e-4, "lora": 1e-4, "mlp": 1e-5}  # the reference scripts
NEURON_METHODS = ("subnetwork", "random")  # the methods that train a language's neurons
HALF_DTYPES = ("bfloat16", "bf16", "float16", "fp16", "half")


@dataclass
class ModelSource:
    """Which model to load, and how (the ``--model``, ``--revision``, ``--dtype``, ``--device`` and
    ``--trust-remote-code`` options)."""

    name: str
    revision: str | None = None
    dtype: str = "float32"
    device: str | None = None  # None: cuda if available (finetune), the CPU (merge)
    trust_remote_code: bool = False

    def load(self, device: str):
        from lape_eval.models import load_model

        return load_model(self.name, dtype=self.dtype, device=device, revision=self.revision,
                          trust_remote_code=self.trust_remote_code)


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

    @property
    def trains_neurons(self) -> bool:
        return self.method in NEURON_METHODS

    @property
    def random_set_seed(self) -> int:
        return self.seed if self.random_seed is None else self.random_seed

    @property
    def steps_between_checkpoints(self) -> int:
        return self.checkpoint_every or self.eval_every

    def validate(self) -> None:
        """Every check that needs neither the model nor the data (run before loading anything)."""
        if self.method not in METHODS:
            raise LapeEvalError(f"Unknown --method {self.method!r}: choose one of {', '.join(METHODS)}.")
        self.language = get_language(self.language).code  # canonical: slk / slk_Latn -> sk
        if self.trains_neurons and not self.neurons:
            raise LapeEvalError(f"--method {self.method} trains the weights of a language's neurons: give the neuron "
                                "set with --neurons (a file from `lape-eval identify`, or a shipped set's name).")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise LapeEvalError(f"--max-tokens is the training budget and must be a positive number of tokens "
                                f"(got {self.max_tokens}).")
        self._validate_counts()
        self._validate_rates()
        if self.schedule not in SCHEDULES:
            raise LapeEvalError(f"Unknown --schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}.")

    def _validate_counts(self) -> None:
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

    def _validate_rates(self) -> None:
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
            data["random_seed"] = self.random_set_seed
        if self.method != "lora":
            for key in ("lora_rank", "lora_alpha", "lora_dropout"):
                data.pop(key)
        return data
