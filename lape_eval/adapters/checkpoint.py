"""Resumable checkpoints of a fine-tuning run (``OUT/checkpoint.pt``), their one writer and reader.

A checkpoint holds everything a resumed run needs to continue exactly where it stopped: the trainable
tensors, the optimiser and scheduler state, every process's RNG state (LoRA dropout must draw the
same numbers) and the run's progress (step, data position, losses so far).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from lape_eval.adapters.methods import Method
from lape_eval.adapters.progress import TrainingProgress
from lape_eval.adapters.run_folder import RUN_FORMAT
from lape_eval.distributed import Distributed
from lape_eval.errors import LapeEvalError
from lape_eval.files import atomic_path


def save_checkpoint(path: Path, method: Method, optimizer, scheduler, progress: TrainingProgress, dist: Distributed,
                    device: torch.device) -> None:
    """Write the checkpoint (every process takes part: the RNG states are gathered)."""
    rng = dist.gather(_rng_state(device))
    if dist.main:
        state = {"format": RUN_FORMAT, "progress": asdict(progress),  # plain data: loadable with weights_only
                 "trainable": {name: p.detach().cpu() for name, p in method.named_trainable().items()},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng}
        with atomic_path(path) as temporary:
            torch.save(state, temporary)
    dist.barrier()


def load_checkpoint(path: Path, method: Method, optimizer, scheduler, dist: Distributed,
                    device: torch.device) -> TrainingProgress:
    """Restore the trainable tensors, optimiser, scheduler and this process's RNG; return the progress."""
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
    return TrainingProgress(**state["progress"])


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
