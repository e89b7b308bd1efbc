"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import click


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


def split_names(values) -> list[str]:
    """Repeated and/or comma-separated option values, flattened."""
    return [item.strip() for value in values or () if value is not None for item in str(value).split(",") if item.strip()]


def emit(text: str, output: str | None) -> None:
    if output:
        from pathlib import Path

        from lape_eval.files import atomic_path

        with atomic_path(Path(output)) as temporary:
            temporary.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)
