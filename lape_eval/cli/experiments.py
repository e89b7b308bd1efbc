"""``lape-eval experiment``: the group of the paper's experiments. Each experiment registers its
subcommand on :data:`experiment` from its own module (``lape_eval.cli.experiment_<name>``)."""

from __future__ import annotations

import click

from lape_eval.cli.group import cli


@cli.group()
def experiment() -> None:
    """The paper's experiments, each as one command: lm-eval runs, a report, CSVs and figures in one folder."""
