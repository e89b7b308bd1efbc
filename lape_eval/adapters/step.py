"""One optimiser step and the held-out loss: the numerics of fine-tuning.

The loss is the causal LM loss over real tokens only (padding gets label -100 from the attention
mask, so padded batches give the same loss and gradients). With several processes (``torchrun`` /
``accelerate launch``) each takes its slice of the step's sequences, gradients are all-reduced and the
loss is normalised by the global token count, so N processes with batch b train like one with
batch N·b. AdamW's decoupled weight decay falls on the trained weights only (see
:meth:`lape_eval.adapters.methods.Method.decay`); gradients are clipped to ``--clip``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from lape_eval.adapters.methods import Method
from lape_eval.adapters.settings import FinetuneSettings
from lape_eval.distributed import Distributed
from lape_eval.neurons.corpus import batched, make_batch


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


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on ``device`` (``--bf16``), or nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


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
        with autocast(device, settings.bf16):
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
        with autocast(device, bf16):
            loss, count = causal_lm_loss_sum(model, batch.input_ids.to(device), batch.attention_mask.to(device))
        totals[0] += loss.double()
        totals[1] += count
    dist.sum_(totals)
    model.train(was_training)
    return float(totals[0] / totals[1].clamp(min=1))
