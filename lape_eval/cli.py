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
    from .inspection import Table, render
    from .neuron_set import default_set_name, identify_neuron_sets, parse_top_rates, rate_label, set_file_name

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
    from .inspection import describe, inspection_tables, render
    from .neuron_set import resolve_neuron_set

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
    from .reference_masks import import_reference_masks

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
    from .neuron_set import resolve_neuron_set
    from .reference_masks import export_reference_masks

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
@click.option("--neurons", "neuron_sets", required=True,
              help="Neuron set(s) to try: files or shipped set names, comma-separated.")
@click.option("--targets", required=True, help="Target languages to calibrate (comma-separated).")
@click.option("--sources", default="en,de,fr,es,zh,ru,ja", show_default=True, help="Prompt languages.")
@click.option("--alphas", default="0.25,0.5,1,1.5,2,3", show_default=True, help="Candidate strengths.")
@click.option("--methods", default="add", show_default=True,
              help="Methods to try for the '+' term (comma-separated: add, diffmean, replace).")
@click.option("--positions", default="all", show_default=True,
              help="Positions to try (comma-separated: all, prompt, generated).")
@click.option("--questions", "questions_per_source", type=int, default=None, help="Questions per source (default: all 8).")
@click.option("--max-new-tokens", type=int, default=32, show_default=True)
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Calibration JSON to write.")
def calibrate(model_name, revision, dtype, device, trust_remote_code, neuron_sets, targets, sources, alphas, methods,
              positions, questions_per_source, max_new_tokens, out_file):
    """Choose steering settings on calibration prompts: the set, method and positions with the best mean
    success, and a strength per target language.

    Writes OUT (JSON); pass it to the lape model as language_alphas=OUT (`lape-eval demo` also takes the
    set, method and positions from it).
    """
    from pathlib import Path

    from .artifacts import write_json
    from .calibrate import calibrate as run_calibration
    from .languages import parse_languages
    from .models import default_device, load_model
    from .neuron_set import resolve_neuron_set
    from .steering import parse_steer

    sets = {name: resolve_neuron_set(name) for name in _split(neuron_sets)}
    target_codes, source_codes = parse_languages(targets), parse_languages(sources)
    candidates = [float(a) for a in _split(alphas)]
    method_list, position_list = _split(methods), _split(positions)
    for method in method_list:
        if method == "multiply":
            raise click.UsageError("calibrate sweeps α: choose methods among add, diffmean, replace.")
        for where in position_list:
            for alpha in candidates:  # validate every setting before the model loads
                parse_steer(" ".join(f"+{t}" for t in target_codes), method=method, positions=where, alpha=alpha)
    partial = Path(f"{out_file}.partial.json")  # an interrupted sweep resumes from here
    loaded = load_model(model_name, dtype=dtype, device=device or default_device(), revision=revision,
                        trust_remote_code=trust_remote_code)
    result = run_calibration(loaded.model, loaded.tokenizer, sets, targets=target_codes, sources=source_codes,
                             alphas=candidates, methods=method_list, positions=position_list,
                             questions_per_source=questions_per_source, max_new_tokens=max_new_tokens,
                             checkpoint=partial)
    write_json(out_file, {"model": model_name, **result.to_json()})
    partial.unlink(missing_ok=True)
    for setting in result.settings:
        click.echo(f"{setting.key}: mean best rate {result.score(setting):.1f}%")
    click.echo(f"chosen: {result.chosen.key}")
    for target, rates in result.rates[result.chosen.key].items():
        shown = "  ".join(f"α={alpha}: {rate:.0f}%" for alpha, rate in rates.items())
        click.echo(f"  {target}: best α={result.best[target]:g}   {shown}")


