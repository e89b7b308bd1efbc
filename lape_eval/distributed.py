"""Joining the process group that ``torchrun`` / ``accelerate launch`` set up (collect, finetune)."""

from __future__ import annotations

import os


def init_distributed() -> int | None:
    """Join the process group of a multi-process launch; return the local rank (None: one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch

    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return int(os.environ.get("LOCAL_RANK", "0"))
