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


# --------------------------------------------------------------------------------------------------
# Neuron sets: identify, inspect, import-masks, export-masks (lape_eval/neuron_set.py does the work)


@cli.command()
@click.argument("stats_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the set files (created): OUT/NAME-<rate>pct.safetensors.")
@click.option("--name", default=None, help="File name stem (default: <model>-<corpus>, e.g. gemma-3-270m-gguf-udhr).")
@click.option("--top-rates", default="0.01", show_default=True,
              help="Comma-separated fractions of all neurons to keep, each in (0, 1); one set file per rate.")
@click.option("--languages", default=None, help="Comma-separated subset of the languages in the statistics "
              "(default: all of them). The thresholds depend on the language set.")
@click.option("--filter-quantile", type=float, default=0.95, show_default=True,
              help="Quantile of all activation probabilities below which a neuron is specific to no language.")
@click.option("--activation-bar-quantile", type=float, default=0.95, show_default=True,
              help="Quantile a kept neuron's probability must exceed for it to belong to a language.")
def identify(stats_dirs, out_dir, name, top_rates, languages, filter_quantile, activation_bar_quantile):
    """Select LAPE language neurons from STATS_DIR(s) made by `collect`; write one neuron set per rate."""
    from pathlib import Path

    from .languages import parse_languages
    from .neuron_set import Table, default_set_name, identify_neuron_sets, parse_top_rates, rate_label, render, set_file_name

    rates = parse_top_rates(top_rates)  # validate everything cheap before loading statistics
    codes = parse_languages(languages) if languages else None
    if name is not None and (not name or "/" in name or "\\" in name):
        raise LapeEvalError(f"--name {name!r} must be a plain file name stem; put the folder in --out.")
    params = {"statistics": list(stats_dirs), "languages": codes, "top_rates": rates,
              "filter_quantile": filter_quantile, "activation_bar_quantile": activation_bar_quantile, "name": name}
    sets = identify_neuron_sets([Path(d) for d in stats_dirs], rates, codes, filter_quantile,
                                activation_bar_quantile, created_by={"command": "lape-eval identify", **params})
    first = next(iter(sets.values()))
    name = name or default_set_name(first.info["model"]["id"], first.info["statistics"]["corpus"])
    files = {rate: Path(out_dir) / set_file_name(name, rate) for rate in rates}
    for rate, neuron_set in sets.items():
        neuron_set.save(files[rate])
    rows = [[lang, *(sets[r].neuron_count(lang) for r in rates)] for lang in first.languages]
    rows.append(["unique", *(sets[r].unique_neuron_count for r in rates)])
    title = f"Language neurons of {first.info['model']['id']} ({first.num_layers} layers × {first.width}) per top rate"
    click.echo(render([Table(title, ["language", *map(rate_label, rates)], rows)]), nl=False)
    for rate in rates:
        click.echo(f"wrote {files[rate]}")


@cli.command("inspect")
@click.argument("neuron_set")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
@click.option("--languages", default=None, help="Comma-separated languages to show (default: all in the set).")
def inspect_neuron_set(neuron_set, fmt, languages):
    """Show a neuron set (a file, or the name of a shipped set): neurons per language and layer, overlaps."""
    from .neuron_set import describe, inspection_tables, render, resolve_neuron_set

    loaded = resolve_neuron_set(neuron_set)
    tables = inspection_tables(loaded, languages.replace(",", " ").split() if languages else None)
    click.echo(render(tables, fmt, facts=None if fmt == "csv" else describe(loaded)), nl=False)


@cli.command("import-masks")
@click.argument("mask_file", type=click.Path(dir_okay=False))
@click.option("--languages", required=True,
              help="Comma-separated codes in the file's language order ('all': the paper's 21, in its order).")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Neuron set file to write.")
