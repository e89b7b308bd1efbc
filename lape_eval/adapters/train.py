"""The fine-tuning loop (method spec §8): :func:`finetune` trains one adapter into a run folder.

AdamW with decoupled weight decay on the trained weights only (for the subnetwork: on the trained
entries W = W₀ + Δ, exactly as AdamW over those rows would), gradient clipping, warm-up and constant /
linear / cosine schedules, held-out loss every ``eval_every`` steps with the best adapter kept in
``OUT/best``, resumable checkpoints every ``checkpoint_every`` steps, and data parallelism over
``torchrun`` / ``accelerate launch`` processes (:mod:`lape_eval.adapters.step`). The folder's files
are described in :mod:`lape_eval.adapters.run_folder`; :func:`run_finetune` is the ``lape-eval
finetune`` command: it checks every input before it loads the model.
"""

from __future__ import annotations

import logging
import math
import warnings
from itertools import islice
from pathlib import Path

import torch

from lape_eval.adapters.adapter_folder import write_adapter_folder
from lape_eval.adapters.checkpoint import load_checkpoint, save_checkpoint
from lape_eval.adapters.methods import Method, build_method, check_language_in_set, check_neuron_set_fits
from lape_eval.adapters.progress import TrainingProgress
from lape_eval.adapters.provenance import RunDescription, run_identity
from lape_eval.adapters.run_folder import FinetuneResult, RunFolder
from lape_eval.adapters.settings import HALF_DTYPES, FinetuneSettings, ModelSource
from lape_eval.adapters.step import heldout_loss, train_step
from lape_eval.adapters.training_data import TrainingData, check_text
from lape_eval.arch import resolve, unwrap_model
from lape_eval.distributed import Distributed, init_distributed
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.corpus import bos_token_to_prepend, pad_token_id

log = logging.getLogger(__name__)


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


def agreed_folder_state(folder: RunFolder, identity: dict, dist: Distributed) -> str:
    """:meth:`RunFolder.state` as the main process sees it, on every process (an error stops them all)."""
    state = None
    if dist.main:
        try:
            state = folder.state(identity)
        except LapeEvalError as error:
            state = error
    state = dist.gather(state)[0]
    if isinstance(state, LapeEvalError):
        raise state
    return state


def finetune(model, tokenizer, out_dir: Path | str, settings: FinetuneSettings, *, model_name: str,
             revision: str | None = None, neuron_set=None, dtype: str | None = None) -> FinetuneResult:
    """Train one adapter into ``out_dir`` (resuming a run that is there); see the module docstring.

    ``model`` (a transformers causal LM on its device) is used in place: LoRA injects its layers into
    it and ``mlp`` changes its MLP weights; the subnetwork methods leave its weights untouched and
    remove their hooks when done. The adapter to use is ``result.adapter`` (the best checkpoint).
    Every check comes before the first file is written.
    """
    settings.validate()
    dist = Distributed.current()
    sites = resolve(model)
    check_neuron_set_fits(neuron_set, settings, sites, model_name)
    identity = run_identity(settings, model_name=model_name, revision=revision, dtype=dtype, world=dist.world,
                            neuron_set=neuron_set)
    folder = RunFolder(Path(out_dir))
    state = agreed_folder_state(folder, identity, dist)
    if state == "finished":
        return folder.result()
    data = TrainingData(settings, tokenizer, bos_token_to_prepend(tokenizer, settings.add_bos),
                        pad_token_id(tokenizer))
    description = RunDescription(settings, identity, model_name, revision, sites, neuron_set,
                                 data.planned_steps(dist.world), dist.world)
    heldout = data.heldout_sequences()
    if dist.main:
        folder.start(identity, state)
    run = TrainingRun.begin(model, tokenizer, description, data, heldout, folder, resume=state == "resume")
    run.train()
    return run.finish()


