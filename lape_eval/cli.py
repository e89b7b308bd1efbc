"""The ``lape-eval`` command group; the commands live in ``cli_neurons``, ``cli_steering``,
``cli_adapters`` and ``cli_reports``, one module per domain, and register themselves on import.

User errors (:class:`LapeEvalError`) are printed as one paragraph with exit code 2 and no
traceback. Heavy imports (torch, transformers) happen inside the commands so that ``--help`` is fast.
"""

from __future__ import annotations

import logging
import sys

import click

from .errors import LapeEvalError


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


def model_options(function):
    """Options shared by every command that loads a model."""
    options = [
        click.option("--model", "model_name", required=True,
                     help="HF id, local folder, or 'gemma-3-270m-gguf' (the bundled Gemma-3-270M)."),
        click.option("--revision", default=None, help="Model revision (branch, tag or commit) on the HF hub."),
        click.option("--dtype", default="float32", show_default=True, help="float32, bfloat16, float16 or auto."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)."),
        click.option("--trust-remote-code", is_flag=True, help="Allow the model repo's own Python code to run."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _names(values) -> list[str]:
    """Repeated and/or comma-separated option values, flattened."""
    return [item.strip() for value in values or () if value is not None for item in str(value).split(",") if item.strip()]


def _emit(text: str, output: str | None) -> None:
    if output:
        from pathlib import Path

        from .artifacts import atomic_path

        with atomic_path(Path(output)) as temporary:
            temporary.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def main() -> None:
    cli(prog_name="lape-eval")


# Register the commands (each module adds its commands to `cli`); imported last, as they import `cli`.
from . import cli_adapters, cli_neurons, cli_reports, cli_steering  # noqa: E402,F401
