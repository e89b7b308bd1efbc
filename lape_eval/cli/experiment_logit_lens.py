"""``lape-eval experiment logit-lens``: the paper's logit-lens analysis (method spec §6.7)."""

from __future__ import annotations

import click

from lape_eval.cli.experiments import experiment
from lape_eval.cli.options import model_options, split_names


@experiment.command("logit-lens")
@model_options
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for logit_lens.csv, logit_lens.png and tokens.jsonl.")
@click.option("--languages", default="all", show_default=True,
              help="Prompt languages (comma-separated codes, or 'all': the paper's 21).")
@click.option("--all-questions", is_flag=True, help="All bundled forcing questions, not only the paper's six.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--lid", default="fasttext", show_default=True,
              help="Language ID backend for the decoded tokens: fasttext (lid.176), cld2, ...")
@click.option("--neurons", "neuron_set", default=None, help="Neuron set for --steer.")
@click.option("--steer", "specs", multiple=True,
              help="Also run under this steer spec ('-en +de'); repeat for several. Needs --neurons.")
@click.option("--method", default="add", show_default=True, help="Method of the '+' terms of --steer.")
@click.option("--alpha", type=float, default=1.0, show_default=True)
@click.option("--deactivate-value", type=float, default=0.0, show_default=True)
def logit_lens(model_name, revision, dtype, device, trust_remote_code, out_dir, languages, all_questions, top_k, lid,
               neuron_set, specs, method, alpha, deactivate_value):
    """Per layer, the next-token mass on the prompt's language and on English (top-k tokens of the logit lens).

    Every layer's hidden state at the last position of each forcing prompt goes through the model's final
    norm and LM head (and its logit soft-capping, if any); the top-k tokens are decoded, language-identified
    and their probabilities summed per language, then averaged per layer. With --steer, the same under the
    spec: where steering takes hold.
    """
    from pathlib import Path

    from lape_eval.errors import LapeEvalError
    from lape_eval.evaluation.lid import get_identifier
    from lape_eval.experiments.logit_lens import write_logit_lens
    from lape_eval.languages import parse_languages
    from lape_eval.models import default_device, load_model

    codes = parse_languages(languages)
    if specs and not neuron_set:
        raise LapeEvalError("--steer needs --neurons (the neuron set whose languages the spec names).")
    identifier = get_identifier(lid)
    neurons = None
    if neuron_set:
        from lape_eval.neurons.shipped import resolve_neuron_set

        neurons = resolve_neuron_set(neuron_set)
    from lape_eval.steering.spec import parse_steer

    parsed = [parse_steer(spec, method=method, alpha=alpha, deactivate_value=deactivate_value) for spec in specs]
    loaded = load_model(model_name, dtype=dtype, device=device or default_device(), revision=revision,
                        trust_remote_code=trust_remote_code)
    files = write_logit_lens(loaded.model, loaded.tokenizer, codes, identifier, Path(out_dir), neuron_set=neurons,
                             specs=parsed, paper_only=not all_questions, top_k=top_k, model_name=model_name)
    for path in files.values():
        click.echo(f"wrote {path}")