def _split(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


@cli.command()
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--languages", default=None, help="Forcing-grid languages (default: en,de,fr,es,zh,ru,ja).")
@click.option("--all-languages", is_flag=True, help="The forcing grid over all 21 languages (about 9x longer).")
@click.option("--pairs", default=None, help="UDHR translation pairs (default: en-de,en-fr,en-zh).")
@click.option("--neurons", "neuron_set", default=None,
              help="Steer with this neuron set (default: the set the calibration chose among the shipped 1-5 % sets).")
@click.option("--identify", is_flag=True, help="Rebuild the neuron sets from the bundled UDHR instead of using the shipped ones.")
@click.option("--calibrate", is_flag=True,
              help="Re-run the calibration (neuron set, positions and a strength per target language).")
@click.option("--calibration", default=None,
              help="A calibration JSON to use instead of the shipped one; 'none': add with alpha=2 on the 1 % set.")
@click.option("--max-gen-toks", type=int, default=32, show_default=True, help="Tokens generated per forcing answer.")
@click.option("--translation-docs", type=int, default=10, show_default=True, help="UDHR paragraphs per translation pair.")
def demo(out_dir, languages, all_languages, pairs, neuron_set, identify, calibrate, calibration, max_gen_toks,
         translation_docs):
    """The whole method on Gemma-3-270M, offline: neuron sets, steered lm-eval runs, table, heatmap.

    Every step is a real lape-eval / lm_eval command, printed before it runs; steps whose outputs
    exist are skipped, so an interrupted demo resumes.
    """
    from pathlib import Path

    from .demo import DemoPlan, run_demo
    from .languages import PAPER_LANGUAGES, parse_languages

    plan = DemoPlan(Path(out_dir), identify=identify, calibrate=calibrate, calibration=calibration,
                    max_gen_toks=max_gen_toks, translation_docs=translation_docs)
    if all_languages:
        plan.languages = list(PAPER_LANGUAGES)
    elif languages:
        plan.languages = parse_languages(languages)
    if pairs:
        plan.pairs = [pair.strip() for pair in pairs.split(",")]
        for pair in plan.pairs:
            parse_languages(pair.replace("-", " "))
    if neuron_set:
        plan.neuron_set = neuron_set
    run_demo(plan)


@cli.command("export-steered")
@click.argument("neuron_set")
@click.option("--model", "model_name", required=True, help="The model (only its config is read).")
@click.option("--steer", "spec", required=True, help="An additive spec: '+de', '+de +fr:0.5'.")
@click.option("--method", default="add", show_default=True, type=click.Choice(["add", "diffmean"]))
@click.option("--alpha", default=1.0, show_default=True, type=float)
@click.option("--peft", "for_peft", is_flag=True, help="Name the hookpoints as under a PEFT adapter (steered ... peft=).")
@click.option("--trust-remote-code", is_flag=True)
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="The .pt file to write.")
def export_steered(neuron_set, model_name, spec, method, alpha, for_peft, trust_remote_code, out_file):
    """Write an additive steer spec as lm-eval's built-in `steered` model's .pt file.

    Use it with: lm_eval --model steered --model_args pretrained=MODEL,steer_path=OUT
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .models import resolve_pretrained
    from .neuron_set import resolve_neuron_set
    from .steered_export import save_steered
    from .steering import parse_steer

    parsed = parse_steer(spec, method=method, alpha=alpha)
    ns = resolve_neuron_set(neuron_set)
    config = AutoConfig.from_pretrained(resolve_pretrained(model_name), trust_remote_code=trust_remote_code)
    with torch.device("meta"):  # names and shapes only: no weights are loaded
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    prefix = f"model.{model.base_model_prefix}." if for_peft else ""
    save_steered(model, ns, parsed, out_file, hookpoint_prefix=prefix)
    click.echo(f"wrote {out_file}: lm_eval --model steered --model_args pretrained={model_name},steer_path={out_file}")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("lm_eval_args", nargs=-1, type=click.UNPROCESSED)
def run(lm_eval_args):
    """Run lm_eval with lape-eval's tasks and models available: lape-eval run --model lape ...

    Every argument is passed to lm_eval unchanged; lape-eval's task folder is added to
    --include_path (merged with yours if you give one). FLORES / UDHR translation pairs that
    tasks/ does not ship (e.g. lape_udhr_translation_mt-ko) are written on demand.
    """
    from ._lm_eval_hook import register_lape_model
    from .resources import tasks_folder
    from .task_suite import prepare_on_demand_tasks

    on_demand = prepare_on_demand_tasks(list(lm_eval_args))  # unknown language codes fail here
    import lm_eval.models  # noqa: F401  built-in models first, then ours (see _lm_eval_hook)
    from lm_eval.__main__ import cli_evaluate

    register_lape_model()
    _add_task_folder(tasks_folder())
    if on_demand is not None:
        _add_task_folder(on_demand)
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


# --------------------------------------------------------------------------------------------------
# Reports over lm-eval runs: table, regress, plot, fallback (lape_eval/table.py, regress.py, plots.py,
# fallback.py do the work; results.py reads the runs)


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


def _table_options(function):
    options = [
        click.option("--metric", "metrics", multiple=True,
                     help="Metric to show: acc, chrf, exact_match,strict-match (metric,filter). Repeat for a preference "
                          "order per task (default: each task's first metric)."),
        click.option("--tasks", "tasks", multiple=True, help="Only tasks matching these globs (comma-separated or repeated)."),
        click.option("--language-regex", default=None,
                     help="Regex whose first group is the language in a task name (default: task metadata "
                          "'language', else the last part of the name that is a language or FLORES code)."),
        click.option("--test", type=click.Choice(["auto", "bootstrap", "z", "none"]), default="auto", show_default=True,
                     help="Significance test: auto = paired bootstrap on sample files when present, else z-test."),
        click.option("--alpha", "alpha", type=float, default=0.05, show_default=True, help="Significance level (†)."),
        click.option("--resamples", type=click.IntRange(min=10), default=1000, show_default=True,
                     help="Bootstrap resamples."),
        click.option("--seed", type=click.IntRange(min=1), default=12345, show_default=True, help="Bootstrap seed."),
        click.option("--label", "labels", multiple=True,
                     help="Run labels, one per run in the order listed (see --list-runs); default: from the config."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@cli.command("table")
@click.argument("runs", nargs=-1, required=True)
@click.option("--rows", default="config", show_default=True,
              help="Row key(s): config, task, language, benchmark (task without language); several: config,benchmark.")
@click.option("--columns", default="task", show_default=True, help="Column key(s), as --rows.")
@click.option("--baseline", default=None, help="Run to compare with: its label, number (1-based) or path.")
@_table_options
@click.option("--groups", type=click.Choice(["all", "tasks", "groups"]), default="all", show_default=True,
              help="Show tasks and groups, only tasks, or only groups.")
@click.option("--average", type=click.Choice(["auto", "row", "column", "both", "none"]), default="auto", show_default=True,
              help="Average row/column (auto: over the axis without config).")
@click.option("--best", type=click.Choice(["auto", "column", "row", "none"]), default="auto", show_default=True,
              help="Highlight the best value per column or row (auto: along the config axis).")
@click.option("--decimals", type=click.IntRange(min=0, max=10), default=None, help="Decimals (default: 3 below 1, else 2).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "html", "latex", "text"]), default="markdown",
              show_default=True)
@click.option("--output", default=None, type=click.Path(dir_okay=False), help="Write to this file (default: stdout).")
@click.option("--list-runs", is_flag=True, help="Only list the runs found, with their labels and identities.")
def table(runs, rows, columns, baseline, metrics, tasks, language_regex, test, alpha, resamples, seed, labels, groups,
          average, best, decimals, fmt, output, list_runs):
    """Compare lm-eval runs in one leaderboard table: score ± stderr, Δ vs a baseline, significance, best.

    RUNS are lm-eval output folders (searched recursively for results_*.json) or results files.
    Sample files (--log_samples) next to a results file enable paired significance tests.
    """
    from .render import render
    from .results import load_runs
    from .table import TableOptions, build_table, to_text_table

    loaded = load_runs(list(runs), list(labels) or None)
    if list_runs:
        for number, run in enumerate(loaded, 1):
            i = run.identity
            click.echo(f"{number}. {run.label}\n   {run.path}\n   model {i.model} ({i.lm}), steer {i.steer_text}, "
                       f"neuron set {i.neuron_set or '-'}, adapter {i.adapter or '-'}, tasks {len(run.tasks)}")
        return
    options = TableOptions(rows=rows, columns=columns, metrics=list(metrics), tasks=_names(tasks), groups=groups,
                           baseline=baseline, test=test, alpha=alpha, resamples=resamples,
                           seed=seed, language_regex=language_regex, average=average, best=best, decimals=decimals)
    _emit(render(to_text_table(build_table(loaded, options)), fmt), output)


@cli.command("regress")
@click.argument("runs", nargs=-1, required=True)
@click.option("--baseline", "baseline_file", required=True, type=click.Path(dir_okay=False),
              help="Baseline JSON of expected scores (written by --update).")
@click.option("--tolerance", type=float, default=0.0, show_default=True, help="Allowed change in absolute score points.")
@click.option("--tolerance-se", type=float, default=2.0, show_default=True,
              help="Allowed change in standard errors of the difference; the larger of the two tolerances applies.")
@click.option("--update", is_flag=True, help="Write the runs' scores as the new baseline (exit 0).")
@click.option("--fail-on-missing", is_flag=True, help="Also fail when a baseline score is missing from the runs.")
@click.option("--tasks", "tasks", multiple=True, help="Only tasks matching these globs.")
@click.option("--metric", "metrics", multiple=True, help="Only these metrics (name or metric,filter; repeat).")
@click.option("--only-changes", is_flag=True, help="Leave unchanged scores out of the report.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
@click.option("--output", default=None, type=click.Path(dir_okay=False), help="Also write the report to this file.")
def regress(runs, baseline_file, tolerance, tolerance_se, update, fail_on_missing, tasks, metrics, only_changes, fmt,
            output):
    """Compare runs' task scores with a stored baseline; exit 1 if a score got worse beyond the tolerance.

    Exit codes: 0 no regression, 1 regression (or a missing score with --fail-on-missing), 2 bad input.
    """
    from pathlib import Path

    from .regress import (checks_table, compare_to_baseline, failed, make_baseline, read_baseline, summary,
                          write_baseline)
    from .render import render
    from .results import load_runs

    loaded = load_runs(list(runs))
    task_globs, metric_names = _names(tasks), list(metrics)
    if not update or Path(baseline_file).exists():
        baseline = read_baseline(baseline_file)
        checks = compare_to_baseline(baseline, loaded, tolerance=tolerance, tolerance_se=tolerance_se,
                                     tasks=task_globs, metrics=metric_names)
        report = render(checks_table(checks, baseline_file, fail_on_missing, only_changes), fmt)
        if output:
            _emit(report, output)
        click.echo(report, nl=False)
        if not update:
            click.echo(summary(checks, fail_on_missing), err=True)
            if failed(checks, fail_on_missing):
                sys.exit(1)
            return
    write_baseline(baseline_file, make_baseline(loaded, task_globs, metric_names))
    click.echo(f"wrote baseline {baseline_file}", err=True)


@cli.group("plot")
def plot():
    """Figures (PNG or SVG, by the --out suffix) from neuron sets and lm-eval runs."""


def _plot_options(function):
    options = [
        click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Figure file: .png or .svg."),
        click.option("--title", default=None, help="Replace the title."),
        click.option("--dpi", type=click.IntRange(min=30, max=1200), default=150, show_default=True, help="PNG resolution."),
        click.option("--csv", "csv_file", default=None, type=click.Path(dir_okay=False), help="Also write the plotted values."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _save_plot(matrix_or_none, figure, out_file, title, dpi, csv_file):
    from .plots import save_figure

    if title:
        figure.axes[0].set_title(title, fontsize=10)
    save_figure(figure, out_file, dpi)
    click.echo(f"wrote {out_file}")
    if csv_file and matrix_or_none is not None:
        _emit(matrix_or_none.to_csv(), csv_file)


def _forcing_field_options(function):
    options = [
        click.option("--source-field", default="source_lang", show_default=True, help="Document field: prompt language."),
        click.option("--target-field", default="target_lang", show_default=True, help="Document field: target language."),
        click.option("--label-field", default=None,
                     help="Per-sample output-language field (default: answer_lang, output_lang, lid, ... if present, "
                          "else language identification of the output)."),
        click.option("--success-field", default=None,
                     help="Per-sample success field (default: success, target_rate, ... if present, else label = target)."),
        click.option("--lid", default=None, help="LID backend when the label comes from the output (default: cld2)."),
        click.option("--task", "tasks", multiple=True, help="Tasks to read (default: every task with sample files)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _field_names(source_field, target_field, label_field, success_field, lid):
    from .outcomes import FieldNames

    return FieldNames(source_field, target_field, label_field, success_field, lid)


@plot.command("neurons-per-layer")
@click.argument("neuron_set")
@click.option("--languages", default=None, help="Comma-separated languages (default: all in the set).")
@_plot_options
def plot_neurons_per_layer(neuron_set, languages, out_file, title, dpi, csv_file):
    """Heatmap of language neurons per layer and language (languages grouped by family)."""
    from .neuron_set import resolve_neuron_set
    from .plots import neurons_per_layer_data, neurons_per_layer_figure

    matrix = neurons_per_layer_data(resolve_neuron_set(neuron_set), _names([languages]) or None)
    _save_plot(matrix, neurons_per_layer_figure(matrix), out_file, title, dpi, csv_file)


@plot.command("overlap")
@click.argument("neuron_set")
@click.option("--languages", default=None, help="Comma-separated languages (default: all in the set).")
@_plot_options
def plot_overlap(neuron_set, languages, out_file, title, dpi, csv_file):
    """Heatmap of the Jaccard overlap between languages' neurons, ordered by language family."""
    from .neuron_set import resolve_neuron_set
    from .plots import overlap_data, overlap_figure

    matrix = overlap_data(resolve_neuron_set(neuron_set), _names([languages]) or None)
    _save_plot(matrix, overlap_figure(matrix), out_file, title, dpi, csv_file)


