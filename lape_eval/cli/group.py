"""The ``lape-eval`` command group. The commands live in ``lape_eval.cli.neurons``, ``.steering``,
``.adapters`` and ``.reports``, one module per domain; ``lape_eval.cli`` imports them so that they
register on this group.

User errors (:class:`LapeEvalError`) are printed as one paragraph with exit code 2 and no
traceback. Heavy imports (torch, transformers) happen inside the commands so that ``--help`` is fast.
"""

from __future__ import annotations

import logging
import sys

import click

from lape_eval.errors import LapeEvalError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LapeEvalError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="lape-eval")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def cli(verbose: bool) -> None:
    """Language neurons for lm-evaluation-harness: collect, identify, steer, evaluate."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    cli(prog_name="lape-eval")
