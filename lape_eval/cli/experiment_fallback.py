"""``lape-eval experiment fallback``: the paper's fallback analysis (method spec §6.6)."""

from __future__ import annotations

import click

from lape_eval.cli.experiments import experiment
from lape_eval.cli.options import model_options, split_names

_ORDER = "en,fr,es,it,pt,ru,de,ar,zh,ko,ja"
_VARIANTS = ("negative", "zero", "mean", "random", "mask", "noise", "invert")


@experiment.command("fallback")
@model_options
@click.option("--neurons", "neuron_set", required=True, help="Neuron set file or shipped set name.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the answers, table, CSV and stacked bars (re-running resumes).")
@click.option("--questions", default="vicuna", show_default=True,
              help="'vicuna' (the 70 English Vicuna questions of Tang et al., downloaded once from "
                   "RUCAIBox/Language-Specific-Neurons), a local copy of data/mvicuna/en.txt, a URL, or 'bundled' "
                   "(lape-eval's English forcing questions; not the paper's protocol).")
@click.option("--order", default=_ORDER, show_default=True, help="Deactivation order (comma-separated).")
@click.option("--variant", type=click.Choice(_VARIANTS), default="negative", show_default=True,
              help="How the neurons are deactivated (the reference's --deactivation_method).")
@click.option("--deactivate-value", "value", type=float, default=-1.5, show_default=True,
              help="c of the negative variant (g <- c).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--baseline", is_flag=True, help="Also answer with nothing deactivated (step 0; not in the paper).")
@click.option("--lid", default="fasttext", show_default=True,
              help="Language ID backend: fasttext (lid.176), fasttext:/path/lid.176.bin, cld2, ...")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random and noise variants.")
def fallback(model_name, revision, dtype, device, trust_remote_code, neuron_set, out_dir, questions, order,
             variant, value, max_new_tokens, baseline, lid, batch_size, seed):
    """Which language does the model fall back to when languages' neurons are deactivated cumulatively?

    The paper's protocol: the 70 English Vicuna questions as 'Q: ' + question + 'A: ', deactivation of
    en; en+fr; en+fr+es; ... (the union of their neurons per layer) to c = -1.5, greedy answers of at most
    128 tokens, lid.176 labels. Writes OUT/fallback.md, fallback.csv, fallback.png, summary.json and the
    answers of every step (OUT/answers/step-NN.jsonl).
    """
    from lape_eval.experiments.fallback import FallbackSettings, run_fallback
    from lape_eval.experiments.vicuna import load_questions
    from lape_eval.models import default_device, load_model
    from lape_eval.neurons.shipped import resolve_neuron_set

    settings = FallbackSettings(order=split_names([order]), variant=variant, value=value,
                                max_new_tokens=max_new_tokens, baseline=baseline, seed=seed, lid=lid,
                                batch_size=batch_size)
    loaded_questions = load_questions(questions)
    neurons = resolve_neuron_set(neuron_set)
    loaded = load_model(model_name, dtype=dtype, device=device or default_device(), revision=revision,
                        trust_remote_code=trust_remote_code)
    result = run_fallback(loaded.model, loaded.tokenizer, neurons, loaded_questions, out_dir, settings,
                          model_name=model_name, neuron_set_name=str(neuron_set))
    click.echo(result.files["table"].read_text(encoding="utf-8"))
    for name in ("csv", "figure", "summary"):
        click.echo(f"wrote {result.files[name]}", err=True)
