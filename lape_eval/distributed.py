"""torch.distributed for collect and finetune: joining the process group that ``torchrun`` /
``accelerate launch`` set up, and the few collectives they use. torch.distributed is optional: one
process is world size 1, and every collective is then a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


def init_distributed() -> int | None:
    """Join the process group of a multi-process launch; return the local rank (None: one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return int(os.environ.get("LOCAL_RANK", "0"))


@dataclass
class Distributed:
    """This process's rank in the process group (``current()``), and the collectives."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Distributed":
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return cls(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank gets the sum over ranks."""
        if self.world > 1:
            torch.distributed.all_reduce(tensor)
        return tensor

    def sum_to_main_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0 gets the sum over ranks (the others' tensors are left undefined)."""
        if self.world > 1:
            torch.distributed.reduce(tensor, dst=0)
        return tensor

    def broadcast_(self, tensor: torch.Tensor) -> None:
        if self.world > 1:
            torch.distributed.broadcast(tensor, src=0)

    def gather(self, value) -> list:
        if self.world == 1:
            return [value]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out
