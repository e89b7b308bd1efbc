"""Commands from text to neuron sets: collect, identify, directions, inspect, import-masks, export-masks,
ablate (lape_eval.neurons.stats, .identify, .directions, .shipped, .inspection, .reference_masks and
lape_eval.steering.ablation do the work).

Every command checks all of its inputs before it loads a model or writes a file, so a command that
fails on bad input leaves nothing behind that changes what the next command does.
"""

from __future__ import annotations

import click

from lape_eval.cli.group import cli
from lape_eval.cli.options import model_options
from lape_eval.errors import LapeEvalError

@cli.command()
@model_options
@click.option("--languages", default="all", show_default=True,
              help="Comma-separated language codes (any ISO 639-1/639-3 or FLORES code: sk, slk, slk_Latn), "
                   "'all' (the paper's 21) or 'clas-bench' (CLaS-Bench's 32).")
@click.option("--corpus", default="udhr", show_default=True,
              help="udhr | FOLDER (<lang>.txt / <lang>.jsonl) | jsonl:PATH/{lang}.jsonl | culturax | fineweb2 | glotcc.")
@click.option("--text-field", default="text", show_default=True, help="JSON field holding the text (JSONL corpora).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Statistics folder (created; resumed if it exists).")
@click.option("--max-tokens", type=int, default=None, help="Tokens per language (default: the whole corpus).")
@click.option("--seq-len", type=click.IntRange(min=2), default=512, show_default=True,
              help="Tokens per packed sequence (BOS included).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--add-bos", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Start each sequence with BOS (auto: when the tokenizer adds one). BOS is never counted.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=20, show_default=True,
              help="Steps between resumable checkpoints.")