@click.option("--stats", "stats_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Statistics folder(s) of the same model: give the width and the mean activations steering needs.")
@click.option("--width", type=int, default=None, help="MLP intermediate size (needed without --stats).")
@click.option("--model", "model_name", default=None, help="Model the masks belong to (recorded in the metadata).")
@click.option("--top-rate", type=float, default=None, help="Top rate the masks were made with (recorded).")
def import_masks(mask_file, languages, out_file, stats_dirs, width, model_name, top_rate):
    """Convert a reference activation mask (torch.save'd list[language][layer] of index tensors).

    The file is read with torch.load(weights_only=True): anything but plain tensors is refused
    without running code from it.
    """
    from .languages import parse_languages
    from .neuron_set import import_reference_masks

    codes = languages.replace(",", " ").split()
    codes = parse_languages("all") if codes == ["all"] else codes
    parse_languages(codes)  # unknown codes are an error (duplicates are checked by the import)
    if top_rate is not None and not 0 < top_rate < 1:
        raise LapeEvalError(f"--top-rate must be in the open interval (0, 1); got {top_rate}.")
    statistics = None
    if stats_dirs:
        from .stats import load_statistics

        statistics = load_statistics(list(stats_dirs), codes)
    neuron_set = import_reference_masks(mask_file, codes, width=width, statistics=statistics, model=model_name,
                                        top_rate=top_rate)
    neuron_set.save(out_file)
    means = "with mean activations" if neuron_set.has_means else "without mean activations (deactivation only)"
    click.echo(f"wrote {out_file}: {len(neuron_set.languages)} languages, {neuron_set.num_layers} layers × "
               f"{neuron_set.width}, {neuron_set.unique_neuron_count} unique neurons, {means}")


@cli.command("export-masks")
@click.argument("neuron_set")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Mask file to write.")
def export_masks(neuron_set, out_file):
    """Write a neuron set in the reference format (list[language][layer] of int64 index tensors)."""
    from .neuron_set import export_reference_masks, resolve_neuron_set

    loaded = resolve_neuron_set(neuron_set)
    export_reference_masks(loaded, out_file)
    click.echo(f"wrote {out_file}: language order {','.join(loaded.languages)}")


@cli.command()
@click.argument("neuron_set")
@model_options
@click.option("--languages", default=None, help="Languages to evaluate and ablate (default: all in the set).")
@click.option("--corpus", default="udhr:heldout", show_default=True, help="Held-out text (same sources as collect).")
@click.option("--max-tokens", type=int, default=256, show_default=True, help="Held-out tokens per language.")
@click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False), help="Also write the report as JSON.")
def ablate(neuron_set, model_name, revision, dtype, device, trust_remote_code, languages, corpus, max_tokens, out_file):
    """Zero each language's neurons and measure held-out loss on every language.

    A set is language-specific when zeroing a language's neurons raises that language's loss
    more than the mean rise on the other languages.
    """
    from .ablation import ablate as run_ablation
    from .artifacts import write_json
    from .corpus import CorpusSpec
    from .languages import parse_languages
    from .models import default_device, load_model
    from .neuron_set import resolve_neuron_set

    ns = resolve_neuron_set(neuron_set)
    codes = parse_languages(languages) if languages else list(ns.languages)
    loaded = load_model(model_name, dtype=dtype, device=device or default_device(), revision=revision,
                        trust_remote_code=trust_remote_code)
    report = run_ablation(loaded.model, loaded.tokenizer, ns, languages=codes,
                          ablated=[c for c in codes if c in ns.languages], corpus=CorpusSpec(corpus),
                          max_tokens=max_tokens)
    click.echo(report.table())
    if out_file:
        write_json(out_file, {"neuron_set": neuron_set, "content_hash": ns.content_hash, "model": model_name,
                              "corpus": corpus, "max_tokens": max_tokens, **report.to_dict()})


@cli.command()
@model_options
@click.option("--neurons", "neuron_set", required=True, help="Neuron set file or shipped set name.")
@click.option("--targets", required=True, help="Target languages to calibrate (comma-separated).")
@click.option("--sources", default="en,de,fr,es,zh,ru,ja", show_default=True, help="Prompt languages.")
@click.option("--alphas", default="0.25,0.5,1,1.5,2,3", show_default=True, help="Candidate strengths.")
@click.option("--method", default="add", show_default=True, help="Steering method for the '+' term.")
@click.option("--questions", "questions_per_source", type=int, default=None, help="Questions per source (default: all 8).")
@click.option("--max-new-tokens", type=int, default=32, show_default=True)
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Calibration JSON to write.")
def calibrate(model_name, revision, dtype, device, trust_remote_code, neuron_set, targets, sources, alphas, method,
              questions_per_source, max_new_tokens, out_file):
    """Choose a steering strength per target language on calibration prompts.

    Writes OUT (JSON); pass it to the lape model as language_alphas=OUT.
    """
    from .artifacts import write_json
    from .calibrate import calibrate as run_calibration
    from .languages import parse_languages
    from .models import default_device, load_model
    from .neuron_set import resolve_neuron_set
    from .steering import parse_steer

    ns = resolve_neuron_set(neuron_set)
    target_codes, source_codes = parse_languages(targets), parse_languages(sources)
    candidates = [float(a) for a in alphas.replace(",", " ").split()]
    parse_steer(" ".join(f"+{t}" for t in target_codes), method=method)  # validate before loading
    loaded = load_model(model_name, dtype=dtype, device=device or default_device(), revision=revision,
                        trust_remote_code=trust_remote_code)
    result = run_calibration(loaded.model, loaded.tokenizer, ns, targets=target_codes, sources=source_codes,
                             alphas=candidates, neuron_set_name=neuron_set, method=method,
                             questions_per_source=questions_per_source, max_new_tokens=max_new_tokens)
    write_json(out_file, {"model": model_name, **result.to_json()})
    for target, rates in result.rates.items():
        shown = "  ".join(f"α={alpha}: {rate:.0f}%" for alpha, rate in rates.items())
        click.echo(f"{target}: best α={result.best[target]:g}   {shown}")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("lm_eval_args", nargs=-1, type=click.UNPROCESSED)
