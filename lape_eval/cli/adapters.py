"""Per-language adapters: finetune, merge. The commands parse, call one library function
(lape_eval.adapters.train.run_finetune, lape_eval.adapters.merge.merge_adapter) and print.
"""

from __future__ import annotations

import click

from lape_eval.cli.group import cli
from lape_eval.cli.options import model_options


@cli.command()
@model_options
@click.option("--language", required=True, help="Code of the language to train (e.g. mt; any ISO 639 or FLORES code).")
@click.option("--method", type=click.Choice(["subnetwork", "lora", "random", "mlp"]), default="subnetwork",
              show_default=True, help="subnetwork: the language's neuron rows/columns; random: a layer-matched random "
              "set of the same size; lora: PEFT LoRA on the MLP; mlp: all MLP weights.")
@click.option("--neurons", default=None, help="Neuron set file or shipped set name (needed by subnetwork and random).")
@click.option("--corpus", default="udhr", show_default=True,
              help="Training text: udhr | FOLDER | jsonl:PATH/{lang}.jsonl | culturax | fineweb2 | glotcc.")
@click.option("--text-field", default="text", show_default=True, help="JSON field holding the text (JSONL corpora).")
@click.option("--max-tokens", type=int, default=None, help="Training budget in tokens (default: the whole corpus "
              "per epoch).")
@click.option("--epochs", type=int, default=1, show_default=True, help="Passes over the corpus (within --max-tokens).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimiser steps.")
@click.option("--heldout-corpus", default=None, help="Held-out text (a corpus spec); default: --heldout-fraction of "
              "the training corpus's documents.")
@click.option("--heldout-fraction", type=float, default=0.05, show_default=True,
              help="Fraction of the corpus documents held out when no --heldout-corpus is given (0: no evaluation).")
@click.option("--heldout-tokens", type=int, default=100_000, show_default=True, help="Held-out tokens evaluated.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder (created; an interrupted run with the same arguments resumes).")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default 1e-4; 1e-5 for --method mlp).")
@click.option("--weight-decay", type=float, default=0.01, show_default=True, help="AdamW decoupled weight decay "
              "(on the trained weights only).")
@click.option("--clip", type=float, default=1.0, show_default=True, help="Max gradient norm (0: no clipping).")
@click.option("--schedule", type=click.Choice(["constant", "linear", "cosine"]), default="constant",
              show_default=True, help="Learning-rate schedule after the warm-up.")
@click.option("--warmup-steps", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=2, show_default=True, help="Sequences per step and process.")
@click.option("--seq-len", type=int, default=512, show_default=True, help="Tokens per packed sequence (BOS included).")
@click.option("--add-bos", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True)
@click.option("--eval-every", type=int, default=500, show_default=True, help="Steps between held-out evaluations "
              "(the best one is kept in OUT/best).")
@click.option("--checkpoint-every", type=int, default=None, help="Steps between resumable checkpoints (default: "
              "--eval-every).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--random-seed", type=int, default=None, help="Seed of the random neuron set (default: --seed).")
@click.option("--bf16", is_flag=True, help="bfloat16 autocast (mixed precision; weights keep --dtype).")
@click.option("--lora-rank", type=int, default=32, show_default=True)
@click.option("--lora-alpha", type=float, default=64.0, show_default=True)
@click.option("--lora-dropout", type=float, default=0.1, show_default=True)
@click.option("--gradient-checkpointing", is_flag=True, help="Recompute activations in the backward pass.")
@click.option("--save-last", is_flag=True, help="Also keep the adapter of the last step in OUT/last.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def finetune(**options):
    """Train a per-language adapter: the language's neuron subnetwork, or a LoRA / random / MLP baseline.

    Writes OUT/best (neuron delta, PEFT adapter or model folder), OUT/summary.json and OUT/log.jsonl.
    Several processes (torchrun / accelerate launch) train data-parallel.
    """
    from lape_eval.adapters.train import run_finetune
    from lape_eval.distributed import Distributed

    source, settings, out_dir = finetune_arguments(options)
    result = run_finetune(source, settings, out_dir)
    if Distributed.current().main:
        summary, held = result.summary, result.summary["heldout"]
        click.echo(f"trainable parameters: {summary['parameter_formula']} "
                   f"({summary['trainable_fraction']:.3%} of {summary['total_parameters']:,})")
        if held.get("initial") is not None:
            click.echo(f"held-out loss: {held['initial']:.4f} before, {held['best']:.4f} best (step "
                       f"{held['best_step']}), {held['final']:.4f} final")
        click.echo(f"{summary['steps']} steps, {summary['tokens']:,} tokens; adapter: {result.adapter}")


def finetune_arguments(options: dict):
    """(ModelSource, FinetuneSettings, out folder) from the finetune command's parsed options. An option's
    name is its settings field's, except for the model options, --corpus and --heldout-corpus (with
    --text-field: corpus specs), --add-bos (yes/no: True/False) and --no-progress."""
    from lape_eval.adapters.settings import FinetuneSettings, ModelSource
    from lape_eval.neurons.corpus import CorpusSpec

    options = dict(options)
    source = ModelSource(options.pop("model_name"), options.pop("revision"), options.pop("dtype"),
                         options.pop("device"), options.pop("trust_remote_code"))
    out_dir, text_field, heldout = options.pop("out_dir"), options.pop("text_field"), options.pop("heldout_corpus")
    add_bos = options.pop("add_bos")
    settings = FinetuneSettings(
        corpus=CorpusSpec(options.pop("corpus"), text_field),
        heldout_corpus=CorpusSpec(heldout, text_field) if heldout else None,
        add_bos={"yes": True, "no": False}.get(add_bos, add_bos),
        progress=not options.pop("no_progress"),
        **options,
    )
    return source, settings, out_dir


@cli.command()
@click.option("--model", "model_name", required=True, help="The base model the adapter was trained on.")
@click.option("--revision", default=None)
@click.option("--dtype", default="float32", show_default=True, help="dtype of the saved model.")
@click.option("--trust-remote-code", is_flag=True)
@click.option("--delta", "adapter", required=True, type=click.Path(exists=True),
              help="A neuron delta file (or a finetune run's best/ folder), or a PEFT adapter folder.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write (new).")
@click.option("--format", "fmt", type=click.Choice(["hf", "peft"]), default="hf", show_default=True,
              help="hf: a full model with the change merged; peft: the neuron delta as a standard PEFT LoRA adapter.")
def merge(model_name, revision, dtype, trust_remote_code, adapter, out_dir, fmt):
    """Write MODEL with a neuron delta (or LoRA adapter) applied, as a full Hugging Face model folder."""
    from lape_eval.adapters.merge import merge_adapter
    from lape_eval.adapters.settings import ModelSource

    source = ModelSource(model_name, revision, dtype, trust_remote_code=trust_remote_code)
    result = merge_adapter(source, adapter, out_dir, fmt)
    if result.format == "peft":
        click.echo(f"wrote the PEFT adapter {result.out_dir} ({result.delta.neuron_count} neurons, "
                   f"{result.delta.parameter_count:,} weights)")
    else:
        click.echo(f"wrote {result.out_dir}: {source.name} with {result.adapter} merged")