@plot.command("forcing")
@click.argument("run")
@_forcing_field_options
@_plot_options
def plot_forcing(run, source_field, target_field, label_field, success_field, lid, tasks, out_file, title, dpi, csv_file):
    """Heatmap of a forcing grid run: % of outputs in the target language, source × target language."""
    from .plots import forcing_data, forcing_figure
    from .results import load_runs

    runs = load_runs([run])
    if len(runs) != 1:
        raise LapeEvalError(f"{run} holds {len(runs)} results files; name one of them: "
                            + ", ".join(str(r.path) for r in runs))
    matrix = forcing_data(runs[0], _field_names(source_field, target_field, label_field, success_field, lid),
                          _names(tasks) or None)
    _save_plot(matrix, forcing_figure(matrix), out_file, title, dpi, csv_file)


@plot.command("task-delta")
@click.argument("runs", nargs=-1, required=True)
@click.option("--baseline", required=True, help="The unsteered run: its label, number (1-based) or path.")
@_table_options
@_plot_options
def plot_task_delta(runs, baseline, metrics, tasks, language_regex, test, alpha, resamples, seed, labels, out_file,
                    title, dpi, csv_file):
    """Heatmap of score changes vs a baseline run: test language (task) × activated language (run)."""
    from .plots import task_delta_data, task_delta_figure
    from .results import load_runs, select_run
    from .table import TableOptions

    loaded = load_runs(list(runs), list(labels) or None)
    options = TableOptions(metrics=list(metrics), tasks=_names(tasks), language_regex=language_regex, test=test,
                           alpha=alpha, resamples=resamples, seed=seed)
    matrix = task_delta_data(loaded, select_run(loaded, baseline), options)
    _save_plot(matrix, task_delta_figure(matrix), out_file, title, dpi, csv_file)