def run(lm_eval_args):
    """Run lm_eval with lape-eval's tasks and models available: lape-eval run --model lape ...

    Every argument is passed to lm_eval unchanged; lape-eval's task folder is added to
    --include_path (merged with yours if you give one).
    """
    from ._lm_eval_hook import register_lape_model
    from .resources import tasks_folder

    import lm_eval.models  # noqa: F401  built-in models first, then ours (see _lm_eval_hook)
    from lm_eval.__main__ import cli_evaluate

    register_lape_model()
    _add_task_folder(tasks_folder())
    sys.argv = ["lm_eval", *lm_eval_args]
    cli_evaluate()


def _add_task_folder(folder) -> None:
    """Make every TaskManager of this process also index ``folder`` (lm_eval's --include_path takes
    one folder, and we must not take it away from the user)."""
    from lm_eval.tasks import TaskManager

    original = TaskManager.__init__

    def __init__(self, *args, include_path=None, **kwargs):
        paths = [] if include_path is None else list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
        original(self, *args, include_path=[str(folder), *paths], **kwargs)

    TaskManager.__init__ = __init__


# --------------------------------------------------------------------------------------------------
# Per-language adapters: finetune, merge (lape_eval/finetune.py and lape_eval/delta.py do the work)


@cli.command()
@model_options
@click.option("--language", required=True, help="ISO 639-1 code of the language to train (e.g. mt).")
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
def finetune(model_name, revision, dtype, device, trust_remote_code, language, method, neurons, corpus, text_field,
             max_tokens, epochs, max_steps, heldout_corpus, heldout_fraction, heldout_tokens, out_dir, lr,
             weight_decay, clip, schedule, warmup_steps, batch_size, seq_len, add_bos, eval_every, checkpoint_every,
             seed, random_seed, bf16, lora_rank, lora_alpha, lora_dropout, gradient_checkpointing, save_last,
             no_progress):
    """Train a per-language adapter: the language's neuron subnetwork, or a LoRA / random / MLP baseline.

    Writes OUT/best (neuron delta, PEFT adapter or model folder), OUT/summary.json and OUT/log.jsonl.
    Several processes (torchrun / accelerate launch) train data-parallel.
    """
    from .corpus import CorpusSpec
    from .finetune import FinetuneSettings, finetune_command

    settings = FinetuneSettings(
        method=method, language=language, corpus=CorpusSpec(corpus, text_field), neurons=neurons,
        max_tokens=max_tokens, epochs=epochs, max_steps=max_steps,
        heldout_corpus=CorpusSpec(heldout_corpus, text_field) if heldout_corpus else None,
        heldout_fraction=heldout_fraction, heldout_tokens=heldout_tokens, seq_len=seq_len, batch_size=batch_size,
        lr=lr, weight_decay=weight_decay, clip=clip, schedule=schedule, warmup_steps=warmup_steps,
        eval_every=eval_every, checkpoint_every=checkpoint_every, seed=seed, random_seed=random_seed, bf16=bf16,
        add_bos={"yes": True, "no": False}.get(add_bos, add_bos), lora_rank=lora_rank, lora_alpha=lora_alpha,
        lora_dropout=lora_dropout, gradient_checkpointing=gradient_checkpointing, save_last=save_last,
        progress=not no_progress,
    )
    finetune_command(model_name=model_name, revision=revision, dtype=dtype, device=device,
                     trust_remote_code=trust_remote_code, out_dir=out_dir, settings=settings, echo=click.echo)


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
    from .finetune import merge_command

    merge_command(model_name=model_name, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code,
                  adapter=adapter, out_dir=out_dir, fmt=fmt, echo=click.echo)


def main() -> None:
    cli(prog_name="lape-eval")