class TrainingRun:
    """One run in progress: the method, optimiser and scheduler, and what the loop has done so far."""

    def __init__(self, method: Method, optimizer, scheduler, description: RunDescription, data: TrainingData,
                 heldout: list[list[int]], folder: RunFolder, tokenizer, total_parameters: int):
        self.method, self.optimizer, self.scheduler = method, optimizer, scheduler
        self.description, self.settings = description, description.settings
        self.data, self.heldout, self.folder, self.tokenizer = data, heldout, folder, tokenizer
        self.total_parameters = total_parameters
        self.dist = Distributed.current()
        self.device = next(method.model.parameters()).device
        self.progress = TrainingProgress()

    @classmethod
    def begin(cls, model, tokenizer, description: RunDescription, data: TrainingData, heldout: list[list[int]],
              folder: RunFolder, resume: bool) -> "TrainingRun":
        """Set the method up on ``model`` (the same initial adapter on every process) and resume if asked."""
        settings, dist = description.settings, Distributed.current()
        torch.manual_seed(settings.seed)  # the same initial adapter on every process (LoRA's A)
        method = build_method(model, description.sites, settings, description.neuron_set)
        for parameter in method.parameters:
            dist.broadcast_(parameter.data)
        if settings.gradient_checkpointing:
            _enable_activation_checkpointing(unwrap_model(method.model))
        optimizer = torch.optim.AdamW(method.parameters, lr=settings.learning_rate,
                                      weight_decay=method.optimizer_weight_decay(settings.weight_decay))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, settings, description.total_steps))
        torch.manual_seed(settings.seed + dist.rank)  # dropout differs between processes, as in any DP run
        total_parameters = sum(p.numel() for p in unwrap_model(method.model).parameters())
        if settings.method == "lora":
            total_parameters -= method.parameter_count  # the base model's size
        run = cls(method, optimizer, scheduler, description, data, heldout, folder, tokenizer, total_parameters)
        if resume:
            run.progress = load_checkpoint(folder.checkpoint, method, optimizer, scheduler, dist, run.device)
            if dist.main:
                folder.truncate_log(run.progress.step)
            log.info("resuming %s at step %d", folder.path, run.progress.step)
        return run

    def train(self) -> None:
        """Take the run's steps (from where it stands), evaluating and checkpointing as it goes."""
        from tqdm.auto import tqdm

        settings, progress = self.settings, self.progress
        if progress.step == 0 and not progress.history:
            self.evaluate(0)
            self.save_checkpoint()
        stream = islice(self.data.training_sequences(), progress.sequences, None)
        global_batch = settings.batch_size * self.dist.world
        bar = tqdm(total=self.description.total_steps, initial=progress.step, unit="step", dynamic_ncols=True,
                   desc=f"finetune {settings.method} {settings.language}",
                   disable=not settings.progress or not self.dist.main)
        self.method.model.train()
        while settings.max_steps is None or progress.step < settings.max_steps:
            group = list(islice(stream, global_batch))
            if not group:
                break
            loss = self.take_step(group)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", best="-" if progress.best_loss is None else f"{progress.best_loss:.4f}")
        bar.close()
        self.method.model.eval()
        if progress.step == 0:
            raise LapeEvalError("No training step was taken: the training stream is empty.")

    def take_step(self, group: list[list[int]]) -> float:
        """One optimiser step, its log line, and the evaluation and checkpoint due after it; returns the loss."""
        settings, progress = self.settings, self.progress
        loss, _, grad_norm = train_step(self.method, self.optimizer, group, settings, self.data.bos_id,
                                        self.data.pad_id, self.device, self.dist)
        self.scheduler.step()
        progress.took_step(group)
        if self.dist.main:
            self.folder.log({"step": progress.step, "loss": loss, "tokens": progress.tokens,
                             "lr": self.scheduler.get_last_lr()[0], "grad_norm": grad_norm})
        evaluated = progress.step % settings.eval_every == 0
        if evaluated:
            self.evaluate(progress.step)
            self.method.model.train()
        if evaluated or progress.step % settings.steps_between_checkpoints == 0:
            self.save_checkpoint()
        return loss

    def evaluate(self, step: int) -> float | None:
        """The held-out loss now (None: no held-out text); a new best is saved as ``OUT/best``."""
        if not self.heldout:
            return None
        settings = self.settings
        loss = heldout_loss(self.method.model, self.heldout, settings.batch_size, self.data.bos_id,
                            self.data.pad_id, self.device, self.dist, settings.bf16)
        improved = self.progress.record_heldout(step, loss)
        if self.dist.main:
            self.folder.log({"step": step, "heldout_loss": loss, "best": improved})
            if improved:
                self.save_adapter(self.folder.best, step, loss)
        return loss

    def save_checkpoint(self) -> None:
        save_checkpoint(self.folder.checkpoint, self.method, self.optimizer, self.scheduler, self.progress,
                        self.dist, self.device)

    def save_adapter(self, target: Path, step: int, loss: float | None) -> None:
        info = self.description.adapter_info(self.method, self.progress, step, loss)
        write_adapter_folder(target, lambda folder: self.method.save(folder, self.tokenizer, info), info)

    def finish(self) -> FinetuneResult:
        """The final evaluation, ``OUT/best`` (without held-out text: the last step), ``OUT/last``, the summary."""
        progress = self.progress
        final_loss = progress.last_heldout_loss
        if self.heldout and progress.last_evaluated_step != progress.step:
            final_loss = self.evaluate(progress.step)
        if self.dist.main:
            if not self.heldout:
                self.save_adapter(self.folder.best, progress.step, None)
                progress.best_step = progress.step
            if self.settings.save_last:
                self.save_adapter(self.folder.last, progress.step, final_loss)
            self.folder.finish(self.description.summary(self.method, progress, final_loss, self.total_parameters))
        self.method.finish()
        self.dist.barrier()
        return self.folder.result()