@cli.command("fallback")
@click.argument("runs", nargs=-1, required=True)
@click.option("--order", default=",".join(("en", "fr", "es", "it", "pt", "ru", "de", "ar", "zh", "ko", "ja")),
              show_default=True, help="Deactivation order (comma-separated).")
@_forcing_field_options
@click.option("--min-share", type=float, default=0.02, show_default=True,
              help="Languages below this share at every step are merged into 'other'.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "html", "latex", "text"]), default="markdown",
              show_default=True)
@click.option("--output", default=None, type=click.Path(dir_okay=False), help="Write the table to this file.")
@click.option("--plot", "plot_file", default=None, type=click.Path(dir_okay=False),
              help="Also draw the stacked bar chart (.png or .svg).")
@click.option("--dpi", type=click.IntRange(min=30, max=1200), default=150, show_default=True)
def fallback(runs, order, source_field, target_field, label_field, success_field, lid, tasks, min_share, fmt, output,
             plot_file, dpi):
    """Progressive deactivation study: output-language distribution per step, from one run per step.

    Each run's step comes from its recorded steer spec ("-en -fr" = step 2 of the default order);
    `lape-eval fallback-commands` prints the lm-eval commands that make the runs.
    """
    from .fallback import fallback_study, study_table
    from .render import render
    from .results import load_runs

    study = fallback_study(load_runs(list(runs)), _names([order]),
                           _field_names(source_field, target_field, label_field, success_field, lid),
                           _names(tasks) or None, min_share)
    _emit(render(study_table(study), fmt), output)
    if plot_file:
        from .plots import fallback_figure, save_figure

        save_figure(fallback_figure(study), plot_file, dpi)
        click.echo(f"wrote {plot_file}", err=True)


