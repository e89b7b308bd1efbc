"""One evaluation of the ``lape`` model; started by tests/neurons/test_scaleout.py with ``python`` (one process)
or with ``torchrun --nproc_per_node 2`` (one process of a data-parallel group on CPU).

lm-eval 0.4.13's HFLM takes its data-parallel route (rank and world size from accelerate, documents
split across ranks, results gathered on rank 0) only when it sees more than one GPU
(``lm_eval/models/huggingface.py``: ``elif gpus > 1:``); on a CPU-only machine every process of
``accelerate launch`` / ``torchrun`` runs as rank 0 of 1 and evaluates everything. The subclass below
does, on CPU, exactly what that branch does (``_rank``/``_world_size`` from the accelerator), so the
test runs ``lape``'s real data-parallel code path: the evaluator's document split and padding, the
gathers, and on every rank LapeLM's per-spec log-likelihood calls and its row-wise generation batches.

Usage: ``python scaleout_worker.py JSON`` with keys model_args, batch_size, tasks, tasks_folder, out.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> None:
    args = json.loads(sys.argv[1])
    import torch

    torch.set_num_threads(1)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lape_eval.evaluation.lm import LapeLM

    class CpuDataParallelLapeLM(LapeLM):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            accelerator = getattr(self, "accelerator", None)
            if accelerator is not None and accelerator.num_processes > 1 and self._world_size == 1:
                self._rank = accelerator.local_process_index
                self._world_size = accelerator.num_processes

    lm = CpuDataParallelLapeLM(**args["model_args"], device="cpu", batch_size=args["batch_size"])
    manager = TaskManager(include_path=args["tasks_folder"], include_defaults=False)
    result = simple_evaluate(model=lm, tasks=args["tasks"], task_manager=manager, bootstrap_iters=0, log_samples=True)
    if lm.rank == 0:
        samples = {task: [{"doc_id": s["doc_id"], "resps": s["resps"]} for s in sorted(rows, key=lambda s: s["doc_id"])]
                   for task, rows in result["samples"].items()}
        Path(args["out"]).write_text(json.dumps({"world_size": lm.world_size, "samples": samples,
                                                 "lape": result["config"]["lape"]}))
    # Tear the process group down before the interpreter exits: a rank that leaves while gloo's threads
    # still run aborts with "terminate called without an active exception" (seen now and then).
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Leave without the interpreter's teardown: a C++ thread of gloo or accelerate that is still
    # joinable when static objects are destroyed aborts the process ("terminate called without an
    # active exception", seen now and then on rank 1 even after destroy_process_group). Every result
    # is written above; nothing is left to clean up.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