@click.option("--residual-means", is_flag=True,
              help="Also sum each decoder layer's output hidden state (the residual stream) over the same tokens, "
                   "for residual DiffMean directions (`lape-eval directions`).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def collect(model_name, revision, dtype, device, trust_remote_code, languages, corpus, text_field, out_dir,
            max_tokens, seq_len, batch_size, add_bos, checkpoint_every, residual_means, no_progress):
    """Count, per language, how often each MLP neuron's gated activation is positive.

    Writes OUT/manifest.json and OUT/<lang>.safetensors; an interrupted run resumes where it
    stopped. Several processes (torchrun / accelerate launch) split the batches and sum exactly.
    With --residual-means the files also hold per-layer residual-stream sums (float64), from
    which `lape-eval directions` makes a direction artifact.
    """
    from lape_eval.distributed import init_distributed
    from lape_eval.languages import parse_languages
    from lape_eval.models import default_device, load_model
    from lape_eval.neurons.corpus import CorpusSpec
    from lape_eval.neurons.stats import CollectSettings, StatisticsFolder, collect as collect_statistics

    codes = parse_languages(languages)
    if max_tokens is not None and max_tokens <= 0:
        raise LapeEvalError(f"--max-tokens must be a positive number of tokens (got {max_tokens}).")
    settings = CollectSettings(CorpusSpec(corpus, text_field), seq_len=seq_len, batch_size=batch_size,
                               max_tokens=max_tokens, add_bos={"yes": True, "no": False}.get(add_bos, add_bos),
                               checkpoint_every=checkpoint_every, progress=not no_progress,
                               residual_means=residual_means)
    settings.check(codes)  # the corpus gives text for every language
    StatisticsFolder(out_dir).check_usable()  # the rest (same model and setup) needs the model's shape
    dist = init_distributed()
    device = device or (f"cuda:{dist}" if dist is not None and default_device() == "cuda" else default_device())
    loaded = load_model(model_name, dtype=dtype, device=device, revision=revision, trust_remote_code=trust_remote_code)
    results = collect_statistics(loaded.model, loaded.tokenizer, codes, out_dir, settings,
                                 model_name=model_name, revision=revision)
    if dist in (None, 0):
        click.echo(f"Statistics for {len(results)} languages in {out_dir}:")
        for lang, stats in results.items():
            probability = stats.activation_probability.mean().item()
            click.echo(f"  {lang}: {stats.tokens:>10,} tokens, mean P(g>0) = {probability:.3f}")


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

    from lape_eval.languages import parse_languages
    from lape_eval.neurons.identify import check_quantile, identify_neuron_sets, parse_top_rates

    rates = parse_top_rates(top_rates, label="--top-rates")  # everything cheap before loading statistics
    check_quantile(filter_quantile, "--filter-quantile")
    check_quantile(activation_bar_quantile, "--activation-bar-quantile")
    codes = parse_languages(languages) if languages else None
    if name is not None and (not name or "/" in name or "\\" in name):
        raise LapeEvalError(f"--name {name!r} must be a plain file name stem; put the folder in --out.")
    params = {"statistics": list(stats_dirs), "languages": codes, "top_rates": rates,
              "filter_quantile": filter_quantile, "activation_bar_quantile": activation_bar_quantile, "name": name}
    sets = identify_neuron_sets([Path(d) for d in stats_dirs], rates, codes, filter_quantile,
                                activation_bar_quantile, created_by={"command": "lape-eval identify", **params})
    files = _save_sets(sets, Path(out_dir), name)
    click.echo(_rate_table(sets), nl=False)
    for path in files:
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("stats_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="Direction artifact to write (.safetensors).")
@click.option("--languages", default=None,
              help="Comma-separated subset of the languages in the statistics (default: all of them).")
def directions(stats_dirs, out_file, languages):
    """Make a residual DiffMean direction artifact from STATS_DIR(s) made by `collect --residual-means`.

    The artifact holds, per language and decoder layer, the mean residual-stream vector (the layer's
    output hidden state) over the counted tokens; the lape model steers with it through
    method=residual_diffmean,directions=OUT,layer=N.
    """
    from pathlib import Path

    from lape_eval.languages import parse_languages
    from lape_eval.neurons.directions import directions_from_statistics

    codes = parse_languages(languages) if languages else None
    if Path(out_file).suffix != ".safetensors":
        raise LapeEvalError(f"--out {out_file}: name the direction artifact FILE.safetensors.")
    params = {"statistics": list(stats_dirs), "languages": codes}
    made = directions_from_statistics([Path(d) for d in stats_dirs], codes,
                                      created_by={"command": "lape-eval directions", **params})
    made.save(out_file)
    tokens = made.info["statistics"]["tokens_per_language"]
    click.echo(f"wrote {out_file}: {made.model_id}, {made.num_layers} layers × hidden size {made.hidden_size}, "
               f"{len(made.languages)} languages ({', '.join(f'{k}: {tokens[k]:,} tokens' for k in made.languages)})")


def _save_sets(sets: dict, out_dir, name: str | None) -> list:
    """Write each rate's set as OUT/NAME-<rate>pct.safetensors (NAME: from the model and corpus by default)."""
    from lape_eval.neurons.identify import default_set_name, set_file_name

    first = next(iter(sets.values()))
    name = name or default_set_name(first.info["model"]["id"], first.info["statistics"]["corpus"])
    return [neuron_set.save(out_dir / set_file_name(name, rate)) for rate, neuron_set in sets.items()]


def _rate_table(sets: dict) -> str:
    """Neurons per language (and unique neurons) for each rate, as a text table."""
    from lape_eval.neurons.identify import rate_label
    from lape_eval.neurons.inspection import Table, render

    rates = list(sets)
    first = sets[rates[0]]
    rows = [[lang, *(sets[r].neuron_count(lang) for r in rates)] for lang in first.languages]
    rows.append(["unique", *(sets[r].unique_neuron_count for r in rates)])
    title = f"Language neurons of {first.info['model']['id']} ({first.num_layers} layers × {first.width}) per top rate"
    return render([Table(title, ["language", *map(rate_label, rates)], rows)])


@cli.command("inspect")
@click.argument("neuron_set")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
@click.option("--languages", default=None, help="Comma-separated languages to show (default: all in the set).")
def inspect_neuron_set(neuron_set, fmt, languages):
    """Show a neuron set (a file, or the name of a shipped set): neurons per language and layer, overlaps."""
    from lape_eval.neurons.inspection import describe, inspection_tables, render
    from lape_eval.neurons.shipped import resolve_neuron_set

    loaded = resolve_neuron_set(neuron_set)
    shown = None
    if languages:
        # The set's own codes as written; another spelling of a language (slk_Latn) by its canonical code;
        # anything else as given, for the "not in the neuron set" error.
        shown = [item if item in loaded.languages else _canonical_or_same(item)
                 for item in languages.replace(",", " ").split()]
    tables = inspection_tables(loaded, shown)
    click.echo(render(tables, fmt, facts=None if fmt == "csv" else describe(loaded)), nl=False)


def _canonical_or_same(code: str) -> str:
    from lape_eval.languages import UnknownLanguageError, canonical_code

    try:
        return canonical_code(code)
    except UnknownLanguageError:
        return code


@cli.command("import-masks")
@click.argument("mask_file", type=click.Path(dir_okay=False))
@click.option("--languages", required=True,
              help="Comma-separated codes in the file's language order (any ISO 639 or FLORES code; 'all': the "
                   "paper's 21 in its order; 'clas-bench': CLaS-Bench's 32 in its order).")
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
    from lape_eval.languages import PRESETS, canonical_code
    from lape_eval.neurons.reference_masks import import_reference_masks

    # Canonical codes in the file's order (slk_Latn -> sk); unknown codes are an error, and repeats are
    # kept for the import to report.
    codes = [code for item in languages.replace(",", " ").split()
             for code in (PRESETS[item.lower()] if item.lower() in PRESETS else (canonical_code(item),))]
    if top_rate is not None and not 0 < top_rate < 1:
        raise LapeEvalError(f"--top-rate must be in the open interval (0, 1); got {top_rate}.")
    if width is None and not stats_dirs:
        raise LapeEvalError("The reference mask format does not record the MLP width (intermediate size): give "
                            "--width, or --stats (which also provides the mean activations steering needs).")
    if width is not None and width < 1:
        raise LapeEvalError(f"--width must be positive (got {width}).")
    statistics = None
    if stats_dirs:
        from lape_eval.neurons.stats import load_statistics

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
    from lape_eval.neurons.reference_masks import export_reference_masks
    from lape_eval.neurons.shipped import resolve_neuron_set

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
    from lape_eval.files import write_json
    from lape_eval.languages import parse_languages
    from lape_eval.models import default_device, load_model
    from lape_eval.neurons.corpus import CorpusSpec
    from lape_eval.neurons.shipped import resolve_neuron_set
    from lape_eval.steering.ablation import ablate as run_ablation

    ns = resolve_neuron_set(neuron_set)
    codes = parse_languages(languages) if languages else list(ns.languages)
    ablated = [code for code in codes if code in ns.languages]
    if not ablated:
        raise LapeEvalError(f"None of the languages {', '.join(codes)} is in the neuron set (it has: "
                            f"{', '.join(ns.languages)}), so there is nothing to ablate; choose some with --languages.")
    if max_tokens < 1:
        raise LapeEvalError(f"--max-tokens must be a positive number of tokens (got {max_tokens}).")
    held_out = CorpusSpec(corpus)
    held_out.check(codes)
    loaded = load_model(model_name, dtype=dtype, device=device or default_device(), revision=revision,
                        trust_remote_code=trust_remote_code)
    report = run_ablation(loaded.model, loaded.tokenizer, ns, languages=codes, ablated=ablated, corpus=held_out,
                          max_tokens=max_tokens)
    click.echo(report.table())
    if out_file:
        write_json(out_file, {"neuron_set": neuron_set, "content_hash": ns.content_hash, "model": model_name,
                              "corpus": corpus, "max_tokens": max_tokens, **report.to_dict()})
