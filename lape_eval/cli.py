"""The ``lape-eval`` command group.

User errors (:class:`LapeEvalError`) are printed as one paragraph with exit code 2 and no
traceback. Heavy imports (torch, transformers) happen inside the commands so that ``--help`` is fast.
"""

from __future__ import annotations

import logging
import os
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


@cli.command()
@model_options
@click.option("--languages", default="all", show_default=True, help="Comma-separated ISO 639-1 codes, or 'all' (the paper's 21).")
@click.option("--corpus", default="udhr", show_default=True,
              help="udhr | FOLDER (<lang>.txt / <lang>.jsonl) | jsonl:PATH/{lang}.jsonl | culturax | fineweb2 | glotcc.")
@click.option("--text-field", default="text", show_default=True, help="JSON field holding the text (JSONL corpora).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Statistics folder (created; resumed if it exists).")
@click.option("--max-tokens", type=int, default=None, help="Tokens per language (default: the whole corpus).")
@click.option("--seq-len", type=int, default=512, show_default=True, help="Tokens per packed sequence (BOS included).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--add-bos", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Start each sequence with BOS (auto: when the tokenizer adds one). BOS is never counted.")
@click.option("--checkpoint-every", type=int, default=20, show_default=True, help="Steps between resumable checkpoints.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def collect(model_name, revision, dtype, device, trust_remote_code, languages, corpus, text_field, out_dir,
            max_tokens, seq_len, batch_size, add_bos, checkpoint_every, no_progress):
    """Count, per language, how often each MLP neuron's gated activation is positive.

    Writes OUT/manifest.json and OUT/<lang>.safetensors; an interrupted run resumes where it
    stopped. Several processes (torchrun / accelerate launch) split the batches and sum exactly.
    """
    from .corpus import CorpusSpec
    from .languages import parse_languages
    from .models import default_device, load_model
    from .stats import CollectSettings, collect as collect_statistics

    codes = parse_languages(languages)  # validate before any model work
    if max_tokens is not None and max_tokens <= 0:
        raise LapeEvalError(f"--max-tokens must be a positive number of tokens (got {max_tokens}).")
    spec = CorpusSpec(corpus, text_field)
    dist = _init_distributed()
    device = device or (f"cuda:{dist}" if dist is not None and default_device() == "cuda" else default_device())
    loaded = load_model(model_name, dtype=dtype, device=device, revision=revision, trust_remote_code=trust_remote_code)
    settings = CollectSettings(spec, seq_len=seq_len, batch_size=batch_size, max_tokens=max_tokens,
                               add_bos={"yes": True, "no": False}.get(add_bos, add_bos),
                               checkpoint_every=checkpoint_every, progress=not no_progress)
    results = collect_statistics(loaded.model, loaded.tokenizer, codes, out_dir, settings,
                                 model_name=model_name, revision=revision)
    if dist in (None, 0):
        click.echo(f"Statistics for {len(results)} languages in {out_dir}:")
        for lang, stats in results.items():
            probability = stats.activation_probability.mean().item()
            click.echo(f"  {lang}: {stats.tokens:>10,} tokens, mean P(g>0) = {probability:.3f}")


def _init_distributed() -> int | None:
    """Join the process group that torchrun / accelerate launch set up; return the local rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch

    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return int(os.environ.get("LOCAL_RANK", "0"))


def main() -> None:
    cli(prog_name="lape-eval")
