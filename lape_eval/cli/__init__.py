"""The ``lape-eval`` command: the group, with every domain's commands registered on it.

Heavy imports (torch, transformers) happen inside the commands, so ``lape-eval --help`` stays fast.
"""

from lape_eval.cli import adapters, demo, experiments, judge, neurons, reports, steering  # noqa: F401  (each registers its commands)
from lape_eval.cli import (  # noqa: F401  (each registers on the `lape-eval experiment` group)
    experiment_downstream,
    experiment_fallback,
    experiment_forcing,
    experiment_logit_lens,
)
from lape_eval.cli.group import cli, main

__all__ = ["cli", "main"]