@cli.command("fallback-commands")
@click.option("--model-args", required=True,
              help="lm-eval model_args without steer, e.g. pretrained=google/gemma-3-270m,neurons=SET,dtype=bfloat16.")
@click.option("--tasks", required=True, help="The forcing task(s) with English prompts, e.g. lape_forcing_en.")
@click.option("--output-root", required=True, help="Each step writes OUTPUT_ROOT/step-NN.")
@click.option("--order", default=",".join(("en", "fr", "es", "it", "pt", "ru", "de", "ar", "zh", "ko", "ja")),
              show_default=True, help="Deactivation order (comma-separated).")
@click.option("--steps", default=None, help="Comma-separated step numbers (default: 0 to the length of the order).")
@click.option("--extra", default="", help="More lm-eval arguments appended to every command (e.g. '--device cuda').")
def fallback_commands(model_args, tasks, output_root, order, steps, extra):
    """Print the lm-eval commands of the fallback study, one per deactivation step."""
    from .fallback import step_commands

    try:
        numbers = [int(s) for s in _names([steps])] if steps else None
    except ValueError:
        raise LapeEvalError(f"--steps {steps!r}: give comma-separated step numbers, e.g. 0,1,2,11.") from None
    for command in step_commands(model_args, tasks, output_root, _names([order]), numbers, extra):
        click.echo(command)


def main() -> None:
    cli(prog_name="lape-eval")