def _enable_activation_checkpointing(model) -> None:
    """Non-reentrant checkpointing (forward hooks, such as the delta's, are re-run in the recomputation)."""
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


# --------------------------------------------------------------------------------------------------
# The `lape-eval finetune` command: every input checked before the model is loaded


def run_finetune(source: ModelSource, settings: FinetuneSettings, out_dir: Path | str) -> FinetuneResult:
    """Check every input (:func:`check_finetune_inputs`), then load the model and :func:`finetune` it."""
    from lape_eval.models import default_device

    neuron_set = check_finetune_inputs(source, settings, out_dir)
    local_rank = init_distributed()  # the check has joined the process group already: this is its local rank
    device = source.device
    if device is None:
        device = f"cuda:{local_rank}" if local_rank is not None and default_device() == "cuda" else default_device()
    loaded = source.load(device)
    return finetune(loaded.model, loaded.tokenizer, out_dir, settings, model_name=source.name,
                    revision=source.revision, neuron_set=neuron_set, dtype=source.dtype)


def check_finetune_inputs(source: ModelSource, settings: FinetuneSettings, out_dir: Path | str):
    """Everything that can be checked without the model: the settings, the neuron set (loadable, with the
    language's neurons), the training and held-out text, bf16 support and the output folder. Loads
    nothing big and writes nothing; returns the neuron set (None without one). Joins the process group
    of a multi-process launch (the run's identity holds the number of processes)."""
    from lape_eval.models import default_device

    settings.validate()
    neuron_set = None
    if settings.neurons:
        from lape_eval.neurons.shipped import resolve_neuron_set

        neuron_set = resolve_neuron_set(settings.neurons)
        if settings.trains_neurons:
            check_language_in_set(neuron_set, settings.language, settings.neurons)
    check_text(settings)
    if settings.bf16 and (source.device or default_device()).startswith("cuda") \
            and not torch.cuda.is_bf16_supported():
        raise LapeEvalError("--bf16 was asked for, but this GPU does not support bfloat16.")
    if settings.method == "mlp" and source.dtype in HALF_DTYPES:
        warnings.warn("--method mlp with a half-precision --dtype trains the MLP weights in half precision; use "
                      "--dtype float32 --bf16 for mixed precision with float32 weights.", stacklevel=2)
    init_distributed()
    dist = Distributed.current()
    identity = run_identity(settings, model_name=source.name, revision=source.revision, dtype=source.dtype,
                            world=dist.world, neuron_set=neuron_set)
    agreed_folder_state(RunFolder(Path(out_dir)), identity, dist)
    return neuron_set
